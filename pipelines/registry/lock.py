"""One promotion or rollback at a time per registered model, across machines: a lock the registry holds.

The lock is a registered model named ``<name>.lock``. Creating a registered model is atomic in every MLflow
store (a unique-key insert in SQLite and PostgreSQL; the tracking server answers RESOURCE_ALREADY_EXISTS), so
whoever creates it holds the lock, through the same store and credentials the registry already uses, with no
extra service. Its tags name the holder (host, pid, command, since, lease end); the holder deletes it when done.

A holder that died leaves the lock behind: it is broken when its lease has run out, or at once when the holder
ran on this host and its process is gone. The loser of a race waits up to ``lock_timeout`` seconds, then gets
:class:`RegistryLocked` naming the holder.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from mlflow.exceptions import MlflowException

from pipelines.config import LockSection
from pipelines.registry.versions import client
from scoring.identity import RegistryError

POLL_S = 0.5


class RegistryLocked(RegistryError):
    """Another promotion or rollback holds the registered model's lock."""


def lock_name(name: str) -> str:
    return f"{name}.lock"


def _holder(operation: str, lease_s: float) -> dict[str, str]:
    started = datetime.now(UTC)
    return {
        "lock.id": uuid.uuid4().hex, "lock.host": socket.gethostname(), "lock.pid": str(os.getpid()),
        "lock.operation": operation, "lock.command": " ".join(sys.argv)[:500],
        "lock.since": started.isoformat(timespec="seconds"),
        "lock.lease_until": (started + timedelta(seconds=lease_s)).isoformat(timespec="seconds"),
    }


def describe(tags: dict[str, str]) -> str:
    return (f"{tags.get('lock.operation', '?')} by pid {tags.get('lock.pid', '?')} on {tags.get('lock.host', '?')} "
            f"since {tags.get('lock.since', '?')}")


def _current(name: str) -> dict[str, str] | None:
    try:
        return dict(client().get_registered_model(lock_name(name)).tags)
    except MlflowException:
        return None


def _stale(tags: dict[str, str]) -> str:
    """Why a held lock may be broken ('' when its holder may still be alive)."""
    lease = tags.get("lock.lease_until", "")
    if lease and datetime.fromisoformat(lease) < datetime.now(UTC):
        return f"its lease ran out at {lease}"
    if tags.get("lock.host") == socket.gethostname() and tags.get("lock.pid", "").isdigit():
        try:
            os.kill(int(tags["lock.pid"]), 0)
        except ProcessLookupError:
            return "its process is gone"
        except PermissionError:
            return ""
    return ""


def _try_create(name: str, holder: dict[str, str]) -> bool:
    try:
        client().create_registered_model(
            lock_name(name), tags=holder,
            description=f"lock of {name!r}: held while a promotion or rollback runs (pipelines.registry.lock)")
        return True
    except MlflowException as err:
        if err.error_code == "RESOURCE_ALREADY_EXISTS" or "already exists" in str(err).lower():
            return False
        raise


def _release(name: str, holder_id: str) -> None:
    tags = _current(name)
    if tags is not None and tags.get("lock.id") == holder_id:
        client().delete_registered_model(lock_name(name))


@contextmanager
def registry_lock(name: str, operation: str, settings: LockSection | None = None) -> Iterator[dict[str, str]]:
    """Hold ``name``'s lock for the block; RegistryLocked after ``lock_timeout`` s of someone else holding it."""
    settings = settings or LockSection()
    holder = _holder(operation, settings.lock_lease)
    deadline = time.monotonic() + settings.lock_timeout
    while not _try_create(name, holder):
        tags = _current(name)
        if tags is None:
            continue  # released between our insert and our read
        reason = _stale(tags)
        if reason:
            print(f"registry lock of {name!r}: breaking a stale lock ({describe(tags)}): {reason}",
                  file=sys.stderr, flush=True)
            _release(name, tags.get("lock.id", ""))
            continue
        if time.monotonic() >= deadline:
            raise RegistryLocked(
                f"registry lock for {name!r} is held: {describe(tags)} (waited {settings.lock_timeout:g} s; "
                f"lock_timeout sets the wait). If that process is gone, the lock is broken when its lease ends "
                f"at {tags.get('lock.lease_until', '?')}")
        time.sleep(POLL_S)
    try:
        yield holder
    finally:
        _release(name, holder["lock.id"])


def holder_json(holder: dict[str, str]) -> str:
    return json.dumps({k.removeprefix("lock."): v for k, v in holder.items() if k != "lock.id"})
