"""Knowledge distillation: a student of the fine-tuned model's first layers, taught by that model.

The teacher is the model the recipe fine-tuned (its kept weights and folded threshold); the student
starts as the teacher cut to its first ``distill_layers`` transformer layers (the same embeddings,
pooler, head, tokenizer and window length). The teacher scores every training text once; the
student then trains with the recipe's Trainer on ``alpha`` × the KL divergence from the teacher's
softened distribution (temperature T, scaled by T², Hinton et al. 2015) + (1 − ``alpha``) × the
labels' cross-entropy. Fewer layers is fewer operations per window for every runtime that serves it.

The finished teacher is saved beside the checkpoints (``teacher/``, ``teacher.json`` last), so a
train step killed while the student trains resumes the student without training the teacher again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForSequenceClassification

from pipelines.config import ConfigError
from pipelines.data.embedded import resolve_model_name

TEACHER_DIR = "teacher"  # the finished teacher, beside the teacher's checkpoints
STUDENT_DIR = "student"  # the student's checkpoints
BASE_DIR = "base"  # student_init fine-tuned: model_name fine-tuned first, the student's start (another teacher)
TEACHER_RECORD = "teacher.json"  # written last: the teacher folder is complete


def teacher_layers(model_name: str) -> int:
    """How many transformer layers ``model_name`` has."""
    config = AutoConfig.from_pretrained(resolve_model_name(model_name))
    layers = getattr(config, "num_hidden_layers", None)
    if layers is None:
        raise ConfigError(f"parameter distill_layers: {model_name} has no num_hidden_layers to cut")
    return int(layers)


def check_layers(model_name: str, layers: int) -> None:
    """A ConfigError naming ``distill_layers`` unless the student is smaller than the teacher."""
    if layers and layers >= (full := teacher_layers(model_name)):
        raise ConfigError(f"parameter distill_layers: {layers} is not fewer than {model_name}'s {full} layers "
                          "(0 turns distillation off)")


def check_other_teacher(model_name: str, layers: int, teacher_model: str, teacher_from: str) -> None:
    """A ConfigError naming the parameter unless another teacher can teach ``model_name``'s first ``layers``."""
    if teacher_model and teacher_from:
        raise ConfigError("parameter teacher_from: give teacher_model or teacher_from, not both")
    name = "teacher_model" if teacher_model else "teacher_from"
    if not layers:
        raise ConfigError(f"parameter distill_layers: 0 distils nothing; {name} needs the student's layers "
                          f"(1 to {model_name}'s {teacher_layers(model_name)})")
    if layers > (full := teacher_layers(model_name)):
        raise ConfigError(f"parameter distill_layers: {layers} is more than {model_name}'s {full} layers")
    if teacher_model:
        resolve_model_name(teacher_model)  # an embedded name not assembled yet: the error says how


def load_student(folder: Path, layers: int, name_or_path: str) -> Any:
    """The teacher saved in ``folder``/teacher cut to its embeddings, first ``layers`` layers, pooler and head.

    ``name_or_path`` (the base model) is what the student's config records as its origin, as a fine-tuned model's
    does, rather than the teacher's folder, which goes with the checkpoints.

    Starting from the fine-tuned layers, not the base model's, the student begins close to the teacher's answers:
    on the default run, test accuracy 0.8455 against 0.8322 from the base model's first layers (BENCHMARKS.md).
    """
    student = AutoModelForSequenceClassification.from_pretrained(folder / TEACHER_DIR, num_hidden_layers=layers)
    student.config.name_or_path = student.name_or_path = name_or_path
    return student


@torch.no_grad()
def teacher_logits(model: Any, tokenizer: Any, ids: list[list[int]], device: str,
                   batch_size: int = 64) -> np.ndarray:
    """The teacher's logits (float32, one row per text) for token ids already truncated at the window."""
    model = model.to(device).eval()
    out = np.zeros((len(ids), 2), dtype=np.float32)
    order = np.argsort([len(x) for x in ids], kind="stable")  # similar lengths together: little padding
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        batch = tokenizer.pad({"input_ids": [ids[i] for i in rows]}, return_tensors="pt").to(device)
        out[rows] = model(**batch).logits.float().cpu().numpy()
    model.to("cpu")
    return out


def loss(student_logits: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, *, temperature: float,
         alpha: float) -> torch.Tensor:
    """alpha · T² · KL(teacher_T ‖ student_T) + (1 − alpha) · cross-entropy with the labels (batch means)."""
    logits = student_logits.float()
    soft = F.kl_div(F.log_softmax(logits / temperature, dim=-1), F.log_softmax(teacher.float() / temperature, dim=-1),
                    reduction="batchmean", log_target=True) * temperature ** 2
    return alpha * soft + (1 - alpha) * F.cross_entropy(logits, labels)


def is_student_checkpoint(checkpoint: Path) -> bool:
    """``checkpoint`` is a student's (in ``student/``, beside the finished teacher)."""
    return checkpoint.parent.name == STUDENT_DIR


def check_resume(checkpoint: Path, layers: int) -> None:
    """A ConfigError naming ``resume_from`` when a student's ``checkpoint`` cannot continue as ``distill_layers``."""
    if not is_student_checkpoint(checkpoint):
        return
    saved = json.loads((checkpoint / "config.json").read_text()).get("num_hidden_layers")
    if layers != saved:
        raise ConfigError(f"parameter resume_from: {checkpoint} is a {saved}-layer student's checkpoint; resume it "
                          f"with distill_layers {saved} (not {layers})")
    if not teacher_complete(checkpoint.parent.parent):
        raise ConfigError(f"parameter resume_from: {checkpoint} is a student's checkpoint without its teacher "
                          f"({checkpoint.parent.parent / TEACHER_DIR / TEACHER_RECORD} is missing)")


def save_teacher(model: Any, tokenizer: Any, folder: Path, record: dict[str, Any]) -> Path:
    """The finished teacher in ``folder``/teacher, its record written last (what :func:`load_teacher` checks)."""
    target = folder / TEACHER_DIR
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    (target / TEACHER_RECORD).write_text(json.dumps(record))
    return target


def teacher_complete(folder: Path) -> bool:
    return (folder / TEACHER_DIR / TEACHER_RECORD).is_file()


def teacher_record(folder: Path) -> dict[str, Any]:
    """The record of the teacher saved in ``folder``/teacher."""
    return json.loads((folder / TEACHER_DIR / TEACHER_RECORD).read_text())


def load_teacher(folder: Path) -> tuple[Any, dict[str, Any]]:
    """The teacher saved in ``folder``/teacher and its record."""
    return AutoModelForSequenceClassification.from_pretrained(folder / TEACHER_DIR).eval(), teacher_record(folder)
