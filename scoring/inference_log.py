"""The serving app's inference log and feedback store: a SQLite file by default, or a shared database by URL.

The app appends one row per prediction (no raw text unless the operator opts in) and one row
per feedback label; monitoring and retraining read them back. ``INFERENCE_DB`` is a file path
(SQLite, the embedded default) or a SQLAlchemy URL such as
``postgresql://inference@db:5432/inference``, so that every API replica writes to one log and the
monitor reads all of it. The URL's password may come from ``INFERENCE_DB_PASSWORD`` (or a file named
by ``INFERENCE_DB_PASSWORD_FILE``) rather than the URL itself; it is never printed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from scoring.clock import now
from scoring.features import token_stats
from scoring.labels import label_and_confidence
from scoring.tracking import state_dir

METADATA = sa.MetaData()
PREDICTIONS = sa.Table(
    "predictions", METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ts", sa.Text, nullable=False),            # ISO-8601 UTC, milliseconds
    sa.Column("model_name", sa.Text),
    sa.Column("model_version", sa.Text),
    sa.Column("endpoint", sa.Text),
    sa.Column("n_chars", sa.Integer, nullable=False),
    sa.Column("n_tokens", sa.Integer, nullable=False),
    sa.Column("unk_ratio", sa.Float, nullable=False),
    sa.Column("label", sa.Text, nullable=False),         # Positive / Negative
    sa.Column("confidence", sa.Float, nullable=False),   # probability of the returned label
    sa.Column("p_positive", sa.Float, nullable=False),
    sa.Column("latency_ms", sa.Float),
    sa.Column("text", sa.Text),                          # NULL unless raw-text logging is switched on
    sa.Column("client", sa.Text),                        # hashed client id (app.clients); NULL: unattributed
    sa.Index("predictions_ts", "ts"),
    sqlite_autoincrement=True,
)
FEEDBACK = sa.Table(
    "feedback", METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ts", sa.Text, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("label", sa.Integer, nullable=False),      # 1 positive, 0 negative
    sa.Column("sender", sa.Text),                        # hashed credential id; NULL: sent before credentials
    sa.Column("status", sa.Text, nullable=False, server_default="pending"),  # pending / accepted / rejected
    sa.Column("reviewed_by", sa.Text),                   # who accepted or rejected it (a reviewer, or rule:…)
    sa.Column("reviewed_at", sa.Text),
    sqlite_autoincrement=True,
)
FEEDBACK_STATUSES = ("pending", "accepted", "rejected")
# columns added after the first release: (table, column, DDL type); old rows get NULL, or 'pending'
MIGRATIONS = (
    ("predictions", "client", "TEXT"),
    ("feedback", "sender", "TEXT"),
    ("feedback", "status", "TEXT NOT NULL DEFAULT 'pending'"),
    ("feedback", "reviewed_by", "TEXT"),
    ("feedback", "reviewed_at", "TEXT"),
)
PREDICTION_COLUMNS = (
    "ts", "model_name", "model_version", "endpoint", "n_chars", "n_tokens", "unk_ratio",
    "label", "confidence", "p_positive", "latency_ms", "text", "client",
)
FEEDBACK_COLUMNS = ["id", "ts", "text", "label", "sender", "status", "reviewed_by", "reviewed_at"]
PASSWORD_ENV = "INFERENCE_DB_PASSWORD"
# retention defaults of the app (FEEDBACK_RETENTION_DAYS, …) and the pipeline (-p feedback_retention_days …)
FEEDBACK_RETENTION_DAYS = 90.0
INFERENCE_LOG_RETENTION_DAYS = 90.0
_SCHEMA_LOCK = 7_254_911  # PostgreSQL advisory lock: replicas starting together create the tables once


def default_path() -> Path:
    return state_dir() / "inference.db"


def is_url(target: str | Path | None) -> bool:
    """True for a database URL (``postgresql://…``, ``sqlite:///…``), False for a file path."""
    return isinstance(target, str) and "://" in target


def resolve_path(path: str | Path | None = None) -> Path:
    """The SQLite file of a path (or the default); URLs have none: use :func:`describe`."""
    if is_url(path):
        raise ValueError("a database URL has no file path")
    return Path(path) if path else default_path()


def database_url(target: str | Path | None = None) -> sa.URL:
    """The SQLAlchemy URL of a path or URL, with the password from the environment when the URL has none."""
    if not is_url(target):
        return sa.URL.create("sqlite", database=str(resolve_path(target)))
    url = sa.make_url(str(target))
    password = os.environ.get(PASSWORD_ENV)
    if not password and os.environ.get(f"{PASSWORD_ENV}_FILE"):
        password = Path(os.environ[f"{PASSWORD_ENV}_FILE"]).read_text().strip()
    if url.password is None and password:
        url = url.set(password=password)
    return url


def describe(target: str | Path | None = None) -> str:
    """Where the log is, printable: the file's path, or the URL with its password masked."""
    if not is_url(target):
        return str(resolve_path(target))
    return database_url(target).render_as_string(hide_password=True)


def utcnow() -> str:
    return now("milliseconds")


class LogDatabase:
    """An open inference log: a SQLAlchemy engine on it, its tables created. ``close()`` releases it."""

    def __init__(self, target: str | Path | None = None) -> None:
        url = database_url(target)
        self.url = url.render_as_string(hide_password=True)
        if url.get_backend_name() == "sqlite":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
            self.engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
            sa.event.listen(self.engine, "connect", _sqlite_wal)
        else:
            self.engine = sa.create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=2)
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
            METADATA.create_all(conn)
            migrate(conn)

    def close(self) -> None:
        self.engine.dispose()


