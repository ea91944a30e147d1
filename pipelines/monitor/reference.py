"""The reference profile of a model version: its training data and its behaviour on validation.

Built at training time (:func:`build_profile`) and logged with the version
(:mod:`pipelines.monitor.reference_store`); the monitor compares production traffic
with it. The per-text features come from :func:`scoring.features.text_features`, the
same function the serving app calls before it writes a row of the inference log, so
the reference and production are measured identically.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import numpy as np

from pipelines.data.split import Splits
from scoring.features import FEATURE_COLUMNS, text_features
from scoring.labels import LABEL_NAMES

SCHEMA_VERSION = 1
SAMPLE_SIZE = 5000  # per-text values kept for two-sample tests
TEXT_SAMPLE_SIZE = 1000  # raw training texts kept for the domain classifier
TOP_WORDS = 5000
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters, inner apostrophes), the unit of the vocabulary profile."""
    return _WORD.findall(str(text).lower())


def word_counts(texts: Iterable[str]) -> Counter:
    counts: Counter = Counter()
    for text in texts:
        counts.update(words(text))
    return counts


def oov_rate(texts: Iterable[str], vocabulary: set[str]) -> tuple[int, int]:
    """(out-of-vocabulary word tokens, all word tokens) of ``texts``."""
    counts = word_counts(texts)
    total = sum(counts.values())
    return total - sum(n for w, n in counts.items() if w in vocabulary), total


def summarize(values: np.ndarray, sample: int = SAMPLE_SIZE, seed: int = 0) -> dict[str, Any]:
    """Mean, std, quantiles and a seeded sample of the values (for KS/PSI later)."""
    values = np.asarray(values, dtype=float)
    kept = np.random.default_rng(seed).choice(values, sample, replace=False) if len(values) > sample else values
    qs = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
    return {
        "n": len(values),
        "mean": float(values.mean()) if len(values) else None,
        "std": float(values.std()) if len(values) else None,
        "quantiles": {str(q): float(np.quantile(values, q)) for q in qs} if len(values) else {},
        "values": [round(float(v), 6) for v in kept],
    }


def label_ratio(labels: Iterable[Any]) -> dict[str, float]:
    """Share of each label name (labels given as 0/1 or as names)."""
    names = [LABEL_NAMES.get(x, x) if not isinstance(x, str) else x for x in labels]
    counts = Counter(names)
    total = max(1, sum(counts.values()))
    return {name: counts.get(name, 0) / total for name in LABEL_NAMES.values()}


def build_profile(scorer: Any, splits: Splits, extra: dict[str, Any] | None = None, seed: int = 0) -> dict[str, Any]:
    """The reference profile of ``scorer``'s model and the data it was trained on."""
    train_texts = splits.train["text"].astype(str).tolist()
    val_texts = splits.validation["text"].astype(str).tolist()
    train_features = text_features(scorer.tokenizer, train_texts)
    val_features = text_features(scorer.tokenizer, val_texts)
    p_positive = scorer.predict_proba(val_texts)
    predicted = (p_positive >= 0.5).astype(int)
    confidence = np.where(predicted == 1, p_positive, 1 - p_positive)
    counts = word_counts(train_texts)
    vocabulary = dict(counts.most_common(TOP_WORDS))
    val_oov, val_words = oov_rate(val_texts, set(vocabulary))
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(train_texts), min(TEXT_SAMPLE_SIZE, len(train_texts)), replace=False)
    return {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": {"source": splits.source, "digest": splits.digest, "sizes": splits.sizes()},
        "scoring": scorer.scoring.model_dump(),
        "tokenizer": getattr(scorer.tokenizer, "name_or_path", ""),
        **(extra or {}),
        "train": {
            "n": len(train_texts),
            "label_ratio": label_ratio(splits.train["label"]),
            "features": {c: summarize(train_features[c].to_numpy(), seed=seed) for c in FEATURE_COLUMNS},
            "vocabulary": {
                "top_words": vocabulary,
                "distinct_words": len(counts),
                "word_tokens": sum(counts.values()),
            },
            "text_sample": [train_texts[i] for i in sorted(sample)],
        },
        "validation": {
            "n": len(val_texts),
            "label_ratio": label_ratio(splits.validation["label"]),
            "predicted_label_ratio": label_ratio(predicted),
            "accuracy": float((predicted == splits.validation["label"].to_numpy()).mean()),
            "confidence": summarize(confidence, seed=seed),
            "p_positive": summarize(p_positive, seed=seed),
            "features": {c: summarize(val_features[c].to_numpy(), seed=seed) for c in FEATURE_COLUMNS},
            "oov_rate": val_oov / max(1, val_words),
            "word_tokens": val_words,
        },
    }
