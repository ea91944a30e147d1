"""Pipeline overhead: the train step through the Papermill runner (with its MLflow logging) vs the
same functions (``load_splits`` + ``train``) called from a plain Python script.

Both run in fresh subprocesses at a reduced size (interpreter start and imports count for
both), alternating A/B per round.  What the runner adds is measured as its fixed part
(wall − training seconds), minus the plain script's fixed part; the share at the default
size is extrapolated from the measured seconds per step and per validation pass.

    python -m bench.overhead        # 160 training texts, 2 rounds; BENCH_QUICK=1: 96, 1 round
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import common
from tools.harness import child_env

PLAIN_SCRIPT = """
import json, sys
from pipelines.config import build_config
from pipelines.data.split import load_splits
from pipelines.train.trainer import train
cfg = build_config(json.loads(sys.argv[1]))
result = train(cfg.train, cfg.scoring, load_splits(cfg.data), seed=cfg.seed, metric=cfg.promotion_metric,
               progress=False)
print("RESULT " + json.dumps({"train_seconds": result.train_seconds, "steps": result.steps,
                              "epoch_seconds": sum(h["epoch_seconds"] for h in result.history),
                              "epochs": len(result.history)}))
"""


def _env(home: Path) -> dict[str, str]:
    """Offline, state in ``home``, no MLflow store or run of this process (the runner gets its store as a param)."""
    return child_env({"SENTIMENT_MLOPS_HOME": str(home)}, drop=("MLFLOW_TRACKING_URI",))


def plain(params: dict[str, Any], home: Path) -> dict[str, Any]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PLAIN_SCRIPT, json.dumps(params)], cwd=common.ROOT, env=_env(home),
                          capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return {"wall_seconds": wall, **json.loads(line.removeprefix("RESULT "))}


def runner(params: dict[str, Any], home: Path) -> dict[str, Any]:
    from mlflow import MlflowClient

    uri = f"sqlite:///{home / 'mlflow.db'}"
    args = [x for k, v in params.items() for x in ("-p", k, str(v))]
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipelines", "run", "--steps", "train", "-p", "tracking_uri", uri, *args],
                   cwd=common.ROOT, env=_env(home), capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("sentiment")
    run = client.search_runs([experiment.experiment_id], "tags.step = 'train'", order_by=["start_time DESC"])[0]
    m = run.data.metrics
    epoch_seconds = sum(x.value for x in client.get_metric_history(run.info.run_id, "epoch_seconds"))
    return {"wall_seconds": wall, "train_seconds": m["train_seconds"], "steps": int(m["train_steps"]),
            "epoch_seconds": epoch_seconds, "epochs": params["epochs"], "step_seconds": m.get("step_seconds"),
            "cells": cell_seconds(next(home.glob("output/*/train.ipynb")))}


def cell_seconds(notebook: Path) -> list[dict[str, Any]]:
    """Seconds per code cell of an executed notebook (Papermill's timings), named by their first line."""
    import nbformat

    cells = nbformat.read(notebook, as_version=4).cells
    return [{"cell": c.source.strip().splitlines()[0][:70] if c.source.strip() else "(empty)",
             "seconds": round(float(c.metadata.get("papermill", {}).get("duration") or 0), 2)}
            for c in cells if c.cell_type == "code"]


def extrapolate(runs: list[dict[str, Any]], epochs: int) -> dict[str, Any]:
    """Training seconds at the default size (the full training split, batch 32) after ``epochs`` epochs."""
    from pipelines.config import PipelineConfig
    from pipelines.data.split import load_splits

    cfg = PipelineConfig()
    steps_per_epoch = math.ceil(len(load_splits(cfg.data).train) / cfg.batch_size)
    per_step = sum(r["epoch_seconds"] / r["steps"] for r in runs) / len(runs)
    # validation scoring: once per epoch and twice at the end (threshold, final metrics)
    per_val = sum((r["train_seconds"] - r["epoch_seconds"]) / (r["epochs"] + 2) for r in runs) / len(runs)
    train_s = epochs * (steps_per_epoch * per_step + per_val) + 2 * per_val
    return {"epochs": epochs, "steps_per_epoch": steps_per_epoch, "seconds_per_step": per_step,
            "seconds_per_validation_pass": per_val, "training_seconds": train_s}


def main() -> None:
    started, load_start = time.perf_counter(), common.loadavg()
    n_train, rounds = (96, 1) if common.QUICK else (160, 2)
    params = {"max_train_samples": n_train, "epochs": 1, "early_stopping_patience": 0}
    print(f"train step at {n_train} texts × 1 epoch (defaults otherwise), {rounds} round(s) of plain / runner",
          flush=True)
    rows: list[dict[str, Any]] = []
    home = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    try:
        for rnd, way in common.interleaved(["plain script", "papermill runner"], rounds):
            folder = home / f"{way.split()[0]}-{rnd}"
            folder.mkdir()
            result = plain(params, folder) if way == "plain script" else runner(params, folder)
            result["fixed_seconds"] = result["wall_seconds"] - result["train_seconds"]
            rows.append({"way": way, "round": rnd + 1, **result, "loadavg": common.loadavg()[0]})
            print(f"  {way}: wall {result['wall_seconds']:.1f}s, training {result['train_seconds']:.1f}s, "
                  f"fixed {result['fixed_seconds']:.1f}s", flush=True)
    finally:
        shutil.rmtree(home, ignore_errors=True)

    def mean(way: str, key: str) -> float:
        values = [r[key] for r in rows if r["way"] == way]
        return sum(values) / len(values)

    added = mean("papermill runner", "fixed_seconds") - mean("plain script", "fixed_seconds")
    runner_fixed = mean("papermill runner", "fixed_seconds")
    from pipelines.config import PipelineConfig

    cfg = PipelineConfig()  # early stopping ends a default run after 1 + patience epochs at the soonest
    fewest = min(cfg.epochs, 1 + cfg.early_stopping_patience) if cfg.early_stopping_patience else cfg.epochs
    default = {"max": extrapolate(rows, cfg.epochs), "min": extrapolate(rows, fewest)}
    for d in default.values():
        d["added_share"], d["runner_fixed_share"] = added / d["training_seconds"], runner_fixed / d["training_seconds"]
    summary = {
        "plain_fixed_seconds": mean("plain script", "fixed_seconds"), "runner_fixed_seconds": runner_fixed,
        "runner_added_seconds": added,
        "reduced_size_added_share": added / mean("papermill runner", "train_seconds"),
        "default_max_epochs_added_share": default["max"]["added_share"],
        "default_min_epochs_added_share": default["min"]["added_share"],
        "default_max_epochs_training_seconds": default["max"]["training_seconds"],
    }
    print(common.table(rows, ["way", "round", "wall_seconds", "train_seconds", "fixed_seconds", "steps", "loadavg"],
                       1))
    print(common.table(next(r["cells"] for r in rows if "cells" in r), digits=2))
    print(common.table([summary], digits=3))
    common.write_results("overhead", {"train_texts": n_train, "params": params, "runs": rows, "summary": summary,
                                      "default_size": default}, started, load_start)


if __name__ == "__main__":
    main()
