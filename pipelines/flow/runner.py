"""Runs the notebook steps in order with Papermill, tracked in MLflow.

One parent run per pipeline run, one nested run per step. Every executed
notebook is logged to its step's run as ``notebook/<step>.ipynb`` and as an
nbconvert render ``notebook/<step>.html`` (which the MLflow UI previews), also
when the step failed. What each step takes and passes on is declared in
:mod:`pipelines.flow.steps`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import nbformat
import papermill
from jupyter_client.manager import AsyncKernelManager
from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from nbconvert import HTMLExporter

from pipelines.config import ConfigError, PipelineConfig
from pipelines.flow.notebook import RUNNER_PARAMETERS
from pipelines.flow.steps import FLOWS, Step, carried, check_parameters, steps_of
from scoring import tracking

NOTEBOOKS_DIR = tracking.PROJECT_ROOT / "notebooks"


class IpcKernelManager(AsyncKernelManager):
    """The step's kernel on Unix sockets in a private folder: no TCP port to reach or eavesdrop on."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.transport = "ipc"
        self.socket_dir = Path(tempfile.mkdtemp(prefix="sentiment-kernel-"))
        self.ip = str(self.socket_dir / "ipc")

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        if not restart:  # the kernel is gone: its private folder too
            shutil.rmtree(self.socket_dir, ignore_errors=True)


class StepOutput:
    """What a step's cells print, written through to a terminal stream line by line with ``[step]`` before it."""

    def __init__(self, step: str, stream: Any):
        self.prefix, self.stream, self.pending = f"[{step}] ", stream, ""

    def write(self, text: str) -> None:
        lines = (self.pending + text.replace("\r", "\n")).split("\n")
        self.pending = lines.pop()
        for line in lines:
            if line.strip():
                self.stream.write(self.prefix + line + "\n")

    def flush(self) -> None:
        self.stream.flush()


class StepFailed(RuntimeError):
    """A notebook step raised; its executed notebook was logged."""

    def __init__(self, step: str, notebook: Path, run_id: str, cause: str):
        super().__init__(f"step {step!r} failed: {cause} (executed notebook: {notebook}, MLflow run {run_id})")
        self.step, self.notebook, self.run_id = step, notebook, run_id


@dataclass
class PipelineResult:
    """What a pipeline run produced."""

    parent_run_id: str
    output_dir: Path
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)


def render_html(notebook: Path) -> Path:
    """nbconvert's HTML render next to the notebook."""
    body, _ = HTMLExporter().from_notebook_node(nbformat.read(notebook, as_version=4))
    html = notebook.with_suffix(".html")
    html.write_text(body, encoding="utf-8")
    return html


def check_notebook(step: Step, source: Path) -> None:
    """The notebook must declare exactly what the table says the step takes (plus the runner's parameters)."""
    if not source.is_file():
        raise ConfigError(f"step {step.name!r}: notebook {source} does not exist")
    declared = set(papermill.inspect_notebook(str(source)))
    expected = set(step.parameters) | set(RUNNER_PARAMETERS)
    if declared != expected:
        missing, extra = sorted(expected - declared), sorted(declared - expected)
        raise ConfigError(f"notebook {source} does not declare what step {step.name!r} takes "
                          f"(pipelines/flow/steps.py): missing {missing}, not taken {extra}")


