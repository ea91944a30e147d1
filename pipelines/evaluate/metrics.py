"""Classification metrics and the decision threshold (the metric names: ``scoring.version_tags.METRIC_NAMES``)."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def classification_metrics(y_true: np.ndarray, p_positive: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, precision, recall, F1 (positive class) at ``threshold`` and ROC-AUC.

    ROC-AUC is 0.5 when only one class is present (it is undefined there).
    """
    y_true = np.asarray(y_true).astype(int)
    p_positive = np.asarray(p_positive, dtype=float)
    y_pred = (p_positive >= threshold).astype(int)
    both = len(np.unique(y_true)) == 2
    return {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "precision": float(skm.precision_score(y_true, y_pred, zero_division=0)),
        "recall": float(skm.recall_score(y_true, y_pred, zero_division=0)),
        "f1": float(skm.f1_score(y_true, y_pred, zero_division=0)),
        "roc_auc": float(skm.roc_auc_score(y_true, p_positive)) if both else 0.5,
    }


def best_threshold(y_true: np.ndarray, p_positive: np.ndarray, metric: str = "accuracy") -> float:
    """Threshold in [0.2, 0.8] maximising ``metric`` (accuracy for threshold-free metrics).

    Ties go to the threshold nearest 0.5, so a flat curve keeps the default.
    """
    if metric not in {"accuracy", "f1"}:
        metric = "accuracy"
    grid = np.round(np.arange(0.2, 0.801, 0.01), 2)
    scores = np.array([classification_metrics(y_true, p_positive, t)[metric] for t in grid])
    best = np.flatnonzero(scores >= scores.max() - 1e-12)
    return float(grid[best[np.argmin(np.abs(grid[best] - 0.5))]])


def majority_baseline(y_train: np.ndarray, y_test: np.ndarray) -> dict[str, float]:
    """Always answer the training split's majority class."""
    majority = int(np.mean(y_train) >= 0.5)
    return classification_metrics(y_test, np.full(len(y_test), float(majority)))
