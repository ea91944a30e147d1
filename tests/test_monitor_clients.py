"""One client cannot trip drift alone: each client's share of a monitor window is capped (real SQLite log)."""

from __future__ import annotations

from contextlib import closing
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from test_drift import OTHER_DOMAIN, LexiconScorer

from pipelines.config import build_config
from pipelines.data.split import load_splits
from pipelines.monitor import drift, window
from pipelines.monitor import reference as profiles
from scoring import inference_log

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def scorer() -> LexiconScorer:
    return LexiconScorer()


@pytest.fixture(scope="module")
def splits():
    return load_splits(build_config({"max_train_samples": 2000}).data)


@pytest.fixture(scope="module")
def reference(scorer, splits) -> dict:
    return profiles.build_profile(scorer, splits)


def _log(db, scorer, texts: list[str], client: str | None) -> None:
    """Rows as the app writes them (raw text on), from ``client``, an hour before NOW."""
    ts = (NOW - timedelta(hours=1)).isoformat(timespec="milliseconds")
    with closing(inference_log.connect(db)) as conn:
        inference_log.append_predictions(conn, inference_log.scored_rows(
            scorer, texts, "sentiment", "1", log_text=True, ts=ts, client=client))


def _verdict(db, reference, **params: str) -> tuple[dict, pd.DataFrame]:
    monitor = build_config({"window_hours": "6", **params}).monitor
    rows, _, _ = window.load_window(monitor, str(db), now=NOW)
    return drift.detect(reference, rows, drift.Thresholds.from_config(monitor), "1"), rows


def _other_domain(n: int) -> list[str]:
    rng = np.random.default_rng(1)
    return [" ".join(rng.permutation(OTHER_DOMAIN)) + f" Ticket {i}." for i in range(n)]


@pytest.mark.parametrize(("counts", "unattributed", "share", "cap"), [
    ([1000], 0, 0.2, 0),                    # one client alone keeps nothing
    ([100] * 5, 0, 0.2, 100),               # five equal clients at 20 %: all kept
    ([1000, 100, 100, 100, 100], 0, 0.2, 100),
    ([1000, 100, 100, 100, 100], 50, 0.2, 112),
    ([300, 10], 0, 0.5, 10),
    ([300, 10], 0, 1.0, 300),               # max_client_share 1: no cap
])
def test_the_cap_keeps_every_client_within_its_share(counts, unattributed, share, cap):
    assert window.client_cap(pd.Series(counts), unattributed, share) == cap
    kept = np.minimum(counts, cap)
    assert cap <= share * (unattributed + kept.sum()) + 1e-9
    assert cap == max(counts) or cap + 1 > share * (unattributed + np.minimum(counts, cap + 1).sum())  # the most


def test_one_client_alone_cannot_produce_a_drift_verdict(scorer, reference, tmp_path):
    db = tmp_path / "inference.db"
    _log(db, scorer, _other_domain(600), client="c0ffee000001")
    verdict, rows = _verdict(db, reference)
    assert rows.empty and verdict["verdict"] == "insufficient_data" and verdict["drift"] is None
    uncapped, rows = _verdict(db, reference, max_client_share="1")  # the same rows do drift when uncapped
    assert len(rows) == 600 and uncapped["verdict"] == "drift"


def test_a_loud_client_is_down_sampled_to_its_share_of_the_window(scorer, reference, splits, tmp_path):
    db = tmp_path / "inference.db"
    _log(db, scorer, _other_domain(600), client="attacker0001")
    honest = splits.test["text"].tolist()
    for i in range(4):
        _log(db, scorer, honest[i * 100:(i + 1) * 100], client=f"honest{i:06d}")
    _, rows = _verdict(db, reference)
    shares = rows["client"].value_counts(normalize=True)
    assert len(rows) == 500 and shares.max() <= 0.2 + 1e-9 and shares["attacker0001"] == pytest.approx(0.2)
    assert rows["id"].is_monotonic_increasing  # down-sampling keeps the log's order
    again = _verdict(db, reference)[1]
    pd.testing.assert_frame_equal(rows, again)  # seeded: the same window gives the same rows


def test_rows_without_a_client_are_not_capped(scorer, reference, splits, tmp_path):
    """Rows written before clients were recorded (or by replays) count, as before the cap existed."""
    db = tmp_path / "inference.db"
    _log(db, scorer, splits.test["text"].tolist()[:250], client=None)
    verdict, rows = _verdict(db, reference)
    assert len(rows) == 250 and verdict["verdict"] == "no_drift"
