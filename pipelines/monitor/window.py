"""The production window the monitor looks at: its bounds, its rows, and the checks on its parameters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from pipelines.config import ConfigError, MonitorSection
from scoring import inference_log


def validate(monitor: MonitorSection, inference_db: str = "") -> None:
    """Refuse monitor parameters that cannot work (ConfigError names the parameter)."""
    if inference_db and inference_log.is_url(inference_db):
        try:
            inference_log.exists(inference_db)
        except Exception as exc:  # the driver's error says why (refused, password, no such database)
            where = inference_log.describe(inference_db)
            raise ConfigError(f"parameter inference_db: cannot connect to {where}: {exc}".splitlines()[0]) from exc
    elif inference_db and not Path(inference_db).expanduser().is_file():
        raise ConfigError(f"parameter inference_db: {inference_db} does not exist")
    ref = monitor.reference_profile
    if ref and ":/" not in ref and not Path(ref).expanduser().is_file():
        raise ConfigError(f"parameter reference_profile: {ref} does not exist")
    window(monitor)


def _utc(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def window(monitor: MonitorSection, now: datetime | None = None) -> tuple[str, str]:
    """[since, until) as ISO strings in the log's format (UTC, milliseconds)."""
    until = _utc(monitor.until) if monitor.until else (now or datetime.now(UTC))
    since = _utc(monitor.since) if monitor.since else until - timedelta(hours=monitor.window_hours)
    if since >= until:
        raise ConfigError(f"parameter since: {since.isoformat()} is not before until {until.isoformat()}")
    return since.isoformat(timespec="milliseconds"), until.isoformat(timespec="milliseconds")


def load_window(monitor: MonitorSection, inference_db: str = "",
                now: datetime | None = None) -> tuple[pd.DataFrame, str, str]:
    """The inference-log rows of the window, with its bounds."""
    since, until = window(monitor, now)
    return inference_log.read_predictions(inference_db or None, since, until), since, until
