"""Training engine: the hand-written PyTorch loop it replaced vs ``transformers.Trainer``, per epoch.

The loop is taken from git (``BASELINE``, the last commit before the Trainer: ``git archive`` of
``pipelines/`` and ``scoring/`` into a temporary folder); each engine trains the same config (the
default model, the first ``N`` training texts, one epoch, no early stopping) in its own process, in
the order A B B A so that load drifting over the run falls on both. Per engine: seconds per epoch
(the epoch's training steps, without its validation pass), seconds per step, validation accuracy and a
digest of the trained weights; the summary compares each engine's best epoch time, gives each adjacent
pair's ratio, and says whether all four runs trained the same weights (the Trainer runs the recipe's
random streams, so it should).

    python -m bench.train_engine      # 4000 training texts, 2 rounds; BENCH_QUICK=1: 1000 texts, 1 round
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

from bench import common

BASELINE = "48c5477"  # the loop's last commit (pipelines/train/trainer.py before transformers.Trainer)
CHILD = """
import hashlib, json, sys
from pipelines.config import build_config
from pipelines.data.split import load_splits
from pipelines.train import trainer
cfg = build_config(json.loads(sys.argv[1]))
splits = load_splits(cfg.data)
result = trainer.train(cfg.train, cfg.scoring, splits, seed=cfg.seed, metric=cfg.promotion_metric, progress=False)
state = result.model.state_dict()
weights = hashlib.sha256(b"".join(state[k].contiguous().numpy().tobytes() for k in sorted(state))).hexdigest()[:12]
print("RESULT " + json.dumps({**result.history[0], "steps": result.steps, "weights": weights,
                              "val_accuracy_final": result.validation_metrics["accuracy"]}))
"""


def baseline_tree() -> Path:
    """``pipelines/`` and ``scoring/`` as they were at BASELINE, in a temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="bench-loop-"))
    archive = subprocess.run(["git", "archive", BASELINE, "pipelines", "scoring"], cwd=common.ROOT, check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def one_epoch(tree: Path, params: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(params)], cwd=tree, env=env, capture_output=True,
                          text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return {**json.loads(line.removeprefix("RESULT ")), "process_seconds": time.perf_counter() - started}


def main() -> None:
    started, load_start = time.perf_counter(), common.loadavg()
    n_train = 1000 if common.QUICK else 4000
    order = ("loop", "trainer") if common.QUICK else ("loop", "trainer", "trainer", "loop")
    params = {"max_train_samples": n_train, "epochs": 1, "early_stopping_patience": 0, "calibrate_long_texts": False,
              "onnx_export": False}
    trees = {"loop": baseline_tree(), "trainer": common.ROOT}
    print(f"one epoch of {n_train} training texts per run, engines in the order {' '.join(order)}", flush=True)
    runs = []
    for engine in order:
        # the loop's tree predates distill_layers; the Trainer's trains the fine-tuned model alone, as the loop did
        own = params if engine == "loop" else {**params, "distill_layers": 0}
        run = {"engine": engine, **one_epoch(trees[engine], own), "loadavg": common.loadavg()}
        runs.append(run)
        print(f"  {engine}: {run['epoch_seconds']:.1f} s/epoch, {run['seconds_per_step']:.3f} s/step, "
              f"val_accuracy {run['val_accuracy']:.4f}", flush=True)
    # best of each engine (contention only ever slows a run down), and each adjacent pair's ratio
    best = {e: min(r["epoch_seconds"] for r in runs if r["engine"] == e) for e in trees}
    pairs = [runs[i + 1]["epoch_seconds"] / runs[i]["epoch_seconds"] if runs[i]["engine"] == "loop" else
             runs[i]["epoch_seconds"] / runs[i + 1]["epoch_seconds"] for i in range(0, len(runs) - 1, 2)]
    summary = {"epoch_seconds_loop": best["loop"], "epoch_seconds_trainer": best["trainer"],
               "ratio_trainer_vs_loop": best["trainer"] / best["loop"],
               "pair_ratios": ", ".join(f"{x:.3f}" for x in pairs),
               "median_pair_ratio": statistics.median(pairs),
               "same_weights": len({r["weights"] for r in runs}) == 1}
    print(common.table(runs, ["engine", "steps", "epoch_seconds", "seconds_per_step", "train_loss", "val_accuracy",
                              "weights", "process_seconds", "loadavg"], 3))
    print(common.table([summary], digits=3))
    common.write_results("train_engine", {"baseline_commit": BASELINE, "train_texts": n_train, "runs": runs,
                                          "summary": summary}, started, load_start)


if __name__ == "__main__":
    main()