def run_step(
    step: Step,
    cfg: PipelineConfig,
    parent_run_id: str,
    output_dir: Path,
    notebooks_dir: Path = NOTEBOOKS_DIR,
    extra: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Execute one notebook in a nested run; log it whatever happens; return its result.

    With ``progress``, what the cells print (training's progress lines among it) shows in the terminal as
    it comes, each line led by ``[step]``, on stderr: stdout stays for the CLI's result JSON.
    """
    client = MlflowClient()
    source = notebooks_dir / step.notebook
    executed = output_dir / step.notebook
    result_path = output_dir / f"{step.name}.result.json"
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    run = client.create_run(
        experiment_id, tags={MLFLOW_PARENT_RUN_ID: parent_run_id, MLFLOW_RUN_NAME: step.name, "step": step.name,
                             "launched_by": "pipeline"}
    )
    run_id = run.info.run_id
    values = {**cfg.model_dump(), **(extra or {}), "mlflow_run_id": run_id, "result_path": str(result_path)}
    parameters = {k: values[k] for k in (*step.parameters, *RUNNER_PARAMETERS)}
    print(f"[{step.name}] running {source.name} → {executed}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    error: str | None = None
    try:
        # tqdm.auto's "IProgress not found" in every kernel: its bars are off, ProgressLines prints instead
        os.environ.setdefault("PYTHONWARNINGS", "ignore:IProgress not found")
        papermill.execute_notebook(
            str(source), str(executed), parameters=parameters, kernel_name="python3", progress_bar=False,
            stdout_file=StepOutput(step.name, sys.stderr) if progress else None,
            stderr_file=StepOutput(step.name, sys.stderr) if progress else None,
            kernel_manager_class=IpcKernelManager,
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
        raise StepFailed(step.name, executed, run_id, error)
    client.set_terminated(run_id, "FINISHED")
    print(f"[{step.name}] done in {seconds:.0f}s", file=sys.stderr, flush=True)
    return json.loads(result_path.read_text()) if result_path.exists() else {}


def open_pipeline(
    cfg: PipelineConfig,
    steps: Sequence[str] = FLOWS["training"],
    output_dir: Path | None = None,
    notebooks_dir: Path = NOTEBOOKS_DIR,
    tags: dict[str, str] | None = None,
) -> tuple[list[Step], PipelineResult]:
    """Check the parameters and notebooks of ``steps``, then open the parent run; return the plan and result."""
    plan = steps_of(steps)
    check_parameters(cfg, plan)
    for step in plan:  # all of them before the first one runs
        check_notebook(step, notebooks_dir / step.notebook)
    tracking.setup(cfg.tracking_uri, cfg.experiment_name)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    client = MlflowClient()
    experiment = mlflow.get_experiment_by_name(cfg.experiment_name)
    parent = client.create_run(
        experiment.experiment_id,
        tags={MLFLOW_RUN_NAME: f"pipeline-{stamp}", "step": "pipeline", "steps": ",".join(s.name for s in plan),
              "git_commit": tracking.git_commit(), **(tags or {})},
    )
    parent_id = parent.info.run_id
    out = Path(output_dir or tracking.state_dir() / "output" / f"{stamp}-{parent_id[:8]}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    for key, value in cfg.model_dump().items():
        client.log_param(parent_id, key, value)
    return plan, PipelineResult(parent_id, out)


def close_pipeline(plan: Sequence[Step], result: PipelineResult) -> None:
    """Write and log pipeline.json, tag the parent with the steps' results, mark it FINISHED."""
    client = MlflowClient()
    summary = result.output_dir / "pipeline.json"
    summary.write_text(json.dumps({"parent_run_id": result.parent_run_id, "steps": result.steps}, indent=2,
                                  default=str))
    client.log_artifact(result.parent_run_id, str(summary))
    for step in plan:
        for key in step.tags:
            if key in result.steps[step.name]:
                client.set_tag(result.parent_run_id, key, str(result.steps[step.name][key]))
    client.set_terminated(result.parent_run_id, "FINISHED")


def run_pipeline(
    cfg: PipelineConfig,
    steps: Sequence[str] = FLOWS["training"],
    output_dir: Path | None = None,
    notebooks_dir: Path = NOTEBOOKS_DIR,
    progress: bool = True,
    tags: dict[str, str] | None = None,
) -> PipelineResult:
    """Check the parameters, then run ``steps`` in order under one parent run (with extra ``tags``).

    A given parameter that none of ``steps`` takes, or a notebook that does not declare what its step
    takes, is refused (ConfigError) before anything runs.
    A failing step marks its run and the parent FAILED and stops the pipeline
    (later steps never run, so the alias cannot move) by raising StepFailed.
    """
    plan, result = open_pipeline(cfg, steps, output_dir, notebooks_dir, tags)
    given: dict[str, Any] = {}
    try:
        for step in plan:
            step_result = run_step(step, cfg, result.parent_run_id, result.output_dir, notebooks_dir, given, progress)
            result.steps[step.name] = step_result
            given.update(carried(step, step_result))
    except BaseException:
        MlflowClient().set_terminated(result.parent_run_id, "FAILED")
        raise
    close_pipeline(plan, result)
    return result
