"""A window's subjectivity: does it give an opinion, or retell the plot?

Full-length reviews mix the two, and a sentiment model trained on opinions reads neutral description
("the killer stalks her through the house") as sentiment; the more plot a review retells, the more its
answer drifts. Pang & Lee (2004, "A Sentimental Education") classified full movie reviews from their
subjective sentences only, and raised polarity accuracy. Here the same idea is a linear head on the
features the classifier itself reads (:func:`classifier_features`), fitted at training time on plot
summaries (objective) against critics' snippets (subjective) by :mod:`pipelines.train.subjectivity`:
the one forward pass per window gives both the sentiment logits and P(subjective), which
:func:`scoring.scorer.aggregate` uses as window weights (the ``*_subjective*`` aggregations).

The head is saved in the model's config (``config.sentiment_mlops["subjectivity_head"]``) and exported
as a second output of the ONNX graph (``subjectivity``, a logit); a version without it is scored as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from scoring.config import CONFIG_KEY

HEAD_KEY = "subjectivity_head"  # in config.sentiment_mlops
OUTPUT = "subjectivity"  # the ONNX graph's second output: the head's logit per window


@dataclass(frozen=True)
class SubjectivityHead:
    """P(subjective) = sigmoid(features · weight + bias), on the classifier's input features."""

    weight: np.ndarray
    bias: float

    @classmethod
    def from_model(cls, model: Any) -> SubjectivityHead | None:
        """The head saved in ``model.config`` (None for a version trained without one)."""
        saved = (getattr(model.config, CONFIG_KEY, None) or {}).get(HEAD_KEY)
        if not saved:
            return None
        return cls(np.asarray(saved["weight"], dtype=np.float32), float(saved["bias"]))

    def to_config(self) -> dict[str, Any]:
        return {"weight": [round(float(w), 7) for w in self.weight], "bias": float(self.bias)}

    def logits(self, features: np.ndarray) -> np.ndarray:
        return features.astype(np.float64) @ self.weight.astype(np.float64) + self.bias

    def module(self) -> torch.nn.Linear:
        """The head as a ``Linear(hidden, 1)`` (what the ONNX export traces)."""
        linear = torch.nn.Linear(len(self.weight), 1)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(self.weight.reshape(1, -1)))
            linear.bias.fill_(self.bias)
        return linear.eval()


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def classification_head(model: Any) -> torch.nn.Module:
    """The module that maps features to the labels' logits (``classifier``; ``score`` in decoder models)."""
    for name in ("classifier", "score"):
        head = getattr(model, name, None)
        if isinstance(head, torch.nn.Module):
            return head
    raise ValueError(f"{type(model).__name__} has no classifier head to read features from")


def classifier_features(model: Any, **inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass: the logits, and the features the classification head reads (the [CLS] row of a
    head that takes the whole sequence), captured on the way."""
    captured: list[torch.Tensor] = []
    handle = classification_head(model).register_forward_pre_hook(lambda _module, args: captured.append(args[0]))
    try:
        logits = model(**inputs).logits
    finally:
        handle.remove()
    features = captured[0]
    return logits, features[:, 0] if features.dim() == 3 else features
