"""One trial: the pipeline's steps (train, and evaluate when asked) through the same runner, nested under
the sweep's parent run; its objective is a validation metric of the train step's MLflow run."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from pipelines.config import PipelineConfig
from pipelines.flow.runner import StepFailed, run_pipeline
from pipelines.sweep import pruning
from pipelines.sweep.space import Space, suggest
from pipelines.sweep.study import STORAGE_ENV, worker_id


class MetricMissing(RuntimeError):
    """The train step logged no such validation metric."""


def trial_config(base: PipelineConfig, values: dict[str, Any]) -> PipelineConfig:
    """The sweep's fixed parameters with the trial's values over them (counted as given)."""
    given = {name: getattr(base, name) for name in base.model_fields_set}
    return PipelineConfig.model_validate({**given, **values})


def objective_value(pipeline_run_id: str, metric: str) -> float:
    """``metric`` as the train step's run logged it (its last value)."""
    client = MlflowClient()
    parent = client.get_run(pipeline_run_id)
    runs = client.search_runs([parent.info.experiment_id],
                              f"tags.mlflow.parentRunId = '{pipeline_run_id}' and tags.step = 'train'")
    if not runs or metric not in runs[0].data.metrics:
        raise MetricMissing(f"--metric {metric!r}: the train step logged no such metric")
    return float(runs[0].data.metrics[metric])


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in this process's environment (the train step's kernel inherits them), then as before."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _mark_pruned(err: StepFailed) -> None:
    """The pruned trial's step run and pipeline run: KILLED (not FAILED), tagged ``sweep_pruned``."""
    client = MlflowClient()
    step_run = client.get_run(err.run_id)
    for run_id in filter(None, (err.run_id, step_run.data.tags.get(MLFLOW_PARENT_RUN_ID))):
        client.set_tag(run_id, "sweep_pruned", "true")
        client.set_terminated(run_id, "KILLED")


def run_trial(trial: optuna.Trial, base: PipelineConfig, space: Space, metric: str, parent_run_id: str,
              steps: tuple[str, ...], output_dir: Path, storage: str) -> float:
    """Run one trial's pipeline and return its objective; a failed step fails the trial (raised), a pruned
    one raises :class:`optuna.TrialPruned`."""
    values = suggest(trial, space)
    trial.set_user_attr("worker", worker_id())
    cfg = trial_config(base, values)
    study = trial.study
    tags = {MLFLOW_PARENT_RUN_ID: parent_run_id, "sweep_study": study.study_name, "sweep_trial": str(trial.number)}
    try:
        with environment({STORAGE_ENV: storage, **pruning.trial_env(study, trial, metric)}):
            result = run_pipeline(cfg, steps, output_dir=output_dir / f"trial-{trial.number:03d}", progress=False,
                                  tags=tags)
    except StepFailed as err:
        pruned = next((t.user_attrs.get("pruned_at") for t in study.get_trials(deepcopy=False)
                       if t.number == trial.number), None)
        if pruned:
            _mark_pruned(err)
            raise optuna.TrialPruned(f"trial {trial.number} pruned at {pruned}") from None
        trial.set_user_attr("error", str(err)[:2000])
        raise
    trial.set_user_attr("pipeline_run_id", result.parent_run_id)
    version = result.steps.get("train", {}).get("model_version")
    if version is not None:
        trial.set_user_attr("model_version", str(version))
    value = objective_value(result.parent_run_id, metric)
    if math.isnan(value):
        raise MetricMissing(f"--metric {metric!r} is NaN in trial {trial.number}")
    MlflowClient().log_metric(result.parent_run_id, f"sweep_{metric}", value)
    return value
