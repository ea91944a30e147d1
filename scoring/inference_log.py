"""The serving app's inference log and feedback store (one SQLite file).

The app appends one row per prediction (no raw text unless the operator opts
in) and one row per feedback label; monitoring and retraining read them back.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import pandas as pd

from scoring.clock import now
from scoring.features import token_stats
from scoring.labels import label_and_confidence
from scoring.tracking import state_dir

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts TEXT NOT NULL,                 -- ISO-8601 UTC
    model_name TEXT,
    model_version TEXT,
    endpoint TEXT,
    n_chars INTEGER NOT NULL,
    n_tokens INTEGER NOT NULL,
    unk_ratio REAL NOT NULL,
    label TEXT NOT NULL,              -- Positive / Negative
    confidence REAL NOT NULL,         -- probability of the returned label
    p_positive REAL NOT NULL,
    latency_ms REAL,
    text TEXT                         -- NULL unless raw-text logging is switched on
);
CREATE INDEX IF NOT EXISTS predictions_ts ON predictions (ts);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts TEXT NOT NULL,
    text TEXT NOT NULL,
    label INTEGER NOT NULL            -- 1 positive, 0 negative
);
"""
PREDICTION_COLUMNS = (
    "ts", "model_name", "model_version", "endpoint", "n_chars", "n_tokens", "unk_ratio",
    "label", "confidence", "p_positive", "latency_ms", "text",
)


def default_path() -> Path:
    return state_dir() / "inference.db"


def resolve_path(path: str | Path | None = None) -> Path:
    return Path(path) if path else default_path()


def utcnow() -> str:
    return now("milliseconds")


def connect(path: str | Path | None = None) -> sqlite3.Connection:
    """Open (and create) the database with WAL so readers never block the writer."""
    db = resolve_path(path)
    db.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db, timeout=30, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(SCHEMA)
    return conn


def append_predictions(conn: sqlite3.Connection, rows: Iterable[dict[str, Any]]) -> int:
    """Insert prediction rows (dicts with PREDICTION_COLUMNS; missing ones are NULL)."""
    values = [tuple(row.get(c) for c in PREDICTION_COLUMNS) for row in rows]
    placeholders = ", ".join("?" for _ in PREDICTION_COLUMNS)
    with conn:
        conn.executemany(f"INSERT INTO predictions ({', '.join(PREDICTION_COLUMNS)}) VALUES ({placeholders})", values)
    return len(values)


def prediction_rows(
    texts: Sequence[str],
    probs: Sequence[float],
    predictions: Sequence[dict[str, Any]],
    stats: Sequence[tuple[int, float]],
    *,
    model_name: str,
    model_version: str,
    endpoint: str,
    latency_ms: float,
    log_text: bool = False,
    ts: str | None = None,
) -> list[dict[str, Any]]:
    """One log row per scored text: the serving app and replays (monitoring tests) both write these.

    ``predictions`` are ``label_and_confidence`` results, ``stats`` (tokens, unknown-token ratio)
    pairs from :func:`scoring.features.token_stats`; raw text only with ``log_text``.
    """
    ts = ts or utcnow()
    return [
        {"ts": ts, "model_name": model_name, "model_version": str(model_version), "endpoint": endpoint,
         "n_chars": len(text), "n_tokens": int(n_tokens), "unk_ratio": float(unk), "label": pred["sentiment"],
         "confidence": pred["confidence"], "p_positive": float(p), "latency_ms": latency_ms,
         "text": text if log_text else None}
        for text, p, pred, (n_tokens, unk) in zip(texts, probs, predictions, stats, strict=True)
    ]


def scored_rows(
    scorer: Any, texts: Sequence[str], model_name: str = "", model_version: str = "", endpoint: str = "/predict",
    log_text: bool = False, ts: str | None = None,
) -> list[dict[str, Any]]:
    """Score ``texts`` and return the log rows exactly as the serving app writes them (replays, tests, benchmarks)."""
    started = time.perf_counter()
    probs = scorer.predict_proba(list(texts))
    latency = (time.perf_counter() - started) * 1000 / max(1, len(texts))
    return prediction_rows(
        texts, probs, [label_and_confidence(p) for p in probs], token_stats(scorer.tokenizer, texts),
        model_name=model_name, model_version=str(model_version), endpoint=endpoint, latency_ms=latency,
        log_text=log_text, ts=ts,
    )


def add_feedback(conn: sqlite3.Connection, text: str, label: int) -> int:
    with conn:
        cur = conn.execute("INSERT INTO feedback (ts, text, label) VALUES (?, ?, ?)", (utcnow(), text, int(label)))
    return int(cur.lastrowid)


def read_predictions(
    path: str | Path | None = None, since: str | None = None, until: str | None = None
) -> pd.DataFrame:
    """Prediction rows in [since, until) (ISO timestamps), oldest first."""
    db = resolve_path(path)
    if not db.exists():
        return pd.DataFrame(columns=["id", *PREDICTION_COLUMNS])
    query, args = "SELECT * FROM predictions WHERE 1=1", []
    if since:
        query, args = query + " AND ts >= ?", [*args, since]
    if until:
        query, args = query + " AND ts < ?", [*args, until]
    with closing(connect(db)) as conn:
        return pd.read_sql_query(query + " ORDER BY ts, id", conn, params=args)


def read_feedback(path: str | Path | None = None) -> pd.DataFrame:
    """Labelled feedback as ``text``/``label`` rows."""
    db = resolve_path(path)
    if not db.exists():
        return pd.DataFrame(columns=["id", "ts", "text", "label"])
    with closing(connect(db)) as conn:
        return pd.read_sql_query("SELECT * FROM feedback ORDER BY id", conn)
