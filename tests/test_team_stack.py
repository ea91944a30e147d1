"""The team stack for real: PostgreSQL + SeaweedFS (S3) + ``mlflow server --app-name basic-auth``.

One stack (``python -m tools.stack``'s own code) is started for the module on free loopback ports.
Every part of the project then runs against it with nothing but a client's environment (tracking
URI, MLflow login, the inference log's URL): the tiny pipeline, the served alias and its moves,
rollback, export, two API replicas sharing one inference log read by the monitor, and the refusals.
Skipped, with the reason, only where PostgreSQL's server binaries or ``weed`` are not installed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import boto3
import botocore
import mlflow
import pytest
import requests
from botocore.config import Config
from mlflow import MlflowClient

from scoring import inference_log
from tools.harness import ROOT, app_server, child_env, wait_for
from tools.stack import Stack
from tools.stack.processes import StackError
from tools.stack.settings import SECRETS, free_port_settings

pytestmark = [pytest.mark.e2e, pytest.mark.stack]
TINY = {"epochs": "1", "max_length": "32", "min_metric": "0.0", "batch_size": "16"}
NAME = "sentiment"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    home = Path(tempfile.mkdtemp(prefix="sentiment-stack-"))
    home.chmod(0o755)  # PostgreSQL runs as the postgres user when the tests run as root
    try:
        team = Stack(free_port_settings(home))
    except StackError as exc:
        shutil.rmtree(home, ignore_errors=True)
        if "not found" in str(exc):
            pytest.skip(f"the team stack cannot run here: {exc}")
        raise
    try:
        team.up(log=lambda _: None)
        yield team
    finally:
        team.down(log=lambda _: None)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def as_pipeline(stack: Stack) -> Iterator[dict[str, str]]:
    """This process is a client of the stack with the pipeline's login (as a laptop or CI would be)."""
    env = stack.client_env("pipeline")
    with pytest.MonkeyPatch.context() as mp:
        for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME"):
            mp.delenv(key, raising=False)
        for key, value in env.items():
            mp.setenv(key, value)
        mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
        yield env


@pytest.fixture(scope="module")
def pipeline_run(stack: Stack, as_pipeline: dict[str, str], tiny_csv: Path) -> dict:
    """The tiny pipeline run by the CLI with the client environment only, in a fresh state folder."""
    home = Path(tempfile.mkdtemp(prefix="sentiment-client-"))
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines", "run", "--output-dir", str(home / "out"),
         *[a for k, v in {**TINY, "dataset": str(tiny_csv)}.items() for a in ("-p", k, v)]],
        cwd=ROOT, capture_output=True, text=True, timeout=1800,
        env=child_env({**as_pipeline, "SENTIMENT_MLOPS_HOME": str(home)}),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout  # the result JSON on lines of its own, after MLflow's "View run … at: http://…" links
    result = json.loads(out if out.startswith("{") else out[out.index("\n{") + 1:])
    return {"home": home, "output": proc.stdout + proc.stderr, "result": result}


def _bucket_keys(stack: Stack) -> set[str]:
    s3 = stack.objectstore.s3_client()
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=stack.settings.bucket)
    return {obj["Key"] for page in pages for obj in page.get("Contents", [])}


def test_the_pipeline_stores_everything_on_the_server_and_in_the_bucket(stack, pipeline_run):
    client = MlflowClient()
    prod = client.get_model_version_by_alias(NAME, "production")
    assert str(prod.version) == pipeline_run["result"]["steps"]["train"]["model_version"] == "1"
    assert prod.tags["promotion.decision"] == "promoted"

    parent = pipeline_run["result"]["parent_run_id"]
    runs = mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{parent}'", output_format="list",
                              search_all_experiments=True)
    assert {r.data.tags["step"] for r in runs} == {"eda", "train", "evaluate", "promote"}
    keys = _bucket_keys(stack)
    for run in runs:
        step, run_id = run.data.tags["step"], run.info.run_id
        assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri  # proxied
        for suffix in ("ipynb", "html"):
            assert any(k.endswith(f"{run_id}/artifacts/notebook/{step}.{suffix}") for k in keys), (step, suffix)
    # what the MLflow UI fetches to show a notebook: the HTML, through the server, with a login
    evaluate = next(r for r in runs if r.data.tags["step"] == "evaluate")
    page = requests.get(f"{stack.settings.tracking_uri}/get-artifact",
                        params={"path": "notebook/evaluate.html", "run_uuid": evaluate.info.run_id},
                        auth=("pipeline", stack.settings.secret("pipeline_password")), timeout=30)
    assert page.status_code == 200 and "Against the baselines" in page.text
    # the model's files are in the bucket too, and nothing went to a local artifact folder
    assert any("model.safetensors" in k for k in keys) and any(k.endswith(".onnx") for k in keys)
    home = pipeline_run["home"]
    assert not list(home.rglob("mlartifacts")) and not (home / "mlflow.db").exists()
    assert not (ROOT / "mlartifacts" / "1" / parent).exists()


