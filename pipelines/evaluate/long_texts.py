"""Long-review proxies and the comparison of long-text strategies (the strategies: :mod:`scoring.scorer`).

The embedded Rotten Tomatoes snippets are short (~25 tokens), so a model trained
on them never meets a long review.  A *proxy* joins several snippets of the same
movie and the same label (fresh/rotten) into one long text, as a critic's full
review would read; a *review proxy* adds the movie's plot summary (the corpus's
``plot`` rows, never in any split) at a random place among them, as full reviews
retell the story between verdicts. Proxies of the **test** split report; those of
the **validation** split choose how long texts are scored (:mod:`pipelines.evaluate.aggregation`),
so no proxy that reports holds a text the model trained, early-stopped or was calibrated on. A review
proxy takes the plot summary of the split's part (:mod:`pipelines.data.plots`: the movie's own where it
is in that part, else one drawn from it), never one the subjectivity head learned from.
Held-out sentences joined into paragraphs (:func:`paragraphs`) are the other long texts reported.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pipelines.data.embedded import rotten_tomatoes_csv
from pipelines.data.plots import plot_part
from pipelines.evaluate.full_reviews import build_full_reviews
from pipelines.evaluate.metrics import classification_metrics
from scoring.config import LONG_TEXT_STRATEGIES, ScoringConfig
from scoring.scorer import Scorer

STRATEGIES = LONG_TEXT_STRATEGIES


def movie_names(path: Any = None) -> pd.DataFrame:
    """``text`` → ``movie_name`` for the embedded critic snippets (first movie of a duplicated text)."""
    raw = pd.read_csv(path or rotten_tomatoes_csv())
    raw = raw[raw["category"].isin(["fresh", "rotten"])]
    out = pd.DataFrame({"text": raw["text"].astype(str).str.strip(), "movie_name": raw["movie_name"]})
    return out.drop_duplicates("text")


def build_long_proxies(
    test: pd.DataFrame, n: int = 150, min_snippets: int = 3, max_snippets: int = 12, seed: int = 42,
    with_plot: str = "",
) -> pd.DataFrame:
    """Up to ``n`` long texts, each the test snippets of one (movie, label) joined in a random order.

    The groups with the most snippets come first (ties in a seeded random order).
    ``with_plot`` (a part of :mod:`pipelines.data.plots`: ``validation``, ``test``): a plot summary of that part
    (the movie's own if it is there, else one drawn at random) is put between two snippets (or first or last) at
    a seeded random place. Returns ``text``, ``label``, ``movie_name``, ``n_snippets``; empty when the test
    texts are not Rotten Tomatoes snippets.
    """
    columns = ["text", "label", "movie_name", "n_snippets"]
    joined = test[["text", "label"]].merge(movie_names(), on="text", how="inner")
    plots = plot_part(with_plot) if with_plot else None
    groups = [g for _, g in joined.groupby(["movie_name", "label"], sort=True) if len(g) >= min_snippets]
    if not groups:
        return pd.DataFrame(columns=columns)
    rng = np.random.default_rng(seed)
    tiebreak = rng.permutation(len(groups))
    order = sorted(range(len(groups)), key=lambda i: (-len(groups[i]), tiebreak[i]))[:n]
    rows = []
    for i in order:
        group = groups[i].sample(frac=1.0, random_state=seed).head(max_snippets)
        parts = group["text"].tolist()
        if plots is not None:
            movie = group["movie_name"].iloc[0]
            plot = plots[movie] if movie in plots.index else plots.iloc[int(rng.integers(0, len(plots)))]
            parts.insert(int(rng.integers(0, len(parts) + 1)), plot)
        rows.append({
            "text": " ".join(parts),
            "label": int(group["label"].iloc[0]),
            "movie_name": group["movie_name"].iloc[0],
            "n_snippets": len(group),
        })
    return pd.DataFrame(rows, columns=columns).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def paragraphs(frame: pd.DataFrame, sentences: tuple[int, int] = (4, 10), seed: int = 42) -> pd.DataFrame:
    """Sentences of one label joined into paragraphs of ``sentences`` (min, max) sentences, in a seeded order.

    For held-out sentence sets (:mod:`pipelines.evaluate.heldout`): ``text``, ``label``, ``n_sentences``.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for label, group in frame.groupby("label", sort=True):
        texts = group["text"].to_numpy()[rng.permutation(len(group))]
        start = 0
        while start < len(texts):
            size = int(rng.integers(sentences[0], sentences[1] + 1))
            part = texts[start : start + size]
            start += size
            if len(part) >= sentences[0]:
                rows.append({"text": " ".join(part), "label": int(label), "n_sentences": len(part)})
    return pd.DataFrame(rows, columns=["text", "label", "n_sentences"]).sample(
        frac=1.0, random_state=seed).reset_index(drop=True)


def long_sets(frame: pd.DataFrame, n: int = 150, seed: int = 42, part: str = "test") -> dict[str, pd.DataFrame]:
    """A split's long texts: ``proxies`` (snippets), ``reviews`` (snippets and a plot of the ``part`` of
    :mod:`pipelines.data.plots`) and ``full reviews`` (:mod:`pipelines.evaluate.full_reviews`), the empty left out."""
    sets = {"proxies": build_long_proxies(frame, n=n, seed=seed),
            "reviews": build_long_proxies(frame, n=n, seed=seed, with_plot=part),
            "full reviews": build_full_reviews(frame, plot_part(part), seed=seed)}
    return {name: texts for name, texts in sets.items() if not texts.empty}


def strategy_scorers(model: Any, tokenizer: Any, strategies: Sequence[str] = STRATEGIES) -> dict[str, Scorer]:
    """One :class:`Scorer` per strategy over the same loaded model (other settings as saved)."""
    base = ScoringConfig.from_model(model)
    return {s: Scorer(model, tokenizer, base.model_copy(update={"long_text_strategy": s})) for s in strategies}


def compare_strategies(
    scorers: Mapping[str, Any], proxies: pd.DataFrame, n_single: int = 20, repeats: int = 1
) -> pd.DataFrame:
    """Accuracy, ROC-AUC and latency of each scorer on the proxies.

    ``ms_per_text``: batch scoring of all proxies (the best of ``repeats`` runs, which
    is robust to other load on the machine); ``single_p50_ms``: median of one text per
    call (what one ``/predict`` request costs) over ``n_single`` proxies;
    ``windows_per_text``: model inputs per text, what the cost scales with.
    """
    texts, labels = proxies["text"].tolist(), proxies["label"].to_numpy()
    rows = {}
    for name, scorer in scorers.items():
        scorer.predict_proba(texts[:2])  # warm-up
        batch_s = float("inf")
        for _ in range(max(1, repeats)):
            start = time.perf_counter()
            probs = scorer.predict_proba(texts)
            batch_s = min(batch_s, time.perf_counter() - start)
        singles = []
        for text in texts[:n_single]:
            t0 = time.perf_counter()
            scorer.predict_proba([text])
            singles.append(time.perf_counter() - t0)
        metrics = classification_metrics(labels, probs)
        windows = getattr(scorer, "windows", None)  # model passes per text: the machine-independent cost
        rows[name] = {
            "accuracy": metrics["accuracy"],
            "roc_auc": metrics["roc_auc"],
            "f1": metrics["f1"],
            "ms_per_text": 1000 * batch_s / max(1, len(texts)),
            "single_p50_ms": 1000 * float(np.median(singles)) if singles else float("nan"),
            "windows_per_text": len(windows(texts)[0]) / max(1, len(texts)) if windows else float("nan"),
        }
    return pd.DataFrame(rows).T


def token_lengths(tokenizer: Any, texts: Sequence[str]) -> np.ndarray:
    """Tokens per text without truncation or special tokens."""
    return np.array([len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]])
