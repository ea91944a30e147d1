"""The serving app end to end: real uvicorn subprocesses on a copy of the learned store, hit with httpx.

Two servers share one private copy of the store: ``api`` (admin token, no polling:
it changes model only on ``/admin/reload``) and ``poller`` (no admin token, polls the
alias every second).  The tests run in file order: they move the alias v1 → v2 →
(rollback) v1 → broken v3 → (rollback) v1.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import sys

import httpx
import mlflow
import pytest
from conftest import NEGATIVE_REVIEW, POSITIVE_REVIEW, sqlite_uri
from prometheus_client.parser import text_string_to_metric_families
from serving_helpers import Server, alias_version, log_always_positive, log_broken, promote

from app.clients import hash_id
from tools.harness import ROOT, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
TOKEN = "s3cret-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FEEDBACK_TOKEN = "feedback-test-token"
FEEDBACK_AUTH = {"Authorization": f"Bearer {FEEDBACK_TOKEN}"}  # /feedback needs it (the api server has it)


@pytest.fixture(scope="module")
def store(learned_store, tmp_path_factory):
    """A private copy of the learned store's database, set as this process's tracking store."""
    folder = tmp_path_factory.mktemp("serving-store")
    shutil.copy(learned_store.root / "mlflow.db", folder / "mlflow.db")
    uri = sqlite_uri(folder)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)  # the registry follows the tracking store
    yield folder, uri, learned_store.model_name
    mlflow.end_run()
    mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="module")
def servers(store):
    folder, uri, _ = store
    # MAX_QUEUE: the reload tests send bursts of 50 requests, all of which must be answered (admission is
    # tests/test_overload.py's)
    common = {"MLFLOW_TRACKING_URI": uri, "SENTIMENT_MLOPS_HOME": str(folder), "TORCH_THREADS": "1",
              "MAX_QUEUE": "100"}
    api = Server({**common, "ADMIN_TOKEN": TOKEN, "RELOAD_INTERVAL_S": "0", "INFERENCE_DB": str(folder / "api.db"),
                  "FEEDBACK_TOKENS": FEEDBACK_TOKEN}, folder / "api.log")
    poller = Server({**common, "ADMIN_TOKEN": "", "RELOAD_INTERVAL_S": "1", "INFERENCE_DB": str(folder / "poller.db")},
                    folder / "poller.log")
    try:
        api.wait_ready()
        poller.wait_ready()
        yield api, poller
    finally:
        api.stop()
        poller.stop()


@pytest.fixture(scope="module")
def api(servers):
    return servers[0]


@pytest.fixture(scope="module")
def poller(servers):
    return servers[1]


def predict(server: Server, text: str) -> dict:
    response = server.client.post("/predict", json={"text": text})
    assert response.status_code == 200, response.text
    return response.json()


def served_version(server: Server) -> str | None:
    return server.client.get("/model").json()["version"]


def metric_value(server: Server, name: str, **labels: str) -> float:
    """The sample ``name`` with exactly these labels in /metrics (0 when absent)."""
    for family in text_string_to_metric_families(server.client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


# -- serving ----------------------------------------------------------------------------------
def test_health_ready_and_model_info(api):
    assert api.client.get("/health").json() == {"status": "ok"}
    assert api.client.get("/ready").json() == {"status": "ready", "model_version": "1", "last_reload_error": None,
                                               "degraded": []}
    info = api.client.get("/model", headers=AUTH).json()  # the run id and URI: admin callers only (test_exposure)
    assert info["loaded"] and (info["name"], info["version"], info["alias"]) == ("sentiment", "1", "production")
    assert info["run_id"] and info["loaded_at"] and info["last_reload_error"] is None
    assert api.client.get("/model").json()["run_id"] is None
    assert 0.7 < info["metrics"]["accuracy"] <= 1 and "roc_auc" in info["metrics"]
    assert info["scoring"]["long_text_strategy"] == "sliding_window"
    assert "/predict" in api.client.get("/openapi.json").json()["paths"]
    assert api.client.get("/docs").status_code == 200


def test_seed_example_is_positive_and_negative_review_is_negative(api):
    seed = predict(api, "The movie was amazing")
    assert seed["sentiment"] == "Positive" and 0.5 <= seed["confidence"] <= 1
    assert set(seed) == {"sentiment", "confidence", "model_version"}
    assert predict(api, POSITIVE_REVIEW)["sentiment"] == "Positive"
    assert predict(api, NEGATIVE_REVIEW)["sentiment"] == "Negative"


def test_batch_equals_single(api):
    texts = [POSITIVE_REVIEW, NEGATIVE_REVIEW, "Loved it 😍🍿 — 素晴らしい映画", " ".join([NEGATIVE_REVIEW] * 40)]
    batch = api.client.post("/predict/batch", json={"texts": texts})
    assert batch.status_code == 200, batch.text
    body = batch.json()
    assert body["model_version"] == "1" and len(body["predictions"]) == len(texts)
    for text, got in zip(texts, body["predictions"], strict=True):
        single = predict(api, text)
        assert got["sentiment"] == single["sentiment"]
        assert got["confidence"] == pytest.approx(single["confidence"], abs=1e-5)


@pytest.mark.parametrize(
    ("path", "payload", "status", "message"),
    [
        ("/predict", {}, 422, "Field required"),
        ("/predict", {"txt": "typo"}, 422, "Field required"),
        ("/predict", {"text": 42}, 422, "string"),
        ("/predict", {"text": ["a list"]}, 422, "string"),
        ("/predict", {"text": None}, 422, "string"),
        ("/predict", {"text": ""}, 422, "empty"),
        ("/predict", {"text": " \n\t "}, 422, "whitespace"),
        ("/predict", {"text": "x" * 20_001}, 422, "MAX_TEXT_CHARS"),
        ("/predict", ["not", "an", "object"], 422, "object"),
        ("/predict/batch", {"texts": []}, 422, "at least 1"),
        ("/predict/batch", {"texts": "not a list"}, 422, "list"),
        ("/predict/batch", {"texts": ["fine", "  "]}, 422, "empty"),
        ("/predict/batch", {"texts": ["ok"] * 65}, 422, "MAX_BATCH"),
        ("/predict/batch", {"texts": ["ok", "y" * 20_001]}, 422, "MAX_TEXT_CHARS"),
        ("/feedback", {"text": "great", "label": "meh"}, 422, "label must be"),
        ("/feedback", {"text": "great", "label": 2}, 422, "label must be"),
        ("/feedback", {"text": "great", "label": True}, 422, "label must be"),
        ("/feedback", {"text": "", "label": 1}, 422, "empty"),
        ("/feedback", {"label": 1}, 422, "Field required"),
    ],
)
def test_client_mistakes_get_a_4xx_with_a_message(api, path, payload, status, message):
    response = api.client.post(path, json=payload, headers=FEEDBACK_AUTH)
    assert response.status_code == status, response.text
    assert message in response.text


def test_malformed_json_oversized_body_and_lone_surrogates(api):
    bad = api.client.post("/predict", content=b'{"text": "unterminated', headers={"Content-Type": "application/json"})
    assert bad.status_code == 422 and "JSON" in bad.text
    big = api.client.post("/predict", json={"text": "a" * (1024 * 1024 + 10)})
    assert big.status_code == 413 and "MAX_BODY_BYTES" in big.json()["detail"]

    def chunks():  # no Content-Length: the limit is enforced while the body streams in
        yield b'{"text": "'
        yield from (b"a" * 65536 for _ in range(17))
        yield b'"}'

    streamed = api.client.post("/predict", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413 and "MAX_BODY_BYTES" in streamed.json()["detail"]
    surrogate = api.client.post("/predict", content=b'{"text": "bad \\ud800 text"}',
                                headers={"Content-Type": "application/json"})
    assert surrogate.status_code == 422 and "Unicode" in surrogate.text
    assert api.client.post("/predict", json={"text": "x" * 20_000}).status_code == 200  # the limit itself is fine
    assert api.client.post("/predict", json={"text": "🍿😍"}).status_code == 200


def test_admin_endpoints_need_the_token(api, poller):
    assert api.client.post("/admin/reload").status_code == 401
    wrong = api.client.post("/admin/reload", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "admin token" in wrong.json()["detail"]
    disabled = poller.client.post("/admin/reload", headers=AUTH)
    assert disabled.status_code == 403 and "disabled" in disabled.json()["detail"]
    same = api.client.post("/admin/reload", headers=AUTH)
    assert same.status_code == 200 and same.json()["status"] == "unchanged"


def test_feedback_is_stored(api, store):
    folder, _, _ = store
    created = api.client.post("/feedback", json={"text": "Loved it", "label": "Positive"}, headers=FEEDBACK_AUTH)
    assert created.status_code == 201 and created.json()["label"] == 1
    numeric = api.client.post("/feedback", json={"text": "Hated it", "label": 0}, headers=FEEDBACK_AUTH)
    assert numeric.status_code == 201 and numeric.json()["id"] == created.json()["id"] + 1
    with sqlite3.connect(folder / "api.db") as conn:
        rows = conn.execute("SELECT text, label, status FROM feedback ORDER BY id").fetchall()
    assert rows[-2:] == [("Loved it", 1, "pending"), ("Hated it", 0, "pending")]


def test_inference_log_holds_one_row_per_prediction_without_text(api, store):
    folder, _, _ = store

    def count() -> int:
        with sqlite3.connect(folder / "api.db") as conn:
            return conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]

    before = count()
    predict(api, "A quietly moving film.")
    assert api.client.post("/predict/batch", json={"texts": ["one", "two 😍", "three"]}).status_code == 200
    wait_for(lambda: count() == before + 4, timeout=30)
    with sqlite3.connect(folder / "api.db") as conn:
        conn.row_factory = sqlite3.Row
        rows = [dict(r) for r in conn.execute("SELECT * FROM predictions ORDER BY id DESC LIMIT 4")]
    assert all(r["text"] is None for r in rows)
    assert {r["endpoint"] for r in rows} == {"/predict", "/predict/batch"}
    assert all(r["model_version"] == "1" and r["model_name"] == "sentiment" for r in rows)
    assert all(r["n_tokens"] > 0 and 0 <= r["unk_ratio"] <= 1 and r["latency_ms"] > 0 for r in rows)
    assert all(r["label"] in {"Positive", "Negative"} and 0.5 <= r["confidence"] <= 1 for r in rows)
    assert rows[-1]["n_chars"] == len("A quietly moving film.")
    assert {r["client"] for r in rows} == {hash_id("addr:127.0.0.1")}  # the caller, hashed (the monitor caps it)
    assert count() == before + 4  # nothing more arrives


def test_metrics_count_requests_predictions_and_the_version(api):
    before = metric_value(api, "sentiment_http_requests_total", endpoint="/predict", method="POST", status="200")
    predict(api, POSITIVE_REVIEW)
    predict(api, NEGATIVE_REVIEW)
    assert api.client.post("/predict", json={"text": ""}).status_code == 422
    after = metric_value(api, "sentiment_http_requests_total", endpoint="/predict", method="POST", status="200")
    assert after == before + 2
    assert metric_value(api, "sentiment_http_requests_total", endpoint="/predict", method="POST", status="422") > 0
    assert metric_value(api, "sentiment_predictions_total", label="Positive") > 0
    assert metric_value(api, "sentiment_predictions_total", label="Negative") > 0
    assert metric_value(api, "sentiment_prediction_confidence_count") > 0
    assert metric_value(api, "sentiment_http_request_duration_seconds_count", method="POST", endpoint="/predict") > 0
    assert metric_value(api, "sentiment_model_version") == 1
    families = text_string_to_metric_families(api.client.get("/metrics").text)
    (info,) = [s.labels for f in families for s in f.samples if s.name == "sentiment_model_info"]
    assert (info["name"], info["version"], info["alias"]) == ("sentiment", "1", "production")
    assert info["backend"] == "onnx-int8"  # the default runtime


# -- hot reload ---------------------------------------------------------------------------------
async def _burst_during_reload(url: str, n: int = 50) -> tuple[httpx.Response, list[httpx.Response]]:
    async with httpx.AsyncClient(base_url=url, timeout=180) as client:
        reload = asyncio.create_task(client.post("/admin/reload", headers=AUTH))
        texts = [POSITIVE_REVIEW, NEGATIVE_REVIEW]
        responses = await asyncio.gather(*(client.post("/predict", json={"text": texts[i % 2]}) for i in range(n)))
        return await reload, list(responses)


def test_new_version_is_served_after_admin_reload_with_no_failed_request(api, poller, store):
    folder, _, name = store
    v2 = log_always_positive(folder, name, "1")
    promote(name, v2, previous="1")
    assert alias_version(name) == v2
    assert served_version(api) == "1" and predict(api, NEGATIVE_REVIEW)["sentiment"] == "Negative"

    before = metric_value(api, "sentiment_http_requests_total", endpoint="/predict", method="POST", status="200")
    reload, responses = asyncio.run(_burst_during_reload(api.url))
    assert reload.status_code == 200 and reload.json() == {
        "status": "loaded", "previous_version": "1", "version": v2, "error": None}
    assert [r.status_code for r in responses] == [200] * 50
    assert {r.json()["model_version"] for r in responses} <= {"1", v2}
    after = metric_value(api, "sentiment_http_requests_total", endpoint="/predict", method="POST", status="200")
    assert after == before + 50

    info = api.client.get("/model").json()
    assert info["version"] == v2 and info["metrics"] == {"accuracy": 0.5} and info["last_reload_error"] is None
    now_positive = predict(api, NEGATIVE_REVIEW)
    assert (now_positive["sentiment"], now_positive["model_version"]) == ("Positive", v2)
    assert metric_value(api, "sentiment_model_version") == float(v2)
    # the polling server follows the alias by itself
    wait_for(lambda: served_version(poller) == v2)
    assert predict(poller, NEGATIVE_REVIEW)["sentiment"] == "Positive"


def test_rollback_then_reload_puts_the_previous_version_back(api, poller, store):
    _, uri, name = store
    rollback = subprocess.run(
        [sys.executable, "-m", "pipelines", "rollback"], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
    )
    assert rollback.returncode == 0, rollback.stderr
    assert "-> v1" in rollback.stdout and alias_version(name) == "1"
    reload = api.client.post("/admin/reload", headers=AUTH)
    assert reload.status_code == 200 and reload.json()["version"] == "1"
    back = predict(api, NEGATIVE_REVIEW)
    assert (back["sentiment"], back["model_version"]) == ("Negative", "1")
    wait_for(lambda: served_version(poller) == "1")


def test_broken_version_leaves_the_old_one_serving(api, poller, store):
    folder, _, name = store
    v3 = log_broken(folder, name)
    promote(name, v3, previous="1")

    failed = api.client.post("/admin/reload", headers=AUTH)
    assert failed.status_code == 502, failed.text
    assert failed.json()["status"] == "failed" and failed.json()["version"] == "1" and failed.json()["error"]
    info = api.client.get("/model", headers=AUTH).json()
    assert info["version"] == "1" and info["last_reload_error"]["target_version"] == v3
    assert "transformers" in info["last_reload_error"]["message"]
    ready = api.client.get("/ready", headers=AUTH)  # still ready: the old version serves, the failure is reported
    assert ready.status_code == 200 and ready.headers["X-Model-Version"] == "1"
    assert "transformers" in ready.json()["last_reload_error"]
    assert predict(api, NEGATIVE_REVIEW)["model_version"] == "1"
    assert metric_value(api, "sentiment_model_reloads_total", result="failure") == 1

    error = wait_for(lambda: poller.client.get("/model").json()["last_reload_error"])
    assert error["target_version"] == v3 and error["origin"] == "poll"
    assert served_version(poller) == "1" and predict(poller, POSITIVE_REVIEW)["sentiment"] == "Positive"

    # rolling back to the version being served clears the error
    assert subprocess.run([sys.executable, "-m", "pipelines", "rollback"], cwd=ROOT, timeout=300, capture_output=True,
                          env={**os.environ, "MLFLOW_TRACKING_URI": store[1]}).returncode == 0
    assert api.client.post("/admin/reload", headers=AUTH).json()["status"] == "unchanged"
    assert api.client.get("/model").json()["last_reload_error"] is None
    wait_for(lambda: poller.client.get("/model").json()["last_reload_error"] is None)


def test_shutdown_flushes_the_log_which_records_every_version_and_no_text(api, store):
    folder, _, _ = store
    served = metric_value(api, "sentiment_predictions_total", label="Positive") + metric_value(
        api, "sentiment_predictions_total", label="Negative")
    api.stop()  # SIGTERM: the lifespan drains the writer's queue before exiting
    assert api.proc.returncode in (0, -15) and "Application shutdown complete" in api.log_tail(), api.log_tail()
    with sqlite3.connect(folder / "api.db") as conn:
        rows, texts = conn.execute("SELECT COUNT(*), COUNT(text) FROM predictions").fetchone()
        versions = {v for (v,) in conn.execute("SELECT DISTINCT model_version FROM predictions")}
    assert rows == served and texts == 0
    assert versions == {"1", "2"}
