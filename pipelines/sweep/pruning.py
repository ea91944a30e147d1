"""Pruning a sweep's trial from inside its train step: the study's median rule fed after each epoch.

The sweep puts the running trial in the train step's environment (``SWEEP_TRIAL``: the study, the trial
and the metric, as JSON; the storage URL in ``SWEEP_STORAGE``), so the kernel that runs the train notebook
reports each epoch's validation metric to the trial (steps: epoch ``n`` of the fine-tuning is ``n``, of a
student ``STUDENT_STEP + n``, of a student's fine-tuned start ``BASE_STEP + n``).
When Optuna's :class:`~optuna.pruners.MedianPruner` says the trial is below
the median of the earlier trials at that epoch, the callback records where (user attribute ``pruned_at``)
and raises :class:`Pruned`: the train step stops before registering anything, and the sweep records the
trial as PRUNED (and its MLflow runs as KILLED, tag ``sweep_pruned``).
"""

from __future__ import annotations

import json
import os
from typing import Any

import optuna
from transformers import TrainerCallback

TRIAL_ENV = "SWEEP_TRIAL"
STUDENT_STEP = 1000  # a student's epochs are reported after the fine-tuning's
BASE_STEP = 500  # student_init fine-tuned: the student's start, between the other teacher's and the student's


class Pruned(RuntimeError):
    """The study's pruner stopped this trial after an epoch."""


def pruner(startup_trials: int) -> optuna.pruners.BasePruner:
    """The sweep's rule: below the median of the trials before at the same epoch, once ``startup_trials``
    have finished (0: never prune)."""
    if startup_trials <= 0:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=0)


def trial_env(study: optuna.Study, trial: optuna.Trial, metric: str) -> dict[str, str]:
    """What the train step's kernel needs to report to ``trial`` (the storage goes in SWEEP_STORAGE)."""
    return {TRIAL_ENV: json.dumps({"study": study.study_name, "trial_id": trial._trial_id,
                                   "number": trial.number, "metric": metric})}


def callback_from_env(stage: str) -> TrainerCallback | None:
    """The pruning callback of the sweep trial this train step runs for, if any (``stage``: "", "teacher"
    or "student")."""
    spec = os.environ.get(TRIAL_ENV)
    if not spec:
        return None
    from pipelines.sweep.study import STORAGE_ENV, open_study  # only a sweep's train step gets here

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return None  # one rank cannot stop the others mid-epoch: trials under torchrun are not pruned
    info = json.loads(spec)
    metric = str(info["metric"])
    if not metric.startswith("val_") or metric.startswith("val_long"):
        return None  # only the per-epoch validation metrics can be reported during training
    study = open_study(info["study"], os.environ[STORAGE_ENV])
    study.pruner = pruner(int(study.user_attrs.get("prune_startup", 0)))
    offset = {"student": STUDENT_STEP, "base": BASE_STEP}.get(stage, 0)
    return PruningCallback(optuna.Trial(study, int(info["trial_id"])), "eval_" + metric.removeprefix("val_"),
                           offset, {"student": "student", "base": "student's start"}.get(stage, "fine-tuning"),
                           warmup=int(study.user_attrs.get("prune_warmup", 0)))


class PruningCallback(TrainerCallback):
    """After each epoch's evaluation: report ``metric`` to ``trial``; raise :class:`Pruned` if it should stop."""

    def __init__(self, trial: optuna.Trial, metric: str, offset: int, stage: str = "fine-tuning",
                 warmup: int = 0) -> None:
        self.trial, self.metric, self.offset, self.stage, self.warmup = trial, metric, offset, stage, warmup

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None,
                    **kwargs: Any) -> None:
        if not metrics or self.metric not in metrics:
            return
        epoch = round(state.epoch or 0)
        value = float(metrics[self.metric])
        self.trial.report(value, self.offset + epoch)
        if epoch > self.warmup and self.trial.should_prune():  # the first ``warmup`` epochs of a stage: never
            self.trial.set_user_attr("pruned_at", {"stage": self.stage, "epoch": epoch, "value": value})
            raise Pruned(f"sweep trial {self.trial.number} pruned after epoch {epoch} of the {self.stage}: "
                         f"{self.metric} {value:.4f} is below the study's median at that epoch")
