"""Scoring texts with a fine-tuned classifier, long texts included.

Evaluation, monitoring and the serving app all score through :class:`Scorer`, so
they agree on tokenization, the decision threshold (folded into the model's
classifier bias at training time) and the long-text strategy:

* ``truncate``: the first ``max_length`` tokens only;
* ``head_tail``: the first quarter and the last three quarters of the window
  (endings of reviews carry the verdict);
* ``sliding_window``: windows of ``max_length`` tokens overlapping by
  ``window_stride`` tokens (at most ``max_windows``, evenly spread), whose
  positive-class probabilities are averaged, weighted by window length.

The strategy and its settings are saved in the model's config
(``config.sentiment_mlops``) so the logged model carries them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from pipelines.data import LABEL_NAMES

CONFIG_KEY = "sentiment_mlops"
POSITIVE = 1


@dataclass(frozen=True)
class ScoringConfig:
    """How a model turns text into tokens and windows."""

    max_length: int = 64
    long_text_strategy: str = "sliding_window"
    window_stride: int = 16
    max_windows: int = 16

    @classmethod
    def from_model(cls, model: Any, **overrides: Any) -> ScoringConfig:
        saved = getattr(model.config, CONFIG_KEY, None) or {}
        known = {k: v for k, v in saved.items() if k in cls.__dataclass_fields__}
        return replace(cls(**known), **{k: v for k, v in overrides.items() if v is not None})


def save_scoring_config(model: Any, scoring: ScoringConfig, **extra: Any) -> None:
    """Store the scoring settings (and extras such as the threshold) in the model config."""
    setattr(model.config, CONFIG_KEY, {**asdict(scoring), **extra})


def fold_threshold(model: Any, threshold: float) -> None:
    """Shift the classifier bias so that argmax == (P(positive) >= threshold).

    For two classes softmax gives p1 >= t  <=>  z1 - z0 >= logit(t); subtracting
    logit(t) from the positive bias moves the decision point to 0.5.
    """
    shift = float(np.log(threshold / (1.0 - threshold)))
    head = model.classifier if hasattr(model, "classifier") else model.get_output_embeddings()
    last = head.out_proj if hasattr(head, "out_proj") else head
    with torch.no_grad():
        last.bias[POSITIVE] -= shift


class Scorer:
    """P(positive) and labels for any number of texts of any length."""

    def __init__(self, model: Any, tokenizer: Any, scoring: ScoringConfig | None = None, batch_size: int = 64):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.scoring = scoring or ScoringConfig.from_model(model)
        self.batch_size = batch_size

    # -- tokenization --------------------------------------------------------------------
    def windows(self, texts: Sequence[str]) -> tuple[list[list[int]], np.ndarray]:
        """Token id windows and, for each, the index of the text it came from."""
        s = self.scoring
        if s.long_text_strategy == "sliding_window":
            stride = min(s.window_stride, s.max_length // 2)
            enc = self.tokenizer(
                list(texts), truncation=True, max_length=s.max_length, stride=stride,
                return_overflowing_tokens=True,
            )
            ids, owner = enc["input_ids"], np.asarray(enc["overflow_to_sample_mapping"])
            keep = _spread(owner, s.max_windows)
            return [ids[i] for i in keep], owner[keep]
        if s.long_text_strategy == "head_tail":
            enc = self.tokenizer(list(texts), add_special_tokens=False, truncation=False)
            prefix, suffix = special_affixes(self.tokenizer)
            budget = s.max_length - len(prefix) - len(suffix)
            head = budget // 4
            ids = [
                prefix + (t if len(t) <= budget else t[:head] + t[len(t) - (budget - head):]) + suffix
                for t in enc["input_ids"]
            ]
            return ids, np.arange(len(texts))
        enc = self.tokenizer(list(texts), truncation=True, max_length=s.max_length)
        return enc["input_ids"], np.arange(len(texts))

    # -- scoring -------------------------------------------------------------------------
    @torch.inference_mode()
    def window_probabilities(self, ids: list[list[int]]) -> np.ndarray:
        """P(positive) per window, batched by similar length (dynamic padding)."""
        out = np.empty(len(ids), dtype=np.float64)
        order = np.argsort([len(x) for x in ids], kind="stable")
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            enc = self.tokenizer.pad({"input_ids": [ids[i] for i in batch]}, return_tensors="pt")
            logits = self.model(**enc).logits.float()
            out[batch] = torch.softmax(logits, dim=-1)[:, POSITIVE].numpy()
        return out

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """P(positive) per text."""
        if len(texts) == 0:
            return np.empty(0)
        ids, owner = self.windows(texts)
        probs = self.window_probabilities(ids)
        weights = np.array([len(x) for x in ids], dtype=np.float64)
        total = np.bincount(owner, weights=probs * weights, minlength=len(texts))
        return total / np.bincount(owner, weights=weights, minlength=len(texts))

    def predict(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """``[{"sentiment": "Positive"|"Negative", "confidence": p}]`` per text."""
        return [label_and_confidence(p) for p in self.predict_proba(texts)]


def label_and_confidence(p_positive: float) -> dict[str, Any]:
    label = int(p_positive >= 0.5)
    confidence = p_positive if label else 1.0 - p_positive
    return {"sentiment": LABEL_NAMES[label], "confidence": round(float(confidence), 6)}


def special_affixes(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special token ids a tokenizer puts before and after one sequence (``[CLS]`` / ``[SEP]`` for BERT).

    Found by encoding a probe with and without special tokens: transformers 5's fast
    tokenizers no longer have ``build_inputs_with_special_tokens``.
    """
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    core = tokenizer("a", add_special_tokens=False)["input_ids"]
    for i in range(len(full) - len(core) + 1):
        if full[i : i + len(core)] == core:
            return full[:i], full[i + len(core):]
    raise ValueError("cannot locate the text between the tokenizer's special tokens")


def _spread(owner: np.ndarray, max_windows: int) -> np.ndarray:
    """Indices keeping at most ``max_windows`` evenly spread windows per text."""
    keep: list[int] = []
    for text in np.unique(owner):
        idx = np.flatnonzero(owner == text)
        if len(idx) > max_windows:
            idx = idx[np.unique(np.linspace(0, len(idx) - 1, max_windows).round().astype(int))]
        keep.extend(idx.tolist())
    return np.asarray(keep, dtype=int)
