"""The promotion gate: candidate and champion scored on one test split, the rule applied, the alias moved last.

The decision is written on the candidate (``promotion.*`` tags) whatever it is; the alias moves only when it
says promote, only to a READY version, under the registry lock (:mod:`pipelines.registry.lock`), and only if
production is still the champion the gate compared with (:mod:`pipelines.registry.audit`).
"""

from __future__ import annotations

from mlflow.entities.model_registry import ModelVersion

from pipelines.config import DataSection, GateSection, LockSection, RegistrySection
from pipelines.data.split import Splits, load_splits
from pipelines.evaluate.testset import evaluate_scorer
from pipelines.registry import versions
from pipelines.registry.moves import apply_decision
from pipelines.registry.rule import Decision, decide
from scoring.identity import RegistryError, model_uri
from scoring.runtimes import load_scorer


def scores_on(mv: ModelVersion, splits: Splits, run_id: str, backend: str = "torch") -> dict[str, float]:
    """Test metrics of ``mv`` run by ``backend``: recorded ones if measured on this split, else measured now."""
    digest = splits.digest
    recorded = versions.eval_metrics(mv, digest, backend)
    if recorded is not None:
        return recorded
    print(f"v{mv.version} has no {backend} metrics on test split {digest}: scoring it now")
    metrics = evaluate_scorer(load_scorer(model_uri(mv.name, mv.version), backend), splits.test).metrics
    versions.record_evaluation(mv.name, mv.version, metrics, digest, run_id, backend)
    return metrics


def gather(gate: GateSection, data: DataSection, registry: RegistrySection,
           run_id: str = "") -> tuple[ModelVersion, ModelVersion | None, dict, str]:
    """Candidate, champion (None if no alias yet), their scores and the test split digest."""
    candidate = versions.get_version(registry.registered_model_name, gate.model_version)
    if candidate.status != "READY":
        raise RegistryError(f"candidate v{candidate.version} is {candidate.status}, not READY")
    splits = load_splits(data)
    backend = gate.promotion_backend
    scores = {f"candidate v{candidate.version}": scores_on(candidate, splits, run_id, backend)}
    champion = versions.alias_version(registry.registered_model_name, registry.alias)
    if champion is not None and champion.version != candidate.version:
        scores[f"{registry.alias} v{champion.version}"] = scores_on(champion, splits, run_id, backend)
    return candidate, champion, scores, splits.digest


def decide_and_apply(
    gate: GateSection, registry: RegistrySection, candidate: ModelVersion, champion: ModelVersion | None,
    scores: dict, run_id: str = "", lock: LockSection | None = None,
) -> Decision:
    """Apply the gate and record it on the candidate; the alias moves last, only on success."""
    cand_scores = scores[f"candidate v{candidate.version}"]
    if champion is not None and champion.version == candidate.version:
        return Decision(
            False, [f"v{candidate.version} already is {registry.alias}"], gate.promotion_metric, candidate.version,
            cand_scores[gate.promotion_metric], champion.version, cand_scores[gate.promotion_metric],
            backend=gate.promotion_backend,
        )
    champ_scores = scores.get(f"{registry.alias} v{champion.version}") if champion else None
    decision = decide(
        cand_scores, champ_scores, gate.promotion_metric, gate.min_delta, gate.min_metric,
        candidate_version=candidate.version, champion_version=champion.version if champion else None,
        backend=gate.promotion_backend,
    )
    apply_decision(registry.registered_model_name, registry.alias, decision, run_id, lock)
    return decision
