"""Rollback: move the alias back to the version it replaced (or to a named one), and record it."""

from __future__ import annotations

from pipelines.registry.versions import alias_version, client, get_version, set_tags
from scoring.clock import now
from scoring.identity import RegistryError


def rollback(name: str, alias: str = "production", to_version: str = "") -> tuple[str, str]:
    """Move ``alias`` back to the version it pointed at before (or to ``to_version``).

    Returns (from_version, to_version).
    """
    current = alias_version(name, alias)
    if current is None:
        raise RegistryError(f"{name}@{alias} does not exist: nothing to roll back")
    target = to_version or current.tags.get("promotion.previous_production", "")
    if not target:
        raise RegistryError(f"{name}@{alias} is v{current.version}, which has no previous version to roll back to")
    target_mv = get_version(name, target)
    if target_mv.status != "READY":
        raise RegistryError(f"version {target} is {target_mv.status}, not READY")
    client().set_registered_model_alias(name, alias, target_mv.version)
    set_tags(name, target_mv.version, {"rollback.time": now(), "rollback.from_version": current.version})
    set_tags(name, current.version, {"rollback.replaced_by": target_mv.version, "rollback.time": now()})
    return current.version, target_mv.version