def test_logins_and_permissions_are_enforced(stack, pipeline_run):
    s = stack.settings
    search = f"{s.tracking_uri}/api/2.0/mlflow/experiments/search?max_results=5"
    create = f"{s.tracking_uri}/api/2.0/mlflow/experiments/create"
    for auth in (None, ("pipeline", "wrong password"), ("admin", "password1234"), ("nobody", "x")):
        assert requests.get(search, auth=auth, timeout=30).status_code == 401, auth  # reads
        assert requests.post(create, json={"name": "x"}, auth=auth, timeout=30).status_code == 401, auth  # writes
    assert requests.get(f"{s.tracking_uri}/get-artifact", params={"path": "notebook/eda.html", "run_uuid": "x"},
                        timeout=30).status_code == 401

    # a team member without permission on the experiment can read it but not log to it
    admin = ("admin", s.secret("admin_password"))
    created = requests.post(f"{s.tracking_uri}/api/2.0/mlflow/users/create",
                            json={"username": "alice", "password": "alice-secret-1234"}, auth=admin, timeout=30)
    assert created.status_code == 200, created.text
    alice = ("alice", "alice-secret-1234")
    experiment = MlflowClient().get_experiment_by_name(NAME).experiment_id
    assert requests.get(search, auth=alice, timeout=30).status_code == 200
    denied = requests.post(f"{s.tracking_uri}/api/2.0/mlflow/runs/create",
                           json={"experiment_id": experiment}, auth=alice, timeout=30)
    assert denied.status_code == 403, denied.text
    # the serving login reads the registry but cannot move the alias
    serving = ("serving", s.secret("serving_password"))
    moved = requests.post(f"{s.tracking_uri}/api/2.0/mlflow/registered-models/alias",
                          json={"name": NAME, "alias": "production", "version": "1"}, auth=serving, timeout=30)
    assert moved.status_code == 403, moved.text

    # the object store: no keys, wrong keys, and SeaweedFS' own HTTP ports are refused
    anonymous = boto3.client("s3", endpoint_url=s.s3_endpoint, region_name="us-east-1",
                             config=Config(signature_version=botocore.UNSIGNED))
    wrong = stack.objectstore.s3_client(secret_key="not-the-secret")
    key = next(iter(_bucket_keys(stack)))
    for s3 in (anonymous, wrong):
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            s3.get_object(Bucket=s.bucket, Key=key)
        assert refused.value.response["Error"]["Code"] in {"AccessDenied", "SignatureDoesNotMatch"}
    filer = requests.get(f"http://{s.host}:{s.weed_filer_port}/buckets/{s.bucket}/{key}", timeout=30)
    assert filer.status_code == 401

    # secrets: not in the stack's logs, its configuration files other than the secret ones, or the run's output
    clients_hold = set(stack.client_env("pipeline")) | set(stack.client_env("serving"))
    assert not any(k.startswith("AWS_") for k in clients_hold), "clients hold no S3 keys"
    logs = "".join(p.read_text(errors="replace") for p in (s.home / "logs").glob("*.log"))
    logs += (s.home / "postgres" / "postgres.log").read_text(errors="replace")
    logs += (s.home / "mlflow" / "basic_auth.ini").read_text()
    for name in SECRETS:
        value = s.secret(name)
        assert value not in logs, f"{name} appears in a log"
        assert value not in pipeline_run["output"], f"{name} appears in the pipeline's output"
    assert all((s.home / "secrets" / name).stat().st_mode & 0o077 == 0 for name in SECRETS)


def _serving_env(stack: Stack, **extra: str) -> dict[str, str]:
    return {**stack.client_env("serving"), "MODEL_URI": f"models:/{NAME}@production", "RELOAD_INTERVAL_S": "1",
            "MICRO_BATCH_MS": "0", "TORCH_THREADS": "1", "ONNX_THREADS": "1", "LOG_RAW_TEXT": "false", **extra}


