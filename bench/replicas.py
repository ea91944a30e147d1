"""Replicas behind HAProxy: throughput of 1, 2 and 3 replicas, and an alias move, a SIGKILL and a rolling restart
under closed-loop load (16 clients through the balancer; :mod:`tools.replicas`, :mod:`tools.loadgen`).

Throughput: one cluster of 3 replicas per thread setting (``ONNX_THREADS`` = ``TORCH_THREADS`` per replica);
1 and 2 replicas are the same cluster with the others taken out of rotation (HAProxy MAINT), so every cell runs
on the same processes, in turn.  The scenarios run on the best setting's cluster, on a private copy of the
store's database (the alias is moved there, never in the store benchmarked).

    python -m bench.replicas       # BENCH_QUICK=1: short cells and scenarios
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import common
from tools import loadgen
from tools.replicas import Cluster, haproxy_binary

CLIENTS = 16
REPLICAS = (1, 2, 3)
THREADS = (1, 2)
POLL_S, JITTER = 5.0, 0.2


def private_store(uri: str, folder: Path) -> str:
    """A copy of the store's SQLite database (its artifacts shared read-only), for moving the alias."""
    if not uri.startswith("sqlite:///"):
        raise SystemExit(f"the replicas benchmark moves an alias in a copy of a SQLite store; {uri} is not one")
    shutil.copy(uri.removeprefix("sqlite:///"), folder / "mlflow.db")
    return f"sqlite:///{folder / 'mlflow.db'}"


