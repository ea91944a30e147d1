"""Overload and outages degrade gracefully (issue #26 item 4).

In process: the real :class:`app.admission.AdmissionMiddleware` around an ASGI app that takes its time
(refusals with ``Retry-After``, the request timeout's 504) and the real :class:`app.logwriter.LogStore` on a
SQLite file whose folder cannot be created until the test allows it (rows wait, then are written; beyond
the queue they are dropped and counted).  End to end: one real uvicorn server on the tiny model, with
MAX_CONCURRENCY=1 MAX_QUEUE=1 and its log database unreachable at start.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from serving_helpers import Server
from tiny_model import tiny_store

from app.admission import Admission, AdmissionMiddleware
from app.logwriter import LogStore, LogUnavailable
from scoring import inference_log


def slow_app(seconds: float):
    async def app(scope, receive, send):
        await asyncio.sleep(seconds)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})
    return app


def guarded(seconds: float, concurrency: int, waiting: int, timeout: float) -> tuple[AdmissionMiddleware, list]:
    rejected: list[str] = []
    return AdmissionMiddleware(slow_app(seconds), Admission(concurrency, waiting), timeout, 2, rejected.append), \
        rejected


async def flood(app, n: int, path: str = "/predict") -> list[httpx.Response]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        return await asyncio.gather(*(client.post(path, json={"text": "x"}) for _ in range(n)))


def test_beyond_the_limits_a_request_gets_503_with_retry_after_at_once():
    app, rejected = guarded(0.2, concurrency=2, waiting=3, timeout=30)
    start = time.perf_counter()
    answers = asyncio.run(flood(app, 20))
    codes = sorted(r.status_code for r in answers)
    assert codes == [200] * 5 + [503] * 15, codes  # 2 run, 3 wait; the other 15 are refused
    assert all(r.headers["retry-after"] == "2" and "overloaded" in r.json()["detail"]
               for r in answers if r.status_code == 503)
    assert rejected == ["overload"] * 15
    assert time.perf_counter() - start < 1.0  # 3 rounds of 0.2 s: nothing waited for a refused one


def test_other_routes_are_not_limited():
    app, rejected = guarded(0.1, concurrency=1, waiting=0, timeout=30)
    assert [r.status_code for r in asyncio.run(flood(app, 5, "/ready"))] == [200] * 5 and not rejected


def test_a_request_over_the_timeout_gets_504():
    app, rejected = guarded(1.0, concurrency=4, waiting=4, timeout=0.1)
    (answer,) = asyncio.run(flood(app, 1, "/predict/batch"))
    assert answer.status_code == 504 and "REQUEST_TIMEOUT_S" in answer.json()["detail"]
    assert rejected == ["timeout"]


def rows(n: int) -> list[dict]:
    return [{"ts": inference_log.utcnow(), "model_name": "m", "model_version": "1", "endpoint": "/predict",
             "n_chars": 4, "n_tokens": 2, "unk_ratio": 0.0, "label": "Positive", "confidence": 0.9,
             "p_positive": 0.9} for _ in range(n)]


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_rows_wait_for_a_database_that_is_down_then_are_written(tmp_path):
    blocker = tmp_path / "down"
    blocker.write_text("a file where the log's folder should be: the database cannot be opened")
    dropped: list[int] = []
    store = LogStore(str(blocker / "log.db"), maxsize=5, retry_s=0.1, on_drop=dropped.append)
    store.start()  # does not raise
    assert store.degraded
    store.submit(rows(8))  # 5 wait, 3 over the queue are dropped and counted
    with pytest.raises(LogUnavailable):
        store.add_feedback_async("Loved it", 1, "sender").result(10)
    blocker.unlink()  # the database comes back
    wait_for(lambda: store.written == 5)
    assert not store.degraded and sum(dropped) == 3 == store.dropped
    assert store.add_feedback_async("Loved it", 1, "sender").result(10) >= 1
    store.close()
    assert len(inference_log.read_predictions(str(blocker / "log.db"))) == 5


@pytest.mark.e2e
def test_a_real_server_sheds_load_and_serves_with_its_log_database_down(tmp_path):
    blocker = tmp_path / "down"
    blocker.write_text("not a folder")
    db = blocker / "log.db"
    with tiny_store(tmp_path / "store") as (_, uri):
        server = Server({"MLFLOW_TRACKING_URI": uri, "BACKEND": "torch", "RELOAD_INTERVAL_S": "0",
                         "INFERENCE_DB": str(db), "LOG_RETRY_S": "0.2", "MAX_CONCURRENCY": "1", "MAX_QUEUE": "1",
                         "RETRY_AFTER_S": "3", "FEEDBACK_TOKENS": "fb-token"}, tmp_path / "server.log")
        try:
            server.wait_ready(180)  # starts although the log database cannot be opened
            ready = server.client.get("/ready")
            assert ready.status_code == 200 and ready.json()["degraded"] == ["inference_log"]
            assert str(db) not in ready.text and "Error" not in ready.text  # no internals in the public body
            assert 'sentiment_degraded{component="inference_log"} 1.0' in server.client.get("/metrics").text
            feedback = server.client.post("/feedback", json={"text": "Loved it", "label": 1},
                                          headers={"Authorization": "Bearer fb-token"})
            assert feedback.status_code == 503 and "unreachable" in feedback.json()["detail"]
            assert str(db) not in feedback.text

            body = {"texts": [" ".join(["a long and thoughtful review of a film"] * 200)] * 32}
            with ThreadPoolExecutor(24) as pool:
                answers = list(pool.map(lambda _: httpx.post(f"{server.url}/predict/batch", json=body, timeout=60),
                                        range(48)))
            codes = [r.status_code for r in answers]
            assert set(codes) <= {200, 503} and codes.count(503) > 0 and codes.count(200) >= 2, codes
            assert all(r.headers["retry-after"] == "3" for r in answers if r.status_code == 503)
            metrics = server.client.get("/metrics").text
            assert f'sentiment_requests_rejected_total{{reason="overload"}} {float(codes.count(503))}' in metrics

            blocker.unlink()  # the database comes back: the waiting rows are written
            wait_for(lambda: server.client.get("/ready").json()["degraded"] == [], timeout=20)
            wait_for(lambda: db.exists() and len(inference_log.read_predictions(str(db))) == 32 * codes.count(200),
                     timeout=20)
            feedback = server.client.post("/feedback", json={"text": "Loved it", "label": 1},
                                          headers={"Authorization": "Bearer fb-token"})
            assert feedback.status_code == 201
        finally:
            server.stop()
