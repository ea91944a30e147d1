"""What is ours in a ``transformers.Trainer`` run, as its callbacks.

* :class:`EpochRecords`: one history row per epoch (train loss, seconds, validation metrics) and
  the running sum of epoch-end weights for the weight average; both saved into each checkpoint
  and restored from it on resume;
* :class:`MlflowMetrics`: the step's MLflow run gets the loss and learning rate every logging
  step and each epoch's row (rank 0 only; the other ranks never touch MLflow);
* :class:`ProgressLines`: a line every ``interval`` seconds (epoch, step, loss, rows/s, ETA) that
  a terminal shows as it comes, also from a notebook that papermill runs.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.entities import Metric
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback

RECORDS_FILE = "epoch_records.json"
ARTIFACT_PATH = "checkpoints"  # where log_checkpoints puts them in the step's run
WEIGHT_SUM_FILE = "epoch_weight_sum.safetensors"


class EpochRecords(TrainerCallback):
    """Per-epoch history and the sum of epoch-end weights (from epoch ``average_from`` on, if set)."""

    def __init__(self, average_from: int | None):
        self.average_from = average_from
        self.history: list[dict[str, float]] = []
        self.weight_sum: dict[str, torch.Tensor] | None = None
        self.averaged = 0
        self._losses: list[float] = []
        self._epoch_start, self._epoch_seconds, self._first_step, self._epoch_steps = 0.0, 0.0, 0, 0

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._epoch_start, self._first_step, self._losses = time.perf_counter(), state.global_step, []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self._losses.append(float(logs["loss"]))

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        self._epoch_seconds = time.perf_counter() - self._epoch_start
        self._epoch_steps = state.global_step - self._first_step
        if self.average_from is not None and round(state.epoch) >= self.average_from and model is not None:
            self._accumulate(model.state_dict())

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        metrics = metrics or {}
        self.history.append({
            "epoch": round(state.epoch),
            "train_loss": float(np.mean(self._losses)) if self._losses else math.nan,
            "epoch_seconds": self._epoch_seconds,
            "seconds_per_step": self._epoch_seconds / max(1, self._epoch_steps),
            **{f"val_{k.removeprefix('eval_')}": float(v) for k, v in metrics.items()
               if k.startswith("eval_") and k.removeprefix("eval_") in VAL_METRICS},
        })

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.save(Path(args.output_dir) / f"checkpoint-{state.global_step}")

    def _accumulate(self, state: dict[str, torch.Tensor]) -> None:
        if self.weight_sum is None:
            self.weight_sum = {k: v.detach().float().cpu().clone() for k, v in state.items() if v.is_floating_point()}
        else:
            for k, v in state.items():
                if v.is_floating_point():
                    self.weight_sum[k] += v.detach().float().cpu()
        self.averaged += 1

    def save(self, checkpoint: Path) -> None:
        checkpoint.mkdir(parents=True, exist_ok=True)
        (checkpoint / RECORDS_FILE).write_text(json.dumps({"history": self.history, "averaged": self.averaged}))
        if self.weight_sum is not None:
            save_file({k: v.contiguous() for k, v in self.weight_sum.items()}, str(checkpoint / WEIGHT_SUM_FILE))

    def restore(self, checkpoint: Path) -> None:
        """The history and weight sum as they were when ``checkpoint`` was saved."""
        saved = json.loads((checkpoint / RECORDS_FILE).read_text())
        self.history, self.averaged = saved["history"], int(saved["averaged"])
        sums = checkpoint / WEIGHT_SUM_FILE
        self.weight_sum = load_file(str(sums)) if sums.is_file() else None


VAL_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")


class MlflowMetrics(TrainerCallback):
    """Loss and learning rate per logging step, each epoch's history row, checkpoints if asked: one run (rank 0)."""

    def __init__(self, run_id: str, records: EpochRecords, log_checkpoints: bool = False, *, prefix: str = "",
                 artifact_path: str = ARTIFACT_PATH):
        self.run_id, self.records, self.client = run_id, records, MlflowClient()
        self.log_checkpoints, self.prefix, self.artifact_path = log_checkpoints, prefix, artifact_path

    def _log(self, values: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        metrics = [Metric(self.prefix + k, float(v), now, step) for k, v in values.items() if not math.isnan(float(v))]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics, synchronous=True)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs and "loss" in logs:
            self._log({"train_loss_step": logs["loss"], "learning_rate": logs.get("learning_rate", math.nan)},
                      state.global_step)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if state.is_world_process_zero and self.records.history:
            row = self.records.history[-1]
            self._log({k: v for k, v in row.items() if k != "epoch"}, int(row["epoch"]))

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.log_checkpoints:  # after EpochRecords wrote its part
            name = f"checkpoint-{state.global_step}"
            folder = Path(args.output_dir) / name
            files = sorted(p for p in folder.iterdir() if p.is_file())
            for path in sorted(files, key=lambda p: p.name == RECORDS_FILE):  # the records last: complete
                self.client.log_artifact(self.run_id, str(path), f"{self.artifact_path}/{name}")


class ProgressLines(TrainerCallback):
    """``epoch 1/4 · step 120/1440 · loss 0.412 · 310 rows/s · ETA 6:50``, every ``interval`` seconds (rank 0).

    ``title`` names what trains (``training``, ``training the teacher``, …) in the first line.
    """

    def __init__(self, rows_per_step: int, interval: float = 30.0, first: float = 10.0, title: str = "training"):
        self.rows_per_step, self.interval, self.first, self.title = rows_per_step, interval, first, title
        self._start, self._start_step, self._last, self._loss = 0.0, 0, 0.0, math.nan

    def on_train_begin(self, args, state, control, **kwargs):
        self._start = self._last = time.perf_counter()
        self._start_step = state.global_step
        if state.is_world_process_zero:
            print(f"{self.title}: {state.max_steps} steps of {self.rows_per_step} rows, "
                  f"{args.num_train_epochs:g} epochs", flush=True)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self._loss = float(logs["loss"])

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        due = self.first if self._last == self._start else self.interval
        if not state.is_world_process_zero or now - self._last < due:
            return
        self._last = now
        done = state.global_step - self._start_step
        rate = done / (now - self._start)
        eta = (state.max_steps - state.global_step) / rate if rate else math.inf
        per_epoch = max(1, math.ceil(state.max_steps / args.num_train_epochs))
        epoch = min(int(args.num_train_epochs), state.global_step // per_epoch + 1)
        loss = "–" if math.isnan(self._loss) else f"{self._loss:.3f}"
        print(f"epoch {epoch}/{args.num_train_epochs:g} · step {state.global_step}/{state.max_steps} · loss {loss} · "
              f"{rate * self.rows_per_step:.0f} rows/s · ETA {_clock(eta)}", flush=True)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if state.is_world_process_zero and metrics:
            print(f"epoch {round(state.epoch)}: val_accuracy {metrics.get('eval_accuracy', math.nan):.4f} "
                  f"val_roc_auc {metrics.get('eval_roc_auc', math.nan):.4f} "
                  f"({_clock(time.perf_counter() - self._start)} since the start)", flush=True)


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"
