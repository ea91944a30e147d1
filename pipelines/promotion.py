"""The promote step: gather candidate and champion scores on one test split, then decide."""

from __future__ import annotations

from mlflow.entities.model_registry import ModelVersion

from pipelines import registry
from pipelines.backends import load_scorer
from pipelines.config import PipelineConfig
from pipelines.data import Splits, load_splits
from pipelines.evaluation import evaluate_scorer


def scores_on(mv: ModelVersion, splits: Splits, run_id: str, backend: str = "torch") -> dict[str, float]:
    """Test metrics of ``mv`` run by ``backend``: recorded ones if measured on this split, else measured now."""
    digest = splits.digest
    recorded = registry.eval_metrics(mv, digest, backend)
    if recorded is not None:
        return recorded
    print(f"v{mv.version} has no {backend} metrics on test split {digest}: scoring it now")
    metrics = evaluate_scorer(load_scorer(registry.model_uri(mv.name, mv.version), backend), splits.test).metrics
    registry.record_evaluation(mv.name, mv.version, metrics, digest, run_id, backend)
    return metrics


def gather(cfg: PipelineConfig, run_id: str = "") -> tuple[ModelVersion, ModelVersion | None, dict, str]:
    """Candidate, champion (None if no alias yet), their scores and the test split digest."""
    candidate = registry.get_version(cfg.registered_model_name, cfg.model_version)
    if candidate.status != "READY":
        raise registry.RegistryError(f"candidate v{candidate.version} is {candidate.status}, not READY")
    splits = load_splits(cfg)
    backend = cfg.promotion_backend
    scores = {f"candidate v{candidate.version}": scores_on(candidate, splits, run_id, backend)}
    champion = registry.alias_version(cfg.registered_model_name, cfg.alias)
    if champion is not None and champion.version != candidate.version:
        scores[f"{cfg.alias} v{champion.version}"] = scores_on(champion, splits, run_id, backend)
    return candidate, champion, scores, splits.digest


def decide_and_apply(
    cfg: PipelineConfig, candidate: ModelVersion, champion: ModelVersion | None, scores: dict, run_id: str = ""
) -> registry.Decision:
    """Apply the gate and record it on the candidate; the alias moves last, only on success."""
    cand_scores = scores[f"candidate v{candidate.version}"]
    if champion is not None and champion.version == candidate.version:
        decision = registry.Decision(
            False, [f"v{candidate.version} already is {cfg.alias}"], cfg.promotion_metric, candidate.version,
            cand_scores[cfg.promotion_metric], champion.version, cand_scores[cfg.promotion_metric],
            backend=cfg.promotion_backend,
        )
        return decision
    champ_scores = scores.get(f"{cfg.alias} v{champion.version}") if champion else None
    decision = registry.decide(
        cand_scores, champ_scores, cfg.promotion_metric, cfg.min_delta, cfg.min_metric,
        candidate_version=candidate.version, champion_version=champion.version if champion else None,
        backend=cfg.promotion_backend,
    )
    registry.apply_decision(cfg.registered_model_name, cfg.alias, decision, run_id)
    return decision
