"""Batch scoring: ``predict``, Spark local[2], the HTTP API and the bare runtime side by side; then growth.

One input file of Rotten Tomatoes snippets sampled with replacement (seeded), as Parquet, is scored by:

* ``bare``: ``scorer.predict_proba`` on its texts in chunks of 1000 (the served runtime, all cores), in a
  process of its own: the baseline of the goal (the file path at ≥ 90 % of it);
* ``predict``: ``python -m pipelines predict`` (one process, same backend and threads);
* ``spark local[2]``: ``python -m pipelines spark-predict --master local[2]`` (our pandas UDF: 2 Python
  workers × 1 thread, int8), and, for the choice of UDF, ``mlflow.pyfunc.spark_udf`` on the same version
  with the same session settings (the transformers flavor: PyTorch fp32, truncation);
* ``api``: the server with its defaults, 8 clients posting ``/predict/batch`` of 64 texts;

``bare`` and ``predict`` run next to each other three times (before the others, then twice after, the order
alternating): their texts/s are the means, and predict's ratio to bare (the goal: ≥ 0.9) is the median of the
three pairs', so a spike in the machine's load during one run does not decide it. Peak RSS is the whole process tree's
(Spark: the driver, its JVM and the Python workers; the API: the server), sampled every 0.1 s. Then
``predict`` alone on 10k, 100k and 1M rows (``BENCH_BATCH_SIZES``; quick: 2k, 10k): time and peak RSS.

    python -m bench.batch                              # ≈ 1 h on 2 cores (the 1M-row file: ~45 min)
    BENCH_QUICK=1 python -m bench.batch                # 2k rows side by side, growth 2k → 10k
    BENCH_BATCH_SIZES=10000,100000 python -m bench.batch
    python -m bench.batch bare FILE.parquet            # one variant alone (JSON on stdout), as the run calls it
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from bench import common
from tools.harness import app_server, child_env

SIDE_ROWS = 2_000 if common.QUICK else 10_000
GROWTH = tuple(int(n) for n in os.environ.get("BENCH_BATCH_SIZES", "").split(",") if n.strip()) or (
    (2_000, 10_000) if common.QUICK else (10_000, 100_000, 1_000_000))
CHUNK = 1000  # predict's default --chunk-rows; the bare runtime's calls
CLIENTS, API_BATCH = 8, 64  # the API: 8 clients, MAX_BATCH texts per request
PAIRS = 3  # bare / predict runs next to each other; the goal's ratio is the median of theirs
SPARK_MASTER = "local[2]"


# -- the input -----------------------------------------------------------------------------------------------
def make_input(rows: int, path: Path) -> Path:
    """``rows`` Rotten Tomatoes snippets drawn with replacement (seed 0) with an ``id``, as Parquet."""
    if path.is_file() and pq.ParquetFile(path).metadata.num_rows == rows:
        return path
    from pipelines.data.sources import load_dataset

    texts = load_dataset("embedded:rotten_tomatoes")["text"].to_numpy()
    rng = np.random.default_rng(0)
    schema = pa.schema([("id", pa.string()), ("text", pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, 50_000):
            n = min(50_000, rows - start)
            writer.write_table(pa.table({"id": [f"r{i}" for i in range(start, start + n)],
                                         "text": texts[rng.integers(0, len(texts), n)].tolist()}, schema))
    return path


# -- measuring a process tree ----------------------------------------------------------------------------------
class RssSampler(threading.Thread):
    """The peak of the summed RSS of a process and all its descendants, sampled every ``interval`` s."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak = pid, interval, 0
        self._done = threading.Event()

    def run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._done.is_set():
            total = 0
            try:
                for proc in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):  # it ended between listing and reading
                        total += proc.memory_info().rss
            except psutil.Error:
                break
            self.peak = max(self.peak, total)
            self._done.wait(self.interval)

    def stop(self) -> float:
        self._done.set()
        self.join()
        return self.peak / 2**20


