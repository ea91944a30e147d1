"""Per-text features that the server logs for every prediction and the reference profile summarizes.

Computed by the same function on both sides, so production and the reference are
measured identically:

* ``n_chars``: characters of the scored text;
* ``n_tokens``: tokens of the full text (no truncation), special tokens included;
* ``unk_ratio``: share of those tokens that are the tokenizer's unknown token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

FEATURE_COLUMNS = ("n_chars", "n_tokens", "unk_ratio")


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


def text_features(tokenizer: Any, texts: Sequence[str]) -> pd.DataFrame:
    """``n_chars``, ``n_tokens`` and ``unk_ratio`` per text, as a frame (for profiles and tests)."""
    texts = [str(t) for t in texts]
    stats = token_stats(tokenizer, texts)
    return pd.DataFrame({
        "n_chars": pd.Series([len(t) for t in texts], dtype=int),
        "n_tokens": pd.Series([n for n, _ in stats], dtype=int),
        "unk_ratio": pd.Series([r for _, r in stats], dtype=float),
    })
