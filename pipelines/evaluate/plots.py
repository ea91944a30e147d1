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


def length_buckets(table: pd.DataFrame) -> Figure:
    """Accuracy and the share answered Positive (against the share truly Positive) by review length, per set and
    scoring (``aggregation.by_length_before_after``'s table): a drift towards Negative as reviews grow shows here."""
    rows = table[table["length"] != "all"]
    sets = list(dict.fromkeys(rows["set"]))
    fig, axes = plt.subplots(2, len(sets), figsize=(4.2 * len(sets), 6.5), squeeze=False, sharey="row")
    for col, name in enumerate(sets):
        part = rows[rows["set"] == name]
        buckets = list(dict.fromkeys(part["length"]))
        x = np.arange(len(buckets))
        for i, (scoring, group) in enumerate(part.groupby("scoring", sort=False)):
            group = group.set_index("length").reindex(buckets)
            axes[0, col].bar(x + (i - 0.5) * 0.38, group["accuracy"], 0.38, label=scoring)
            axes[1, col].plot(x, group["answered_positive"], "o-", label=f"answered Positive ({scoring})")
        truth = part.drop_duplicates("length").set_index("length").reindex(buckets)["truly_positive"]
        axes[1, col].plot(x, truth, "k--", label="truly Positive")
        axes[0, col].set_title(name)
        for row in (0, 1):
            axes[row, col].set_xticks(x, buckets)
        axes[0, col].set_ylim(0.5, 1.0)
        axes[1, col].set_ylim(0.0, 1.0)
    axes[0, 0].set_ylabel("accuracy")
    axes[1, 0].set_ylabel("share of reviews")
    axes[0, -1].legend(loc="lower left")
    axes[1, -1].legend(loc="lower left", fontsize=8)
    fig.suptitle("Long texts by length (characters)")
    fig.tight_layout()
    return fig
