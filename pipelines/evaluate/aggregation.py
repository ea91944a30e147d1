"""Choosing how a long text's windows make one answer, on validation long texts.

A long text is scored as several windows; :func:`scoring.scorer.aggregate` turns them into one
P(positive) by an ``aggregation`` (``scoring.config.AGGREGATIONS``) and a ``long_threshold``. Both
are chosen here on *validation* long texts (:func:`pipelines.evaluate.long_texts.long_sets` of the
validation split) and saved in the model's scoring config by the train step; test texts only report.

The rule (:func:`choose`): for each aggregation, among the thresholds on a grid of [0.2, 0.8] where
precision and recall of the positive class differ by at most ``tolerance`` (the closest to balance if
none does), the one nearest 0.5 whose accuracy is within one standard error (sqrt(a(1 - a)/n)) of the
best of them: validation cannot tell those apart, and the nearest to the model's own decision point is
the one least fitted to the validation texts' kind of writing (on IMDb users' sentences made into full
reviews, the threshold of the best validation accuracy, 0.73, left recall 0.08 below precision; 0.55,
within the error, 0.03). Then the aggregation with the best accuracy at its threshold (ties: ROC-AUC,
then the order of ``AGGREGATIONS``, today's first).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines.evaluate.full_reviews import by_length
from pipelines.evaluate.metrics import classification_metrics
from scoring.config import AGGREGATIONS, LEGACY, ScoringConfig, needs_subjectivity
from scoring.scorer import aggregate

GRID = np.round(np.arange(0.2, 0.801, 0.01), 2)
TOLERANCE = 0.05  # |precision - recall| counted as balanced
MIN_TEXTS = 20  # fewer validation long texts (or one class only): the settings are kept as they are


@dataclass(frozen=True)
class Windows:
    """Per-window outputs of a scorer on some texts: what every aggregation is computed from."""

    probs: np.ndarray
    margins: np.ndarray
    owner: np.ndarray
    lengths: np.ndarray
    n_texts: int
    subjectivity: np.ndarray | None = None  # P(subjective) per window, for a model with the head

    def scores(self, scoring: ScoringConfig) -> np.ndarray:
        """P(positive) per text under ``scoring``'s aggregation and long-text threshold."""
        return aggregate(self.probs, self.margins, self.owner, self.lengths, self.n_texts, scoring, self.subjectivity)

    def texts(self, keep: np.ndarray) -> Windows:
        """The windows of the texts where ``keep`` (one bool per text) holds, the texts renumbered."""
        rows = keep[self.owner]
        renumber = np.cumsum(keep) - 1
        return Windows(self.probs[rows], self.margins[rows], renumber[self.owner[rows]], self.lengths[rows],
                       int(keep.sum()), None if self.subjectivity is None else self.subjectivity[rows])

    def aggregations(self) -> tuple[str, ...]:
        """The aggregations these windows can be made into (the subjective ones need P(subjective))."""
        return tuple(a for a in AGGREGATIONS if self.subjectivity is not None or not needs_subjectivity(a))


def window_outputs(scorer, texts: Sequence[str]) -> Windows:
    """Score ``texts`` once, window by window (any runtime's scorer)."""
    ids, owner = scorer.windows(list(texts))
    scores = scorer.window_logits(ids, owner)
    return Windows(scores.probs, scores.margins, owner, np.array([len(x) for x in ids], dtype=np.float64), len(texts),
                   scores.subjectivity)


def balanced_threshold(y: np.ndarray, p: np.ndarray, tolerance: float = TOLERANCE) -> float:
    """The balanced grid threshold nearest 0.5 whose accuracy is within one standard error of the best balanced
    one (see the module's rule)."""
    rows = [(t, classification_metrics(y, p, t)) for t in GRID]
    gaps = np.array([abs(m["precision"] - m["recall"]) for _, m in rows])
    ok = gaps <= tolerance if (gaps <= tolerance).any() else gaps <= gaps.min() + 1e-12
    accuracy = np.array([m["accuracy"] for _, m in rows])
    top = accuracy[ok].max()
    best = np.flatnonzero(ok & (accuracy >= top - np.sqrt(top * (1 - top) / len(y)) - 1e-12))
    return float(GRID[best[np.argmin(np.abs(GRID[best] - 0.5))]])


