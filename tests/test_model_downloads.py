"""Every model load removes what it downloaded: a server reloading whenever the alias moves fills no disk.

The model lives behind a real ``mlflow server`` that serves its artifacts (``mlflow-artifacts:/``), so a load
downloads the files over HTTP as a replica does from the team's server (a local file store is read in place
and would prove nothing). The temp folder is private to the test (``tempfile.tempdir``): other processes on
the machine cannot make it differ.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from tiny_model import register_tiny_model

from scoring.model_files import load_components, load_tokenizer_and_scoring, model_file
from scoring.runtimes import load_scorer
from tools.harness import ServerProcess, free_port

MODEL = "models:/sentiment@production"


@pytest.fixture(scope="module")
def served_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A tracking server on SQLite with proxied artifacts, holding the tiny model as sentiment@production."""
    root = tmp_path_factory.mktemp("served-store")
    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
           "--artifacts-destination", str(root / "artifacts"), "--serve-artifacts",
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    server = ServerProcess(cmd, port, root / "server.log", ready_path="/health", name="mlflow-server")
    previous = mlflow.get_tracking_uri()
    try:
        server.wait_ready(180)
        mlflow.set_tracking_uri(server.url)
        register_tiny_model()
        yield server.url
    finally:
        mlflow.set_tracking_uri(previous)
        server.stop()


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tempfile.gettempdir()`` is a new, empty folder for this test."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    assert tempfile.gettempdir() == str(folder)
    return folder


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_the_model_is_downloaded_not_read_in_place(served_store):
    source = mlflow.MlflowClient().get_model_version_by_alias("sentiment", "production").source
    assert source.startswith(("models:/", "mlflow-artifacts:/")), source


def test_twenty_reloads_leave_the_temp_folder_as_it_was(served_store, private_tmp):
    before = listing(private_tmp)
    for _ in range(20):
        scorer = load_scorer(MODEL, "torch")
        assert scorer.predict_proba(["a fine film"]).shape == (1,)
        load_tokenizer_and_scoring(MODEL)  # what the ONNX runtimes read besides their own files
    assert listing(private_tmp) == before


def test_mlflow_alone_would_leave_a_download_per_load(served_store, private_tmp):
    """The check above can fail: loading without our temporary folder leaves MLflow's download behind."""
    mlflow.transformers.load_model(MODEL, return_type="components")
    assert listing(private_tmp), "MLflow left nothing: the test above would prove nothing"


def test_a_remote_model_file_needs_a_folder_to_go_into(served_store):
    with pytest.raises(ValueError, match="into"):
        model_file(MODEL, "MLmodel")
    model, tokenizer = load_components(MODEL)
    assert model.config.num_hidden_layers == 2 and tokenizer("fine")["input_ids"]
