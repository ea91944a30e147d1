"""Logging a fine-tuned model with MLflow's transformers flavor and registering it."""

from __future__ import annotations

import importlib.metadata as md
from typing import Any

import mlflow
import transformers
from mlflow.entities.model_registry import ModelVersion
from mlflow.models import infer_signature

from pipelines.data.split import Splits
from pipelines.registry import versions
from pipelines.train.trainer import TrainResult
from scoring.tracking import git_commit

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


def log_and_register(result: TrainResult, splits: Splits, registered_model_name: str,
                     base_model: str) -> ModelVersion:
    """Log the model to the active run, register a new version of ``registered_model_name`` and tag it.

    The alias is never touched here: only the promotion gate moves it.
    """
    max_length = result.scoring.max_length
    pipe = text_classification_pipeline(result)
    output = pipe(INPUT_EXAMPLE, truncation=True, max_length=max_length)
    signature = infer_signature(INPUT_EXAMPLE, [{"label": o["label"], "score": o["score"]} for o in output])
    info = mlflow.transformers.log_model(
        transformers_model=pipe,
        name="model",
        task="text-classification",
        signature=signature,
        input_example=INPUT_EXAMPLE,
        pip_requirements=_requirements(),
        model_config={"truncation": True, "max_length": max_length},
        registered_model_name=registered_model_name,
        metadata={"scoring": {**result.scoring.model_dump(), "threshold": result.threshold}},
    )
    version = str(info.registered_model_version)
    run = mlflow.active_run()
    versions.set_tags(
        registered_model_name,
        version,
        {
            "run_id": run.info.run_id if run else "",
            "data_digest": splits.digest,
            "dataset": splits.source,
            "git_commit": git_commit(),
            "base_model": base_model,
            "threshold": f"{result.threshold:.2f}",
            "max_length": str(max_length),
            "long_text_strategy": result.scoring.long_text_strategy,
            "aggregation": result.scoring.aggregation,
            "long_threshold": f"{result.scoring.long_threshold:.2f}",
            "best_epoch": str(result.best_epoch),
            "weights": result.weights,
            "layers": str(result.model.config.num_hidden_layers),
            **({"teacher_layers": str(result.teacher["layers"]),
                "teacher_val_accuracy": f"{result.teacher['validation_metrics']['accuracy']:.4f}"}
               if result.teacher else {}),
            **({"student_init": "fine-tuned",
                "student_init_val_accuracy": f"{result.teacher['student_init']['validation_metrics']['accuracy']:.4f}"}
               if result.teacher and "student_init" in result.teacher else {}),
        },
    )
    return versions.get_version(registered_model_name, version)
