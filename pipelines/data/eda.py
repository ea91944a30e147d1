"""Exploratory summaries of a labelled text dataset (used by notebooks/eda.ipynb)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.feature_extraction.text import CountVectorizer

from scoring.labels import LABEL_NAMES


def class_balance(df: pd.DataFrame) -> pd.DataFrame:
    counts = df["label"].map(LABEL_NAMES).value_counts()
    return pd.DataFrame({"texts": counts, "share": (counts / counts.sum()).round(4)})


def token_lengths(texts: list[str], tokenizer) -> np.ndarray:
    """Tokens per text including special tokens, untruncated."""
    return np.array([len(ids) for ids in tokenizer(texts, truncation=False)["input_ids"]])


def length_summary(lengths: np.ndarray, max_length: int) -> dict[str, float]:
    pct = np.percentile(lengths, [50, 90, 95, 99])
    return {
        "median": float(pct[0]), "p90": float(pct[1]), "p95": float(pct[2]), "p99": float(pct[3]),
        "max": float(lengths.max()), f"share_over_{max_length}": float(np.mean(lengths > max_length)),
    }


def length_histogram(lengths: np.ndarray, labels: np.ndarray, max_length: int) -> Figure:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    bins = np.arange(0, max(lengths.max(), max_length) + 5, 4)
    for value, name in LABEL_NAMES.items():
        ax.hist(lengths[labels == value], bins=bins, alpha=0.6, label=name)
    ax.axvline(max_length, color="black", ls="--", label=f"max_length={max_length}")
    ax.set_xlabel("tokens per text")
    ax.set_ylabel("texts")
    ax.set_title("Length distribution (tokens)")
    ax.legend()
    fig.tight_layout()
    return fig


def balance_bar(df: pd.DataFrame) -> Figure:
    fig, ax = plt.subplots(figsize=(4, 3))
    class_balance(df)["texts"].plot.bar(ax=ax, rot=0, color=["tab:green", "tab:red"])
    ax.set_title("Class balance")
    fig.tight_layout()
    return fig


def discriminative_terms(df: pd.DataFrame, n: int = 15, min_df: int = 5) -> pd.DataFrame:
    """Words with the largest smoothed log-odds ratio for each label."""
    vec = CountVectorizer(min_df=min_df, stop_words="english", token_pattern=r"(?u)\b[a-z][a-z']+\b")
    counts = vec.fit_transform(df["text"].str.lower())
    labels = df["label"].to_numpy()
    pos = np.asarray(counts[labels == 1].sum(axis=0)).ravel() + 1
    neg = np.asarray(counts[labels == 0].sum(axis=0)).ravel() + 1
    log_odds = np.log(pos / pos.sum()) - np.log(neg / neg.sum())
    terms = np.array(vec.get_feature_names_out())
    top_pos, top_neg = np.argsort(-log_odds)[:n], np.argsort(log_odds)[:n]
    return pd.DataFrame({
        "Positive": terms[top_pos], "log_odds_pos": log_odds[top_pos].round(2),
        "Negative": terms[top_neg], "log_odds_neg": log_odds[top_neg].round(2),
    })


def samples(df: pd.DataFrame, n: int = 3, seed: int = 0) -> pd.DataFrame:
    out = df.groupby("label", group_keys=False).sample(n=n, random_state=seed)
    return out.assign(label=out["label"].map(LABEL_NAMES))[["label", "text"]]
