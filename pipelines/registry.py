"""The MLflow Model Registry side: logging versions, the promotion gate, rollback.

Every decision is written onto the model versions as tags, which is both the
audit trail and what rollback reads:

* ``eval.<metric>``, ``eval.test_digest``, ``eval.run_id``: set by evaluation
  (PyTorch scores); ``eval.<backend>.<metric>`` … the same for a serving runtime
  (``eval.onnx-int8.accuracy``);
* ``promotion.decision`` (promoted / rejected), ``promotion.reason``,
  ``promotion.metric``, ``promotion.backend``, ``promotion.deltas``,
  ``promotion.previous_production``, ``promotion.time``: set by the gate;
* ``rollback.time``, ``rollback.from_version``: set by rollback.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from pipelines.metrics import METRIC_NAMES


class RegistryError(RuntimeError):
    """A registry operation cannot be done (missing version, nothing to roll back to…)."""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def client() -> MlflowClient:
    return MlflowClient()


def get_version(name: str, version: str | int = "") -> ModelVersion:
    """A version by number, or the newest one when ``version`` is empty."""
    c = client()
    if str(version):
        try:
            return c.get_model_version(name, str(version))
        except MlflowException as err:
            raise RegistryError(f"parameter model_version: {name} has no version {version}") from err
    versions = c.search_model_versions(f"name = '{name}'", order_by=["version_number DESC"], max_results=1)
    if not versions:
        raise RegistryError(f"registered model {name!r} has no versions yet: run the train step first")
    return versions[0]


def alias_version(name: str, alias: str) -> ModelVersion | None:
    try:
        return client().get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def set_tags(name: str, version: str | int, tags: dict[str, Any]) -> None:
    c = client()
    for key, value in tags.items():
        c.set_model_version_tag(name, str(version), key, value if isinstance(value, str) else json.dumps(value))


def eval_prefix(backend: str = "torch") -> str:
    """Tag prefix of a version's test metrics: ``eval.`` for PyTorch (the reference), else ``eval.<backend>.``."""
    return "eval." if backend == "torch" else f"eval.{backend}."


def recorded_metrics(tags: dict[str, str], backend: str = "torch") -> dict[str, float]:
    """The ``eval.<metric>`` tags of a version (those present, of ``backend``), as numbers."""
    prefix = eval_prefix(backend)
    return {m: float(tags[f"{prefix}{m}"]) for m in METRIC_NAMES if f"{prefix}{m}" in tags}


def eval_metrics(mv: ModelVersion, test_digest: str, backend: str = "torch") -> dict[str, float] | None:
    """The version's recorded test metrics on ``backend`` if all were measured on ``test_digest``."""
    if mv.tags.get(f"{eval_prefix(backend)}test_digest") != test_digest:
        return None
    metrics = recorded_metrics(mv.tags, backend)
    return metrics if len(metrics) == len(METRIC_NAMES) else None


def record_evaluation(name: str, version: str, metrics: dict[str, float], test_digest: str, run_id: str,
                      backend: str = "torch") -> None:
    """Write the test metrics of ``backend`` (and where they were measured) onto the version."""
    prefix = eval_prefix(backend)
    tags = {f"{prefix}{k}": f"{v:.6f}" for k, v in metrics.items() if k in METRIC_NAMES}
    set_tags(name, version, {**tags, f"{prefix}test_digest": test_digest, f"{prefix}run_id": run_id,
                             f"{prefix}time": now()})


@dataclass
class Decision:
    """The outcome of the champion/challenger gate."""

    promote: bool
    reasons: list[str]
    metric: str
    candidate_version: str
    candidate_score: float
    champion_version: str | None = None
    champion_score: float | None = None
    deltas: dict[str, float] = field(default_factory=dict)
    backend: str = "torch"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    metric: str,
    min_delta: float,
    min_metric: float,
    candidate_version: str = "",
    champion_version: str | None = None,
    backend: str = "torch",
) -> Decision:
    """The promotion rule: clear the floor, and beat the champion by ``min_delta`` if there is one.

    ``backend`` names the runtime whose test scores ``candidate`` and ``champion`` are (recorded in the reasons).
    """
    score = candidate[metric]
    reasons: list[str] = [f"test scores of the {backend} runtime"]
    ok = True
    if score < min_metric:
        ok = False
        reasons.append(f"{metric} {score:.4f} is below the floor min_metric={min_metric:.4f}")
    else:
        reasons.append(f"{metric} {score:.4f} clears the floor min_metric={min_metric:.4f}")
    deltas: dict[str, float] = {}
    champion_score = None
    if champion is None:
        reasons.append("there is no production version yet")
    else:
        champion_score = champion[metric]
        deltas = {m: candidate[m] - champion[m] for m in candidate if m in champion}
        delta = deltas[metric]
        if delta >= min_delta:
            reasons.append(f"beats production v{champion_version} by {delta:+.4f} {metric} (needs ≥ {min_delta:+.4f})")
        else:
            ok = False
            reasons.append(
                f"does not beat production v{champion_version}: {metric} {score:.4f} vs {champion_score:.4f} "
                f"({delta:+.4f}, needs ≥ {min_delta:+.4f})"
            )
    return Decision(ok, reasons, metric, candidate_version, score, champion_version, champion_score, deltas, backend)


def apply_decision(name: str, alias: str, decision: Decision, run_id: str = "") -> None:
    """Record the decision on the candidate and, if promoted, move the alias (last)."""
    mv = client().get_model_version(name, decision.candidate_version)
    if decision.promote and mv.status != "READY":
        raise RegistryError(f"version {mv.version} is {mv.status}, not READY: alias {alias!r} not moved")
    tags: dict[str, Any] = {
        "promotion.decision": "promoted" if decision.promote else "rejected",
        "promotion.reason": "; ".join(decision.reasons),
        "promotion.metric": decision.metric,
        "promotion.backend": decision.backend,
        "promotion.deltas": json.dumps({k: round(v, 6) for k, v in decision.deltas.items()}),
        "promotion.previous_production": decision.champion_version or "",
        "promotion.time": now(),
    }
    if run_id:
        tags["promotion.run_id"] = run_id
    set_tags(name, decision.candidate_version, tags)
    if decision.promote:
        client().set_registered_model_alias(name, alias, decision.candidate_version)


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


def history(name: str) -> list[dict[str, Any]]:
    """All versions with their promotion / rollback tags, newest first."""
    rows = []
    for mv in client().search_model_versions(f"name = '{name}'", order_by=["version_number DESC"]):
        rows.append({
            "version": mv.version,
            "aliases": ",".join(mv.aliases),
            "created": datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(timespec="seconds"),
            **{k: v for k, v in mv.tags.items() if k.startswith(("promotion.", "rollback."))
               or (k.startswith("eval.") and k.endswith((".accuracy", ".roc_auc")))},  # PyTorch's and runtimes'
        })
    return rows


def model_uri(name: str, version: str | int) -> str:
    return f"models:/{name}/{version}"


def load_components(uri: str) -> tuple[Any, Any]:
    """Model and tokenizer of a logged transformers model."""
    parts = mlflow.transformers.load_model(uri, return_type="components")
    return parts["model"], parts["tokenizer"]
