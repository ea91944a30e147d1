"""The fixed, stratified train/validation/test split, and the digest that names it.

Every model trained on the same data with the same ``seed`` is evaluated on the same
test texts, so the promotion gate compares like with like (by the dataset digest).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pandas as pd
from sklearn.model_selection import train_test_split

from pipelines.config import ConfigError, DataSection
from pipelines.data.sources import clean, load_dataset
from scoring.inference_log import read_feedback


@dataclass(frozen=True)
class Splits:
    """The fixed train/validation/test split of one dataset."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    source: str
    digest: str  # of the whole cleaned dataset

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}


def digest(df: pd.DataFrame) -> str:
    """Order-independent sha256 of (text, label) pairs, 16 hex digits."""
    rows = sorted(f"{label}\t{text}" for text, label in zip(df["text"], df["label"], strict=True))
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]


def split_summary(splits: Splits) -> pd.DataFrame:
    """Texts and positive share of each part, one row per part (shown by the EDA and train notebooks)."""
    parts = {"train": splits.train, "validation": splits.validation, "test": splits.test}
    return pd.DataFrame({"texts": splits.sizes(),
                         "positive_share": {k: round(float(v["label"].mean()), 3) for k, v in parts.items()}})


def split(df: pd.DataFrame, val_size: float = 0.1, test_size: float = 0.1, seed: int = 42) -> tuple[pd.DataFrame, ...]:
    """Deterministic stratified train/validation/test split."""
    per_class = df["label"].value_counts().min()
    if per_class < 3:
        raise ConfigError(f"parameter dataset: needs at least 3 texts of each label to split, has {per_class}")
    stratify = df["label"]
    n_test = max(2, round(len(df) * test_size))
    rest, test = train_test_split(df, test_size=n_test, stratify=stratify, random_state=seed)
    n_val = max(2, round(len(df) * val_size))
    train, val = train_test_split(rest, test_size=n_val, stratify=rest["label"], random_state=seed)
    return tuple(part.reset_index(drop=True) for part in (train, val, test))


def subsample(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """Stratified sample of ``n`` rows (all rows when n is 0 or larger than the frame)."""
    if n <= 0 or n >= len(df):
        return df
    sample, _ = train_test_split(df, train_size=n, stratify=df["label"], random_state=seed)
    return sample.reset_index(drop=True)


def load_splits(data: DataSection) -> Splits:
    """The configured dataset, split; ``max_train_samples`` shrinks train only, feedback joins train only.

    Only **accepted** feedback trains (``python -m pipelines feedback accept``): pending and rejected rows never
    do, and with none accepted the split is the one without feedback, byte for byte.
    """
    df = load_dataset(data.dataset, data.text_column, data.label_column)
    train, val, test = split(df, data.val_size, data.test_size, data.seed)
    train = subsample(train, data.max_train_samples, data.seed)
    if data.include_feedback:
        feedback = read_feedback(data.inference_db or None, statuses=("accepted",))
        feedback = feedback[~feedback["text"].isin(set(val["text"]) | set(test["text"]))]
        if len(feedback):
            train = clean(pd.concat([train, feedback[["text", "label"]]], ignore_index=True))
    return Splits(train=train, validation=val, test=test, source=data.dataset, digest=digest(df))
