"""Full-length reviews built from the data the project has, and answers by review length.

A user's full review is not a critic's one-line snippet: it retells part of the plot, gives opinions
(some of them against its own verdict) and ends on a verdict. :func:`build_full_reviews` builds such
texts from a split's labelled texts (the opinions: ``label`` is the review's) and plot summaries of one
part of :mod:`pipelines.data.plots` (never the part the subjectivity head learned from):

* an opening opinion (half of the reviews), then the first sentences of a plot summary (in 85 % of the
  reviews; all of it in a third of those), split around an opinion in a quarter of them;
* opinions of the review's label, one or two of the other label among them in 40 % of the reviews
  (mixed feelings), never last;
* a verdict of the review's label last.

Lengths run from a few hundred characters to several thousand, like the IMDb user reviews the served
model meets (median about 900). Validation reviews choose how windows make one answer
(:mod:`pipelines.evaluate.aggregation`); test ones report, always by :data:`BUCKETS` (:func:`by_length`),
since a bias that grows with length hides in an overall figure.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from pipelines.evaluate.metrics import classification_metrics

# review length in characters: the buckets every long-text report uses (issue 25's table)
BUCKETS = ((0, 700, "under 700"), (700, 1400, "700-1,400"), (1400, np.inf, "over 1,400"))
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


def sentences(text: str) -> list[str]:
    """``text`` cut after each sentence end (., !, ?) followed by a capital."""
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def build_full_reviews(opinions: pd.DataFrame, plots: pd.Series, n: int = 600, seed: int = 42) -> pd.DataFrame:
    """``n`` reviews (half positive) from ``opinions`` (``text``, ``label``) and ``plots`` (texts).

    Returns ``text``, ``label``, ``plot_share`` (the characters that retell a plot), ``mixed``; empty
    when ``opinions`` lacks one of the labels or ``plots`` is empty.
    """
    columns = ["text", "label", "plot_share", "mixed"]
    pools = {label: group["text"].astype(str).str.strip().to_numpy() for label, group in opinions.groupby("label")}
    if set(pools) != {0, 1} or plots.empty:
        return pd.DataFrame(columns=columns)
    plot_texts = plots.astype(str).to_numpy()
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = i % 2
        own, other = pools[label], pools[1 - label]
        opening = [str(rng.choice(own))] if rng.random() < 0.5 else []
        plot: list[str] = []
        if rng.random() < 0.85:
            told = sentences(str(rng.choice(plot_texts)))
            plot = told if rng.random() < 1 / 3 else told[: int(rng.integers(1, len(told) + 1))]
        middle = [str(t) for t in rng.choice(own, size=int(rng.integers(0, 10)))]
        mixed = rng.random() < 0.4
        if mixed:
            for text in rng.choice(other, size=int(rng.integers(1, 3))):
                middle.insert(int(rng.integers(0, len(middle) + 1)), str(text))
        if len(plot) > 1 and rng.random() < 0.25:  # an opinion between two parts of the story
            cut = int(rng.integers(1, len(plot)))
            plot = [*plot[:cut], str(rng.choice(own)), *plot[cut:]]
        verdict = [str(rng.choice(own))]
        text = " ".join([*opening, *plot, *middle, *verdict])
        rows.append({"text": text, "label": label, "plot_share": len(" ".join(plot)) / len(text), "mixed": mixed})
    return pd.DataFrame(rows, columns=columns).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def bucket_of(lengths: np.ndarray) -> np.ndarray:
    """The :data:`BUCKETS` name of each length in characters."""
    names = np.empty(len(lengths), dtype=object)
    for low, high, name in BUCKETS:
        names[(lengths >= low) & (lengths < high)] = name
    return names


def by_length(texts: list[str] | pd.Series, labels: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    """Per length bucket and for all: texts, accuracy, precision, recall, the share answered Positive and the
    share truly Positive (a model drifting towards Negative as reviews grow answers Positive less and less)."""
    labels, probs = np.asarray(labels), np.asarray(probs)
    buckets = bucket_of(np.array([len(str(t)) for t in texts]))
    rows = []
    for name in [b[2] for b in BUCKETS] + ["all"]:
        rows_in = buckets == name if name != "all" else np.ones(len(labels), dtype=bool)
        if not rows_in.any():
            continue
        y, p = labels[rows_in], probs[rows_in]
        metrics = classification_metrics(y, p) if len(np.unique(y)) == 2 else {
            "accuracy": float(np.mean((p >= 0.5) == y)), "precision": np.nan, "recall": np.nan}
        rows.append({"length": name, "texts": int(rows_in.sum()), "accuracy": metrics["accuracy"],
                     "precision": metrics["precision"], "recall": metrics["recall"],
                     "answered_positive": float(np.mean(p >= 0.5)), "truly_positive": float(np.mean(y))})
    return pd.DataFrame(rows).set_index("length")
