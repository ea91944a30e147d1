"""What the transformer must beat, trained and scored on the same split: majority class, TF-IDF + LR."""

from __future__ import annotations

from typing import Any

import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from pipelines.data.split import Splits
from pipelines.evaluate.metrics import classification_metrics, majority_baseline


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
