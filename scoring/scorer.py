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

The strategy and its settings are a :class:`~scoring.config.ScoringConfig`, saved in
the model's config so the logged model carries them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from scoring.config import ScoringConfig
from scoring.labels import POSITIVE, label_and_confidence


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