def run_measured(cmd: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    """Run ``cmd``; its stdout JSON, wall seconds, peak RSS of its tree and of itself (exact, from wait4)."""
    started = time.perf_counter()
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, cwd=common.ROOT, env=env, stdout=subprocess.PIPE, stderr=err)
        sampler = RssSampler(proc.pid)
        sampler.start()
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    peak_tree = sampler.stop()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}; log {log}:\n{log.read_text()[-3000:]}")
    return {"result": json.loads(out), "wall_s": wall, "peak_rss_mb": max(peak_tree, usage.ru_maxrss / 1024),
            "peak_rss_main_mb": usage.ru_maxrss / 1024}


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


# -- the variants (each in its own process) --------------------------------------------------------------------
def bare(path: str) -> dict[str, Any]:
    """The served runtime in this process: ``predict_proba`` on the file's texts, chunk by chunk."""
    from scoring.config import DEFAULT_BACKEND
    from scoring.runtimes import load_scorer

    scorer = load_scorer(common.MODEL_URI, DEFAULT_BACKEND, threads=0)
    texts = pq.read_table(path, columns=["text"]).column("text").to_pylist()
    seconds = 0.0
    for start in range(0, len(texts), CHUNK):
        t0 = time.perf_counter()
        scorer.predict_proba(texts[start:start + CHUNK])
        seconds += time.perf_counter() - t0
    return {"rows": len(texts), "seconds": seconds}


def spark_mlflow(path: str, output: str) -> dict[str, Any]:
    """``mlflow.pyfunc.spark_udf`` on the resolved version, in a session set up as spark-predict's."""
    import mlflow

    from pipelines.batch import spark as batch_spark
    from scoring.identity import resolve

    source = resolve(common.MODEL_URI).source
    with batch_spark.session(SPARK_MASTER, ui=False, chunk_rows=CHUNK) as spark:
        udf = mlflow.pyfunc.spark_udf(spark, source, env_manager="local", result_type="label string, score double")
        frame = spark.read.parquet(path)
        frame = frame.repartition(4 * spark.sparkContext.defaultParallelism)
        started = time.perf_counter()
        frame.select("id", udf("text").alias("answer")).select("id", "answer.label", "answer.score") \
            .write.mode("overwrite").parquet(output)
        seconds = time.perf_counter() - started
    return {"rows": pq.ParquetFile(path).metadata.num_rows, "seconds": seconds}


async def _api_load(url: str, texts: list[str]) -> float:
    """Seconds for CLIENTS closed-loop clients to score ``texts`` through ``/predict/batch``, API_BATCH each."""
    import aiohttp

    batches = [texts[i:i + API_BATCH] for i in range(0, len(texts), API_BATCH)]
    pending = iter(batches)
    async with aiohttp.ClientSession(url, timeout=aiohttp.ClientTimeout(300)) as session:
        async def client() -> None:
            for batch in pending:
                async with session.post("/predict/batch", json={"texts": batch}) as response:
                    body = await response.json()
                    if response.status != 200 or len(body["predictions"]) != len(batch):
                        raise RuntimeError(f"/predict/batch answered {response.status}: {body}")

        await session.post("/predict/batch", json={"texts": texts[:API_BATCH]})  # warm-up
        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(CLIENTS)))
        return time.perf_counter() - started


def api(path: Path, uri: str, log_dir: Path) -> dict[str, Any]:
    """The server with its defaults (onnx-int8, micro-batching, inference log) under 8 batch clients."""
    texts = pq.read_table(path, columns=["text"]).column("text").to_pylist()
    env = {"MODEL_URI": common.MODEL_URI, "MLFLOW_TRACKING_URI": uri, "RELOAD_INTERVAL_S": "0",
           "INFERENCE_DB": str(log_dir / "api-inference.db")}
    server = app_server(log_dir / "api.log", env, uvicorn_args=("--log-level", "warning", "--no-access-log"))
    with server:
        server.wait_ready()
        sampler = RssSampler(server.proc.pid)
        sampler.start()
        seconds = asyncio.run(_api_load(server.url, texts))
        peak = sampler.stop()
    return {"rows": len(texts), "seconds": seconds, "peak_rss_mb": peak}