def migrate(conn: sa.Connection) -> list[str]:
    """Add the columns a log created by an older release lacks (SQLite and PostgreSQL); the ones added."""
    inspector = sa.inspect(conn)
    present = {table: {c["name"] for c in inspector.get_columns(table)} for table in ("predictions", "feedback")}
    added = []
    for table, column, ddl in MIGRATIONS:
        if column not in present[table]:
            try:
                conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}"))
            except sa.exc.OperationalError as err:  # SQLite: another process added it first (PostgreSQL: locked)
                if "duplicate column" not in str(err):
                    raise
                continue
            added.append(f"{table}.{column}")
    return added


def _sqlite_wal(dbapi_conn: Any, _record: Any) -> None:
    """WAL, so that readers (the monitor) never block the writer (the app)."""
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def connect(target: str | Path | None = None) -> LogDatabase:
    """Open (and create) the log at a path or URL (None: the default SQLite file)."""
    return LogDatabase(target)


def append_predictions(db: LogDatabase, rows: Iterable[dict[str, Any]]) -> int:
    """Insert prediction rows (dicts with PREDICTION_COLUMNS; missing ones are NULL)."""
    values = [{c: row.get(c) for c in PREDICTION_COLUMNS} for row in rows]
    if values:
        with db.engine.begin() as conn:
            conn.execute(PREDICTIONS.insert(), values)
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
    client: str | None = None,
) -> list[dict[str, Any]]:
    """One log row per scored text: the serving app and replays (monitoring tests) both write these.

    ``predictions`` are ``label_and_confidence`` results, ``stats`` (tokens, unknown-token ratio)
    pairs from :func:`scoring.features.token_stats`; raw text only with ``log_text``; ``client`` is the
    sender's hashed id (the monitor caps each client's share of a window).
    """
    ts = ts or utcnow()
    return [
        {"ts": ts, "model_name": model_name, "model_version": str(model_version), "endpoint": endpoint,
         "n_chars": len(text), "n_tokens": int(n_tokens), "unk_ratio": float(unk), "label": pred["sentiment"],
         "confidence": pred["confidence"], "p_positive": float(p), "latency_ms": latency_ms,
         "text": text if log_text else None, "client": client}
        for text, p, pred, (n_tokens, unk) in zip(texts, probs, predictions, stats, strict=True)
    ]


def scored_rows(
    scorer: Any, texts: Sequence[str], model_name: str = "", model_version: str = "", endpoint: str = "/predict",
    log_text: bool = False, ts: str | None = None, client: str | None = None,
) -> list[dict[str, Any]]:
    """Score ``texts`` and return the log rows exactly as the serving app writes them (replays, tests, benchmarks)."""
    started = time.perf_counter()
    probs = scorer.predict_proba(list(texts))
    latency = (time.perf_counter() - started) * 1000 / max(1, len(texts))
    return prediction_rows(
        texts, probs, [label_and_confidence(p) for p in probs], token_stats(scorer.tokenizer, texts),
        model_name=model_name, model_version=str(model_version), endpoint=endpoint, latency_ms=latency,
        log_text=log_text, ts=ts, client=client,
    )


