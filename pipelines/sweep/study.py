"""The sweep's Optuna study in RDB storage: one study that processes and machines join by name.

Default storage: a SQLite file ``optuna.db`` beside the MLflow store's ``mlflow.db`` (``--storage`` or
``SWEEP_STORAGE`` for a shared database, e.g. ``postgresql://…``). The study keeps what a joining or
resuming worker needs as user attributes: the space, the metric, the sweep's MLflow parent run.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import optuna
import sqlalchemy as sa
from optuna.distributions import distribution_to_json, json_to_distribution
from optuna.trial import TrialState
from sqlalchemy.pool import NullPool

from pipelines.config import ConfigError
from pipelines.sweep.space import Space
from scoring import tracking

STORAGE_ENV = "SWEEP_STORAGE"
PASSWORD_ENV = "SWEEP_STORAGE_PASSWORD"


def default_storage(tracking_uri: str = "") -> str:
    """``sqlite:///<folder of mlflow.db>/optuna.db`` for a SQLite MLflow store, else one in the state dir."""
    uri = tracking.resolve_tracking_uri(tracking_uri)
    parsed = urlparse(uri)
    folder = Path(parsed.path).parent if parsed.scheme == "sqlite" else tracking.state_dir()
    return f"sqlite:///{folder / 'optuna.db'}"


def storage_url(given: str, tracking_uri: str = "") -> str:
    """``--storage``, else ``$SWEEP_STORAGE``, else :func:`default_storage`; a URL without a password takes
    ``$SWEEP_STORAGE_PASSWORD`` (the team stack's pipeline environment sets both)."""
    url = given or os.environ.get(STORAGE_ENV) or default_storage(tracking_uri)
    password = os.environ.get(PASSWORD_ENV)
    if password and not url.startswith("sqlite"):
        parsed = sa.make_url(url)
        if parsed.password is None:
            url = parsed.set(password=password).render_as_string(hide_password=False)
    return url


def without_password(storage: str) -> str:
    """``storage`` without its password (for a notebook's parameters; :func:`storage_url` puts it back from
    ``$SWEEP_STORAGE_PASSWORD``). ``URL.set(password=None)`` keeps the password, and ``render_as_string()``
    then writes ``***`` in its place."""
    url = sa.make_url(storage)
    return sa.engine.URL.create(url.drivername, username=url.username, host=url.host, port=url.port,
                                database=url.database, query=url.query).render_as_string(hide_password=False)


def open_study(name: str, storage: str, direction: str | None = None,
               sampler: optuna.samplers.BaseSampler | None = None
               ) -> optuna.Study:
    """Create the study (with ``direction``) or load it (``direction`` None: it must exist)."""
    rdb = optuna.storages.RDBStorage(storage, engine_kwargs={"connect_args": {"timeout": 60}}
                                     if storage.startswith("sqlite") else {})
    if direction is None:
        return optuna.load_study(study_name=name, storage=rdb, sampler=sampler)
    return optuna.create_study(study_name=name, storage=rdb, direction=direction, sampler=sampler,
                               load_if_exists=True)


def find_study(name: str, storage: str) -> optuna.Study:
    """Study ``name`` in ``storage`` ('' = the newest there); ConfigError naming ``study_name`` if none."""
    try:
        summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    except Exception as exc:  # an unreachable database, a bad URL
        raise ConfigError(f"parameter sweep_storage: cannot open {sa.make_url(storage).render_as_string()}: "
                          f"{exc}") from None
    names = [s.study_name for s in summaries]  # in the order they were created
    if not names or (name and name not in names):
        raise ConfigError(f"parameter study_name: no study {name!r} in {sa.make_url(storage).render_as_string()} "
                          f"(studies: {', '.join(names) or 'none'})")
    return open_study(name or names[-1], storage)


def save_setup(study: optuna.Study, space: Space, metric: str, parent_run_id: str, grid: bool) -> None:
    study.set_user_attr("space", {k: distribution_to_json(v) for k, v in space.items()})
    study.set_user_attr("metric", metric)
    study.set_user_attr("parent_run_id", parent_run_id)
    study.set_user_attr("grid", grid)


def load_setup(study: optuna.Study) -> tuple[Space, str, str, bool]:
    attrs = study.user_attrs
    space = {k: json_to_distribution(v) for k, v in attrs["space"].items()}
    return space, attrs["metric"], attrs["parent_run_id"], bool(attrs["grid"])


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(worker: str) -> bool:
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another machine's: not ours to judge
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reclaim_dead(study: optuna.Study) -> list[int]:
    """Trials left RUNNING by a killed worker of this machine: marked FAIL, their grid point queued again."""
    reclaimed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker", "")
        if worker and not _alive(worker):
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            if trial.system_attrs.get("fixed_params") is not None:
                study.enqueue_trial(trial.system_attrs["fixed_params"], user_attrs={"retry_of": trial.number})
            reclaimed.append(trial.number)
    return reclaimed


CLAIM_LOCK_KEY = 0x5357_4545_5000  # the PostgreSQL advisory lock id of the sweeps' claims ("SWEEP")


@contextlib.contextmanager
def claim_lock(storage: str) -> Iterator[None]:
    """Serialise claiming a trial among all the workers of a study: counting the trials begun and asking for
    one more (TPE), or taking a queued one (grid), is a read then a write. A SQLite study: a file lock (one
    machine); PostgreSQL: a session-level advisory lock (``pg_advisory_lock``) held by the database itself,
    so workers on every machine wait for each other. Another server database: no lock (a grid point is
    still claimed once by the row update; a TPE sweep may begin a trial or two more than ``--trials``)."""
    parsed = urlparse(storage)
    if parsed.scheme.startswith("postgresql"):
        engine = sa.create_engine(storage, poolclass=NullPool)
        try:
            with engine.connect() as connection:
                connection.execute(sa.text(f"SELECT pg_advisory_lock({CLAIM_LOCK_KEY})"))
                try:
                    yield
                finally:
                    connection.execute(sa.text(f"SELECT pg_advisory_unlock({CLAIM_LOCK_KEY})"))
        finally:
            engine.dispose()
        return
    if parsed.scheme != "sqlite":
        yield
        return
    with open(f"{parsed.path}.claim-lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def claim_waiting(study: optuna.Study) -> optuna.Trial | None:
    """Take one queued (grid) trial (call within :func:`claim_lock`); None when the queue is empty."""
    storage = study._storage
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        try:
            if storage.set_trial_state_values(frozen._trial_id, TrialState.RUNNING):
                return optuna.Trial(study, frozen._trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def counted(study: optuna.Study) -> int:
    """Trials that count toward ``--trials``: finished, pruned or running (failed ones are retried)."""
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    return len(study.get_trials(deepcopy=False, states=states))


def summary(study: optuna.Study) -> dict[str, Any]:
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    out: dict[str, Any] = {"study": study.study_name, "trials": len(study.trials),
                           "states": {s.name: sum(t.state == s for t in study.trials) for s in TrialState
                                      if any(t.state == s for t in study.trials)}}
    if done:
        best = study.best_trial
        out.update(best_trial=best.number, best_value=best.value, best_params=best.params,
                   best_pipeline_run_id=best.user_attrs.get("pipeline_run_id"),
                   best_model_version=best.user_attrs.get("model_version"))
    return out
