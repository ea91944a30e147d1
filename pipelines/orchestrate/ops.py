"""Dagster ops of the pipeline: ``start`` (check the parameters, open the MLflow parent run), one op per
step of :data:`pipelines.flow.steps.STEPS` (its notebook through :func:`pipelines.flow.runner.run_step`),
and ``finish`` (close the parent run as ``python -m pipelines run`` does).

The run's parameters are the op config of ``start``: ``parameters`` holds the same names as ``-p`` and is
checked by the same config and step checks, so a bad one fails ``start``, before any step.
"""


from pathlib import Path
from typing import Any

from dagster import Failure, Field, MetadataValue, OpDefinition, OpExecutionContext, Permissive, op
from mlflow import MlflowClient

from pipelines.config import ConfigError, PipelineConfig, build_config
from pipelines.flow.runner import PipelineResult, StepFailed, close_pipeline, open_pipeline, run_step
from pipelines.flow.steps import FLOWS, STEPS, Step, carried

START_CONFIG = {
    "parameters": Field(Permissive(), default_value={}, description="pipeline parameters, as `-p NAME VALUE`"),
    "output_dir": Field(str, default_value="", description="where executed notebooks go (default: the state dir)"),
}
FIGURES = (int, float, str, bool)


def flow_of(context: OpExecutionContext) -> str:
    """The flow a job runs: its name (training, retrain, monitor)."""
    return context.job_def.name


def _config(state: dict[str, Any]) -> PipelineConfig:
    return build_config({k: str(v) for k, v in state["parameters"].items()})


def _run_link(cfg: PipelineConfig, run_id: str) -> MetadataValue:
    """A link to the MLflow run where the tracking server has a UI, else its id."""
    client = MlflowClient()
    run = client.get_run(run_id)
    uri = cfg.tracking_uri
    if uri.startswith(("http://", "https://")):
        return MetadataValue.url(f"{uri.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run_id}")
    return MetadataValue.text(run_id)


@op(config_schema=START_CONFIG, tags={"kind": "mlflow"})
def start(context: OpExecutionContext) -> dict[str, Any]:
    """Check the parameters and notebooks of the job's flow; open the MLflow parent run."""
    parameters = dict(context.op_config["parameters"])
    steps = FLOWS[flow_of(context)]
    try:
        cfg = build_config({k: str(v) for k, v in parameters.items()})
        plan, result = open_pipeline(cfg, steps, context.op_config["output_dir"] or None,
                                     tags={"trigger": context.run.tags.get("trigger", "dagster"),
                                           "dagster_run_id": context.run_id})
    except ConfigError as err:
        raise Failure(description=f"bad parameters: {err}") from None
    context.log.info(f"MLflow parent run {result.parent_run_id}: {', '.join(s.name for s in plan)}")
    return {"parameters": parameters, "parent_run_id": result.parent_run_id, "output_dir": str(result.output_dir),
            "given": {}, "steps": {}}


def step_op(step: Step) -> OpDefinition:
    """The op of one notebook step: it runs the step's notebook in a nested MLflow run of the parent."""

    @op(name=step.name, description=f"notebooks/{step.notebook} through the pipeline's Papermill runner",
        tags={"kind": "jupyter"})
    def _run(context: OpExecutionContext, state: dict[str, Any]) -> dict[str, Any]:
        cfg = _config(state)
        out = Path(state["output_dir"])
        try:
            result = run_step(step, cfg, state["parent_run_id"], out, extra=state["given"], progress=False)
        except StepFailed as err:
            MlflowClient().set_terminated(state["parent_run_id"], "FAILED")
            raise Failure(description=str(err), metadata={
                "executed notebook": MetadataValue.path(str(err.notebook)),
                "notebook (html)": MetadataValue.path(str(err.notebook.with_suffix(".html"))),
                "mlflow_run": _run_link(cfg, err.run_id)}) from None
        runs = MlflowClient().search_runs(
            [MlflowClient().get_run(state["parent_run_id"]).info.experiment_id],
            f"tags.mlflow.parentRunId = '{state['parent_run_id']}' and tags.step = '{step.name}'")
        figures = {k: v for k, v in result.items() if isinstance(v, FIGURES) and k not in ("result_path",)}
        context.add_output_metadata({
            **({"mlflow_run": _run_link(cfg, runs[0].info.run_id)} if runs else {}),
            "executed notebook": MetadataValue.path(str(out / step.notebook)),
            **{k: (MetadataValue.text(v) if isinstance(v, str) else v) for k, v in figures.items()},
        })
        return {**state, "given": {**state["given"], **carried(step, result)},
                "steps": {**state["steps"], step.name: result}}

    return _run


STEP_OPS: dict[str, OpDefinition] = {name: step_op(step) for name, step in STEPS.items()}


@op(tags={"kind": "mlflow"})
def finish(context: OpExecutionContext, state: dict[str, Any]) -> dict[str, Any]:
    """Close the parent run (pipeline.json, tags) and tag this Dagster run with the flow's verdict."""
    plan = [STEPS[name] for name in FLOWS[flow_of(context)]]
    result = PipelineResult(state["parent_run_id"], Path(state["output_dir"]), state["steps"])
    close_pipeline(plan, result)
    verdict = state["steps"].get("monitor", {}).get("verdict")
    if verdict:  # the retrain sensor reads it
        context.instance.add_run_tags(context.run_id, {"verdict": str(verdict)})
    context.add_output_metadata({"mlflow_parent_run": _run_link(_config(state), state["parent_run_id"]),
                                 **({"verdict": verdict} if verdict else {})})
    return state