# -- the run ---------------------------------------------------------------------------------------------------
def _row(variant: str, measured: dict[str, Any], rows: int, seconds: float) -> dict[str, Any]:
    return {"variant": variant, "rows": rows, "seconds": seconds, "texts_per_s": rows / seconds,
            "wall_s": measured.get("wall_s"), "peak_rss_mb": measured["peak_rss_mb"]}


def side_by_side(path: Path, uri: str, work: Path, env: dict[str, str]) -> dict[str, Any]:
    rows, out = pq.ParquetFile(path).metadata.num_rows, work / "out"
    out.mkdir(exist_ok=True)
    measured: dict[str, dict[str, Any]] = {}

    def step(name: str, cmd: list[str]) -> dict[str, Any]:
        print(f"  {name} …", flush=True)
        measured[name] = run_measured(cmd, env, work / f"{name.replace(' ', '-')}.log")
        print(f"  {name}: {measured[name]['result'].get('seconds'):.1f} s, "
              f"{measured[name]['peak_rss_mb']:.0f} MB, load {common.loadavg()[0]}", flush=True)
        return measured[name]

    commands = {"bare": _python("-m", "bench.batch", "bare", str(path)),
                "predict": _python("-m", "pipelines", "predict", "-i", str(path), "-o", str(out / "predict.parquet"),
                                   "--keep-columns", "id", "--no-progress", "--overwrite")}
    runs: dict[str, list[dict[str, Any]]] = {"bare": [], "predict": []}

    def pair(i: int) -> None:
        """One bare run and one predict run, next to each other (order alternating by pair)."""
        for name in ("bare", "predict") if i % 2 == 0 else ("predict", "bare"):
            runs[name].append(step(f"{name} {len(runs[name]) + 1}", commands[name]))

    pair(0)
    step("spark", _python("-m", "pipelines", "spark-predict", "-i", str(path), "-o", str(out / "spark"),
                          "--keep-columns", "id", "--master", SPARK_MASTER, "--overwrite"))
    step("spark mlflow", _python("-m", "bench.batch", "spark-mlflow", str(path), str(out / "spark-mlflow")))
    print("  api …", flush=True)
    measured["api"] = api(path, uri, work)
    print(f"  api: {measured['api']['seconds']:.1f} s, load {common.loadavg()[0]}", flush=True)
    for i in range(1, PAIRS):
        pair(i)

    seconds = {"bare": lambda m: m["result"]["seconds"],
               "predict": lambda m: m["result"]["seconds"] + m["result"]["publish_seconds"]}

    def mean(name: str) -> dict[str, Any]:
        """The runs of ``name``: mean seconds and wall, highest peak."""
        return {"seconds": float(np.mean([seconds[name](m) for m in runs[name]])),
                "wall_s": float(np.mean([m["wall_s"] for m in runs[name]])),
                "peak_rss_mb": max(m["peak_rss_mb"] for m in runs[name])}

    # the goal's ratio: per pair of neighbouring runs (a load spike hits one pair), the median of the pairs
    pair_ratios = [seconds["bare"](b) / seconds["predict"](p) for b, p in zip(runs["bare"], runs["predict"],
                                                                             strict=True)]
    bare_run, predict_run = mean("bare"), mean("predict")
    spark = measured["spark"]["result"]
    variants = [
        _row("bare runtime (predict_proba)", bare_run, rows, bare_run["seconds"]),
        _row("predict (1 process)", predict_run, rows, predict_run["seconds"]),
        _row(f"spark-predict {SPARK_MASTER} (pandas UDF, int8)", measured["spark"], rows, spark["seconds"]),
        _row(f"mlflow spark_udf {SPARK_MASTER} (torch fp32)", measured["spark mlflow"], rows,
             measured["spark mlflow"]["result"]["seconds"]),
        {**_row(f"API /predict/batch, {CLIENTS} clients", measured["api"], rows, measured["api"]["seconds"]),
         "wall_s": None},
    ]
    for v in variants:
        v["x_bare"] = v["texts_per_s"] / variants[0]["texts_per_s"]
    variants[1]["x_bare"] = float(np.median(pair_ratios))
    return {"rows": rows, "variants": variants, "agreement": agreement(out), "raw": measured,
            "predict_x_bare_pairs": pair_ratios, "pairs": PAIRS}


