"""Reading a logged MLflow transformers model: its weights, its tokenizer, its scoring settings.

A model is named by a ``models:/…`` or ``runs:/…`` URI or by a local folder (an
exported model, see ``python -m pipelines export``). What a load downloads goes into a temporary folder
removed once the model is in memory: a server that reloads every time the alias moves leaves nothing behind.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import mlflow
import yaml
from mlflow.exceptions import MlflowException
from transformers import AutoTokenizer

from scoring.config import CONFIG_KEY, ScoringConfig
from scoring.identity import resolve_version
from scoring.integrity import MODEL_PREFIX, check_folder_files, check_model_folder, check_version_files, model_files_of

DOWNLOAD_PREFIX = "model-download-"  # the temporary folders a load downloads into (removed once it is loaded)


def load_components(uri: str) -> tuple[Any, Any]:
    """Model and tokenizer of a logged transformers model (PyTorch weights), held in memory.

    A remote model is downloaded into a temporary folder, removed once loaded (a local one is read in place).
    """
    if Path(uri).is_dir():
        check_folder_files(uri, model_files_of(uri))  # an export's files as its version was sealed, or refused
        parts = mlflow.transformers.load_model(uri, return_type="components")
    else:
        with tempfile.TemporaryDirectory(prefix=DOWNLOAD_PREFIX) as tmp:
            # the whole model at once, then read in place: load_model(uri, dst_path=…) still downloads MLmodel
            # into a temporary folder of its own, and leaves it
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
            check_model_folder(resolve_version(uri), local)  # a sealed version's files as registered, or refused
            parts = mlflow.transformers.load_model(local, return_type="components")
    return parts["model"], parts["tokenizer"]


def model_file(model_uri: str, sub: str, into: str | Path | None = None) -> Path:
    """A local path to a file or folder inside an MLflow model: in place for a local model folder, else
    downloaded into a new folder inside ``into`` (a folder the caller removes; required for a remote model)."""
    local = Path(model_uri)
    if local.is_dir():
        return local / sub
    if into is None:
        raise ValueError(f"model_file({model_uri!r}): a remote model's files need `into`, a folder the caller removes")
    dst = tempfile.mkdtemp(dir=into)
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{model_uri.rstrip('/')}/{sub}", dst_path=dst))
    except MlflowException:  # URIs without sub-paths (models:/<logged model id>): the whole model
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=dst)) / sub


def load_tokenizer_and_scoring(model_uri: str, **overrides: Any) -> tuple[Any, ScoringConfig]:
    """The logged tokenizer and scoring settings, without loading the PyTorch weights (downloads removed after)."""
    with tempfile.TemporaryDirectory(prefix=DOWNLOAD_PREFIX) as tmp:
        flavors = (yaml.safe_load(model_file(model_uri, "MLmodel", tmp).read_text()) or {}).get("flavors", {})
        if "transformers" not in flavors:
            raise ValueError(f"{model_uri} is not an MLflow transformers model "
                             f"(flavors: {', '.join(flavors) or 'none'})")
        tokenizer_dir = model_file(model_uri, "components/tokenizer", tmp)
        config_file = model_file(model_uri, "model/config.json", tmp)
        tokenizer_files = [p for p in tokenizer_dir.rglob("*") if p.is_file()]
        if Path(model_uri).is_dir():  # what is read, checked against the sealed version's manifest
            check_folder_files(model_uri, [*tokenizer_files, config_file])
        else:
            files = {f"{MODEL_PREFIX}components/tokenizer/{p.relative_to(tokenizer_dir).as_posix()}": p
                     for p in tokenizer_files}
            check_version_files(resolve_version(model_uri), {**files, f"{MODEL_PREFIX}model/config.json": config_file})
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        config = json.loads(config_file.read_text())
    holder = SimpleNamespace(config=SimpleNamespace(**{k: v for k, v in config.items() if k == CONFIG_KEY}))
    return tokenizer, ScoringConfig.from_model(holder, **overrides)
