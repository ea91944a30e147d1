"""Scoring a model version on the fixed test split, in PyTorch and in the serving runtimes."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines.evaluate.metrics import classification_metrics
from scoring.labels import LABEL_NAMES
from scoring.runtimes import ScorerLike, load_scorer


@dataclass
class Evaluation:
    """Test-split predictions of one model and its metrics."""

    metrics: dict[str, float]
    predictions: pd.DataFrame  # text, label, p_positive, predicted, confidence, correct


def evaluate_scorer(scorer: ScorerLike, test: pd.DataFrame) -> Evaluation:
    probs = scorer.predict_proba(test["text"].tolist())
    return Evaluation(classification_metrics(test["label"].to_numpy(), probs), prediction_frame(test, probs))


def prediction_frame(test: pd.DataFrame, probs: np.ndarray) -> pd.DataFrame:
    predicted = (probs >= 0.5).astype(int)
    return pd.DataFrame({
        "text": test["text"].to_numpy(),
        "label": test["label"].map(LABEL_NAMES).to_numpy(),
        "predicted": pd.Series(predicted).map(LABEL_NAMES).to_numpy(),
        "p_positive": probs,
        "confidence": np.where(predicted == 1, probs, 1 - probs),
        "correct": predicted == test["label"].to_numpy(),
    })


def worst_misclassified(predictions: pd.DataFrame, n: int = 10) -> pd.DataFrame:
    """The most confident mistakes."""
    wrong = predictions[~predictions["correct"]]
    return wrong.sort_values("confidence", ascending=False).head(n)[["text", "label", "predicted", "confidence"]]


def backend_variants(model_uri: str, test: pd.DataFrame, reference: np.ndarray | None = None,
                     backends: tuple[str, ...] = ("onnx", "onnx-int8")) -> pd.DataFrame:
    """Test metrics and scoring speed of serving runtimes, next to PyTorch's ``reference`` P(positive).

    One row per backend: the metrics, the share of labels equal to the reference's, the largest
    |ΔP(positive)| and the seconds (and texts/s) the whole split took, so a faster runtime is only used when
    it answers the same. ``reference=None``: the first backend (``"torch"``) is scored and is the reference.
    """
    y, texts = test["label"].to_numpy(), test["text"].tolist()
    rows = {}
    for backend in backends:
        scorer = load_scorer(model_uri, backend)
        start = time.perf_counter()
        probs = scorer.predict_proba(texts)
        seconds = time.perf_counter() - start
        reference = probs if reference is None else reference
        rows[backend] = {
            **classification_metrics(y, probs),
            "label_agreement_with_torch": float(np.mean((probs >= 0.5) == (reference >= 0.5))),
            "max_abs_dp_vs_torch": float(np.abs(probs - reference).max()),
            "scoring_seconds": seconds, "texts_per_s": len(texts) / seconds,
        }
    return pd.DataFrame(rows).T