def register_copy(uri: str) -> tuple[str, str]:
    """A new version with production's files and tags (loads as fast, answers the same): (old, new) version."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    mv = client.get_model_version_by_alias(common.MODEL_NAME, common.ALIAS)
    new = client.create_model_version(common.MODEL_NAME, mv.source, run_id=mv.run_id, tags=dict(mv.tags))
    return str(mv.version), str(new.version)


def move_alias(uri: str, version: str) -> None:
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=uri, registry_uri=uri).set_registered_model_alias(common.MODEL_NAME, common.ALIAS,
                                                                              version)


def latency(records: list[loadgen.Record], seconds: float) -> dict[str, float]:
    """Throughput (successful answers per second) and the latency statistics of the successful requests."""
    ok = [r.end - r.start for r in records if r.status == 200]
    return {"rps": len(ok) / seconds, **common.latency_stats(ok)}


def throughput(cluster: Cluster, threads: int, seconds: float) -> list[dict[str, Any]]:
    rows = []
    for n in REPLICAS:
        cluster.use(n)
        asyncio.run(loadgen.closed_loop(cluster.url, CLIENTS, 2))  # warm-up
        records, _, _ = asyncio.run(loadgen.closed_loop(cluster.url, CLIENTS, seconds))
        elapsed = max(r.end for r in records) - min(r.start for r in records)
        row = {"replicas": n, "threads": threads, **latency(records, elapsed),
               "errors": len(loadgen.failures(records))}
        print(f"  {n} replica(s), {threads} thread(s): {row['rps']:.1f} req/s, p50 {row['p50_ms']:.1f} ms, "
              f"p99 {row['p99_ms']:.1f} ms, {row['errors']} errors, load {common.loadavg()[0]}", flush=True)
        rows.append(row)
    cluster.use(len(cluster.replicas))
    return rows


def summary(records: list[loadgen.Record], seconds: float) -> dict[str, Any]:
    failed = loadgen.failures(records)
    return {"requests": len(records), "failed": len(failed), "failed_examples": [r.error or r.status
                                                                                  for r in failed[:5]],
            **latency(records, seconds)}


def alias_move(cluster: Cluster, uri: str, seconds: float) -> dict[str, Any]:
    old, new = register_copy(uri)
    moved: dict[str, float] = {}

    async def move(started: float) -> None:
        await asyncio.sleep(seconds / 3)
        await asyncio.to_thread(move_alias, uri, new)
        moved["at"] = time.monotonic()

    records, _, _ = asyncio.run(loadgen.closed_loop(cluster.url, CLIENTS, seconds, [move]))
    per_replica = loadgen.switches(records)
    return {"from_version": old, "to_version": new, **summary(records, seconds),
            "bound_s": f"{POLL_S * (1 + JITTER):.1f} + load time",
            "replicas": {name: {"versions": s["versions"], "flaps": s["flaps"], "answers": s["answers"],
                                "switch_after_s": (s["first_seen"][new] - moved["at"]) if new in s["first_seen"]
                                else None}
                         for name, s in per_replica.items()}}


def sigkill(cluster: Cluster, seconds: float) -> dict[str, Any]:
    killed: dict[str, float] = {}

    async def kill(started: float) -> None:
        await asyncio.sleep(seconds / 3)
        cluster.replicas[-1].signal(signal.SIGKILL)
        killed["at"] = time.monotonic()

    records, _, _ = asyncio.run(loadgen.closed_loop(cluster.url, CLIENTS, seconds, [kill]))
    victim = cluster.replicas[-1].name
    after = [r for r in records if r.start > killed["at"] + 2 and r.status == 200]
    out = {**summary(records, seconds), "killed": victim,
           "answers_from_killed_after_2s": sum(r.replica == victim for r in after),
           "haproxy_status": cluster.servers_up()[victim]}
    cluster.restart(len(cluster.replicas) - 1)  # bring it back for the next scenario
    return out


def rolling_restart(cluster: Cluster, seconds: float) -> dict[str, Any]:
    async def restart_all(started: float) -> list[float]:
        await asyncio.sleep(2)
        return [await asyncio.to_thread(cluster.restart, i) for i in range(len(cluster.replicas))]

    records, started, (exits,) = asyncio.run(loadgen.closed_loop(cluster.url, CLIENTS, seconds, [restart_all]))
    elapsed = max(r.end for r in records) - started
    return {**summary(records, elapsed), "seconds": elapsed, "exit_after_sigterm_s": exits}


def main() -> None:
    if haproxy_binary() is None:
        raise SystemExit("haproxy is not installed (Debian: apt-get install haproxy)")
    started, load_start, uri, info = common.start_serving_benchmark()
    cell_s, scenario_s = (4.0, 15.0) if common.QUICK else (15.0, 60.0)
    work = Path(tempfile.mkdtemp(prefix="bench-replicas-"))
    env = {"MODEL_URI": common.MODEL_URI, "MLFLOW_TRACKING_URI": uri, "RELOAD_INTERVAL_S": "0",
           "SENTIMENT_MLOPS_HOME": str(work)}
    rows: list[dict[str, Any]] = []
    for threads in THREADS:
        print(f"3 replicas, {threads} thread(s) each (logs in {work})", flush=True)
        threads_env = {**env, "ONNX_THREADS": str(threads), "TORCH_THREADS": str(threads)}
        with Cluster(len(REPLICAS), threads_env, work / f"t{threads}") as cluster:
            rows += throughput(cluster, threads, cell_s)
    best = max(THREADS, key=lambda t: sum(r["rps"] for r in rows if r["threads"] == t))
    store = work / "store"
    store.mkdir()
    private = private_store(uri, store)
    scenario_env = {**env, "MLFLOW_TRACKING_URI": private, "RELOAD_INTERVAL_S": str(POLL_S),
                    "RELOAD_JITTER": str(JITTER), "ONNX_THREADS": str(best), "TORCH_THREADS": str(best)}
    print(f"scenarios on 3 replicas, {best} thread(s) each, {CLIENTS} clients, {scenario_s:.0f} s each", flush=True)
    with Cluster(len(REPLICAS), scenario_env, work / "scenarios") as cluster:
        scenarios = {"alias_move": alias_move(cluster, private, scenario_s)}
        print(f"  alias move: {scenarios['alias_move']}", flush=True)
        scenarios["sigkill"] = sigkill(cluster, scenario_s)
        print(f"  SIGKILL: {scenarios['sigkill']}", flush=True)
        scenarios["rolling_restart"] = rolling_restart(cluster, scenario_s)
        print(f"  rolling restart: {scenarios['rolling_restart']}", flush=True)
    print(common.table(rows, ["replicas", "threads", "rps", "p50_ms", "p95_ms", "p99_ms", "n", "errors"], 1))
    common.write_results("replicas", {
        "model_version": info["version"], "clients": CLIENTS, "seconds_per_cell": cell_s,
        "seconds_per_scenario": scenario_s, "poll_s": POLL_S, "jitter": JITTER, "best_threads": best,
        "rows": rows, "scenarios": scenarios,
    }, started, load_start)


if __name__ == "__main__":
    main()
