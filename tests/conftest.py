"""Shared fixtures: temporary MLflow stores, small datasets, and one model that learned.

``learned_store`` trains a real model once per test session (a few thousand
Rotten Tomatoes snippets, so it really tells Negative from Positive), registers
it in a temporary SQLite MLflow store and points ``production`` at it
(:func:`tools.model_store.build_store`, which the benchmarks use too).
Set ``SENTIMENT_MLOPS_TEST_CACHE=/some/dir`` to keep that store between local
sessions (CI always trains afresh).
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from pipelines.data.sources import clean, load_rotten_tomatoes
from scoring import tracking
from tools.model_store import Store, build_store, sqlite_uri

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):  # make test: TEST_WORKERS processes share the cores, so each
    # (and every process it starts: servers, kernels, the CLI) trains on its share, never oversubscribing them
    _share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_name, str(_share))
    import torch

    torch.set_num_threads(_share)
    import __main__

    if not hasattr(__main__, "__file__"):  # execnet's `python -c` worker: pyspark.sql.connect (imported by MLflow)
        __main__.__file__ = "pytest-xdist-worker"  # would take a main without a file for a doctest run, and exit

LEARNED_CACHE = "learned-store-v10"  # bump when what the fixture stores changes (v2: ONNX export, v3: profile,
# v4: windows without overlap, aggregation and long-text threshold chosen on validation, v5: transformers.Trainer,
# v6: the recipe's batches and random draws on the Trainer, v7: the ONNX export with eager attention, v8: the
# subjectivity head and the aggregations that weigh windows by it, v9: sealed with an integrity manifest, v10: its
# evaluation recorded in its run, where the gate reads it)
LEARNED_PARAMS = {
    "max_train_samples": 3000,
    "epochs": 2,
    "max_length": 48,
    "learning_rate": 1e-4,
    "min_metric": 0.0,
    "early_stopping_patience": 0,
    "distill_layers": 0,  # the fine-tuned model itself: the tests that train a student say so
}
POSITIVE_REVIEW = "The movie was amazing: a warm, funny and beautifully acted film I would happily watch again."
NEGATIVE_REVIEW = (
    "A dull, lifeless mess. The plot is stupid, the acting is terrible and it is a complete waste of time."
)


def _point_mlflow_at(uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tracking store of this process and its subprocesses; the registry follows it (never set apart)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    mlflow.set_tracking_uri(uri)


@pytest.fixture
def mlflow_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An empty SQLite store in a temp dir, set as the tracking URI for the test."""
    uri = sqlite_uri(tmp_path)
    monkeypatch.setenv(tracking.STATE_DIR_ENV, str(tmp_path))
    _point_mlflow_at(uri, monkeypatch)
    yield uri
    mlflow.end_run()


@pytest.fixture(scope="session")
def rt_frame() -> pd.DataFrame:
    return clean(load_rotten_tomatoes())


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory: pytest.TempPathFactory, rt_frame: pd.DataFrame) -> Path:
    """300 real snippets as a CSV with text/label columns."""
    path = tmp_path_factory.mktemp("data") / "tiny.csv"
    rt_frame.sample(300, random_state=0).to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def learned_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """A store whose ``sentiment@production`` is a model that learned (~0.8 accuracy)."""
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    cache = os.environ.get("SENTIMENT_MLOPS_TEST_CACHE")
    root = Path(cache) / LEARNED_CACHE if cache else tmp_path_factory.mktemp("learned-store")
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel sessions share one cached training
        if (root / "READY").exists():
            store = Store(root, sqlite_uri(root), "sentiment", (root / "READY").read_text().strip())
        else:
            store = build_store(root, LEARNED_PARAMS, run_name="learned-fixture")
            (root / "READY").write_text(store.version)
    if previous:
        mlflow.set_tracking_uri(previous)
    return store


@pytest.fixture
def learned_copy(learned_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """A private copy of the learned store's database, for tests that move aliases or add versions.

    Artifacts stay where they are (read-only for the copy's existing versions).
    """
    folder = tmp_path / "store"
    folder.mkdir()
    shutil.copy(learned_store.root / "mlflow.db", folder / "mlflow.db")
    uri = sqlite_uri(folder)
    monkeypatch.setenv(tracking.STATE_DIR_ENV, str(folder))
    _point_mlflow_at(uri, monkeypatch)
    yield Store(folder, uri, learned_store.model_name, learned_store.version)
    mlflow.end_run()


@pytest.fixture(scope="module")
def learned_tracking(learned_store: Store) -> Store:
    """The learned store as the tracking store of this process and its children, for a module that only reads it."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        _point_mlflow_at(learned_store.tracking_uri, monkeypatch)
        yield learned_store