def candidates(windows: Windows, y: np.ndarray, base: ScoringConfig,
               aggregations: Sequence[str] | None = None) -> pd.DataFrame:
    """Per aggregation (default: all the windows allow): its balanced threshold and the metrics there, and today's
    (threshold 0.5) accuracy."""
    rows = {}
    for how in aggregations or windows.aggregations():
        p = windows.scores(base.model_copy(update={"aggregation": how, "long_threshold": 0.5}))
        threshold = balanced_threshold(y, p)
        # the aggregate at threshold t, as served: scores with the threshold folded in, decided at 0.5
        served = windows.scores(base.model_copy(update={"aggregation": how, "long_threshold": threshold}))
        rows[how] = {"long_threshold": threshold, **classification_metrics(y, served),
                     "accuracy_at_0.5": classification_metrics(y, p)["accuracy"]}
    table = pd.DataFrame(rows).T
    table.index.name = "aggregation"
    return table


def choose(table: pd.DataFrame) -> str:
    """The aggregation the rule picks from :func:`candidates`' table (best accuracy, then ROC-AUC, then order)."""
    order = {name: i for i, name in enumerate(table.index)}
    return min(table.index, key=lambda a: (-round(table.loc[a, "accuracy"], 12), -round(table.loc[a, "roc_auc"], 12),
                                           order[a]))


def calibrate(scorer, texts: Sequence[str], labels: np.ndarray) -> tuple[ScoringConfig, pd.DataFrame]:
    """``scorer.scoring`` with the aggregation and long-text threshold chosen on ``texts``; the candidates' table.

    Only texts of more than one window count (the others are not aggregated); with fewer than
    :data:`MIN_TEXTS` of them, or one class only, the settings are returned unchanged with an empty table.
    """
    windows = window_outputs(scorer, texts)
    multi = np.bincount(windows.owner, minlength=windows.n_texts) > 1
    if multi.sum() < MIN_TEXTS or len(np.unique(np.asarray(labels)[multi])) < 2:
        return scorer.scoring, pd.DataFrame()
    table = candidates(windows.texts(multi), np.asarray(labels)[multi], scorer.scoring)
    chosen = choose(table)
    table["texts"] = int(multi.sum())
    table["chosen"] = table.index == chosen
    return scorer.scoring.model_copy(update={"aggregation": chosen,
                                             "long_threshold": float(table.loc[chosen, "long_threshold"])}), table


def variants(scorer) -> dict[str, ScoringConfig]:
    """``before``: the settings of versions before calibrated aggregation (``LEGACY``: overlapping windows, at most
    16, mean probability, threshold 0.5); ``after``: ``scorer``'s own."""
    return {"before": ScoringConfig.model_validate({**scorer.scoring.model_dump(), **LEGACY}),
            "after": scorer.scoring}


def before_after(scorer, sets: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Each long-text set scored with the settings of :func:`variants`.

    One row per (set, settings): texts, windows per text, accuracy, precision, recall, F1, ROC-AUC, |P - R|.
    """
    rows = []
    for name, frame in sets.items():
        texts, y = frame["text"].tolist(), frame["label"].to_numpy()
        for variant, scoring in variants(scorer).items():
            one = scorer.with_scoring(scoring)
            metrics = classification_metrics(y, one.predict_proba(texts))
            rows.append({"set": name, "scoring": variant, "texts": len(texts),
                         "windows_per_text": len(one.windows(texts)[0]) / max(1, len(texts)), **metrics,
                         "precision_recall_gap": abs(metrics["precision"] - metrics["recall"])})
    return pd.DataFrame(rows)


def by_length_before_after(scorer, sets: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Each set scored with the settings of :func:`variants`, by review length (``full_reviews.by_length``).

    One row per (set, settings, length bucket): texts, accuracy, precision, recall, answered and truly Positive.
    """
    frames = []
    for name, frame in sets.items():
        texts, y = frame["text"].tolist(), frame["label"].to_numpy()
        for variant, scoring in variants(scorer).items():
            table = by_length(texts, y, scorer.with_scoring(scoring).predict_proba(texts)).reset_index()
            frames.append(table.assign(set=name, scoring=variant))
    columns = ["set", "scoring", "length", "texts", "accuracy", "precision", "recall", "answered_positive",
               "truly_positive"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)
