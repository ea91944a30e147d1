"""How well a model's subjectivity head (:mod:`scoring.subjectivity`) tells plot from opinion.

Objective windows are plot summaries (:mod:`pipelines.data.plots`); subjective windows are labelled
texts of a split, two or three of one label joined so that their windows are as long as a plot's.
The train step fits the head on the ``train`` part's plots and the training split
(:mod:`pipelines.train.subjectivity`); validation and test score it here on their own plots and texts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from scoring.subjectivity import SubjectivityHead, classifier_features, sigmoid

SEED = 0  # the draws of the joined opinions (fixed: the head and its figures do not depend on the run's seed)


def examples(opinions: pd.DataFrame, plots: pd.Series, limit: int, seed: int = SEED) -> pd.DataFrame:
    """``text`` / ``subjective``: every plot summary (0) and up to ``limit`` opinions (1), two or three texts of
    one label joined."""
    rng = np.random.default_rng(seed)
    joined = []
    for _, group in opinions.groupby("label", sort=True):
        texts = group["text"].astype(str).to_numpy()[rng.permutation(len(group))]
        start = 0
        while start < len(texts):
            size = int(rng.integers(2, 4))
            joined.append(" ".join(texts[start : start + size]))
            start += size
    joined = [joined[i] for i in rng.permutation(len(joined))[:limit]]
    return pd.DataFrame({"text": [*plots.astype(str), *joined], "subjective": [0] * len(plots) + [1] * len(joined)})


@torch.inference_mode()
def window_features(scorer, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The classifier's input features of every window of ``texts`` (a PyTorch scorer's windows) and each window's
    text."""
    ids, owner = scorer.windows(texts)
    order = np.argsort([len(x) for x in ids], kind="stable")
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    for start in range(0, len(order), scorer.batch_size):
        batch = order[start : start + scorer.batch_size]
        enc = scorer.tokenizer.pad({"input_ids": [ids[i] for i in batch]}, return_tensors="pt").to(scorer.model.device)
        parts.append((batch, classifier_features(scorer.model, **enc)[1].float().cpu().numpy()))
    features = np.empty((len(ids), parts[0][1].shape[1]), dtype=np.float32)
    for batch, values in parts:
        features[batch] = values
    return features, owner


def labelled_windows(scorer, opinions: pd.DataFrame, plots: pd.Series, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Features and subjective (1) / objective (0) labels of the windows of :func:`examples`."""
    frame = examples(opinions, plots, limit)
    features, owner = window_features(scorer, frame["text"].tolist())
    return features, frame["subjective"].to_numpy()[owner]


def figures(scorer, opinions: pd.DataFrame, plots: pd.Series, limit: int = 1000,
            head: SubjectivityHead | None = None) -> dict[str, float]:
    """ROC-AUC of ``head`` (default: the scorer's; P(subjective) of opinion windows above plot windows), and the
    mean P(subjective) of each kind of window."""
    features, y = labelled_windows(scorer, opinions, plots, limit)
    p = sigmoid((head or scorer.head).logits(features))
    return {"auc": float(roc_auc_score(y, p)), "plot_mean": float(p[y == 0].mean()),
            "opinion_mean": float(p[y == 1].mean()), "windows": float(len(y))}
