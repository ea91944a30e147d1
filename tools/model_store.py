"""An MLflow store holding one small model that learned: trained, exported, evaluated and promoted.

The tests' ``learned_store`` fixture and the benchmarks (when no production model is at
hand) build it the same way: the pipeline's own functions called in process, in the
order of the train → evaluate → promote steps, without the notebooks (a few minutes on
two cores instead of the notebooks' overhead)::

    store = build_store(tmp / "store", {"max_train_samples": 3000, "epochs": 2, "max_length": 48})
    store.model_uri  # models:/sentiment@production
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow

from pipelines.config import build_config
from pipelines.data.split import load_splits
from pipelines.evaluate.testset import evaluate_scorer
from pipelines.monitor import reference_store
from pipelines.registry import promotion, sealing, versions
from pipelines.train import model_logging, onnx_logging, trainer
from scoring import tracking
from scoring.identity import model_uri


@dataclass(frozen=True)
class Store:
    """A SQLite MLflow store in ``root`` with a registered, promoted model."""

    root: Path
    tracking_uri: str
    model_name: str = "sentiment"
    version: str = "1"

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_name}@production"


def sqlite_uri(folder: Path) -> str:
    """The tracking URI of the SQLite store in ``folder`` (artifacts go to ``mlartifacts/`` beside it)."""
    return f"sqlite:///{folder / 'mlflow.db'}"


def build_store(root: Path, params: dict[str, Any], run_name: str = "small-model") -> Store:
    """Train a model on ``params`` into a new store in ``root``, log it as the train step does, and promote it.

    What the steps do, in their order: train, register, reference profile, ONNX export (train);
    PyTorch test metrics recorded on the version (evaluate); the gate on the served runtime's scores,
    which moves ``production`` (promote). AssertionError if the gate refuses (give ``min_metric``).
    """
    root.mkdir(parents=True, exist_ok=True)
    uri = sqlite_uri(root)
    cfg = build_config({**params, "tracking_uri": uri})
    tracking.setup(uri, cfg.experiment_name)
    splits = load_splits(cfg.data)
    with mlflow.start_run(run_name=run_name) as run:
        run_id = run.info.run_id
        mlflow.log_params(cfg.model_dump())
        result = trainer.train(cfg.train, cfg.scoring, splits, seed=cfg.seed, metric=cfg.promotion_metric,
                               progress=False)
        mv = model_logging.log_and_register(result, splits, cfg.registered_model_name, cfg.model_name)
        reference_store.log_for_version(result.scorer(), splits, mv, run_id)
        onnx_logging.log_onnx(model_uri(mv.name, mv.version), run_id)
        sealing.seal(mv.name, mv.version)
        metrics = evaluate_scorer(result.scorer(), splits.test).metrics
        versions.record_evaluation(mv.name, mv.version, metrics, splits.digest, run_id)
        gate = cfg.gate.model_copy(update={"model_version": str(mv.version)})
        candidate, champion, scores, _ = promotion.gather(gate, cfg.data, cfg.registry, run_id)
        decision = promotion.decide_and_apply(gate, cfg.registry, candidate, champion, scores, run_id)
        assert decision.promote, decision.reasons
    return Store(root, uri, mv.name, str(mv.version))
