"""The two labels and the answer a client gets for one text."""

from __future__ import annotations

from typing import Any

LABEL_NAMES = {0: "Negative", 1: "Positive"}
POSITIVE = 1  # index of the positive class in the model's logits


def label_and_confidence(p_positive: float) -> dict[str, Any]:
    """``{"sentiment": "Positive"|"Negative", "confidence": P(that label)}`` for one P(positive)."""
    label = int(p_positive >= 0.5)
    confidence = p_positive if label else 1.0 - p_positive
    return {"sentiment": LABEL_NAMES[label], "confidence": round(float(confidence), 6)}
