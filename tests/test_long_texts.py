"""Long texts: the aggregation of windows, the choice of it on validation, old versions, int8 calls per text."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import NEGATIVE_REVIEW, POSITIVE_REVIEW

from pipelines.config import build_config
from pipelines.data.plots import plot_part, plot_summaries
from pipelines.data.split import load_splits
from pipelines.evaluate import aggregation
from pipelines.evaluate.long_texts import build_long_proxies, long_sets, paragraphs
from scoring.config import AGGREGATIONS, CONFIG_KEY, LEGACY, ScoringConfig
from scoring.model_files import load_components
from scoring.onnx_runtime import int8_calls_setting
from scoring.runtimes import load_scorer
from scoring.scorer import Scorer, aggregate

# three texts: one window; two windows (a confident positive one and a doubtful negative one); three windows
PROBS = np.array([0.7, 0.95, 0.4, 0.3, 0.45, 0.2])
MARGINS = np.log(PROBS / (1 - PROBS))
OWNER = np.array([0, 1, 1, 2, 2, 2])
LENGTHS = np.array([20.0, 64, 30, 64, 64, 10])
SUBJECTIVE = np.array([0.9, 0.95, 0.1, 0.8, 0.05, 0.9])  # P(subjective): the second and fifth windows retell a plot


def scores(how: str, threshold: float = 0.5) -> np.ndarray:
    return aggregate(PROBS, MARGINS, OWNER, LENGTHS, 3, ScoringConfig(aggregation=how, long_threshold=threshold),
                     SUBJECTIVE)


@pytest.mark.parametrize("how", AGGREGATIONS)
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.62])
def test_a_text_of_one_window_keeps_its_probability(how, threshold):
    assert scores(how, threshold)[0] == PROBS[0]


def test_the_default_is_the_length_weighted_mean_probability_of_earlier_versions():
    expected = [0.7, (0.95 * 64 + 0.4 * 30) / 94, (0.3 * 64 + 0.45 * 64 + 0.2 * 10) / 138]
    before = np.bincount(OWNER, PROBS * LENGTHS) / np.bincount(OWNER, LENGTHS)  # the formula of earlier versions
    np.testing.assert_array_equal(scores("prob_length"), before)
    np.testing.assert_allclose(scores("prob_length"), expected, rtol=1e-12)


def test_logit_means_and_weights():
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    np.testing.assert_allclose(scores("logit")[1], sigmoid((MARGINS[1] + MARGINS[2]) / 2))
    np.testing.assert_allclose(scores("logit_length")[1], sigmoid((64 * MARGINS[1] + 30 * MARGINS[2]) / 94))
    np.testing.assert_allclose(scores("prob")[2], np.mean(PROBS[3:]))
    # confidence weighting: the confident window outweighs the doubtful one more than length alone does
    assert scores("logit_confidence")[1] > scores("logit_length")[1] > 0.5
    # the first and last windows count double: the middle window of text 2 weighs less
    w = np.array([128.0, 64, 20])
    np.testing.assert_allclose(scores("logit_ends")[2], sigmoid((w * MARGINS[3:]).sum() / w.sum()))
    w = np.array([64.0, 64, 20])  # the last window counts double
    np.testing.assert_allclose(scores("logit_last")[2], sigmoid((w * MARGINS[3:]).sum() / w.sum()))


def test_subjective_weights_leave_out_what_retells_a_plot():
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    w = LENGTHS * (SUBJECTIVE + 1e-6)
    np.testing.assert_allclose(scores("logit_subjective")[1:], [
        sigmoid((w[1:3] * MARGINS[1:3]).sum() / w[1:3].sum()), sigmoid((w[3:] * MARGINS[3:]).sum() / w[3:].sum())])
    np.testing.assert_allclose(scores("prob_subjective")[2], (w[3:] * PROBS[3:]).sum() / w[3:].sum())
    last = w[3:] * np.array([1, 1, 2])
    np.testing.assert_allclose(scores("logit_subjective_last")[2], sigmoid((last * MARGINS[3:]).sum() / last.sum()))
    # text 2: a doubtful plot window (0.45, P(subjective) 0.05) between two negative opinions barely counts
    assert scores("logit_subjective")[2] < scores("logit_length")[2]
    with pytest.raises(ValueError, match="subjectivity head"):
        aggregate(PROBS, MARGINS, OWNER, LENGTHS, 3, ScoringConfig(aggregation="logit_subjective"))


@pytest.mark.parametrize("how", AGGREGATIONS)
def test_the_long_threshold_is_folded_in(how):
    raw = scores(how)
    for threshold in (0.2, 0.45, 0.55, 0.8):
        shifted = scores(how, threshold)
        np.testing.assert_array_equal(shifted[1:] >= 0.5, raw[1:] >= threshold)
        odds = np.log(shifted[1:] / (1 - shifted[1:])) - np.log(raw[1:] / (1 - raw[1:]))
        np.testing.assert_allclose(odds, -np.log(threshold / (1 - threshold)), rtol=1e-9)


def test_a_config_saved_without_the_settings_scores_as_before():
    old = SimpleNamespace(config=SimpleNamespace(**{CONFIG_KEY: {
        "max_length": 64, "long_text_strategy": "sliding_window", "window_stride": 16, "max_windows": 16}}))
    assert ScoringConfig.from_model(old).model_dump() == {**ScoringConfig().model_dump(), **LEGACY}
    bare = SimpleNamespace(config=SimpleNamespace())
    assert ScoringConfig.from_model(bare) == ScoringConfig(**LEGACY)
    assert ScoringConfig.from_model(old, aggregation="logit", long_threshold=0.4).aggregation == "logit"


def test_balanced_threshold_and_choice_on_real_inputs():
    # positives scored low (recall 0.5 at 0.5): balance asks a lower threshold
    y = np.repeat([1, 0], 10)
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.55, 0.45, 0.42, 0.41, 0.38, 0.36,
                  0.1, 0.15, 0.2, 0.22, 0.25, 0.3, 0.31, 0.33, 0.34, 0.5])
    threshold = aggregation.balanced_threshold(y, p)
    assert threshold < 0.5
    chosen = (p >= threshold)
    precision, recall = (chosen & (y == 1)).sum() / chosen.sum(), (chosen & (y == 1)).sum() / 10
    assert abs(precision - recall) <= aggregation.TOLERANCE
    # already balanced and best at 0.5: kept
    assert aggregation.balanced_threshold(y, np.where(y == 1, 0.7, 0.3)) == 0.5
    table = pd.DataFrame({"accuracy": [0.9, 0.92, 0.92], "roc_auc": [0.95, 0.96, 0.97]},
                         index=["prob_length", "logit", "logit_confidence"])
    assert aggregation.choose(table) == "logit_confidence"
    assert aggregation.choose(table.assign(roc_auc=0.96)) == "logit"  # full tie: the earlier one


def test_review_proxies_hold_the_plot_and_paragraphs_one_label():
    splits = load_splits(build_config({}).data)
    reviews = build_long_proxies(splits.test, n=20, with_plot="test")
    plots, learned = plot_part("test"), plot_summaries().drop(plot_part("test").index)
    assert len(reviews) == 20 and all(any(p in r.text for p in plots) for r in reviews.itertuples())
    assert all(plots[r.movie_name] in r.text for r in reviews.itertuples() if r.movie_name in plots.index)
    assert not any(p in r.text for r in reviews.itertuples() for p in learned)  # never another part's plot
    assert set(long_sets(splits.validation)) == {"proxies", "reviews", "full reviews"}
    sentences = pd.DataFrame({"text": [f"sentence {i}." for i in range(40)], "label": [0, 1] * 20})
    joined = paragraphs(sentences, sentences=(3, 5))
    assert joined["n_sentences"].between(3, 5).all() and set(joined["label"]) == {0, 1}
    for row in joined.itertuples():
        numbers = [int(w.rstrip(".")) for w in row.text.split() if w != "sentence"]
        assert {n % 2 for n in numbers} == {row.label}


@pytest.fixture(scope="module")
def long_reviews(rt_frame: pd.DataFrame) -> list[str]:
    return [" ".join(rt_frame["text"].iloc[i : i + 12]) for i in (0, 100, 200)]


def test_an_older_version_scores_long_texts_as_before(learned_copy, long_reviews):
    """A model whose saved config predates aggregation (as logged before it existed) scores as it did."""
    model, tokenizer = load_components(learned_copy.model_uri)
    setattr(model.config, CONFIG_KEY, {"max_length": 48, "long_text_strategy": "sliding_window", "window_stride": 16,
                                       "max_windows": 16, "threshold": 0.55})  # what versions saved before
    scorer = Scorer(model, tokenizer)
    assert (scorer.scoring.aggregation, scorer.scoring.long_threshold, scorer.scoring.window_stride,
            scorer.scoring.max_windows) == ("prob_length", 0.5, 16, 16)
    texts = [POSITIVE_REVIEW, *long_reviews, NEGATIVE_REVIEW]
    ids, owner = scorer.windows(texts)
    assert np.bincount(owner).max() > 1
    probs = scorer.window_probabilities(ids)
    weights = np.array([len(x) for x in ids], dtype=float)
    before = np.bincount(owner, probs * weights) / np.bincount(owner, weights)  # the formula of earlier versions
    np.testing.assert_array_equal(scorer.predict_proba(texts), before)


class RecordingSession:
    """A real ONNX Runtime session that remembers the rows (input ids) of each call."""

    def __init__(self, session):
        self.session, self.calls = session, []

    def get_inputs(self):
        return self.session.get_inputs()

    def run(self, names, feeds):
        self.calls.append(feeds["input_ids"].copy())
        return self.session.run(names, feeds)


def test_int8_scores_each_text_alone_in_one_call(learned_copy, long_reviews, monkeypatch):
    monkeypatch.setenv("INT8_CALLS", "text")
    scorer = load_scorer(learned_copy.model_uri, "onnx-int8", window_stride=0, max_windows=8,
                         aggregation="logit_confidence", long_threshold=0.45)
    # a text alone is a call on the session of every core; texts together are calls side by side on the other
    scorer.session, scorer.side_session = RecordingSession(scorer.session), RecordingSession(scorer.side_session)
    texts = [POSITIVE_REVIEW, long_reviews[0], NEGATIVE_REVIEW, long_reviews[1], long_reviews[2]]
    together = scorer.predict_proba(texts)
    owner = scorer.windows(texts)[1]
    calls = scorer.session.calls + scorer.side_session.calls
    assert len(calls) == len(texts)  # one call per text, all its windows in it (side by side: in any order)
    assert sorted(map(len, calls)) == sorted(int((owner == text).sum()) for text in range(len(texts)))
    for i, text in enumerate(texts):  # alone or amid other texts: the same answer, to the bit
        assert scorer.predict_proba([text])[0] == together[i]
    assert scorer.predict_proba([long_reviews[1], POSITIVE_REVIEW])[0] == together[3]


def test_int8_calls_per_window_on_request(learned_copy, long_reviews, monkeypatch):
    monkeypatch.setenv("INT8_CALLS", "window")
    scorer = load_scorer(learned_copy.model_uri, "onnx-int8")
    scorer.session, scorer.side_session = RecordingSession(scorer.session), RecordingSession(scorer.side_session)
    scorer.predict_proba(long_reviews)
    calls = scorer.session.calls + scorer.side_session.calls
    assert len(calls) == len(scorer.windows(long_reviews)[0])
    assert {len(c) for c in calls} == {1}
    with pytest.raises(ValueError, match="INT8_CALLS='batch'"):
        int8_calls_setting("batch")


def test_calibration_chooses_on_long_texts_only(learned_copy, long_reviews):
    """The train step's choice on real texts: one-window texts are left out, the result is a valid config."""
    scorer = load_scorer(learned_copy.model_uri, "onnx-int8", window_stride=0)
    splits = load_splits(build_config({}).data)
    texts = pd.concat(long_sets(splits.validation, n=60).values(), ignore_index=True)
    texts = pd.concat([texts, pd.DataFrame({"text": [POSITIVE_REVIEW], "label": [1]})], ignore_index=True)
    scoring, table = aggregation.calibrate(scorer, texts["text"].tolist(), texts["label"].to_numpy())
    assert list(table.index) == list(AGGREGATIONS) and table["chosen"].sum() == 1
    assert table.loc[scoring.aggregation, "chosen"] and scoring.long_threshold == table.loc[scoring.aggregation,
                                                                                             "long_threshold"]
    windows = scorer.windows(texts["text"].tolist())[1]
    assert table["texts"].iloc[0] == (np.bincount(windows) > 1).sum() < len(texts)
    assert aggregation.calibrate(scorer, [POSITIVE_REVIEW] * 30, np.ones(30))[1].empty  # nothing long: unchanged