def add_feedback(db: LogDatabase, text: str, label: int, sender: str | None = None, ts: str | None = None) -> int:
    """Store one labelled text as ``pending`` (it trains only once accepted); its id."""
    with db.engine.begin() as conn:
        result = conn.execute(FEEDBACK.insert().values(ts=ts or utcnow(), text=text, label=int(label), sender=sender,
                                                       status="pending"))
    return int(result.inserted_primary_key[0])


def set_feedback_status(db: LogDatabase, ids: Sequence[int], status: str, reviewed_by: str) -> list[int]:
    """Mark feedback rows accepted or rejected by ``reviewed_by``; the ids that exist (others are left out)."""
    if status not in FEEDBACK_STATUSES:
        raise ValueError(f"status must be one of {', '.join(FEEDBACK_STATUSES)}, not {status!r}")
    with db.engine.begin() as conn:
        found = [int(i) for i in conn.execute(sa.select(FEEDBACK.c.id).where(FEEDBACK.c.id.in_(list(ids))))
                 .scalars()]
        if found:
            conn.execute(FEEDBACK.update().where(FEEDBACK.c.id.in_(found))
                         .values(status=status, reviewed_by=reviewed_by, reviewed_at=utcnow()))
    return sorted(found)


def cutoff(days: float, at: datetime | None = None) -> str | None:
    """The ISO time ``days`` before now (the log's format), or None for 0 = keep forever."""
    if days <= 0:
        return None
    return ((at or datetime.now(UTC)) - timedelta(days=days)).isoformat(timespec="milliseconds")


def purge(db: LogDatabase, feedback_before: str | None, predictions_before: str | None) -> dict[str, int]:
    """Delete feedback and prediction rows older than the given ISO times (None: keep that table); counts."""
    deleted = {"feedback": 0, "predictions": 0}
    with db.engine.begin() as conn:
        if feedback_before:
            deleted["feedback"] = conn.execute(FEEDBACK.delete().where(FEEDBACK.c.ts < feedback_before)).rowcount
        if predictions_before:
            deleted["predictions"] = conn.execute(
                PREDICTIONS.delete().where(PREDICTIONS.c.ts < predictions_before)).rowcount
    return deleted


def exists(target: str | Path | None = None) -> bool:
    """Whether there is a log to read: the SQLite file exists, or the database answers."""
    if not is_url(target):
        return resolve_path(target).exists()
    engine = sa.create_engine(database_url(target))
    try:
        with engine.connect():
            return True
    finally:
        engine.dispose()


def read_predictions(
    target: str | Path | None = None, since: str | None = None, until: str | None = None
) -> pd.DataFrame:
    """Prediction rows in [since, until) (ISO timestamps), oldest first, from every writer of the log."""
    query = sa.select(PREDICTIONS)
    if since:
        query = query.where(PREDICTIONS.c.ts >= since)
    if until:
        query = query.where(PREDICTIONS.c.ts < until)
    return _read(target, query.order_by(PREDICTIONS.c.ts, PREDICTIONS.c.id), ["id", *PREDICTION_COLUMNS])


def read_feedback(
    target: str | Path | None = None, statuses: Sequence[str] | None = None, since: str | None = None
) -> pd.DataFrame:
    """Feedback rows (``text``, ``label``, sender, review status), oldest first; only ``statuses`` / ``since``."""
    query = sa.select(*(FEEDBACK.c[c] for c in FEEDBACK_COLUMNS))
    if statuses is not None:
        query = query.where(FEEDBACK.c.status.in_(list(statuses)))
    if since:
        query = query.where(FEEDBACK.c.ts >= since)
    return _read(target, query.order_by(FEEDBACK.c.id), FEEDBACK_COLUMNS)


def _read(target: str | Path | None, query: sa.Select, columns: list[str]) -> pd.DataFrame:
    """The rows of ``query``; no rows (with ``columns``) when the SQLite file does not exist yet."""
    if not is_url(target) and not resolve_path(target).exists():
        return pd.DataFrame(columns=columns)
    db = connect(target)
    try:
        with db.engine.connect() as conn:
            return pd.read_sql_query(query, conn)
    finally:
        db.close()
