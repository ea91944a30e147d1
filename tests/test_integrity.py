"""What is served is what was sealed: a changed byte in the artifact store or a retargeted ``onnx.*`` tag makes the
next load refuse the version, and the replica keeps serving the old one.

Real app (:func:`app.main.create_app` with its lifespan, FastAPI's TestClient, ``BACKEND=onnx-int8``) on tiny
registered models in a SQLite store with their real ONNX exports (:func:`pipelines.train.onnx_logging.log_onnx`)
and real manifests (:func:`pipelines.registry.sealing.seal`); the tampering edits the stored files themselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from serving_helpers import promote
from tiny_model import register_tiny_model, tiny_store

from app.main import create_app
from app.settings import Settings
from pipelines.registry import sealing
from pipelines.registry.model_folder import export_model
from pipelines.train.onnx_logging import log_onnx
from scoring.identity import RegistryError, model_uri
from scoring.integrity import ALLOW_ENV, FOLDER_MANIFEST, MANIFEST_PARAM, IntegrityError
from scoring.runtimes import load_scorer
from scoring.version_tags import ONNX_RUN_ID

TOKEN = "integrity-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """sentiment v1 (production) and v2, tiny models with ONNX files, both sealed."""
    with pytest.MonkeyPatch.context() as mp, tiny_store(tmp_path_factory.mktemp("integrity-store")) as store:
        register_tiny_model((store[0] / "mlartifacts").as_uri(), alias="candidate")
        for version in ("1", "2"):
            log_onnx(model_uri("sentiment", version))
            sealing.seal("sentiment", version)
        mp.setenv(ALLOW_ENV, "false")  # from here on an unsealed version is refused
        yield store


def stored_file(version: str, relative: str) -> Path:
    """The file in the artifact store itself (not a downloaded copy) of a version's run."""
    run = MlflowClient().get_run(MlflowClient().get_model_version("sentiment", version).run_id)
    return Path(run.info.artifact_uri.removeprefix("file://")) / relative


def flip_byte(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def app_client(store: tuple[Path, str], tmp_path: Path) -> TestClient:
    settings = Settings(model_uri="models:/sentiment@production", tracking_uri=store[1], backend="onnx-int8",
                        reload_interval_s=0, micro_batch_ms=0, admin_token=TOKEN,
                        inference_db=str(tmp_path / "log.db"))
    return TestClient(create_app(settings), raise_server_exceptions=False)


def assert_refused_and_v1_serves(client: TestClient, what: str) -> None:
    reload = client.post("/admin/reload", headers=AUTH)
    assert reload.status_code == 502 and "IntegrityError" in reload.json()["error"] and what in reload.json()["error"]
    assert client.post("/predict", json={"text": "A warm, funny film."}).status_code == 200
    ready = client.get("/ready", headers=AUTH).json()
    assert ready["model_version"] == "1" and "IntegrityError" in ready["last_reload_error"]
    assert 'sentiment_model_refused_total{reason="integrity"}' in client.get("/metrics").text


def test_sealing_records_an_immutable_digest(store):
    run_id = MlflowClient().get_model_version("sentiment", "1").run_id
    digest = MlflowClient().get_run(run_id).data.params[MANIFEST_PARAM]
    assert len(digest) == 64
    with pytest.raises(RegistryError, match="already sealed"):
        sealing.seal("sentiment", "1")


def test_a_flipped_byte_in_the_int8_file_is_refused_and_the_old_version_keeps_serving(store, tmp_path):
    int8 = stored_file("2", "onnx/model.int8.onnx")
    original = int8.read_bytes()
    with app_client(store, tmp_path) as client:
        assert client.get("/ready").json()["model_version"] == "1"
        flip_byte(int8)
        try:
            promote("sentiment", "2", "1")
            assert_refused_and_v1_serves(client, "model.int8.onnx differs")
        finally:
            int8.write_bytes(original)
            MlflowClient().set_registered_model_alias("sentiment", "production", "1")


def test_an_onnx_tag_pointed_at_another_run_is_refused(store, tmp_path):
    client_ = MlflowClient()
    own_run = client_.get_model_version("sentiment", "2").tags[ONNX_RUN_ID]
    with app_client(store, tmp_path) as client:
        client_.set_model_version_tag("sentiment", "2", ONNX_RUN_ID, client_.get_model_version("sentiment", "1").run_id)
        try:
            promote("sentiment", "2", "1")
            assert_refused_and_v1_serves(client, "model.int8.onnx differs")
        finally:
            client_.set_model_version_tag("sentiment", "2", ONNX_RUN_ID, own_run)
            client_.set_registered_model_alias("sentiment", "production", "1")


def test_batch_loads_refuse_tampered_weights_and_unsealed_versions(store):
    weights = next(_model_artifacts("2").rglob("model.safetensors"))
    original = weights.read_bytes()
    flip_byte(weights, 200)
    try:
        with pytest.raises(IntegrityError, match=r"model\.safetensors differs"):
            load_scorer(model_uri("sentiment", "2"), "torch")
    finally:
        weights.write_bytes(original)
    assert load_scorer(model_uri("sentiment", "2"), "torch").predict_proba(["fine"]).shape == (1,)
    unsealed = register_tiny_model((store[0] / "mlartifacts").as_uri(), alias="unsealed")
    with pytest.raises(IntegrityError, match="no integrity manifest"):
        load_scorer(model_uri("sentiment", unsealed), "onnx-int8")


def _model_artifacts(version: str) -> Path:
    """Where the logged model of a version lies in the artifact store."""
    source = MlflowClient().get_model_version("sentiment", version).source  # models:/m-…
    logged = MlflowClient().get_logged_model(source.removeprefix("models:/"))
    return Path(logged.artifact_location.removeprefix("file://"))


def test_an_export_is_checked_against_the_registry_and_its_folder_on_every_load(store, tmp_path):
    """``python -m pipelines export`` (what ``make image`` bakes) refuses a tampered version and writes nothing;
    the folder it writes carries the manifest, and a load of the folder refuses a changed file."""
    weights = next(_model_artifacts("2").rglob("model.safetensors"))
    original = weights.read_bytes()
    flip_byte(weights, 200)
    try:
        with pytest.raises(IntegrityError, match=r"model\.safetensors differs"):
            export_model(model_uri("sentiment", "2"), tmp_path / "refused")
    finally:
        weights.write_bytes(original)
    assert not (tmp_path / "refused").exists() and not list(tmp_path.glob(".refused.export-*")), "nothing written"

    folder = tmp_path / "exported"
    export_model(model_uri("sentiment", "2"), folder)
    assert (folder / FOLDER_MANIFEST).is_file()
    for backend in ("torch", "onnx-int8"):
        assert load_scorer(str(folder), backend).predict_proba(["fine"]).shape == (1,)
    flip_byte(folder / "onnx" / "model.int8.onnx")
    with pytest.raises(IntegrityError, match=r"model\.int8\.onnx differs"):
        load_scorer(str(folder), "onnx-int8")
    flip_byte(next(folder.rglob("model.safetensors")), 200)
    with pytest.raises(IntegrityError, match=r"model\.safetensors differs"):
        load_scorer(str(folder), "torch")
    (folder / FOLDER_MANIFEST).unlink()  # and without its manifest (ALLOW_UNVERIFIED_MODELS=false here)
    with pytest.raises(IntegrityError, match=r"carries no integrity\.json"):
        load_scorer(str(folder), "onnx")
