"""Logging a fine-tuned model with MLflow's transformers flavor and registering it."""

from __future__ import annotations

import importlib.metadata as md
from typing import Any

import mlflow
import transformers
from mlflow.entities.model_registry import ModelVersion
from mlflow.models import infer_signature

from pipelines import registry
from pipelines.config import PipelineConfig
from pipelines.data import Splits
from pipelines.tracking import git_commit
from pipelines.training import TrainResult

INPUT_EXAMPLE = ["The movie was amazing", "A dull, lifeless mess."]


def _requirements() -> list[str]:
    """Pinned requirements of the logged model (skips MLflow's slow inference of them)."""
    pins = []
    for dist in ("torch", "transformers", "tokenizers", "safetensors", "numpy"):
        version = md.version(dist).split("+")[0]
        pins.append(f"{dist}=={version}")
    return [f"mlflow=={md.version('mlflow')}", *pins]


def text_classification_pipeline(result: TrainResult) -> Any:
    return transformers.pipeline(
        "text-classification", model=result.model, tokenizer=result.tokenizer, device="cpu"
    )


def log_and_register(result: TrainResult, cfg: PipelineConfig, splits: Splits) -> ModelVersion:
    """Log the model to the active run, register a new version and tag it.

    The alias is never touched here: only the promotion gate moves it.
    """
    pipe = text_classification_pipeline(result)
    output = pipe(INPUT_EXAMPLE, truncation=True, max_length=cfg.max_length)
    signature = infer_signature(INPUT_EXAMPLE, [{"label": o["label"], "score": o["score"]} for o in output])
    info = mlflow.transformers.log_model(
        transformers_model=pipe,
        name="model",
        task="text-classification",
        signature=signature,
        input_example=INPUT_EXAMPLE,
        pip_requirements=_requirements(),
        model_config={"truncation": True, "max_length": cfg.max_length},
        registered_model_name=cfg.registered_model_name,
        metadata={"scoring": {**vars(result.scoring), "threshold": result.threshold}},
    )
    version = str(info.registered_model_version)
    run = mlflow.active_run()
    registry.set_tags(
        cfg.registered_model_name,
        version,
        {
            "run_id": run.info.run_id if run else "",
            "data_digest": splits.digest,
            "dataset": cfg.dataset,
            "git_commit": git_commit(),
            "base_model": cfg.model_name,
            "threshold": f"{result.threshold:.2f}",
            "max_length": str(cfg.max_length),
            "long_text_strategy": cfg.long_text_strategy,
            "best_epoch": str(result.best_epoch),
            "weights": result.weights,
        },
    )
    return registry.get_version(cfg.registered_model_name, version)
