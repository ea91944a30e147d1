"""Scoring a model version on the fixed test split, with baselines beside it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from pipelines.data import LABEL_NAMES, Splits
from pipelines.inference import Scorer
from pipelines.metrics import classification_metrics, majority_baseline


@dataclass
class Evaluation:
    """Test-split predictions of one model and its metrics."""

    metrics: dict[str, float]
    predictions: pd.DataFrame  # text, label, p_positive, predicted, confidence, correct


def evaluate_scorer(scorer: Scorer, test: pd.DataFrame) -> Evaluation:
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


def fit_tfidf_logreg(train: pd.DataFrame, seed: int = 42) -> Any:
    """The bag-of-words baseline: TF-IDF (word 1-2 grams) + logistic regression, fitted on ``train``."""
    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
        LogisticRegression(C=4.0, max_iter=2000, random_state=seed),
    )
    return model.fit(train["text"], train["label"])


def tfidf_logreg(splits: Splits, seed: int = 42) -> dict[str, float]:
    """TF-IDF + logistic regression trained on train, scored on test."""
    probs = fit_tfidf_logreg(splits.train, seed).predict_proba(splits.test["text"])[:, 1]
    return classification_metrics(splits.test["label"].to_numpy(), probs)


def baselines(splits: Splits, seed: int = 42) -> pd.DataFrame:
    """Majority class and TF-IDF + LR on the same test split."""
    rows = {
        "majority": majority_baseline(splits.train["label"].to_numpy(), splits.test["label"].to_numpy()),
        "tfidf_logreg": tfidf_logreg(splits, seed),
    }
    return pd.DataFrame(rows).T


def comparison_table(model_metrics: dict[str, float], splits: Splits, name: str = "transformer") -> pd.DataFrame:
    table = pd.concat([pd.DataFrame({name: model_metrics}).T, baselines(splits)])
    return table.round(4)


def backend_variants(model_uri: str, test: pd.DataFrame, reference: np.ndarray | None = None,
                     backends: tuple[str, ...] = ("onnx", "onnx-int8")) -> pd.DataFrame:
    """Test metrics and scoring speed of serving runtimes, next to PyTorch's ``reference`` P(positive).

    One row per backend: the metrics, the share of labels equal to the reference's, the largest
    |ΔP(positive)| and the seconds (and texts/s) the whole split took, so a faster runtime is only used when
    it answers the same. ``reference=None``: the first backend (``"torch"``) is scored and is the reference.
    """
    from pipelines.backends import load_scorer  # onnxruntime import kept lazy

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
