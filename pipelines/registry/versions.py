"""Model versions in the MLflow registry and the tags that record what happened to them.

The tags are the audit trail: ``eval.*`` (see :mod:`scoring.version_tags`; the gate reads the scores from
the evaluation runs they name, see :func:`eval_metrics`), then
``promotion.*`` written by the gate (:mod:`pipelines.registry.promotion`) and
``rollback.*`` (:mod:`pipelines.registry.rollback`). ``python -m pipelines history``
lists them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from scoring.clock import now
from scoring.identity import RegistryError
from scoring.version_tags import METRIC_NAMES, eval_prefix


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


def _record_keys(name: str, version: str | int, backend: str) -> tuple[str, dict[str, str]]:
    """The evaluation run's keys for one version's test scores: its split digest (a param) and its metrics."""
    base = f"eval.{backend}.{name}.v{version}"
    return f"{base}.test_digest", {m: f"{base}.{m}" for m in METRIC_NAMES}


def eval_metrics(mv: ModelVersion, test_digest: str, backend: str = "torch") -> dict[str, float] | None:
    """The version's test metrics on ``backend``, as its evaluation run logged them on ``test_digest``.

    Read from that run's immutable param (the split) and append-only metrics (the first value of each), not
    from the version's ``eval.*`` tags, which anyone who can edit a tag can change: a tag only says which run
    to read (``eval.<backend>.run_id``), and a run holds scores for the one version and split it names. None
    when no run recorded them (the gate then scores the version itself).
    """
    run_id = mv.tags.get(f"{eval_prefix(backend)}run_id")
    if not run_id:
        return None
    c = client()
    try:
        run = c.get_run(run_id)
    except MlflowException:
        return None
    digest_key, keys = _record_keys(mv.name, mv.version, backend)
    if run.data.params.get(digest_key) != test_digest:
        return None
    metrics = {}
    for metric, key in keys.items():
        history = c.get_metric_history(run_id, key)
        if not history:
            return None
        metrics[metric] = float(min(history, key=lambda m: (m.timestamp, m.step)).value)  # what was measured
    return metrics


def record_evaluation(name: str, version: str | int, metrics: dict[str, float], test_digest: str, run_id: str,
                      backend: str = "torch") -> None:
    """Record ``backend``'s test metrics of a version: in evaluation run ``run_id`` (a param naming the split,
    a metric per score: what the gate reads) and as the version's ``eval.*`` tags (a readable summary)."""
    prefix = eval_prefix(backend)
    if run_id:
        digest_key, keys = _record_keys(name, version, backend)
        stamp = int(datetime.now(UTC).timestamp() * 1000)
        client().log_batch(run_id, params=[Param(digest_key, test_digest)],
                           metrics=[Metric(keys[m], float(metrics[m]), stamp, 0) for m in METRIC_NAMES if m in metrics])
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
