"""Scoring a model version on the fixed test split, with baselines beside it."""

from __future__ import annotations

from dataclasses import dataclass

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


def tfidf_logreg(splits: Splits, seed: int = 42) -> dict[str, float]:
    """TF-IDF (word 1-2 grams) + logistic regression trained on train, scored on test."""
    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
        LogisticRegression(C=4.0, max_iter=2000, random_state=seed),
    )
    model.fit(splits.train["text"], splits.train["label"])
    probs = model.predict_proba(splits.test["text"])[:, 1]
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


def backend_variants(model_uri: str, test: pd.DataFrame, reference: np.ndarray,
                     backends: tuple[str, ...] = ("onnx", "onnx-int8")) -> pd.DataFrame:
    """Test metrics of the serving runtimes next to PyTorch's ``reference`` P(positive).

    One row per backend: the metrics, the share of labels equal to PyTorch's and the
    largest |ΔP(positive)|, so a faster runtime is only used when it answers the same.
    """
    from pipelines.backends import load_scorer  # onnxruntime import kept lazy

    y = test["label"].to_numpy()
    rows = {}
    for backend in backends:
        probs = load_scorer(model_uri, backend).predict_proba(test["text"].tolist())
        rows[backend] = {
            **classification_metrics(y, probs),
            "label_agreement_with_torch": float(np.mean((probs >= 0.5) == (reference >= 0.5))),
            "max_abs_dp_vs_torch": float(np.abs(probs - reference).max()),
        }
    return pd.DataFrame(rows).T
