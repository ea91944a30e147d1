"""Rollback: move the alias back to the version it replaced (or to a named one), and record it.

Like a promotion it runs under the registry lock, journals the move first and moves the alias last
(:mod:`pipelines.registry.audit`), so a kill at any point leaves ``history`` true after the next repair.
"""

from __future__ import annotations

from pipelines.config import LockSection
from pipelines.registry import audit
from pipelines.registry.lock import registry_lock
from pipelines.registry.versions import alias_version, client, get_version, set_tags
from scoring.clock import now
from scoring.identity import RegistryError


def rollback(name: str, alias: str = "production", to_version: str = "",
             lock: LockSection | None = None) -> tuple[str, str]:
    """Move ``alias`` back to the version it pointed at before (or to ``to_version``).

    Returns (from_version, to_version).
    """
    with registry_lock(name, "rollback", lock):
        audit.pause("locked")
        audit.repair(name)
        current = alias_version(name, alias)  # read under the lock: nobody moves it until we are done
        if current is None:
            raise RegistryError(f"{name}@{alias} does not exist: nothing to roll back")
        target = to_version or current.tags.get("promotion.previous_production", "")
        if not target:
            raise RegistryError(
                f"{name}@{alias} is v{current.version}, which has no previous version to roll back to")
        target_mv = get_version(name, target)
        if target_mv.status != "READY":
            raise RegistryError(f"version {target} is {target_mv.status}, not READY")
        entry = audit.begin(name, "rollback", alias, current.version, target_mv.version)
        when = now("milliseconds")
        set_tags(name, target_mv.version, {"rollback.time": when, "rollback.from_version": current.version,
                                           "rollback.state": "pending"})
        audit.pause("tagged")
        client().set_registered_model_alias(name, alias, target_mv.version)
        audit.pause("moved")
        audit.finish(name, entry)
        return current.version, target_mv.version