def test_a_served_alias_move_and_a_rollback_reach_the_running_server(stack, pipeline_run, tmp_path):
    client = MlflowClient()
    v1 = client.get_model_version(NAME, "1")
    onnx_tags = {k: v for k, v in v1.tags.items() if k.startswith("onnx")}  # the logged ONNX files, shared
    v2 = mlflow.register_model(f"runs:/{v1.run_id}/model", NAME, tags=onnx_tags)
    with app_server(tmp_path / "app.log", _serving_env(stack, INFERENCE_LOG="false")) as app:
        app.wait_ready()
        assert requests.get(app.url + "/model", timeout=30).json()["version"] == "1"
        client.set_registered_model_alias(NAME, "production", v2.version)  # as the gate does
        wait_for(lambda: requests.get(app.url + "/model", timeout=30).json()["version"] == str(v2.version), 60)
        answer = requests.post(app.url + "/predict", json={"text": "A wonderful film."}, timeout=30).json()
        assert answer["sentiment"] in {"Positive", "Negative"}

        rollback = subprocess.run(  # the alias was moved by hand, not by the gate: name the version
            [sys.executable, "-m", "pipelines", "rollback", "--to-version", "1"], cwd=ROOT, capture_output=True,
            text=True, timeout=300, env=child_env(stack.client_env("pipeline")))
        assert rollback.returncode == 0, rollback.stderr[-3000:]
        assert client.get_model_version_by_alias(NAME, "production").version == "1"
        wait_for(lambda: requests.get(app.url + "/model", timeout=30).json()["version"] == "1", 60)

    # make image's first half: the production model exported from the server into a folder
    folder = tmp_path / "exported"
    export = subprocess.run([sys.executable, "-m", "pipelines", "export", "--output", str(folder)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600, env=child_env(stack.client_env("serving")))
    assert export.returncode == 0, export.stderr[-3000:]
    assert json.loads((folder / "registered_model.json").read_text())["version"] == "1"


def test_two_replicas_share_one_inference_log_that_the_monitor_reads(stack, pipeline_run, tmp_path):
    sent = {"a": 12, "b": 9}
    replicas = {name: app_server(tmp_path / f"{name}.log", _serving_env(stack, FEEDBACK_TOKENS="team-feedback-token"))
                for name in sent}
    try:
        for app in replicas.values():
            app.start()
        for name, app in replicas.items():
            app.wait_ready()
            for i in range(sent[name]):
                r = requests.post(app.url + "/predict", json={"text": f"Replica {name} review {i}: fine."}, timeout=60)
                assert r.status_code == 200, r.text
        fed = requests.post(replicas["b"].url + "/feedback", json={"text": "Loved it.", "label": 1}, timeout=60,
                            headers={"Authorization": "Bearer team-feedback-token"})
        assert fed.status_code == 201, fed.text
    finally:
        for app in replicas.values():
            app.stop()  # SIGTERM: each flushes its queue of log rows

    env = stack.client_env("pipeline")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INFERENCE_DB_PASSWORD", env["INFERENCE_DB_PASSWORD"])
        rows = inference_log.read_predictions(env["INFERENCE_DB"])
        feedback = inference_log.read_feedback(env["INFERENCE_DB"])
    assert len(rows) == sum(sent.values()) and set(rows["model_version"]) == {"1"}
    assert rows["text"].isna().all(), "no raw text unless asked"
    assert feedback["text"].tolist() == ["Loved it."]

    monitor = subprocess.run(
        [sys.executable, "-m", "pipelines", "monitor", "-p", "inference_db", env["INFERENCE_DB"],
         "-p", "window_hours", "1", "-p", "max_client_share", "1",  # every request came from this one client
         "--output-dir", str(tmp_path / "monitor")],
        cwd=ROOT, capture_output=True, text=True, timeout=900, env=child_env(env),
    )
    verdict = json.loads(monitor.stdout)
    assert monitor.returncode in (0, 3, 4), monitor.stderr[-3000:]
    assert verdict["counts"]["predictions"] == sum(sent.values()), verdict["counts"]
    assert verdict["model"]["version"] == "1"
    logged = {a.path for a in MlflowClient().list_artifacts(verdict["mlflow_run_id"])}
    assert "drift_verdict.json" in logged
    assert env["INFERENCE_DB_PASSWORD"] not in monitor.stdout + monitor.stderr


def test_sweep_workers_on_two_processes_share_one_study_in_the_stacks_database(stack):
    """The pipeline's environment names the stack's ``optuna`` database (role ``sweep``, its password apart);
    two worker processes claim the 40 queued trials of one study there, each exactly once, and begin exactly
    the 30 trials of a TPE study (the claims' advisory lock)."""
    from test_sweeps import asked_by_two_workers, claimed_by_two_workers

    from pipelines.sweep import study as studies

    env = stack.client_env("pipeline")
    assert env["SWEEP_STORAGE"].startswith("postgresql://sweep@") and "SWEEP_STORAGE_PASSWORD" in env
    with pytest.MonkeyPatch.context() as mp:
        for key in ("SWEEP_STORAGE", "SWEEP_STORAGE_PASSWORD"):
            mp.setenv(key, env[key])
        storage = studies.storage_url("")
    claimed_by_two_workers(storage)
    asked_by_two_workers(storage)
    with pytest.raises(Exception, match="password authentication failed"):  # the role needs its password
        studies.open_study("claims", env["SWEEP_STORAGE"].replace("sweep@", "sweep:wrong@"))


def test_the_stack_refuses_a_taken_port_with_a_clear_error(stack, tmp_path):
    taken = stack.settings.model_copy(update={"home": tmp_path / "other"})
    with pytest.raises(StackError, match=rf"{taken.postgres_port} \(postgres\).*STACK_\*_PORT"):
        Stack(taken).up(log=lambda _: None)
