"""SIGTERM to ``python -m app``: not ready at once, every request in flight answered, the log flushed, a bounded exit.

A real server (micro-batching on, a long batch window so batches are in flight when the signal comes) gets a
burst of concurrent requests; SIGTERM is sent while they run.  During the drain ``/ready`` answers 503 while
``/predict`` still answers 200; then uvicorn's graceful shutdown finishes what is in flight and the lifespan
flushes the inference log: one row per answered text.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time

import httpx
import pytest
from conftest import NEGATIVE_REVIEW, POSITIVE_REVIEW

from tools.harness import app_main_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
DRAIN_S, GRACEFUL_S = 2.0, 10.0


async def _burst_then_sigterm(server, n: int) -> tuple[list[int], list[tuple[float, int, int]]]:
    """``n`` concurrent /predict; SIGTERM once they are sent; then /ready and /predict probes on new connections."""
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        texts = [POSITIVE_REVIEW, NEGATIVE_REVIEW]
        burst = [asyncio.create_task(client.post("/predict", json={"text": texts[i % 2]})) for i in range(n)]
        await asyncio.sleep(0.05)
        server.signal(signal.SIGTERM)
        sent = time.monotonic()
        probes = []
        while time.monotonic() - sent < DRAIN_S - 0.7:
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as fresh:
                ready = await fresh.get("/ready")
                predict = await fresh.post("/predict", json={"text": texts[0]})
            probes.append((time.monotonic() - sent, ready.status_code, predict.status_code))
            await asyncio.sleep(0.2)
        answers = await asyncio.gather(*burst)
    return [r.status_code for r in answers], probes


def test_sigterm_drains_finishes_in_flight_requests_and_flushes_the_log(learned_tracking, tmp_path):
    db = tmp_path / "log.db"
    server = app_main_server(tmp_path / "server.log", {
        "MLFLOW_TRACKING_URI": learned_tracking.tracking_uri, "RELOAD_INTERVAL_S": "0", "INFERENCE_DB": str(db),
        "TORCH_THREADS": "1", "MICRO_BATCH_MS": "200", "MAX_BATCH": "8", "DRAIN_S": str(DRAIN_S),
        "GRACEFUL_TIMEOUT_S": str(GRACEFUL_S), "MAX_QUEUE": "64",  # the burst of 40 is admitted whole
    })
    with server:
        server.wait_ready()
        statuses, probes = asyncio.run(_burst_then_sigterm(server, 40))
        start = time.monotonic()
        server.proc.wait(DRAIN_S + GRACEFUL_S + 15)
        exited_after = time.monotonic() - start
    assert statuses == [200] * 40
    assert probes and all(ready == 503 and predict == 200 for _, ready, predict in probes), probes
    log = server.log_tail(200)
    assert "draining for 2.0s" in log and "Application shutdown complete" in log, log
    assert server.proc.returncode in (0, -signal.SIGTERM), log
    assert exited_after < DRAIN_S + GRACEFUL_S
    with sqlite3.connect(db) as conn:
        (rows,) = conn.execute("SELECT COUNT(*) FROM predictions").fetchone()
    assert rows == 40 + len(probes)
