"""Evaluation figures for the notebook and MLflow (each function returns a matplotlib Figure)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn import metrics as skm


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, labels=("Negative", "Positive")) -> Figure:
    fig, ax = plt.subplots(figsize=(4.5, 4))
    skm.ConfusionMatrixDisplay.from_predictions(y_true, y_pred, display_labels=list(labels), ax=ax, colorbar=False)
    ax.set_title("Confusion matrix (test split)")
    fig.tight_layout()
    return fig


def roc_pr_curves(y_true: np.ndarray, p_positive: np.ndarray) -> Figure:
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(10, 4))
    skm.RocCurveDisplay.from_predictions(y_true, p_positive, ax=roc, name="model")
    roc.plot([0, 1], [0, 1], "--", color="grey", label="chance")
    roc.set_title("ROC curve")
    roc.legend(loc="lower right")
    skm.PrecisionRecallDisplay.from_predictions(y_true, p_positive, ax=pr, name="model")
    pr.axhline(np.mean(y_true), ls="--", color="grey", label="majority")
    pr.set_title("Precision-recall curve")
    pr.legend(loc="lower left")
    fig.tight_layout()
    return fig


def confidence_histogram(confidence: np.ndarray, correct: np.ndarray) -> Figure:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(0.5, 1.0, 21)
    ax.hist([confidence[correct], confidence[~correct]], bins=bins, stacked=True, label=["correct", "wrong"])
    ax.set_xlabel("confidence of the predicted label")
    ax.set_ylabel("texts")
    ax.set_title("Confidence on the test split")
    ax.legend()
    fig.tight_layout()
    return fig


def metric_bars(table: pd.DataFrame, metrics=("accuracy", "f1", "roc_auc")) -> Figure:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    table[list(metrics)].plot.bar(ax=ax, rot=0)
    ax.set_ylim(0, 1)
    ax.set_title("Model vs baselines (test split)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig
