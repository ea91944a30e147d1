"""Fitting the subjectivity head (:mod:`scoring.subjectivity`) of a trained classifier.

A logistic regression (classes weighted to balance) on the classifier's input features of windows
that retell a plot (the ``train`` part's plot summaries, :mod:`pipelines.data.plots`) and windows of
opinions (the training split's texts, joined two or three at a time: :mod:`pipelines.evaluate.subjectivity`).
It is scored on the ``validation`` part's plots against the validation split's texts; the test part is
left for the evaluate step.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from pipelines.data.plots import plot_part
from pipelines.evaluate import subjectivity
from scoring.scorer import Scorer
from scoring.subjectivity import SubjectivityHead

MAX_OPINIONS = 4000  # joined opinion texts the head learns from (a sample of the training split)
C = 1.0  # inverse L2 strength of the logistic regression


def fit(scorer: Scorer, train: pd.DataFrame, validation: pd.DataFrame) -> tuple[SubjectivityHead, dict[str, float]]:
    """The head fitted on ``train``'s texts and the train part's plots, with its figures on the validation side
    (``subjectivity_val_auc``, ``_plot_mean``, ``_opinion_mean``: mean P(subjective) of each kind of window)."""
    x, y = subjectivity.labelled_windows(scorer, train, plot_part("train"), MAX_OPINIONS)
    model = LogisticRegression(C=C, class_weight="balanced", max_iter=2000, random_state=0).fit(x, y)
    head = SubjectivityHead(model.coef_[0].astype(np.float32), float(model.intercept_[0]))
    scored = subjectivity.figures(scorer, validation, plot_part("validation"), head=head)
    return head, {"subjectivity_train_windows": float(len(y)),
                  **{f"subjectivity_val_{k}": v for k, v in scored.items() if k != "windows"}}
