"""The sweep's results on its MLflow parent run: the trials table, a parallel-coordinates plot, the best."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import optuna
from mlflow import MlflowClient

from pipelines.sweep.study import summary


def log_results(study: optuna.Study, parent_run_id: str, folder: Path) -> dict:
    """Write and log ``trials.csv``, ``parallel_coordinates.png`` and ``best.json``; return the summary."""
    folder.mkdir(parents=True, exist_ok=True)
    client = MlflowClient()
    table = folder / "trials.csv"
    study.trials_dataframe().to_csv(table, index=False)
    client.log_artifact(parent_run_id, str(table), "sweep")
    result = summary(study)
    if "best_params" in result:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # optuna's matplotlib plots are "experimental"
            axes = optuna.visualization.matplotlib.plot_parallel_coordinate(study)
        plot = folder / "parallel_coordinates.png"
        axes.figure.savefig(plot, dpi=100, bbox_inches="tight")
        plt.close(axes.figure)
        client.log_artifact(parent_run_id, str(plot), "sweep")
        client.log_metric(parent_run_id, f"best_{study.user_attrs['metric']}", result["best_value"])
        for name, value in result["best_params"].items():
            client.set_tag(parent_run_id, f"best.{name}", str(value))
    best = folder / "best.json"
    best.write_text(json.dumps(result, indent=2, default=str))
    client.log_artifact(parent_run_id, str(best), "sweep")
    return result
