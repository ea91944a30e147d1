"""The Dagster definitions (pipelines/orchestrate) on a real Dagster instance: load, schedule, sensor, parameters."""

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

dagster = pytest.importorskip("dagster")
from dagster import (  # noqa: E402
    DagsterInstance,
    DagsterRunStatus,
    Definitions,
    build_schedule_context,
    build_sensor_context,
    instance_for_test,
)
from dagster._core.test_utils import create_run_for_test  # noqa: E402

from pipelines.flow.steps import FLOWS  # noqa: E402
from pipelines.orchestrate.definitions import JOBS, TRAINING_TAG, defs, monitor_schedule, retrain_on_drift  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def test_definitions_load_and_follow_the_flow_table():
    Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    assert {j.name for j in repo.get_all_jobs()} == {"training", "monitor", "retrain"}
    for name, job in JOBS.items():
        assert [n.name for n in job.graph.nodes_in_topological_order] == ["start", *FLOWS[name], "finish"]
        assert (TRAINING_TAG in job.tags) == (name in ("training", "retrain"))


def test_the_instance_config_limits_training_to_one_run():
    config = yaml.safe_load((ROOT / "deploy" / "dagster" / "dagster.yaml").read_text())
    with instance_for_test(overrides=config) as instance:  # dagster validates the config here
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
        assert {"key": TRAINING_TAG, "limit": 1} in limits


def test_a_schedule_tick_requests_a_monitor_run():
    context = build_schedule_context(scheduled_execution_time=datetime(2026, 1, 1, 13, tzinfo=UTC))
    requests = monitor_schedule.evaluate_tick(context).run_requests
    assert len(requests) == 1 and monitor_schedule.job_name == "monitor"
    assert monitor_schedule.cron_schedule == "0 * * * *"


def test_the_sensor_requests_one_retrain_per_drift_verdict():
    with instance_for_test() as instance:
        config = {"ops": {"start": {"config": {"parameters": {"epochs": "1"}, "output_dir": ""}}}}
        create_run_for_test(instance, job_name="monitor", status=DagsterRunStatus.SUCCESS, tags={"verdict": "ok"})
        drift = create_run_for_test(instance, job_name="monitor", status=DagsterRunStatus.SUCCESS,
                                    tags={"verdict": "drift"}, run_config=config)
        context = build_sensor_context(instance=instance)
        requests = retrain_on_drift.evaluate_tick(context).run_requests
        assert [r.run_key for r in requests] == [drift.run_id]
        assert requests[0].run_config == config and requests[0].tags["trigger"] == "drift"
        again = retrain_on_drift.evaluate_tick(build_sensor_context(instance=instance, cursor=context.cursor))
        assert again.run_requests == [] and again.skip_message


@pytest.mark.parametrize(("job", "name", "value"), [("training", "epochs", "many"),
                                                   ("monitor", "epochs", "1"),
                                                   ("retrain", "no_such_parameter", "1")])
def test_a_bad_parameter_fails_the_run_before_any_step(job, name, value):
    result = JOBS[job].execute_in_process(
        run_config={"ops": {"start": {"config": {"parameters": {name: value}}}}},
        instance=DagsterInstance.ephemeral(), raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_key == "start" and name in str(failure.event_specific_data.error)
    started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert started == {"start"}


@pytest.mark.e2e
def test_a_failed_notebook_fails_the_monitor_job_with_the_executed_notebook(tmp_path, monkeypatch):
    """The monitor job in process runs the CLI's notebook and MLflow runs; a failing notebook fails the job.

    The tiny model has no reference profile, so monitor.ipynb raises ProfileMissing: the step fails with its
    executed notebook logged, the parent MLflow run is FAILED and ``finish`` never runs.
    """
    from contextlib import closing

    from mlflow import MlflowClient
    from tiny_model import tiny_store

    from scoring import inference_log, tracking

    monkeypatch.setenv(tracking.STATE_DIR_ENV, str(tmp_path))
    db = tmp_path / "inference.db"
    with closing(inference_log.connect(db)):
        pass
    with tiny_store(tmp_path) as (_, uri), instance_for_test() as instance:
        parameters = {"tracking_uri": uri, "inference_db": str(db)}
        result = JOBS["monitor"].execute_in_process(
            run_config={"ops": {"start": {"config": {"parameters": parameters, "output_dir": str(tmp_path / "out")}}}},
            instance=instance, raise_on_error=False)
        assert not result.success
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        assert failure.step_key == "monitor" and "ProfileMissing" in str(failure.event_specific_data.error)
        started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
        assert started == {"start", "monitor"}
        assert (tmp_path / "out" / "monitor.ipynb").is_file()
        client = MlflowClient(uri)
        runs = client.search_runs([client.get_experiment_by_name("sentiment").experiment_id])
        by_step = {r.data.tags["step"]: r for r in runs}
        assert by_step["pipeline"].info.status == "FAILED" and by_step["monitor"].info.status == "FAILED"
        files = {a.path for a in client.list_artifacts(by_step["monitor"].info.run_id, "notebook")}
        assert files == {"notebook/monitor.ipynb", "notebook/monitor.html"}


@pytest.mark.e2e
def test_the_training_job_in_process_registers_one_version_with_the_clis_notebooks(mlflow_uri, tiny_csv, tmp_path):
    """The training job executed in process on tiny parameters: the four steps' notebooks run through the same
    runner as ``python -m pipelines run``, under one MLflow parent run, register exactly one version, and each
    op's Dagster metadata links its MLflow run and executed notebook (the train step's model version too)."""
    from mlflow import MlflowClient

    parameters = {"epochs": "1", "max_length": "32", "min_metric": "0.0", "batch_size": "16",
                  "dataset": str(tiny_csv)}
    with instance_for_test() as instance:
        result = JOBS["training"].execute_in_process(
            run_config={"ops": {"start": {"config": {"parameters": parameters, "output_dir": str(tmp_path / "out")}}}},
            instance=instance)
        assert result.success
        metadata = {e.step_key: e.event_specific_data.metadata for e in result.all_events
                    if e.event_type_value == "STEP_OUTPUT"}
    assert set(metadata) == {"start", *FLOWS["training"], "finish"}
    assert str(metadata["train"]["model_version"].value) == "1"
    for step in FLOWS["training"]:
        assert "mlflow_run" in metadata[step] and metadata[step]["executed notebook"].value.endswith(f"{step}.ipynb")

    client = MlflowClient()
    assert [str(v.version) for v in client.search_model_versions("name = 'sentiment'")] == ["1"]
    runs = client.search_runs([client.get_experiment_by_name("sentiment").experiment_id])
    by_step = {r.data.tags["step"]: r for r in runs}
    assert set(by_step) == {"pipeline", *FLOWS["training"]}
    assert by_step["pipeline"].info.status == "FINISHED"
    for step in FLOWS["training"]:  # the notebooks `python -m pipelines run` logs, each in its step's run
        assert by_step[step].data.tags["mlflow.parentRunId"] == by_step["pipeline"].info.run_id
        files = {a.path for a in client.list_artifacts(by_step[step].info.run_id, "notebook")}
        assert files == {f"notebook/{step}.ipynb", f"notebook/{step}.html"}
