"""Model versions in the MLflow registry and the tags that record what happened to them.

The tags are the audit trail: ``eval.*`` (see :mod:`scoring.version_tags`), then
``promotion.*`` written by the gate (:mod:`pipelines.registry.promotion`) and
``rollback.*`` (:mod:`pipelines.registry.rollback`). ``python -m pipelines history``
lists them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from scoring.clock import now
from scoring.identity import RegistryError
from scoring.version_tags import METRIC_NAMES, eval_prefix, recorded_metrics


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


def history(name: str) -> list[dict[str, Any]]:
    """All versions with their aliases and promotion / rollback tags, newest first."""
    c = client()
    try:  # search results carry no aliases (MLflow 3): the registered model has them
        by_alias = c.get_registered_model(name).aliases
    except MlflowException:
        return []  # no such model: no versions
    aliases: dict[str, list[str]] = {}
    for alias, version in by_alias.items():
        aliases.setdefault(str(version), []).append(alias)
    rows = []
    for mv in c.search_model_versions(f"name = '{name}'", order_by=["version_number DESC"]):
        rows.append({
            "version": mv.version,
            "aliases": ",".join(sorted(aliases.get(str(mv.version), []))),
            "created": datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(timespec="seconds"),
            **{k: v for k, v in mv.tags.items() if k.startswith(("promotion.", "rollback."))
               or (k.startswith("eval.") and k.endswith((".accuracy", ".roc_auc")))},  # PyTorch's and runtimes'
        })
    return rows
