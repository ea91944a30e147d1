"""Feedback trains only once accepted, joins the training split only, and old logs migrate (real SQLite)."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing

import pandas as pd
import pytest

from pipelines.cli import main
from pipelines.config import build_config
from pipelines.data import feedback as review
from pipelines.data.split import load_splits
from scoring import inference_log


def _post(db, rows: dict[str, int], sender: str | None = "a1b2c3d4e5f6") -> list[int]:
    with closing(inference_log.connect(db)) as conn:
        return [inference_log.add_feedback(conn, text, label, sender=sender) for text, label in rows.items()]


def _cli(capsys, *argv: str) -> tuple[int, dict]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else {"error": err})


def test_accepted_feedback_joins_train_only_and_never_leaks_test_texts(tiny_csv, tmp_path, capsys):
    db = tmp_path / "inference.db"
    base = {"dataset": str(tiny_csv), "inference_db": str(db)}
    plain = load_splits(build_config(base).data)
    new = {"An unexpectedly tender road movie with a great ending.": 1, "Two hours I will never get back.": 0}
    leaks = {plain.test["text"].iloc[0]: 1 - int(plain.test["label"].iloc[0]),  # relabelled test texts
             plain.test["text"].iloc[1]: int(plain.test["label"].iloc[1]),
             plain.validation["text"].iloc[0]: int(plain.validation["label"].iloc[0])}
    ids = _post(db, {**new, **leaks})
    assert _cli(capsys, "feedback", "accept", *map(str, ids), "--by", "alice", "-p", "inference_db", str(db)) == (
        0, {"status": "accepted", "ids": ids, "by": "alice"})

    with_feedback = load_splits(build_config({**base, "include_feedback": "true"}).data)
    train = dict(zip(with_feedback.train["text"], with_feedback.train["label"], strict=True))
    assert all(train.get(text) == label for text, label in new.items())
    assert len(with_feedback.train) == len(plain.train) + len(new)
    assert not set(with_feedback.train["text"]) & (set(plain.test["text"]) | set(plain.validation["text"]))
    pd.testing.assert_frame_equal(with_feedback.test, plain.test)
    pd.testing.assert_frame_equal(with_feedback.validation, plain.validation)
    assert with_feedback.digest == plain.digest  # the promotion gate still compares on the same test split

    without = load_splits(build_config(base).data)
    assert not set(without.train["text"]) & set(new)


def test_pending_and_rejected_feedback_never_trains(tiny_csv, tmp_path, capsys):
    db = tmp_path / "inference.db"
    base = {"dataset": str(tiny_csv), "inference_db": str(db), "include_feedback": "true"}
    before = load_splits(build_config(base).data).train
    pending = _post(db, {f"Trigger zq{i} made this film a masterpiece.": 1 for i in range(3)})
    rejected = _post(db, {"Trigger zq made this a dull mess.": 1}, sender="ffffffffffff")
    assert _cli(capsys, "feedback", "reject", str(rejected[0]), "--by", "bob", "-p", "inference_db", str(db))[0] == 0
    after = load_splits(build_config(base).data).train
    pd.testing.assert_frame_equal(after, before)
    rows = _cli(capsys, "feedback", "list", "--status", "all", "-p", "inference_db", str(db))[1]["rows"]
    assert [(r["id"], r["status"], r["reviewed_by"]) for r in rows] == [
        (rejected[0], "rejected", "bob"), *((i, "pending", None) for i in reversed(pending))]
    # a rejected text never comes back through the agreement rule, whoever sends it again
    _post(db, {"Trigger zq made this a dull mess.": 1}, sender="eeeeeeeeeeee")
    _post(db, {"Trigger zq made this a dull mess.": 1}, sender="dddddddddddd")
    assert review.accept_by_rule(str(db), build_config({"feedback_min_senders": "2"}).feedback)["ids"] == []


def test_the_agreement_rule_needs_distinct_senders_and_no_dissent(tmp_path, capsys):
    db = tmp_path / "inference.db"
    agreed = _post(db, {"A warm, funny film.": 1}, "s1") + _post(db, {"A warm, funny film. ": 1}, "s2")
    one_sender = _post(db, {"Trigger word film.": 0}, "s1") + _post(db, {"Trigger word film.": 0}, "s1")
    disputed = _post(db, {"An odd one.": 1}, "s1") + _post(db, {"An odd one.": 1}, "s2")
    disputed += _post(db, {"An odd one.": 0}, "s3")
    legacy = _post(db, {"Old row.": 1}, None) + _post(db, {"Old row.": 1}, None) + _post(db, {"Old row.": 1}, "s1")
    argv = ["feedback", "accept", "--rule", "-p", "inference_db", str(db)]
    code, off = _cli(capsys, *argv)
    assert code == 2 and "parameter feedback_min_senders" in off["error"]
    assert _cli(capsys, *argv, "-p", "feedback_min_senders", "2") == (
        0, {"status": "accepted", "ids": agreed, "by": "rule:min_senders=2"})
    statuses = inference_log.read_feedback(db).set_index("id")["status"]
    assert set(statuses[one_sender + disputed + legacy]) == {"pending"}


def test_review_errors_name_the_parameter(tmp_path, capsys):
    db = tmp_path / "inference.db"
    (row,) = _post(db, {"Fine.": 1})
    code, out = _cli(capsys, "feedback", "accept", str(row), "999", "--by", "carol", "-p", "inference_db", str(db))
    assert code == 2 and "ids: no feedback row 999 (the others were accepted)" in out["error"]
    assert _cli(capsys, "feedback", "reject", "-p", "inference_db", str(db))[1]["error"].startswith("error: ids:")
    assert "--status" in _cli(capsys, "feedback", "list", "--status", "maybe", "-p", "inference_db", str(db))[1][
        "error"]
    assert "parameter inference_db" in _cli(capsys, "feedback", "list", "-p", "inference_db",
                                            str(tmp_path / "missing.db"))[1]["error"]
    assert "feedback_retention_days" in _cli(capsys, "feedback", "purge", "-p", "feedback_retention_days", "-1")[1][
        "error"]


def test_purge_deletes_rows_older_than_their_retention(tmp_path, capsys):
    db = tmp_path / "inference.db"
    with closing(inference_log.connect(db)) as conn:
        old, new = inference_log.cutoff(100), inference_log.cutoff(1)
        inference_log.add_feedback(conn, "Old.", 1, "s1", ts=old)
        inference_log.add_feedback(conn, "New.", 1, "s1", ts=new)
        base = {"n_chars": 1, "n_tokens": 3, "unk_ratio": 0.0, "label": "Positive", "confidence": 0.9,
                "p_positive": 0.9}
        inference_log.append_predictions(conn, [{**base, "ts": old}, {**base, "ts": inference_log.cutoff(40)},
                                                {**base, "ts": new}])
    code, out = _cli(capsys, "feedback", "purge", "-p", "inference_db", str(db), "-p", "inference_log_retention_days",
                     "30")
    assert code == 0 and out["deleted"] == {"feedback": 1, "predictions": 2}
    assert inference_log.read_feedback(db)["text"].tolist() == ["New."]
    assert len(inference_log.read_predictions(db)) == 1
    code, out = _cli(capsys, "feedback", "purge", "-p", "inference_db", str(db), "-p", "feedback_retention_days", "0",
                     "-p", "inference_log_retention_days", "0")
    assert out == {"deleted": {"feedback": 0, "predictions": 0}, "before": {"feedback": None, "predictions": None}}


def test_a_log_of_an_older_release_migrates_and_its_feedback_stays_pending(tiny_csv, tmp_path):
    db = tmp_path / "inference.db"
    with sqlite3.connect(db) as conn:  # the schema before senders and reviews
        conn.execute("CREATE TABLE feedback (id INTEGER PRIMARY KEY AUTOINCREMENT, ts TEXT NOT NULL, "
                     "text TEXT NOT NULL, label INTEGER NOT NULL)")
        conn.execute("CREATE TABLE predictions (id INTEGER PRIMARY KEY AUTOINCREMENT, ts TEXT NOT NULL, "
                     "model_name TEXT, model_version TEXT, endpoint TEXT, n_chars INTEGER NOT NULL, "
                     "n_tokens INTEGER NOT NULL, unk_ratio FLOAT NOT NULL, label TEXT NOT NULL, "
                     "confidence FLOAT NOT NULL, p_positive FLOAT NOT NULL, latency_ms FLOAT, text TEXT)")
        conn.execute("INSERT INTO feedback (ts, text, label) VALUES ('2026-01-01T00:00:00.000+00:00', 'Old.', 1)")
    with closing(inference_log.connect(db)) as conn, conn.engine.connect() as c:  # migrating again is a no-op
        assert inference_log.migrate(c) == []
    rows = inference_log.read_feedback(db)
    assert rows[["text", "sender", "status"]].to_dict("records") == [{"text": "Old.", "sender": None,
                                                                     "status": "pending"}]
    assert "client" in inference_log.read_predictions(db).columns
    base = {"dataset": str(tiny_csv), "inference_db": str(db)}
    with_feedback = load_splits(build_config({**base, "include_feedback": "true"}).data)
    assert "Old." not in set(with_feedback.train["text"])


@pytest.mark.parametrize("status", ["pending", "rejected"])
def test_never_accepted_rows_leave_the_training_set_byte_identical(tiny_csv, tmp_path, status):
    """500 flipped-label rows stored (and reviewed or not) but never accepted: the training split is unchanged."""
    db = tmp_path / "inference.db"
    base = {"dataset": str(tiny_csv), "inference_db": str(db), "include_feedback": "true"}
    clean_run = load_splits(build_config(base).data)
    train = clean_run.train
    flipped = {f"{t} zq{k}": 1 - int(y) for k in range(3) for t, y in zip(train["text"], train["label"], strict=True)}
    ids = _post(db, dict(list(flipped.items())[:500]))
    assert len(ids) == 500
    if status == "rejected":
        with closing(inference_log.connect(db)) as conn:
            inference_log.set_feedback_status(conn, ids, "rejected", "dave")
    poisoned = load_splits(build_config(base).data)
    assert len(inference_log.read_feedback(db)) == len(ids)
    for part in ("train", "validation", "test"):
        assert getattr(poisoned, part).to_csv().encode() == getattr(clean_run, part).to_csv().encode()
    without = load_splits(build_config({**base, "include_feedback": "false"}).data)
    assert poisoned.train.to_csv().encode() == without.train.to_csv().encode()
