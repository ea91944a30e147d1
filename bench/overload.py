"""Overload and a log-database outage (issue #26 item 4): closed-loop load at 8, 64 and 256 clients.

One app server (the defaults: ``BACKEND=onnx-int8``, micro-batching, ``MAX_CONCURRENCY``/``MAX_QUEUE`` per core)
logging to a real PostgreSQL (``tools.stack.postgres``, a throw-away cluster on a free port), driven with the
test split's full-length reviews (:mod:`pipelines.evaluate.long_texts`).  Two passes in one run:

* ``db up``: 8, 64, 256 clients for ``--seconds`` each;
* ``db stopped``: the same, PostgreSQL stopped half-way through the first level (and left down); at the end it
  is started again and the rows the server kept are written.

Per level: accepted requests (200) and their latency, refusals (503 with ``Retry-After``), other errors (must be
0), the server's RSS after the level; then p99 at 256 ÷ p99 at 8 and the log's rows written / dropped.

    python -m bench.overload                 # 60 s per level
    python -m bench.overload --seconds 20    # a quicker run
    BENCH_TRACKING_URI=sqlite:////path/mlflow.db python -m bench.overload
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from bench import common, serving
from tools.harness import free_port

LEVELS = (8, 64, 256)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def closed_loop(url: str, pool: list[str], clients: int, seconds: float,
                      halfway: Any = None) -> dict[str, Any]:
    """``clients`` closed-loop clients posting reviews to /predict for ``seconds``; ``halfway()`` run mid-way."""
    latencies: list[float] = []
    counts = {"ok": 0, "refused": 0, "other": 0, "no_retry_after": 0}
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(120)) as session:
        deadline = time.perf_counter() + seconds

        async def client(c: int) -> None:
            i = c * len(pool) // clients
            while time.perf_counter() < deadline:
                i += 1
                start = time.perf_counter()
                try:
                    async with session.post("/predict", json={"text": pool[i % len(pool)]}) as response:
                        await response.read()
                        status, retry = response.status, response.headers.get("Retry-After")
                except aiohttp.ClientError:
                    status, retry = -1, None
                if status == 200:
                    counts["ok"] += 1
                    latencies.append(time.perf_counter() - start)
                elif status in (503, 429):
                    counts["refused"] += 1
                    counts["no_retry_after"] += retry is None
                    # a client that honours Retry-After: at least the header's seconds, jittered up to 1.5x
                    await asyncio.sleep(float(retry or 1) * np.random.uniform(1.0, 1.5))
                else:
                    counts["other"] += 1

        async def midway() -> None:
            await asyncio.sleep(seconds / 2)
            await asyncio.get_running_loop().run_in_executor(None, halfway)

        tasks = [client(c) for c in range(clients)] + ([midway()] if halfway else [])
        await asyncio.gather(*tasks)
    return {**counts, **common.latency_stats(latencies), "rps": counts["ok"] / seconds}


def metric(url: str, name: str) -> float:
    import httpx

    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return float("nan")


def main() -> None:
    from pipelines.config import build_config
    from pipelines.data.split import load_splits
    from pipelines.evaluate.long_texts import long_sets
    from tools.stack.postgres import Postgres
    from tools.stack.settings import StackSettings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="per level and pass")
    args = parser.parse_args()
    started, load_start = time.perf_counter(), common.loadavg()
    uri = common.tracking_uri()
    common.use_store(uri)
    info = common.production_info()
    splits = load_splits(build_config({}).data)
    pool = long_sets(splits.test, n=len(splits.test))["full reviews"]["text"].tolist()
    home = Path(tempfile.mkdtemp(prefix="bench-overload-"))
    home.chmod(0o755)  # as root the cluster runs as the postgres user, who must reach home/postgres
    stack = StackSettings(home=home, postgres_port=free_port())
    postgres = Postgres(stack)
    postgres.start()
    postgres.ensure_databases()
    env = {"MODEL_URI": common.MODEL_URI, "MLFLOW_TRACKING_URI": uri, "RELOAD_INTERVAL_S": "0",
           "INFERENCE_DB": stack.postgres_url("inference", "inference") + "?connect_timeout=2",
           "INFERENCE_DB_PASSWORD": stack.secret("inference_db_password"), "LOG_RETRY_S": "2"}
    (server,) = serving.make_servers(["app"], uri, home, {"app": env})
    server.env.update(env)  # make_servers sets INFERENCE_DB to a file: this run logs to PostgreSQL
    signal.signal(signal.SIGTERM, serving._exit_on_sigterm)
    print(f"pool: {len(pool)} full reviews, median {np.median([len(t) for t in pool]):.0f} characters; "
          f"{args.seconds:g} s per level; logs in {home}", flush=True)
    rows: list[dict[str, Any]] = []
    try:
        server.start()
        server.wait_ready(600)
        asyncio.run(closed_loop(server.url, pool, 4, 5.0))  # warm-up
        for phase in ("db up", "db stopped"):
            for level in LEVELS:
                halfway = postgres.stop if phase == "db stopped" and level == LEVELS[0] else None
                got = asyncio.run(closed_loop(server.url, pool, level, args.seconds, halfway))
                got.update(phase=phase, clients=level, rss_mb=rss_mb(server.proc.pid),
                           degraded=",".join(server_ready(server.url)))
                rows.append(got)
                print(f"  {phase} c={level}: {got['ok']} ok, {got['refused']} refused, {got['other']} other, "
                      f"p99 {got['p99_ms']:.0f} ms, RSS {got['rss_mb']:.0f} MB, load {common.loadavg()[0]}",
                      flush=True)
        dropped = metric(server.url, "sentiment_inference_log_dropped_total")
        queued = metric(server.url, "sentiment_inference_log_queue")
        postgres.start()
        deadline = time.monotonic() + 60
        while server_ready(server.url) and time.monotonic() < deadline:
            time.sleep(1)
        recovered = not server_ready(server.url)
    finally:
        server.stop()
        postgres.stop()
    ratios = [{"phase": p, "p99_256_x_8": by(rows, p, 256)["p99_ms"] / by(rows, p, 8)["p99_ms"],
               "rss_256_x_8": by(rows, p, 256)["rss_mb"] / by(rows, p, 8)["rss_mb"],
               "other_errors": sum(r["other"] for r in rows if r["phase"] == p)} for p in ("db up", "db stopped")]
    columns = ["phase", "clients", "ok", "refused", "other", "rps", "p50_ms", "p99_ms", "rss_mb", "degraded"]
    print(common.table(rows, columns, 1))
    print(common.table(ratios, digits=2))
    print(f"log: {dropped:.0f} rows dropped, {queued:.0f} waiting when PostgreSQL came back; "
          f"degraded cleared after restart: {recovered}")
    common.write_results("overload", {
        "model": info, "seconds_per_level": args.seconds, "pool_texts": len(pool), "rows": rows, "ratios": ratios,
        "log_dropped": dropped, "log_waiting_at_restart": queued, "recovered": recovered,
    }, started, load_start)


def by(rows: list[dict[str, Any]], phase: str, clients: int) -> dict[str, Any]:
    return next(r for r in rows if r["phase"] == phase and r["clients"] == clients)


def server_ready(url: str) -> list[str]:
    """/ready's ``degraded`` list."""
    import httpx

    return httpx.get(f"{url}/ready", timeout=10).json().get("degraded", [])


if __name__ == "__main__":
    main()
