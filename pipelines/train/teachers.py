"""A teacher of another encoder: its logits over the training texts, saved, logged and reused.

``teacher_model`` names any encoder (local folder, hub id, embedded name): the train step fine-tunes it
with the recipe and its own tokenizer, and the student (``model_name`` cut to ``distill_layers``) learns
from its softened logits alone, so the two tokenizers may differ. Every distilling run logs ``teacher/``
(``logits.npy``, one row per training text in the split's order, and ``teacher.json``: who the teacher
is, its validation figures and the training texts' SHA-256); ``teacher_from <run id>`` reuses them
without fine-tuning a teacher again, on the same training texts only.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from pipelines.config import ConfigError
from pipelines.train.distill import TEACHER_DIR, TEACHER_RECORD

LOGITS = "logits.npy"  # the teacher's logits over the training texts (float32, n x 2)
ARTIFACT = TEACHER_DIR  # the run's artifact folder: logits and record


def texts_digest(frame: pd.DataFrame) -> str:
    """SHA-256 of the training texts in order: logits are reused on these texts only."""
    digest = hashlib.sha256()
    for text in frame["text"]:
        digest.update(text.encode("utf-8") + b"\0")
    return digest.hexdigest()


def save(folder: Path, logits: np.ndarray, record: dict[str, Any]) -> Path:
    """``folder``/teacher with the logits and the record (written last: complete)."""
    target = folder / TEACHER_DIR
    target.mkdir(parents=True, exist_ok=True)
    np.save(target / LOGITS, logits.astype(np.float32))
    (target / TEACHER_RECORD).write_text(json.dumps(record))
    return target


def load(folder: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """The logits and record saved in ``folder``/teacher."""
    target = folder / TEACHER_DIR
    return np.load(target / LOGITS), json.loads((target / TEACHER_RECORD).read_text())


def log(run_id: str, logits: np.ndarray, record: dict[str, Any]) -> None:
    """Run ``run_id``'s ``teacher/`` artifact: the logits, then the record."""
    with tempfile.TemporaryDirectory(prefix="teacher-") as tmp:
        target = save(Path(tmp), logits, record)
        for name in (LOGITS, TEACHER_RECORD):
            mlflow.MlflowClient().log_artifact(run_id, str(target / name), ARTIFACT)


def fetch(run_id: str, train: pd.DataFrame) -> tuple[np.ndarray, dict[str, Any]]:
    """The logits and record run ``run_id`` logged, checked against ``train``'s texts (ConfigError naming
    ``teacher_from`` otherwise)."""
    tmp = Path(tempfile.mkdtemp(prefix="teacher-from-"))
    try:
        try:
            mlflow.MlflowClient().download_artifacts(run_id, ARTIFACT, str(tmp))
        except Exception as exc:  # no such run, or a run that logged no teacher
            raise ConfigError(f"parameter teacher_from: run {run_id} has no {ARTIFACT}/ artifact ({exc})") from exc
        if not (tmp / TEACHER_DIR / TEACHER_RECORD).is_file():
            raise ConfigError(f"parameter teacher_from: run {run_id}'s {ARTIFACT}/ has no {TEACHER_RECORD}")
        logits, record = load(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if record.get("texts_sha256") != texts_digest(train) or len(logits) != len(train):
        raise ConfigError(f"parameter teacher_from: run {run_id}'s teacher scored other training texts "
                          f"({record.get('texts', '?')} texts, SHA-256 {str(record.get('texts_sha256'))[:12]}…; "
                          f"these: {len(train)}, {texts_digest(train)[:12]}…): use the same data parameters")
    return logits, record


def identity(model: Any, name: str) -> dict[str, Any]:
    """Who the teacher is: its name, architecture, layers and parameters."""
    return {"teacher_model": name, "architecture": str(model.config.model_type),
            "layers": int(model.config.num_hidden_layers),
            "parameters": int(sum(p.numel() for p in model.parameters()))}
