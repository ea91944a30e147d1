"""Reading a logged MLflow transformers model: its weights, its tokenizer, its scoring settings.

A model is named by a ``models:/…`` or ``runs:/…`` URI or by a local folder (an
exported model, see ``python -m pipelines export``).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import mlflow
import yaml
from mlflow.exceptions import MlflowException
from transformers import AutoTokenizer

from scoring.config import CONFIG_KEY, ScoringConfig


def load_components(uri: str) -> tuple[Any, Any]:
    """Model and tokenizer of a logged transformers model (PyTorch weights)."""
    parts = mlflow.transformers.load_model(uri, return_type="components")
    return parts["model"], parts["tokenizer"]


def model_file(model_uri: str, sub: str) -> Path:
    """A local path to a file or folder inside an MLflow model (downloaded when the model is remote)."""
    local = Path(model_uri)
    if local.is_dir():
        return local / sub
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{model_uri.rstrip('/')}/{sub}"))
    except MlflowException:  # URIs without sub-paths (models:/<logged model id>): the whole model
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri)) / sub


def load_tokenizer_and_scoring(model_uri: str, **overrides: Any) -> tuple[Any, ScoringConfig]:
    """The logged tokenizer and scoring settings, without loading the PyTorch weights."""
    flavors = (yaml.safe_load(model_file(model_uri, "MLmodel").read_text()) or {}).get("flavors", {})
    if "transformers" not in flavors:
        raise ValueError(f"{model_uri} is not an MLflow transformers model (flavors: {', '.join(flavors) or 'none'})")
    tokenizer = AutoTokenizer.from_pretrained(str(model_file(model_uri, "components/tokenizer")))
    config = json.loads(model_file(model_uri, "model/config.json").read_text())
    holder = SimpleNamespace(config=SimpleNamespace(**{k: v for k, v in config.items() if k == CONFIG_KEY}))
    return tokenizer, ScoringConfig.from_model(holder, **overrides)
