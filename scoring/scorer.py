"""Scoring texts with a fine-tuned classifier, long texts included.

Evaluation, monitoring and the serving app all score through :class:`Scorer`, so
they agree on tokenization, the decision threshold (folded into the model's
classifier bias at training time) and the long-text strategy:

* ``truncate``: the first ``max_length`` tokens only;
* ``head_tail``: the first quarter and the last three quarters of the window
  (endings of reviews carry the verdict);
* ``sliding_window``: windows of ``max_length`` tokens overlapping by
  ``window_stride`` tokens (at most ``max_windows``, evenly spread), made into one
  P(positive) by :func:`aggregate` (``aggregation``, then ``long_threshold``).

A text of one window gets that window's P(positive) unchanged (its threshold is folded
into the classifier bias); only texts of several windows are aggregated. The strategy
and its settings are a :class:`~scoring.config.ScoringConfig`, saved in the model's
config so the logged model carries them.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, NamedTuple, Self

import numpy as np
import torch

from scoring.config import ScoringConfig, needs_subjectivity
from scoring.labels import POSITIVE, label_and_confidence
from scoring.subjectivity import SubjectivityHead, classifier_features, sigmoid


class WindowScores(NamedTuple):
    """Per window: P(positive), the logit margin z1 - z0, and P(subjective) where the model has the head."""

    probs: np.ndarray
    margins: np.ndarray
    subjectivity: np.ndarray | None = None


class Scorer:
    """P(positive) and labels for any number of texts of any length."""

    # calls of score_windows that may run at once from several threads (the tokenizer never may: see
    # app.model.LoadedModel); PyTorch's batches are padded by the tokenizer, so one at a time
    calls_at_once = 1

    def __init__(self, model: Any, tokenizer: Any, scoring: ScoringConfig | None = None, batch_size: int = 64):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.head = SubjectivityHead.from_model(model)  # None for versions trained without one
        self.scoring = check_scoring(scoring or ScoringConfig.from_model(model), self.head is not None)
        self.batch_size = batch_size

    @property
    def has_subjectivity(self) -> bool:
        """Whether each window's P(subjective) comes with its logits (the ``*_subjective*`` aggregations need it)."""
        return self.head is not None

    def with_scoring(self, scoring: ScoringConfig) -> Self:
        """This scorer (weights or session and tokenizer shared, any runtime) scoring with other settings."""
        other = copy.copy(self)
        other.scoring = check_scoring(scoring, self.has_subjectivity)
        return other

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
    def window_logits(self, ids: list[list[int]], owner: np.ndarray | None = None) -> WindowScores:
        """P(positive), the logit margin z1 - z0 and P(subjective) (with the head) per window, batched by similar
        length (dynamic padding).

        ``owner`` (the text of each window) is for runtimes whose calls must not mix texts (int8).
        """
        probs, margins = np.empty(len(ids), dtype=np.float64), np.empty(len(ids), dtype=np.float64)
        subjectivity = np.empty(len(ids), dtype=np.float64) if self.head is not None else None
        order = np.argsort([len(x) for x in ids], kind="stable")
        device = getattr(self.model, "device", torch.device("cpu"))  # a GPU when evaluation trains there
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            enc = self.tokenizer.pad({"input_ids": [ids[i] for i in batch]}, return_tensors="pt")
            if device.type != "cpu":
                enc = {k: v.to(device) for k, v in enc.items()}
            if self.head is None:
                logits = self.model(**enc).logits.float().cpu()
            else:
                logits, features = classifier_features(self.model, **enc)
                logits = logits.float().cpu()
                subjectivity[batch] = sigmoid(self.head.logits(features.float().cpu().numpy()))
            probs[batch] = torch.softmax(logits, dim=-1)[:, POSITIVE].numpy()
            margins[batch] = logit_margin(logits.numpy())
        return WindowScores(probs, margins, subjectivity)

    def window_probabilities(self, ids: list[list[int]]) -> np.ndarray:
        """P(positive) per window."""
        return self.window_logits(ids).probs

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """P(positive) per text."""
        if len(texts) == 0:
            return np.empty(0)
        ids, owner = self.windows(texts)
        return self.score_windows(ids, owner, len(texts))

    def score_windows(self, ids: list[list[int]], owner: np.ndarray, n_texts: int) -> np.ndarray:
        """P(positive) per text from its windows (what :meth:`windows` returned for ``n_texts`` texts)."""
        scores = self.window_logits(ids, owner)
        lengths = np.array([len(x) for x in ids], dtype=np.float64)
        return aggregate(scores.probs, scores.margins, owner, lengths, n_texts, self.scoring, scores.subjectivity)

    def predict(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """``[{"sentiment": "Positive"|"Negative", "confidence": p}]`` per text."""
        return [label_and_confidence(p) for p in self.predict_proba(texts)]


def logit_margin(logits: np.ndarray) -> np.ndarray:
    """z_positive - z_negative per row: the log-odds of P(positive)."""
    return logits[:, POSITIVE].astype(np.float64) - logits[:, 1 - POSITIVE].astype(np.float64)


def check_scoring(scoring: ScoringConfig, has_subjectivity: bool) -> ScoringConfig:
    """``scoring``, or a ValueError naming the aggregation when it needs a subjectivity head the model lacks."""
    if needs_subjectivity(scoring.aggregation) and not has_subjectivity:
        raise ValueError(f"aggregation {scoring.aggregation!r} weighs windows by their subjectivity, and this model "
                         "has no subjectivity head (versions trained before issue 25): choose another aggregation")
    return scoring


def aggregate(probs: np.ndarray, margins: np.ndarray, owner: np.ndarray, lengths: np.ndarray, n_texts: int,
              scoring: ScoringConfig, subjectivity: np.ndarray | None = None) -> np.ndarray:
    """One P(positive) per text from its windows' P(positive) (``probs``), logit margins and P(subjective).

    A text of one window keeps that window's P(positive). A text of several gets the mean chosen by
    ``scoring.aggregation`` (``scoring.config.AGGREGATIONS``), then ``long_threshold`` is folded in (the
    log-odds shifted by logit(threshold)), so P >= 0.5 means Positive for every text. The defaults
    (``prob_length``, 0.5) are what every version before these settings was scored with. The ``subjective``
    weights are each window's length times its P(subjective) (``subjectivity``, :mod:`scoring.subjectivity`):
    a window that retells the plot counts little; ``last`` doubles the weight of a text's last window.
    """
    length_mean = np.bincount(owner, weights=probs * lengths, minlength=n_texts) / np.bincount(
        owner, weights=lengths, minlength=n_texts)
    multi = np.bincount(owner, minlength=n_texts) > 1
    how, threshold = scoring.aggregation, scoring.long_threshold
    if not multi.any() or (how == "prob_length" and threshold == 0.5):
        return length_mean
    first = np.r_[True, owner[1:] != owner[:-1]]  # windows of a text are consecutive, in text order
    last = np.r_[owner[1:] != owner[:-1], True]
    kind = how.partition("_")[2]
    if needs_subjectivity(how) and subjectivity is None:
        raise ValueError(f"aggregation {how!r} needs each window's P(subjective): the model has no subjectivity head")
    subjective = lengths * (subjectivity + 1e-6) if subjectivity is not None else lengths
    weights = {
        "length": lengths, "": np.ones_like(lengths), "ends": lengths * (1.0 + first + last),
        "confidence": lengths * (np.abs(margins) + 1e-6), "last": lengths * (1.0 + last),
        "subjective": subjective, "subjective_last": subjective * (1.0 + last),
    }[kind]
    values = margins if how.startswith("logit") else probs
    mean = np.bincount(owner, weights=values * weights, minlength=n_texts) / np.bincount(
        owner, weights=weights, minlength=n_texts)
    log_odds = mean if how.startswith("logit") else _log_odds(mean)
    shifted = 1.0 / (1.0 + np.exp(-(log_odds - _log_odds(np.float64(threshold)))))
    return np.where(multi, shifted, length_mean)


def _log_odds(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


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
