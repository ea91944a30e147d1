"""``python -m pipelines sweep``: check the space and the metric, open the study, run trials in workers,
log the results, and optionally evaluate and promote the best trial (docs/sweeps.md)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import optuna
import sqlalchemy as sa
from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from optuna.trial import TrialState

from pipelines.config import ConfigError, PipelineConfig, build_config, expand
from pipelines.flow.runner import run_pipeline
from pipelines.flow.steps import FLOWS, steps_of
from pipelines.sweep import study as studies
from pipelines.sweep.report import log_results
from pipelines.sweep.space import check_metric, direction, grid_points, parse_space
from pipelines.sweep.trials import environment, run_trial, trial_config
from scoring import tracking


def _setup(args: argparse.Namespace) -> tuple[optuna.Study, str]:
    """Create (with every check first) or load the study; return it with its storage URL."""
    if args.resume:
        base = build_config({}, args.config)
        storage = studies.storage_url(args.storage, base.tracking_uri)
        try:
            study = studies.open_study(args.resume, storage)
        except KeyError:
            raise ConfigError(f"--resume: no study {args.resume!r} in {storage}") from None
        reclaimed = studies.reclaim_dead(study)
        if reclaimed:
            print(f"[sweep] trials {reclaimed} of a killed worker: failed (a grid sweep queues their points again, "
                  "a TPE sweep asks for new trials in their place)", file=sys.stderr)
        return study, storage
    space, fixed = parse_space(args.parameter, args.space)
    metric = check_metric(args.metric)
    base = build_config(fixed, args.config)
    points = [] if args.trials else grid_points(space)
    if args.trials < 0 or args.workers < 1 or args.prune_startup < 0 or args.prune_warmup < 0:
        raise ConfigError("--trials, --workers, --prune-startup and --prune-warmup: positive numbers")
    for point in points or [{}]:
        trial_config(base, point)  # every grid point's values are valid together
    storage = studies.storage_url(args.storage, base.tracking_uri)
    name = args.study or f"sweep-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"
    study = studies.open_study(name, storage, direction(metric))
    if study.trials or "metric" in study.user_attrs:
        raise ConfigError(f"--study {name!r} exists in {storage}; continue it with --resume {name}")
    tracking.setup(base.tracking_uri, base.experiment_name)
    experiment = mlflow.get_experiment_by_name(base.experiment_name)
    parent = MlflowClient().create_run(experiment.experiment_id, tags={
        MLFLOW_RUN_NAME: name, "step": "sweep", "sweep_study": name, "sweep_storage": storage.split("@")[-1],
        "git_commit": tracking.git_commit()})
    studies.save_setup(study, space, metric, parent.info.run_id, grid=not args.trials)
    study.set_user_attr("fixed", {k: getattr(base, k) for k in base.model_fields_set})
    study.set_user_attr("trials", args.trials or len(points))
    study.set_user_attr("steps", ["train", "evaluate"] if args.evaluate else ["train"])
    study.set_user_attr("prune_startup", 0 if args.no_prune else args.prune_startup)
    study.set_user_attr("prune_warmup", args.prune_warmup)
    for point in points:
        study.enqueue_trial(point, skip_if_exists=True)
    return study, storage


def _next_trial(study: optuna.Study, storage: str, grid: bool) -> optuna.Trial | None:
    with studies.claim_lock(storage):
        if grid:
            return studies.claim_waiting(study)
        if studies.counted(study) >= int(study.user_attrs["trials"]):
            return None
        return study.ask()


THREADS_ENV = "SWEEP_WORKER_THREADS"  # a spawned worker's share of the cores (--workers N on one machine)


def worker_threads(workers: int, cpus: int | None = None) -> int:
    """Threads per trial when ``workers`` share this machine's cores (0: one worker, all of them): without a
    share every trial's torch takes every core and N trials on the same cores run many times slower."""
    cpus = cpus or os.cpu_count() or 1
    return 0 if workers <= 1 else max(1, cpus // workers)


def work(study: optuna.Study, storage: str, output_dir: Path, threads: int = 0) -> int:
    """Run trials until none is left (``threads``: each trial's ``num_threads`` unless the sweep fixed it);
    return how many this worker ran."""
    space, metric, parent_run_id, grid = studies.load_setup(study)
    fixed = dict(study.user_attrs["fixed"])
    if threads and not fixed.get("num_threads"):
        fixed["num_threads"] = threads
    base = build_config(fixed)
    tracking.setup(base.tracking_uri, base.experiment_name)
    steps = tuple(study.user_attrs["steps"])
    ran = 0
    while (trial := _next_trial(study, storage, grid)) is not None:
        try:
            value = run_trial(trial, base, space, metric, parent_run_id, steps, output_dir, storage)
        except optuna.TrialPruned as pruned:
            print(f"[sweep] {pruned}", file=sys.stderr, flush=True)
            study.tell(trial, state=TrialState.PRUNED)
        except Exception as err:  # the trial fails; the sweep goes on
            print(f"[sweep] trial {trial.number} failed: {err}", file=sys.stderr, flush=True)
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, value)
            print(f"[sweep] trial {trial.number}: {metric} = {value:.4f} {trial.params}", file=sys.stderr, flush=True)
        ran += 1
    return ran


