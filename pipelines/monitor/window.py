"""The production window the monitor looks at: its bounds, its rows, and the checks on its parameters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
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


def client_cap(counts: pd.Series, unattributed: int, max_share: float) -> int:
    """The most rows each client keeps so that none is over ``max_share`` of the rows kept.

    The largest ``k`` with ``k <= max_share * (unattributed + sum(min(count, k)))``: that sum is concave in
    ``k``, so the ``k`` that satisfy it are 0 … K and a bisection finds K. One client alone gets 0.
    """
    values = counts.to_numpy()
    low, high = 0, int(values.max()) if len(values) else 0
    while low < high:
        mid = (low + high + 1) // 2
        if mid <= max_share * (unattributed + np.minimum(values, mid).sum()):
            low = mid
        else:
            high = mid - 1
    return low


def cap_clients(rows: pd.DataFrame, max_share: float, seed: int = 0) -> pd.DataFrame:
    """The window with each client's rows down-sampled (seeded, order kept) to at most ``max_share`` of it.

    Rows without a client (written before clients were recorded, or by replay tools) are kept and not capped.
    """
    if "client" not in rows or rows.empty:
        return rows
    attributed = rows["client"].notna()
    counts = rows.loc[attributed, "client"].value_counts()
    if counts.empty:
        return rows
    cap = client_cap(counts, int((~attributed).sum()), max_share)
    rng = np.random.default_rng(seed)
    keep = ~attributed.to_numpy()
    for client, n in counts.items():
        positions = np.flatnonzero((rows["client"] == client).to_numpy())
        keep[positions if n <= cap else rng.choice(positions, cap, replace=False)] = True
    return rows[keep].reset_index(drop=True)


def load_window(monitor: MonitorSection, inference_db: str = "",
                now: datetime | None = None) -> tuple[pd.DataFrame, str, str]:
    """The inference-log rows of the window, each client capped at ``max_client_share`` of them, with its bounds."""
    since, until = window(monitor, now)
    rows = inference_log.read_predictions(inference_db or None, since, until)
    return cap_clients(rows, monitor.max_client_share), since, until
