"""Alias moves that a kill at any point leaves recorded truly: a journal first, the alias last, a repair after.

A move (promotion or rollback) runs under :func:`pipelines.registry.lock.registry_lock`:

1. re-read the alias (compare-and-set): if it no longer points where the decision saw it, refuse
   (:class:`ProductionMoved`);
2. journal the intent on the registered model (tag ``audit.pending``: operation, from, to, run);
3. write the versions' record tags with ``<operation>.state = pending``;
4. move the alias;
5. mark the record ``done`` and clear the journal.

A process killed between any two steps leaves a journal, so the next promotion, rollback or ``history`` repairs
it under the lock (:func:`repair`): the alias already moved → the record is completed; it did not → the record is
marked ``interrupted``. Versions' tags stay the readable trail; ``history`` shows the repaired state.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

from mlflow.exceptions import MlflowException

from pipelines.config import LockSection
from pipelines.registry.lock import RegistryLocked, registry_lock
from pipelines.registry.versions import alias_version, client, set_tags
from scoring.clock import now
from scoring.identity import RegistryError

JOURNAL_TAG = "audit.pending"
PAUSE_ENV = "SENTIMENT_MLOPS_PAUSE_AT"


class ProductionMoved(RegistryError):
    """The alias moved between the decision and the move: the decision no longer applies."""


def pause(step: str) -> None:
    """Test hook: stop this process (SIGSTOP) at ``step`` when ``SENTIMENT_MLOPS_PAUSE_AT`` names it.

    The crash-safety tests kill the process there (SIGKILL), exactly between two writes.
    """
    if os.environ.get(PAUSE_ENV, "") == step:
        print(f"paused at {step} (pid {os.getpid()})", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)


def check_alias(name: str, alias: str, expected: str | None) -> None:
    """Compare-and-set's compare: ProductionMoved unless ``alias`` still points at ``expected`` (None = nowhere)."""
    current = alias_version(name, alias)
    actual = current.version if current is not None else None
    if str(actual or "") != str(expected or ""):
        raise ProductionMoved(
            f"{name}@{alias} moved to v{actual} since the decision was taken (it saw "
            f"{'v' + str(expected) if expected else 'no version'}): alias not moved; run the step again")


def pending(name: str) -> dict[str, Any] | None:
    try:
        raw = client().get_registered_model(name).tags.get(JOURNAL_TAG)
    except MlflowException:
        return None
    return json.loads(raw) if raw else None


def begin(name: str, operation: str, alias: str, from_version: str | None, to_version: str,
          run_id: str = "") -> dict[str, Any]:
    """Journal the intended move on the registered model, before any other write."""
    entry = {"operation": operation, "alias": alias, "from": str(from_version or ""), "to": str(to_version),
             "run_id": run_id, "time": now()}
    client().set_registered_model_tag(name, JOURNAL_TAG, json.dumps(entry))
    pause("journaled")
    return entry


def finish(name: str, entry: dict[str, Any], state: str = "done") -> None:
    """Mark the record on the version moved to ``state``, then clear the journal (the last write of a move).

    A completed rollback also marks the version it replaced (``rollback.replaced_by``).
    """
    set_tags(name, entry["to"], {f"{entry['operation']}.state": state})
    if entry["operation"] == "rollback" and state == "done" and entry["from"]:
        set_tags(name, entry["from"], {"rollback.replaced_by": entry["to"], "rollback.replaced_time": entry["time"]})
    client().delete_registered_model_tag(name, JOURNAL_TAG)


def repair(name: str) -> str:
    """Complete or mark interrupted what a killed move left (call under the lock); a report, '' if nothing."""
    entry = pending(name)
    if entry is None:
        return ""
    current = alias_version(name, entry["alias"])
    moved = current is not None and str(current.version) == entry["to"]
    what = f"a {entry['operation']} of {name}@{entry['alias']} v{entry['from'] or '-'} -> v{entry['to']} " \
           f"started {entry['time']}"
    if moved:
        finish(name, entry, "done")
        report = f"{what} was interrupted after the alias moved: its record is completed"
    else:
        if entry["operation"] == "promotion":
            set_tags(name, entry["to"], {"promotion.decision": "interrupted",
                                         "promotion.reason": "interrupted before the alias moved"})
        finish(name, entry, "interrupted")
        report = f"{what} was interrupted before the alias moved: recorded as interrupted"
    print(f"registry repair: {report}", file=sys.stderr, flush=True)
    return report


def repair_now(name: str, settings: LockSection | None = None) -> str:
    """Repair a killed move's record under the lock, if one is journaled (what ``history`` does first).

    Waits at most 5 s for the lock: a move in progress is reported, not waited for.
    """
    if pending(name) is None:
        return ""
    settings = settings or LockSection()
    try:
        with registry_lock(name, "repair", settings.model_copy(update={"lock_timeout": min(settings.lock_timeout,
                                                                                              5.0)})):
            return repair(name)
    except RegistryLocked as err:
        print(f"a promotion or rollback is in progress, its record still says pending: {err}",
              file=sys.stderr, flush=True)
        return ""
