"""Serving: our app (each backend, with and without micro-batching) vs ``mlflow models serve``.

All servers run at once on loopback with the same registered model and one worker
each; the same aiohttp client drives them in turn (round-robin, order alternating per
round) with 1 and 8 concurrent clients sending one sentence or one full review per
request.  The in-process floor (bare forwards of the same inputs) is measured in the
same run, half before and half after the load tests.

    python -m bench.serving        # BENCH_QUICK=1: one short round
    BENCH_SERVERS=mlflow,app-torch python -m bench.serving
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp

from bench import common, inprocess
from tools.harness import ServerProcess, app_server, child_env, free_port

CONCURRENCY = (1, 8)
# the app's settings that the variants change; any value of them in the caller's environment is dropped
VARIANT_SETTINGS = ("BACKEND", "MICRO_BATCH_MS", "LONG_TEXT_STRATEGY", "INFERENCE_LOG", "ONNX_THREADS", "ONNX_PARALLEL",
                    "TORCH_THREADS", "INT8_CALLS", "WINDOW_STRIDE", "MAX_WINDOWS", "AGGREGATION", "LONG_THRESHOLD")
APP_VARIANTS: dict[str, dict[str, str]] = {
    "app": {},  # the defaults: BACKEND=onnx-int8, MICRO_BATCH_MS=3 (see app/settings.py)
    "app-torch": {"BACKEND": "torch", "MICRO_BATCH_MS": "0"},  # the first release's defaults
    "app-onnx": {"BACKEND": "onnx", "MICRO_BATCH_MS": "0"},
    "app-onnx-int8": {"BACKEND": "onnx-int8", "MICRO_BATCH_MS": "0"},
    "app-torch+mb": {"BACKEND": "torch", "MICRO_BATCH_MS": "3"},
    # what mlflow does with a long text (its first max_length tokens only): the like-for-like long-text peer
    "app-trunc": {"LONG_TEXT_STRATEGY": "truncate"},
    # the inference log's cost per request (SQLite writer thread + token statistics)
    "app-nolog": {"INFERENCE_LOG": "false"},
}
WARMUP_SECONDS = 3.0


class Server(ServerProcess):
    """A server under test (``mlflow`` or an app variant) on a free loopback port, and the request it answers.

    The process is ``base``'s (a :class:`tools.harness.ServerProcess`), under the variant's ``name``,
    with ``env`` over the caller's environment less any of VARIANT_SETTINGS.
    """

    def __init__(self, name: str, base: ServerProcess, env: dict[str, str]) -> None:
        super().__init__(base.cmd, base.port, base.log, ready_path=base.ready_path, cwd=base.cwd, name=name)
        self.env = child_env(env, drop=VARIANT_SETTINGS)

    @property
    def is_mlflow(self) -> bool:
        return self.name == "mlflow"

    def request(self, text: str) -> tuple[str, dict[str, Any]]:
        if self.is_mlflow:
            return "/invocations", {"inputs": [text]}
        return "/predict", {"text": text}


def make_servers(names: list[str], uri: str, log_dir: Path,
                 variants: dict[str, dict[str, str]] = APP_VARIANTS) -> list[Server]:
    servers = []
    for name in names:
        log = log_dir / f"{name}.log"
        if name == "mlflow":
            port = free_port()
            cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", common.MODEL_URI, "--env-manager",
                   "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
            env = {"MLFLOW_TRACKING_URI": uri}
            servers.append(Server(name, ServerProcess(cmd, port, log, env, "/ping"), env))
            continue
        env = {"MODEL_URI": common.MODEL_URI, "MLFLOW_TRACKING_URI": uri, "RELOAD_INTERVAL_S": "0",
               "INFERENCE_DB": str(log_dir / f"{name}-inference.db"), **variants[name]}
        base = app_server(log, env, uvicorn_args=("--log-level", "warning", "--no-access-log"))
        servers.append(Server(name, base, env))
    return servers


def wait_ready(servers: list[Server], timeout: float = 600) -> None:
    """Wait until every server answers its readiness path (they start together: in turn is as fast)."""
    deadline = time.monotonic() + timeout
    for server in servers:
        server.wait_ready(timeout=max(deadline - time.monotonic(), 1))
        print(f"  {server.name} ready on :{server.port}", flush=True)


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """``python -m bench`` stops a benchmark past its limit with SIGTERM: unwind, so the servers are stopped too."""
    raise SystemExit(128 + signum)


async def load(server: Server, text: str | Sequence[str], concurrency: int, seconds: float) -> dict[str, Any]:
    """``concurrency`` closed-loop clients for ``seconds``: latencies of successful requests, errors.

    ``text``: the one text every request sends, or a pool that client ``i`` sends in turn from its ``i``-th text
    on (the same sequence for every server).
    """
    pool = [text] if isinstance(text, str) else list(text)
    sent = [0] * concurrency
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(server.url, connector=connector, timeout=aiohttp.ClientTimeout(120)) as session:
        async def one(client: int) -> None:
            nonlocal errors
            path, body = server.request(pool[(client * len(pool) // concurrency + sent[client]) % len(pool)])
            sent[client] += 1
            start = time.perf_counter()
            try:
                async with session.post(path, json=body) as response:
                    await response.read()
                    ok = response.status == 200
            except aiohttp.ClientError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - start)
            else:
                errors += 1

        await asyncio.gather(*(one(c) for c in range(concurrency)))  # warm-up: connections and first calls
        latencies.clear()
        sent[:] = [0] * concurrency
        started = time.perf_counter()
        deadline = started + seconds

        async def client(c: int) -> None:
            while time.perf_counter() < deadline:
                await one(c)

        await asyncio.gather(*(client(c) for c in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"latencies": latencies, "errors": errors, "seconds": elapsed}


async def load_tests(servers: list[Server], texts: dict[str, str], rounds: int, seconds: float) -> dict[str, Any]:
    for server in servers:  # first requests are slow (lazy initialisation, allocator growth): not measured
        for text in texts.values():
            await load(server, text, 2, WARMUP_SECONDS / len(texts))
    raw: dict[tuple[str, str, int], dict[str, Any]] = {}
    for text_name, text in texts.items():
        for conc in CONCURRENCY:
            for rnd, name in common.interleaved([s.name for s in servers], rounds):
                server = next(s for s in servers if s.name == name)
                got = await load(server, text, conc, seconds)
                cell = raw.setdefault((name, text_name, conc), {"latencies": [], "errors": 0, "seconds": 0.0})
                cell["latencies"] += got["latencies"]
                cell["errors"] += got["errors"]
                cell["seconds"] += got["seconds"]
                print(f"  round {rnd + 1} {name:18s} {text_name:5s} c={conc}: {len(got['latencies'])} ok, "
                      f"{got['errors']} errors, load {common.loadavg()[0]}", flush=True)
    rows = []
    for (name, text_name, conc), cell in raw.items():
        stats = common.latency_stats(cell["latencies"])
        rows.append({"server": name, "text": text_name, "clients": conc,
                     "rps": len(cell["latencies"]) / cell["seconds"], **stats, "errors": cell["errors"]})
    return {"rows": rows}


async def http_floor(servers: list[Server], n: int) -> dict[str, dict[str, float]]:
    """Latency of the cheapest endpoint (``/health``, mlflow's ``/ping``) with one client: the HTTP stack alone."""
    out = {}
    async with aiohttp.ClientSession() as session:
        for server in servers:
            path = "/ping" if server.is_mlflow else "/health"
            samples = []
            for _ in range(n):
                start = time.perf_counter()
                async with session.get(server.url + path) as response:
                    await response.read()
                samples.append(time.perf_counter() - start)
            out[server.name] = common.latency_stats(samples)
    return out


def ratios(rows: list[dict[str, Any]], floor_ms: float) -> list[dict[str, Any]]:
    """Per app variant: throughput at 8 clients vs mlflow, /predict p50 (1 sentence, 1 client) vs the floor."""
    def cell(server: str, text: str, clients: int) -> dict[str, Any] | None:
        return next((r for r in rows if (r["server"], r["text"], r["clients"]) == (server, text, clients)), None)

    out = []
    for server in sorted({r["server"] for r in rows} - {"mlflow"}):
        row: dict[str, Any] = {"server": server}
        for text in ("short", "long"):
            ours, peer = cell(server, text, 8), cell("mlflow", text, 8)
            row[f"rps_x_mlflow_{text}_c8"] = ours["rps"] / peer["rps"] if ours and peer and peer["rps"] else None
        short = cell(server, "short", 1)
        row["p50_short_c1_ms"] = short["p50_ms"] if short else None
        row["p50_x_floor"] = short["p50_ms"] / floor_ms if short else None
        out.append(row)
    return out


def main() -> None:
    started, load_start, uri, info = common.start_serving_benchmark()
    names = [n.strip() for n in os.environ.get("BENCH_SERVERS", "mlflow," + ",".join(APP_VARIANTS)).split(",")]
    rounds, seconds = (1, 2.0) if common.QUICK else (2, 3.0)
    floor_rounds = 4 if common.QUICK else 10
    texts = {"short": inprocess.SHORT_TEXT, "long": inprocess.long_review()}
    log_dir = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    servers = make_servers(names, uri, log_dir)
    print(f"starting {', '.join(names)} (logs in {log_dir})", flush=True)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # each server runs in its own process group
    try:
        for server in servers:
            server.start()
        wait_ready(servers)
        models = inprocess.Models()
        floor_before = inprocess.measure_floor(models, texts, floor_rounds // 2)
        results = asyncio.run(load_tests(servers, texts, rounds, seconds))
        results["http_floor"] = asyncio.run(http_floor(servers, 100 if common.QUICK else 300))
        floor_after = inprocess.measure_floor(models, texts, floor_rounds // 2)
        tokenization = inprocess.measure_tokenization(models, [texts["short"]] * 4 + [inprocess.long_review(3)] * 4,
                                                      floor_rounds)
    finally:
        for server in servers:
            server.stop()
    floor = merge_floors(floor_before, floor_after)
    floor_name, floor_ms = inprocess.fastest(floor, "forward", "short")
    results["ratios"] = ratios(results["rows"], floor_ms)
    print("\nload tests (requests/s and latency in ms)")
    print(common.table(results["rows"], ["server", "text", "clients", "rps", "p50_ms", "p95_ms", "p99_ms", "n",
                                         "errors"], 1))
    print("\nHTTP stack alone (/health, mlflow /ping; 1 client)")
    print(common.table([{"server": k, **v} for k, v in results["http_floor"].items()],
                       ["server", "p50_ms", "p95_ms", "n"]))
    print(f"\nin-process floor (fastest bare forward, one sentence: {floor_name} {floor_ms:.2f} ms)")
    print(common.table(inprocess.floor_rows(floor)))
    print("\nratios (goals: rps ≥ 3× mlflow at 8 clients; p50 ≤ 2× floor)")
    print(common.table(results["ratios"]))
    payload = {
        "model_version": info["version"], "max_length": info["params"].get("max_length"),
        "texts": {k: {"chars": len(v), **floor["windows"][k]} for k, v in texts.items()},
        "rounds": rounds, "seconds_per_round": seconds, "servers": names, "app_variants": APP_VARIANTS,
        "floor": floor, "floor_fastest_short_forward": {"variant": floor_name, "p50_ms": floor_ms},
        "tokenization": tokenization, **results,
    }
    common.write_results("serving", payload, started, load_start)


def merge_floors(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Average the statistics of two floor measurements (before and after the load tests)."""
    out: dict[str, Any] = {"windows": a["windows"], "forward": {}, "predict_proba": {}}
    for what in ("forward", "predict_proba"):
        for text, variants in a[what].items():
            out[what][text] = {
                v: {k: (s[k] + b[what][text][v][k]) / 2 if k != "n" else s[k] + b[what][text][v][k] for k in s}
                for v, s in variants.items()
            }
    return out


if __name__ == "__main__":
    main()
