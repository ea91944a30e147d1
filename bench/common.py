"""What every benchmark shares: the machine, the model under test, statistics, tables, result files.

Environment:

* ``BENCH_TRACKING_URI``: the MLflow store whose ``sentiment@production`` is benchmarked
  (default: the project's store if it has one, else a small model is trained once into
  ``$TMPDIR/sentiment-mlops-bench``);
* ``BENCH_QUICK=1``: shorter runs (smaller training subsets, shorter load tests).
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
QUICK = os.environ.get("BENCH_QUICK", "").strip() not in {"", "0", "false", "no"}
MODEL_NAME = "sentiment"
ALIAS = "production"
MODEL_URI = f"models:/{MODEL_NAME}@{ALIAS}"
SMALL_MODEL_PARAMS = {"max_train_samples": 3000, "epochs": 2, "max_length": 48, "min_metric": 0}
CHILD_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
             "PYTHONUNBUFFERED": "1"}

os.environ.update({k: v for k, v in CHILD_ENV.items() if k != "PYTHONUNBUFFERED"})


# -- the machine ---------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, Any]:
    """Where and with what the figures were measured."""
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **{dist: _version(dist) for dist in ("torch", "onnxruntime", "transformers", "mlflow", "onnx")},
    }


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- statistics and tables -----------------------------------------------------------------
def latency_stats(seconds: Sequence[float]) -> dict[str, float]:
    """n, mean, p50, p95, p99 in milliseconds."""
    ms = np.asarray(seconds, dtype=float) * 1000
    if len(ms) == 0:
        return {"n": 0, "mean_ms": float("nan"), "p50_ms": float("nan"), "p95_ms": float("nan"),
                "p99_ms": float("nan")}
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"n": len(ms), "mean_ms": float(ms.mean()), "p50_ms": float(p50), "p95_ms": float(p95),
            "p99_ms": float(p99)}


def fmt(value: Any, digits: int = 2) -> str:
    if isinstance(value, float):
        return "nan" if np.isnan(value) else f"{value:,.{digits}f}"
    return str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, digits: int = 2) -> str:
    """A Markdown table (also readable in a terminal)."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(fmt(row.get(c, ""), digits) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name: str, payload: dict[str, Any], started: float, load_start: list[float]) -> Path:
    """``bench/results/<name>.json`` with the machine, the time taken and the load average before/after."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    body = {
        "benchmark": name,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": QUICK,
        "command": " ".join(["BENCH_QUICK=1"] * QUICK + ["python", "-m", f"bench.{name}", *sys.argv[1:]]),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        "machine": machine(),
        **payload,
    }
    path.write_text(json.dumps(body, indent=2, default=str) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")
    return path


# -- the model under test ------------------------------------------------------------------
def _has_production(uri: str) -> bool:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return False
    try:
        MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias(MODEL_NAME, ALIAS)
        return True
    except MlflowException:
        return False


def bench_store_dir() -> Path:
    return Path(tempfile.gettempdir()) / "sentiment-mlops-bench"


def train_small_model(folder: Path) -> str:
    """Train, evaluate and promote a small real model into ``folder`` (a few minutes on 2 cores).

    The pipeline's functions are called directly (what ``python -m pipelines run --steps
    train,evaluate,promote`` with SMALL_MODEL_PARAMS does, without the notebooks).
    """
    import mlflow

    from pipelines import model_logging, promotion, registry, tracking, training
    from pipelines.config import build_config
    from pipelines.data import load_splits
    from pipelines.evaluation import evaluate_scorer

    folder.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    print(f"no {MODEL_URI} to benchmark: training a small one ({SMALL_MODEL_PARAMS}) into {folder}", flush=True)
    cfg = build_config({**SMALL_MODEL_PARAMS, "tracking_uri": uri})
    tracking.setup(uri, cfg.experiment_name)
    splits = load_splits(cfg)
    with mlflow.start_run(run_name="bench-small-model") as run:
        mlflow.log_params(cfg.model_dump())
        result = training.train(cfg, splits, progress=False)
        mv = model_logging.log_and_register(result, cfg, splits)
        metrics = evaluate_scorer(result.scorer(), splits.test).metrics
        registry.record_evaluation(cfg.registered_model_name, mv.version, metrics, splits.digest, run.info.run_id)
        candidate, champion, scores, _ = promotion.gather(cfg.model_copy(update={"model_version": mv.version}))
        promotion.decide_and_apply(cfg, candidate, champion, scores, run.info.run_id)
    return uri


def tracking_uri() -> str:
    """``$BENCH_TRACKING_URI``, else the project store (if it has a production model), else a small trained one."""
    from pipelines import tracking

    explicit = os.environ.get("BENCH_TRACKING_URI", "").strip()
    if explicit:
        if not _has_production(explicit):
            raise SystemExit(f"BENCH_TRACKING_URI={explicit} has no {MODEL_URI}")
        return explicit
    project = tracking.resolve_tracking_uri()
    if _has_production(project):
        return project
    folder = bench_store_dir()
    cached = f"sqlite:///{folder / 'mlflow.db'}"
    return cached if _has_production(cached) else train_small_model(folder)


def use_store(uri: str) -> None:
    """Point this process (and the children it starts) at ``uri``."""
    from pipelines import tracking

    os.environ["MLFLOW_TRACKING_URI"] = uri
    tracking.setup(uri)


def production_info() -> dict[str, Any]:
    """Version, training parameters and test metrics of ``sentiment@production``."""
    from mlflow import MlflowClient

    client = MlflowClient()
    mv = client.get_model_version_by_alias(MODEL_NAME, ALIAS)
    params = client.get_run(mv.run_id).data.params if mv.run_id else {}
    return {"version": mv.version, "run_id": mv.run_id, "params": params, "tags": dict(mv.tags)}


def ensure_onnx_logged(model_uri: str = MODEL_URI) -> dict[str, str]:
    """The version's ``onnx.*`` tags, exporting and logging the ONNX files first if it has none."""
    from pipelines import onnx_backend

    mv = onnx_backend.resolve_version(model_uri)
    if mv is not None and mv.tags.get("onnx.run_id"):
        return {k: v for k, v in mv.tags.items() if k.startswith("onnx.")}
    print(f"logging the ONNX export of {model_uri} with v{mv.version if mv else '?'}", flush=True)
    return onnx_backend.log_onnx(model_uri)


def interleaved(variants: Sequence[str], rounds: int) -> list[tuple[int, str]]:
    """(round, variant) in alternating order: ABC, CBA, ABC… so drift in load hits every variant alike."""
    out = []
    for r in range(rounds):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        out.extend((r, v) for v in order)
    return out