def agreement(out: Path) -> dict[str, Any]:
    """Labels and confidences of the Spark runs against the file path's, row by row (joined on ``id``)."""
    import pandas as pd

    local = pd.read_parquet(out / "predict.parquet").set_index("id")
    ours = pd.read_parquet(out / "spark").set_index("id").loc[local.index]
    theirs = pd.read_parquet(out / "spark-mlflow").set_index("id").loc[local.index]
    return {
        "spark_label_agreement": float((ours["sentiment"] == local["sentiment"]).mean()),
        "spark_max_abs_confidence_diff": float((ours["confidence"] - local["confidence"]).abs().max()),
        "mlflow_udf_label_agreement": float((theirs["label"] == local["sentiment"]).mean()),
    }


def growth(work: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    for rows in GROWTH:
        path = make_input(rows, work / f"rt-{rows}.parquet")
        print(f"  predict on {rows} rows …", flush=True)
        m = run_measured(_python("-m", "pipelines", "predict", "-i", str(path), "-o", str(work / "growth.parquet"),
                                 "--keep-columns", "id", "--no-progress", "--overwrite"), env,
                         work / f"growth-{rows}.log")
        r = m["result"]
        out.append({"rows": rows, "scoring_s": r["seconds"], "publish_s": r["publish_seconds"],
                    "texts_per_s": rows / (r["seconds"] + r["publish_seconds"]), "wall_s": m["wall_s"],
                    "peak_rss_mb": m["peak_rss_mb"], "load_1min": common.loadavg()[0]})
        print(f"  {rows} rows: {out[-1]['texts_per_s']:.0f} texts/s, {m['peak_rss_mb']:.0f} MB, "
              f"load {common.loadavg()[0]}", flush=True)
    base = out[0]
    for row in out:
        row["time_x"] = (row["scoring_s"] + row["publish_s"]) / (base["scoring_s"] + base["publish_s"])
        row["rows_x"] = row["rows"] / base["rows"]
    return out


def main() -> None:
    started, load_start = time.perf_counter(), common.loadavg()
    uri = common.tracking_uri()
    common.use_store(uri)
    info = common.production_info()
    common.ensure_onnx_logged()
    work = Path(os.environ.get("BENCH_BATCH_DIR") or tempfile.mkdtemp(prefix="bench-batch-"))
    work.mkdir(parents=True, exist_ok=True)
    env = child_env({"MLFLOW_TRACKING_URI": uri})
    print(f"batch benchmark in {work}: {SIDE_ROWS} rows side by side, growth {GROWTH}", flush=True)
    side = side_by_side(make_input(SIDE_ROWS, work / f"rt-{SIDE_ROWS}.parquet"), uri, work, env)
    print(common.table(side["variants"], ["variant", "rows", "texts_per_s", "x_bare", "peak_rss_mb", "wall_s"], 2))
    print(side["agreement"])
    grown = growth(work, env)
    print(common.table(grown, ["rows", "texts_per_s", "rows_x", "time_x", "peak_rss_mb", "wall_s"], 2))
    payload = {"model_version": info["version"], "max_length": info["params"].get("max_length"),
               "chunk_rows": CHUNK, "clients": CLIENTS, "api_batch": API_BATCH, "spark_master": SPARK_MASTER,
               "side_by_side": {k: v for k, v in side.items() if k != "raw"}, "growth": grown,
               "predict_summary": side["raw"]["predict 1"]["result"], "spark_summary": side["raw"]["spark"]["result"]}
    common.write_results("batch", payload, started, load_start)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("bare", "spark-mlflow"):
        common.use_store(os.environ["MLFLOW_TRACKING_URI"])
        result = bare(sys.argv[2]) if sys.argv[1] == "bare" else spark_mlflow(sys.argv[2], sys.argv[3])
        print(json.dumps(result), flush=True)
    else:
        main()
