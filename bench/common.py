"""What every benchmark shares: the machine, the model under test, statistics, tables, result files.

Environment:

* ``BENCH_TRACKING_URI``: the MLflow store whose ``sentiment@production`` is benchmarked
  (default: the project's store if it has one, else a small model is trained once into
  ``$TMPDIR/sentiment-mlops-bench`` by :func:`tools.model_store.build_store`, as the tests'
  ``learned_store`` is);
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

from tools.harness import CHILD_ENV

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
QUICK = os.environ.get("BENCH_QUICK", "").strip() not in {"", "0", "false", "no"}
MODEL_NAME = "sentiment"
ALIAS = "production"
MODEL_URI = f"models:/{MODEL_NAME}@{ALIAS}"
SMALL_MODEL_PARAMS = {"max_train_samples": 3000, "epochs": 2, "max_length": 48, "min_metric": 0, "distill_layers": 0}
# offline and quiet (tools.harness.CHILD_ENV), for this process too
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


def tracking_uri() -> str:
    """``$BENCH_TRACKING_URI``, else the project store (if it has a production model), else a small trained one."""
    from scoring import tracking

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
    if _has_production(cached):
        return cached
    from tools.model_store import build_store  # trains, registers, exports ONNX, evaluates and promotes

    print(f"no {MODEL_URI} to benchmark: training a small one ({SMALL_MODEL_PARAMS}) into {folder}", flush=True)
    return build_store(folder, SMALL_MODEL_PARAMS, run_name="bench-small-model").tracking_uri


def use_store(uri: str) -> None:
    """Point this process (and the children it starts) at ``uri``."""
    from scoring import tracking

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
    from pipelines.train.onnx_logging import log_onnx
    from scoring.identity import resolve_version
    from scoring.version_tags import ONNX_RUN_ID

    mv = resolve_version(model_uri)
    if mv is not None and mv.tags.get(ONNX_RUN_ID):
        return {k: v for k, v in mv.tags.items() if k.startswith("onnx.")}
    print(f"logging the ONNX export of {model_uri} with v{mv.version if mv else '?'}", flush=True)
    return log_onnx(model_uri)


def start_serving_benchmark() -> tuple[float, list[float], str, dict[str, Any]]:
    """Start time, load average, the store (this process pointed at it) and ``production_info()`` of a benchmark
    that serves ``sentiment@production``, with its ONNX export logged."""
    started, load_start = time.perf_counter(), loadavg()
    uri = tracking_uri()
    use_store(uri)
    info = production_info()
    ensure_onnx_logged()
    return started, load_start, uri, info


def interleaved(variants: Sequence[str], rounds: int) -> list[tuple[int, str]]:
    """(round, variant) in alternating order: ABC, CBA, ABC… so drift in load hits every variant alike."""
    out = []
    for r in range(rounds):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        out.extend((r, v) for v in order)
    return out
