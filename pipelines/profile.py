"""The reference profile of a model version: its training data and its behaviour on validation.

Computed at training time and logged as ``reference_profile.json`` into the
version's source run (``ModelVersion.run_id``); the monitor compares production
traffic with it.  The per-text features come from :func:`text_features`, the
same function the serving app calls before it writes a row of the inference log,
so the reference and production are measured identically:

* ``n_chars``: characters of the scored text;
* ``n_tokens``: tokens of the full text (no truncation), special tokens included;
* ``unk_ratio``: share of those tokens that are the tokenizer's unknown token.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.data import LABEL_NAMES, Splits

ARTIFACT = "reference_profile.json"
VERSION_TAG = "reference_profile"  # set on the model version: runs:/<run_id>/reference_profile.json
FEATURE_COLUMNS = ("n_chars", "n_tokens", "unk_ratio")
SCHEMA_VERSION = 1
SAMPLE_SIZE = 5000  # per-text values kept for two-sample tests
TEXT_SAMPLE_SIZE = 1000  # raw training texts kept for the domain classifier
TOP_WORDS = 5000
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


class ProfileMissing(LookupError):
    """A model version has no reference profile; the message says how to make one."""


def text_features(tokenizer: Any, texts: Sequence[str]) -> pd.DataFrame:
    """``n_chars``, ``n_tokens`` (special tokens included, no truncation) and ``unk_ratio`` per text.

    The serving app calls this for every scored text and logs the three columns,
    so production rows and the reference profile are comparable.
    """
    texts = [str(t) for t in texts]
    stats = token_stats(tokenizer, texts)
    return pd.DataFrame({
        "n_chars": pd.Series([len(t) for t in texts], dtype=int),
        "n_tokens": pd.Series([n for n, _ in stats], dtype=int),
        "unk_ratio": pd.Series([r for _, r in stats], dtype=float),
    })


def token_stats(tokenizer: Any, texts: Sequence[str]) -> list[tuple[int, float]]:
    """(``n_tokens``, ``unk_ratio``) per text: the serving app's per-request path (no pandas, ~0.05 ms a sentence)."""
    if not texts:
        return []
    ids = tokenizer([str(t) for t in texts], add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    unk = getattr(tokenizer, "unk_token_id", None)
    stats = []
    for row in ids:
        n_unk = row.count(unk) if unk is not None else 0
        stats.append((len(row), n_unk / len(row) if row else 0.0))
    return stats


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
        "scoring": {**vars(scorer.scoring)},
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


def log_profile(profile: dict[str, Any], run_id: str | None = None) -> str:
    """Log the profile as ``reference_profile.json`` into ``run_id`` (default: the active run); return its URI."""
    import mlflow

    if run_id is None:
        run = mlflow.active_run()
        if run is None:
            raise RuntimeError("log_profile needs an active MLflow run or a run_id")
        run_id = run.info.run_id
    mlflow.MlflowClient().log_dict(run_id, profile, ARTIFACT)
    return f"runs:/{run_id}/{ARTIFACT}"


def tag_version(name: str, version: str, uri: str) -> None:
    """Point the model version at its profile (tag ``reference_profile``)."""
    from pipelines import registry

    registry.set_tags(name, version, {VERSION_TAG: uri})


def profile_uri(mv: Any) -> str:
    """Where a model version's profile lives: its tag, else its source run."""
    return mv.tags.get(VERSION_TAG) or f"runs:/{mv.run_id}/{ARTIFACT}"


def read_profile(location: str) -> dict[str, Any]:
    """A profile from a local path or an MLflow artifact URI (``runs:/…``, ``models:/…``, ``file:…``)."""
    path = Path(location).expanduser()
    if path.is_file():
        return json.loads(path.read_text())
    import mlflow
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=tmp)
        except (MlflowException, OSError) as err:
            raise ProfileMissing(f"no reference profile at {location}: {err}") from None
        return json.loads(Path(local).read_text())


def load_for_version(mv: Any, override: str = "") -> tuple[dict[str, Any], str]:
    """The profile to monitor ``mv`` against (``override`` wins) and where it came from."""
    location = override or profile_uri(mv)
    try:
        return read_profile(location), location
    except ProfileMissing:
        if override:
            raise
        raise ProfileMissing(
            f"{mv.name} v{mv.version} has no {ARTIFACT} in its run {mv.run_id} (registered before profiling "
            f"existed?): run `python -m pipelines profile` to compute and log it, or pass -p reference_profile PATH"
        ) from None


def log_for_version(scorer: Any, splits: Splits, mv: Any, run_id: str = "") -> str:
    """Build the profile of a registered version, log it into its run (default: ``mv.run_id``) and tag the version."""
    run_id = run_id or mv.run_id
    if not run_id:
        raise ProfileMissing(f"{mv.name} v{mv.version} has no source run to log its profile into")
    model = {"name": mv.name, "version": str(mv.version), "run_id": run_id}
    uri = log_profile(build_profile(scorer, splits, extra={"model": model}), run_id)
    tag_version(mv.name, str(mv.version), uri)
    return uri


DATA_PARAMETERS = ("dataset", "text_column", "label_column", "val_size", "test_size", "seed", "max_train_samples",
                   "include_feedback", "inference_db")


def backfill(cfg: Any) -> tuple[Any, str]:
    """Compute and log the profile of ``cfg.model_version`` (default: the alias's version), e.g. for old versions.

    The data parameters are taken from the version's run when it logged them, else from ``cfg``.
    """
    import mlflow

    from pipelines import registry
    from pipelines.backends import load_scorer
    from pipelines.config import build_config
    from pipelines.data import load_splits

    mv = registry.get_version(cfg.registered_model_name, cfg.model_version) if cfg.model_version else (
        registry.alias_version(cfg.registered_model_name, cfg.alias))
    if mv is None:
        raise registry.RegistryError(f"{cfg.registered_model_name}@{cfg.alias} does not exist")
    logged = mlflow.MlflowClient().get_run(mv.run_id).data.params if mv.run_id else {}
    data_cfg = build_config({**cfg.model_dump(), **{k: logged[k] for k in DATA_PARAMETERS if k in logged}})
    scorer = load_scorer(registry.model_uri(mv.name, mv.version))
    return mv, log_for_version(scorer, load_splits(data_cfg), mv)
