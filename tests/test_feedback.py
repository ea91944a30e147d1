"""Feedback from the serving app joins the training split only; validation and test never change."""

from __future__ import annotations

from contextlib import closing

import pandas as pd

from pipelines.config import build_config
from pipelines.data.split import load_splits
from scoring import inference_log


def test_include_feedback_adds_rows_to_train_only_and_never_leaks_test_texts(tiny_csv, tmp_path):
    db = tmp_path / "inference.db"
    base = {"dataset": str(tiny_csv), "inference_db": str(db)}
    plain = load_splits(build_config(base).data)
    new = {"An unexpectedly tender road movie with a great ending.": 1, "Two hours I will never get back.": 0}
    leaks = {plain.test["text"].iloc[0]: 1 - int(plain.test["label"].iloc[0]),  # relabelled test texts
             plain.test["text"].iloc[1]: int(plain.test["label"].iloc[1]),
             plain.validation["text"].iloc[0]: int(plain.validation["label"].iloc[0])}
    with closing(inference_log.connect(db)) as conn:
        for text, label in {**new, **leaks}.items():
            inference_log.add_feedback(conn, text, label)

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
