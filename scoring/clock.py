"""UTC timestamps in ISO-8601, as the registry tags, the app and the inference log write them."""

from __future__ import annotations

from datetime import UTC, datetime


def now(timespec: str = "seconds") -> str:
    """The current UTC time, e.g. ``2026-12-01T10:57:03+00:00`` (``timespec`` as in ``datetime.isoformat``)."""
    return datetime.now(UTC).isoformat(timespec=timespec)