def _spawn(study: optuna.Study, storage: str, args: argparse.Namespace, count: int) -> list[subprocess.Popen]:
    """``count`` more workers on this machine; the storage URL (a password in it) goes by the environment."""
    command = [sys.executable, "-m", "pipelines", "sweep", "--resume", study.study_name, "--worker",
               "--output-dir", str(args.output_dir_path)]
    env = {**os.environ, studies.STORAGE_ENV: storage, THREADS_ENV: str(worker_threads(args.workers))}
    return [subprocess.Popen(command, env=env) for _ in range(count)]


def report_notebook(study: optuna.Study, storage: str, output_dir: Path) -> str:
    """Run notebooks/sweep.ipynb on the study, nested under the sweep's run; its pipeline run id. The
    storage's password goes to the kernel by the environment, never into the executed notebook."""
    url = sa.make_url(storage)
    fixed = {k: v for k, v in study.user_attrs["fixed"].items() if k in ("tracking_uri", "experiment_name")}
    cfg = PipelineConfig.model_validate({**fixed, "study_name": study.study_name,
                                         "sweep_storage": studies.without_password(storage)
                                         if url.password else storage})
    with environment({studies.PASSWORD_ENV: url.password} if url.password else {}):
        result = run_pipeline(cfg, FLOWS["sweep_report"], output_dir=output_dir / "report", progress=False,
                              tags={MLFLOW_PARENT_RUN_ID: study.user_attrs["parent_run_id"],
                                    "sweep_study": study.study_name})
    return result.parent_run_id


def register_best(study: optuna.Study) -> dict[str, Any]:
    """Evaluate and promote the best trial's model version through the gate, nested under the sweep."""
    best = study.best_trial
    version = best.user_attrs.get("model_version")
    if not version:
        raise ConfigError(f"--register-best: trial {best.number} registered no model version")
    takes = set(expand(p for s in steps_of(("evaluate", "promote")) for p in s.parameters))
    given = {k: v for k, v in study.user_attrs["fixed"].items() if k in takes}
    cfg = PipelineConfig.model_validate({**given, "model_version": version})
    result = run_pipeline(cfg, ("evaluate", "promote"), progress=False, tags={
        MLFLOW_PARENT_RUN_ID: study.user_attrs["parent_run_id"], "sweep_study": study.study_name,
        "sweep_best_trial": str(best.number)})
    return {"model_version": version, **result.steps.get("promote", {})}


def sweep_command(_: None, args: argparse.Namespace) -> int:
    """The command (declared in pipelines/flow/commands.py): set up or join the study, run, report."""
    study, storage = _setup(args)
    args.output_dir_path = Path(args.output_dir or tracking.state_dir() / "output" / study.study_name).resolve()
    if args.worker:
        work(study, storage, args.output_dir_path, int(os.environ.get(THREADS_ENV) or 0))
        return 0
    helpers = _spawn(study, storage, args, args.workers - 1)
    work(study, storage, args.output_dir_path, worker_threads(args.workers))
    codes = [p.wait() for p in helpers]
    parent_run_id = study.user_attrs["parent_run_id"]
    result = log_results(study, parent_run_id, args.output_dir_path)
    open_trials = study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
    if not open_trials:
        MlflowClient().set_terminated(parent_run_id, "FINISHED")
    result["report"] = report_notebook(study, storage, args.output_dir_path)
    if args.register_best and "best_trial" in result:
        result["registered"] = register_best(study)
    result["parent_run_id"] = parent_run_id
    print(json.dumps(result, indent=2, default=str), flush=True)
    return 1 if any(codes) else 0
