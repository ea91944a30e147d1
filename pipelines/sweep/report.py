"""The sweep's results: the trials table, its plots and the best trial, on the sweep's MLflow parent run
and in the report notebook (notebooks/sweep.ipynb)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import optuna
import pandas as pd
from matplotlib.figure import Figure
from mlflow import MlflowClient
from optuna.trial import TrialState

from pipelines.sweep.study import summary

PLOTS = {  # file stem → Optuna's matplotlib plot
    "parallel_coordinates": optuna.visualization.matplotlib.plot_parallel_coordinate,
    "history": optuna.visualization.matplotlib.plot_optimization_history,
    "epochs": optuna.visualization.matplotlib.plot_intermediate_values,
    "importances": optuna.visualization.matplotlib.plot_param_importances,
}


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, objective, parameters, where it ran and what it registered."""
    rows = []
    for t in study.trials:
        rows.append({"trial": t.number, "state": t.state.name, study.user_attrs.get("metric", "value"): t.value,
                     **{f"p.{k}": v for k, v in t.params.items()},
                     "epochs_reported": len(t.intermediate_values), "pruned_at": t.user_attrs.get("pruned_at"),
                     "minutes": round(t.duration.total_seconds() / 60, 2) if t.duration else None,
                     "worker": t.user_attrs.get("worker"), "model_version": t.user_attrs.get("model_version"),
                     "pipeline_run_id": t.user_attrs.get("pipeline_run_id")})
    return pd.DataFrame(rows).set_index("trial") if rows else pd.DataFrame()


def figures(study: optuna.Study) -> dict[str, Figure]:
    """The plots that have something to show (importances need two finished trials that differ)."""
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    out: dict[str, Figure] = {}
    for name, plot in PLOTS.items():
        if not done or (name == "importances" and len({json.dumps(t.params, sort_keys=True) for t in done}) < 2) \
                or (name == "epochs" and not any(t.intermediate_values for t in study.trials)):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna's matplotlib plots are "experimental"
            axes = plot(study)
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        figure.set_size_inches(10, 5)
        out[name] = figure
    return out


def log_results(study: optuna.Study, parent_run_id: str, folder: Path) -> dict:
    """Write and log ``trials.csv``, the plots (``<name>.png``) and ``best.json``; return the summary."""
    folder.mkdir(parents=True, exist_ok=True)
    client = MlflowClient()
    table = folder / "trials.csv"
    trials_table(study).to_csv(table)
    client.log_artifact(parent_run_id, str(table), "sweep")
    result = summary(study)
    for name, figure in figures(study).items():
        plot = folder / f"{name}.png"
        figure.savefig(plot, dpi=100, bbox_inches="tight")
        plt.close(figure)
        client.log_artifact(parent_run_id, str(plot), "sweep")
    if "best_params" in result:
        client.log_metric(parent_run_id, f"best_{study.user_attrs['metric']}", result["best_value"])
        for name, value in result["best_params"].items():
            client.set_tag(parent_run_id, f"best.{name}", str(value))
    best = folder / "best.json"
    best.write_text(json.dumps(result, indent=2, default=str))
    client.log_artifact(parent_run_id, str(best), "sweep")
    return result
