"""What unauthenticated callers learn: ``/ready``, ``/model`` and 5xx bodies name no internal URI, run id,
path or exception text; admin callers (``Authorization: Bearer <ADMIN_TOKEN>``) get the details.

Real apps (:func:`app.main.create_app` with its lifespan, FastAPI's TestClient) on a tiny registered model
in a SQLite store; a version MLflow's transformers flavor cannot load makes a real reload fail; an
unreachable PostgreSQL inference log makes a real 503 of /feedback.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from serving_helpers import log_broken, promote
from tiny_model import tiny_store

from app.api.deps import HIDDEN_ERROR
from app.main import create_app
from app.settings import Settings

TOKEN = "exposure-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WRONG = {"Authorization": "Bearer not-the-token"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A SQLite store whose sentiment@production is the tiny model; its folder and tracking URI."""
    with tiny_store(tmp_path_factory.mktemp("exposure-store")) as store:
        yield store


def app_client(store: tuple[Path, str], tmp_path: Path, **settings: object) -> TestClient:
    uri = store[1]
    values: dict[str, object] = {
        "model_uri": "models:/sentiment@production", "tracking_uri": uri, "backend": "torch",
        "reload_interval_s": 0, "micro_batch_ms": 0, "admin_token": TOKEN, "inference_db": str(tmp_path / "log.db"),
        **settings,
    }
    return TestClient(create_app(Settings(**values)), raise_server_exceptions=False)


def internals(store: tuple[Path, str]) -> list[str]:
    """Strings no unauthenticated body may hold: every run id and source of the registry, the store's paths."""
    folder, uri = store
    versions = MlflowClient().search_model_versions("name='sentiment'")
    return [*(v.run_id for v in versions), *(v.source for v in versions), str(folder), uri, "file://", "Traceback"]


def assert_no_internals(text: str, store: tuple[Path, str]) -> None:
    leaked = [s for s in internals(store) if s and s in text]
    assert not leaked, f"{leaked} in {text}"


def test_model_and_ready_show_the_version_but_internals_only_to_admins(store, tmp_path):
    with app_client(store, tmp_path) as client:
        public = client.get("/model")
        assert public.status_code == 200 and public.json()["version"] == "1" and public.json()["name"] == "sentiment"
        assert {k: public.json()[k] for k in ("model_uri", "run_id", "source")} == dict.fromkeys(
            ("model_uri", "run_id", "source"))
        assert_no_internals(public.text, store)
        assert client.get("/model", headers=WRONG).json()["run_id"] is None
        admin = client.get("/model", headers=AUTH).json()
        version = MlflowClient().get_model_version("sentiment", "1")
        assert admin["run_id"] == version.run_id and admin["model_uri"] == "models:/sentiment@production"
        ready = client.get("/ready")
        assert ready.json() == {"status": "ready", "model_version": "1", "last_reload_error": None, "degraded": []}


def test_a_failed_reload_is_reported_without_its_text_unless_admin(store, tmp_path):
    folder, _ = store
    with app_client(store, tmp_path) as client:
        broken = log_broken(folder, "sentiment")
        promote("sentiment", broken, previous="1")
        try:
            failed = client.post("/admin/reload", headers=AUTH)
            assert failed.status_code == 502 and failed.json()["version"] == "1"
            ready = client.get("/ready")
            assert ready.status_code == 200 and ready.json()["last_reload_error"] == HIDDEN_ERROR
            assert_no_internals(ready.text, store)
            assert "transformers" not in ready.text  # the exception's text
            public = client.get("/model").json()["last_reload_error"]
            assert public["target_version"] == broken and public["origin"] == "admin" and "message" not in public
            assert_no_internals(client.get("/model").text, store)
            assert "transformers" in client.get("/ready", headers=AUTH).json()["last_reload_error"]
            assert "transformers" in client.get("/model", headers=AUTH).json()["last_reload_error"]["message"]
        finally:
            promote("sentiment", "1", previous=broken)


def test_no_model_503_hides_why_unless_admin(store, tmp_path):
    folder, _ = store
    missing = f"models:/missing-{tmp_path.name}@production"
    with app_client(store, tmp_path, model_uri=missing) as client:
        refused = client.post("/predict", json={"text": "fine"})
        assert refused.status_code == 503 and refused.json() == {"detail": f"no model loaded: {HIDDEN_ERROR}"}
        assert f"missing-{tmp_path.name}" not in refused.text and str(folder) not in refused.text
        assert client.get("/model").json()["model_uri"] is None
        detailed = client.post("/predict", json={"text": "fine"}, headers=AUTH)
        assert detailed.status_code == 503 and f"missing-{tmp_path.name}" in detailed.json()["detail"]


def test_an_unreachable_log_database_body_carries_no_exception_text(store, tmp_path):
    """An inference log that cannot be reached: /feedback answers 503, naming no URL, driver or exception."""
    url = "postgresql://inference:pw@127.0.0.1:9/inference?sslmode=disable&connect_timeout=2"
    # no lifespan: the log is opened by the first /feedback, which needs a feedback token (not the admin's)
    client = app_client(store, tmp_path, inference_db=url, feedback_tokens="feedback-token")
    failed = client.post("/feedback", json={"text": "Loved it", "label": "positive"},
                         headers={"Authorization": "Bearer feedback-token"})
    assert failed.status_code == 503 and failed.headers["Retry-After"]
    assert failed.json() == {"detail": "feedback not stored: its database is unreachable or slow; retry later"}
