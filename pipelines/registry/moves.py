"""Moving the alias to a promoted version: under the registry lock, compare-and-set, journaled, the alias last.

Kept apart from the gate (:mod:`pipelines.registry.promotion`), which needs the runtimes to score versions: a
move needs only the registry, so the processes that move aliases start in a second.
"""

from __future__ import annotations

import json
from typing import Any

from pipelines.config import LockSection
from pipelines.registry import audit, versions
from pipelines.registry.lock import registry_lock
from pipelines.registry.rule import Decision
from scoring.clock import now
from scoring.identity import RegistryError

__all__ = ["apply_decision"]


def apply_decision(name: str, alias: str, decision: Decision, run_id: str = "",
                   lock: LockSection | None = None) -> None:
    """Record the decision on the candidate and, if promoted, move the alias (last), under the registry lock.

    ProductionMoved if the alias no longer points at the champion the decision compared with; RegistryLocked if
    another promotion or rollback holds the lock longer than ``lock_timeout``.
    """
    with registry_lock(name, f"promotion of v{decision.candidate_version}", lock):
        audit.pause("locked")
        audit.repair(name)
        mv = versions.client().get_model_version(name, decision.candidate_version)
        if decision.promote and mv.status != "READY":
            raise RegistryError(f"version {mv.version} is {mv.status}, not READY: alias {alias!r} not moved")
        tags: dict[str, Any] = {
            "promotion.decision": "promoted" if decision.promote else "rejected",
            "promotion.reason": "; ".join(decision.reasons),
            "promotion.metric": decision.metric,
            "promotion.backend": decision.backend,
            "promotion.deltas": json.dumps({k: round(v, 6) for k, v in decision.deltas.items()}),
            "promotion.previous_production": decision.champion_version or "",
            "promotion.time": now("milliseconds"),
        }
        if run_id:
            tags["promotion.run_id"] = run_id
        if not decision.promote:
            versions.set_tags(name, decision.candidate_version, {**tags, "promotion.state": "done"})
            return
        audit.check_alias(name, alias, decision.champion_version)
        entry = audit.begin(name, "promotion", alias, decision.champion_version, decision.candidate_version, run_id)
        versions.set_tags(name, decision.candidate_version, {**tags, "promotion.state": "pending"})
        audit.pause("tagged")
        versions.client().set_registered_model_alias(name, alias, decision.candidate_version)
        audit.pause("moved")
        audit.finish(name, entry)
