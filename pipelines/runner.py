"""Runs the notebook steps in order with Papermill, tracked in MLflow.

One parent run per pipeline run, one nested run per step. Every executed
notebook is logged to its step's run as ``notebook/<step>.ipynb`` and as an
nbconvert render ``notebook/<step>.html`` (which the MLflow UI previews), also
when the step failed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import nbformat
import papermill
from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from nbconvert import HTMLExporter

from pipelines import tracking
from pipelines.config import PipelineConfig
from pipelines.data import load_dataset, looks_like_path
from pipelines.steps import RUNNER_PARAMETERS, StepFailed

NOTEBOOKS_DIR = tracking.PROJECT_ROOT / "notebooks"
TRAINING_STEPS = ("eda", "train", "evaluate", "promote")
RETRAIN_STEPS = ("train", "evaluate", "promote")
MONITOR_STEPS = ("monitor",)


@dataclass
class PipelineResult:
    """What a pipeline run produced."""

    parent_run_id: str
    output_dir: Path
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)


def validate(cfg: PipelineConfig, steps: Sequence[str]) -> None:
    """Refuse bad data parameters before any notebook runs (ConfigError names the parameter)."""
    if any(s in steps for s in ("eda", "train", "evaluate")) and (
        looks_like_path(cfg.dataset) or cfg.dataset.startswith("embedded:")
    ):
        load_dataset(cfg.dataset, cfg.text_column, cfg.label_column)
    if "monitor" in steps:
        from pipelines.monitoring import validate as validate_monitor

        validate_monitor(cfg)


def render_html(notebook: Path) -> Path:
    """nbconvert's HTML render next to the notebook."""
    body, _ = HTMLExporter().from_notebook_node(nbformat.read(notebook, as_version=4))
    html = notebook.with_suffix(".html")
    html.write_text(body, encoding="utf-8")
    return html


def _notebook_parameters(notebook: Path) -> set[str]:
    return set(papermill.inspect_notebook(str(notebook)))


def run_step(
    step: str,
    cfg: PipelineConfig,
    parent_run_id: str,
    output_dir: Path,
    notebooks_dir: Path = NOTEBOOKS_DIR,
    extra: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Execute one notebook in a nested run; log it whatever happens; return its result."""
    client = MlflowClient()
    source = notebooks_dir / f"{step}.ipynb"
    executed = output_dir / f"{step}.ipynb"
    result_path = output_dir / f"{step}.result.json"
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    run = client.create_run(
        experiment_id, tags={MLFLOW_PARENT_RUN_ID: parent_run_id, MLFLOW_RUN_NAME: step, "step": step,
                             "launched_by": "pipeline"}
    )
    run_id = run.info.run_id
    declared = _notebook_parameters(source)
    values = {**cfg.model_dump(), **(extra or {}), "mlflow_run_id": run_id, "result_path": str(result_path)}
    parameters = {k: v for k, v in values.items() if k in declared}
    missing = [p for p in RUNNER_PARAMETERS if p not in declared]
    if missing:
        raise ValueError(f"notebook {source} lacks runner parameter(s) {missing} in its parameters cell")
    print(f"[{step}] running {source.name} → {executed}", flush=True)
    started = time.perf_counter()
    error: str | None = None
    try:
        papermill.execute_notebook(
            str(source), str(executed), parameters=parameters, kernel_name="python3",
            progress_bar=progress,
        )
    except Exception as err:
        error = f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
    seconds = time.perf_counter() - started
    if executed.exists():
        client.log_artifact(run_id, str(executed), "notebook")
        client.log_artifact(run_id, str(render_html(executed)), "notebook")
    client.log_metric(run_id, "step_seconds", seconds)
    if error is not None:
        client.set_tag(run_id, "error", error[:5000])
        client.set_terminated(run_id, "FAILED")
        raise StepFailed(step, executed, run_id, error)
    client.set_terminated(run_id, "FINISHED")
    print(f"[{step}] done in {seconds:.0f}s", flush=True)
    return json.loads(result_path.read_text()) if result_path.exists() else {}


def run_pipeline(
    cfg: PipelineConfig,
    steps: Sequence[str] = TRAINING_STEPS,
    output_dir: Path | None = None,
    notebooks_dir: Path = NOTEBOOKS_DIR,
    progress: bool = True,
    tags: dict[str, str] | None = None,
) -> PipelineResult:
    """Validate, then run ``steps`` in order under one parent run (with extra ``tags``).

    A failing step marks its run and the parent FAILED and stops the pipeline
    (later steps never run, so the alias cannot move) by raising StepFailed.
    """
    validate(cfg, steps)
    tracking.setup(cfg.tracking_uri, cfg.experiment_name)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    client = MlflowClient()
    experiment = mlflow.get_experiment_by_name(cfg.experiment_name)
    parent = client.create_run(
        experiment.experiment_id,
        tags={MLFLOW_RUN_NAME: f"pipeline-{stamp}", "step": "pipeline", "steps": ",".join(steps),
              "git_commit": tracking.git_commit(), **(tags or {})},
    )
    parent_id = parent.info.run_id
    out = Path(output_dir or tracking.state_dir() / "output" / f"{stamp}-{parent_id[:8]}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    for key, value in cfg.model_dump().items():
        client.log_param(parent_id, key, value)
    result = PipelineResult(parent_id, out)
    carried: dict[str, Any] = {}
    try:
        for step in steps:
            step_result = run_step(step, cfg, parent_id, out, notebooks_dir, carried, progress)
            result.steps[step] = step_result
            if "model_version" in step_result:
                carried["model_version"] = str(step_result["model_version"])
    except BaseException:
        client.set_terminated(parent_id, "FAILED")
        raise
    summary = out / "pipeline.json"
    summary.write_text(json.dumps({"parent_run_id": parent_id, "steps": result.steps}, indent=2, default=str))
    client.log_artifact(parent_id, str(summary))
    for step_result in result.steps.values():
        for key in ("model_version", "promoted", "decision", "verdict"):
            if key in step_result:
                client.set_tag(parent_id, key, str(step_result[key]))
    client.set_terminated(parent_id, "FINISHED")
    return result
