"""What a step notebook does at its start and end (the notebooks' side of the runner).

A notebook runs either standalone (JupyterLab, or ``papermill nb.ipynb out.ipynb``)
and then opens its own MLflow run, or under the pipeline runner, which passes
``mlflow_run_id`` (a nested run it created) and ``result_path`` (where the step
writes what later steps need, as JSON)::

    cfg = notebook.config(globals())
    run = notebook.start("train", cfg, mlflow_run_id)
    ...
    notebook.finish(result_path, standalone=not mlflow_run_id, model_version=...)
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import mlflow
import transformers

from pipelines.config import PipelineConfig, build_config
from scoring import tracking

RUNNER_PARAMETERS = ("mlflow_run_id", "result_path")


def config(namespace: dict[str, Any]) -> PipelineConfig:
    """The validated config from a notebook's parameter variables (its other variables never leak in)."""
    names = PipelineConfig.model_fields
    return build_config({k: v for k, v in namespace.items() if k in names})


def start(step: str, cfg: PipelineConfig, mlflow_run_id: str = "") -> mlflow.ActiveRun:
    """Open the step's MLflow run: the runner's nested run, or a new one."""
    _quiet_libraries()
    tracking.setup(cfg.tracking_uri, cfg.experiment_name)
    if mlflow.active_run() is not None:
        mlflow.end_run()
    if mlflow_run_id:
        run = mlflow.start_run(run_id=mlflow_run_id)
    else:
        run = mlflow.start_run(run_name=step, tags={"step": step, "launched_by": "notebook"})
    os.environ["MLFLOW_RUN_ID"] = run.info.run_id
    print(f"MLflow run {run.info.run_id} ({step}) in {mlflow.get_tracking_uri()}")
    return run


def _quiet_libraries() -> None:
    """Keep executed notebooks (and the terminal they stream to) readable: no loading bars, reports or hints."""
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    # MLflow's hints about inferred integer schemas and ambiguous local dataset sources, at every log_input
    warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer", category=UserWarning)
    warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted", category=UserWarning)


def output_dir(result_path: str, run: mlflow.ActiveRun) -> Path:
    """The step's folder for files it keeps (checkpoints): the runner's output folder, else one per run."""
    if result_path:
        return Path(result_path).resolve().parent
    return tracking.state_dir() / "output" / f"notebook-{run.info.run_id[:8]}"


def finish(result_path: str = "", standalone: bool = True, **result: Any) -> dict[str, Any]:
    """Write the step's result for the runner and close a standalone run."""
    if result_path:
        Path(result_path).write_text(json.dumps(result, indent=2, default=str))
    run = mlflow.active_run()
    if run is not None:
        mlflow.set_tags({f"result.{k}": str(v) for k, v in result.items() if isinstance(v, (str, int, float, bool))})
        if standalone:
            mlflow.end_run()
    return result
