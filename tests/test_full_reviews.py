"""Issue 25: full-length reviews — the plot parts, the full reviews, the subjectivity head and its aggregations."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from pipelines.config import build_config
from pipelines.data.plots import part_of, plot_part, plot_summaries
from pipelines.data.split import load_splits
from pipelines.evaluate import subjectivity
from pipelines.evaluate.full_reviews import BUCKETS, build_full_reviews, by_length, sentences
from scoring.config import CONFIG_KEY
from scoring.model_files import load_components
from scoring.onnx_convert import export_onnx
from scoring.onnx_runtime import OnnxScorer, make_session
from scoring.runtimes import load_scorer
from scoring.scorer import Scorer
from scoring.subjectivity import HEAD_KEY, OUTPUT
from tests.conftest import NEGATIVE_REVIEW, POSITIVE_REVIEW


@pytest.fixture(scope="module")
def splits():
    return load_splits(build_config({}).data)


def test_plot_parts_are_disjoint_fixed_and_cover_every_movie():
    plots = plot_summaries()
    parts = {name: plot_part(name) for name in ("train", "validation", "test")}
    assert sum(len(p) for p in parts.values()) == len(plots)
    assert not set(parts["train"].index) & (set(parts["validation"].index) | set(parts["test"].index))
    assert len(parts["train"]) > len(parts["validation"]) > 200 and len(parts["test"]) > 200
    assert part_of("Toy Story") == part_of("Toy Story")  # a hash of the name, whatever the seed
    with pytest.raises(ValueError, match="unknown plot part"):
        plot_part("holdout")


def test_full_reviews_read_like_reviews(splits):
    plots = plot_part("test")
    reviews = build_full_reviews(splits.test, plots, n=300, seed=1)
    assert len(reviews) == 300 and reviews["label"].mean() == 0.5
    lengths = reviews["text"].str.len()
    # every bucket of the issue's table is there, with a median near real IMDb reviews' (929 characters)
    assert 700 < lengths.median() < 1400 and all((lengths >= low).sum() - (lengths >= high).sum() >= 30
                                                 for low, high, _ in BUCKETS)
    assert 0.2 < reviews["plot_share"].mean() < 0.5 and 0.3 < reviews["mixed"].mean() < 0.5
    texts = {label: set(group["text"]) for label, group in splits.test.groupby("label")}
    own = {s for p in plots for s in sentences(p)}
    firsts = {s for p in plot_summaries().drop(plots.index) for s in sentences(p)[:1] if len(s) > 60} - own
    for row in reviews.itertuples():
        assert any(row.text.endswith(t) for t in texts[row.label])  # the verdict, last, is the review's label
        assert not any(s in row.text for s in firsts)  # no plot of another part
    assert build_full_reviews(splits.test.assign(label=1), plots).empty  # one label: nothing to build


def test_by_length_counts_answers_per_bucket():
    texts = ["x" * 100, "x" * 800, "x" * 2000, "x" * 1500]
    table = by_length(texts, np.array([1, 0, 1, 0]), np.array([0.9, 0.2, 0.3, 0.6]))
    assert list(table.index) == ["under 700", "700-1,400", "over 1,400", "all"]
    assert table.loc["over 1,400", "accuracy"] == 0 and table.loc["over 1,400", "answered_positive"] == 0.5
    assert table.loc["all", "texts"] == 4 and table.loc["all", "accuracy"] == 0.5


def test_the_subjectivity_head_ranks_plots_below_opinions(learned_tracking, splits):
    """P(subjective) of the test part's plot windows against test opinions' windows, neither ever learned from.

    The floor, 0.85: the default run's head scores 0.90 on validation (the 4-layer student; 0.96 on the 6-layer
    teacher after one epoch), this small model's about 0.94, and a bag of words (TF-IDF + logistic regression,
    printed beside it) 0.99 on the same texts: 0.85 fails a head that has lost much of the signal, not one a
    little worse on a model trained on 3,000 texts for two epochs, as this one is. Chance is 0.5.
    """
    scorer = load_scorer(learned_tracking.model_uri)
    assert scorer.has_subjectivity
    figures = subjectivity.figures(scorer, splits.test, plot_part("test"))
    print(f"subjectivity head, test part: {figures}")
    assert figures["auc"] >= 0.85 and figures["plot_mean"] < 0.5 < figures["opinion_mean"]
    learn = subjectivity.examples(splits.train, plot_part("train"), limit=4000)
    held = subjectivity.examples(splits.test, plot_part("test"), limit=1000)
    words = TfidfVectorizer(ngram_range=(1, 2), min_df=2).fit(learn["text"])
    bag = LogisticRegression(max_iter=2000, class_weight="balanced").fit(words.transform(learn["text"]),
                                                                          learn["subjective"])
    bag_auc = roc_auc_score(held["subjective"], bag.predict_proba(words.transform(held["text"]))[:, 1])
    print(f"TF-IDF + LR on the same texts: ROC-AUC {bag_auc:.3f}")


@pytest.fixture(scope="module")
def reviews(splits) -> list[str]:
    return build_full_reviews(splits.test, plot_part("test"), n=6, seed=3)["text"].tolist()


def test_subjective_aggregation_same_alone_and_amid_other_traffic(learned_tracking, reviews, monkeypatch):
    monkeypatch.setenv("INT8_CALLS", "text")
    scorer = load_scorer(learned_tracking.model_uri, "onnx-int8", aggregation="logit_subjective_last",
                         long_threshold=0.55)
    assert scorer.output_names == ["logits", OUTPUT]
    texts = [POSITIVE_REVIEW, reviews[0], NEGATIVE_REVIEW, *reviews[1:]]
    together = scorer.predict_proba(texts)
    for i, text in enumerate(texts):  # alone, or amid other texts in one call: the same answer, to the bit
        assert scorer.predict_proba([text])[0] == together[i]
    assert scorer.predict_proba([reviews[2], *reviews[::-1]])[0] == together[4]
    torch_scorer = load_scorer(learned_tracking.model_uri, aggregation="logit_subjective_last", long_threshold=0.55)
    assert np.mean((torch_scorer.predict_proba(texts) >= 0.5) == (together >= 0.5)) >= 0.75  # int8 vs PyTorch


def test_the_onnx_graph_gives_pytorchs_subjectivity(learned_tracking, reviews):
    model, tokenizer = load_components(learned_tracking.model_uri)
    scorer = Scorer(model, tokenizer)
    ids, owner = scorer.windows(reviews)
    expected = scorer.window_logits(ids, owner)
    with tempfile.TemporaryDirectory() as tmp:
        session = make_session(export_onnx(model, tokenizer, Path(tmp) / "model.onnx"))
    got = OnnxScorer(session, tokenizer, scorer.scoring).window_logits(ids, owner)
    np.testing.assert_allclose(got.subjectivity, expected.subjectivity, atol=1e-5)
    np.testing.assert_allclose(got.margins, expected.margins, atol=1e-4)


def test_a_version_without_the_head_is_scored_as_before(learned_tracking, reviews):
    """A version trained before issue 25: no head in its config, a graph with logits only; its saved aggregation
    scores as it did, and an aggregation that needs the head is refused by name."""
    model, tokenizer = load_components(learned_tracking.model_uri)
    saved = dict(getattr(model.config, CONFIG_KEY))
    saved.pop(HEAD_KEY)
    setattr(model.config, CONFIG_KEY, {**saved, "aggregation": "logit_length", "long_threshold": 0.45})
    scorer = Scorer(model, tokenizer)
    assert not scorer.has_subjectivity and scorer.window_logits(*scorer.windows(reviews)).subjectivity is None
    ids, owner = scorer.windows(reviews)
    margins = scorer.window_logits(ids, owner).margins
    lengths = np.array([len(x) for x in ids], dtype=float)
    mean = np.bincount(owner, margins * lengths) / np.bincount(owner, lengths)  # the formula of issue 16
    expected = 1 / (1 + np.exp(-(mean - np.log(0.45 / 0.55))))
    np.testing.assert_allclose(scorer.predict_proba(reviews), expected, rtol=1e-12)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, tokenizer, Path(tmp) / "model.onnx")
        session = make_session(path)
        assert [o.name for o in ort.InferenceSession(str(path)).get_outputs()] == ["logits"]
    onnx = OnnxScorer(session, tokenizer, scorer.scoring)
    np.testing.assert_allclose(onnx.predict_proba(reviews), expected, atol=1e-5)
    with pytest.raises(ValueError, match=r"aggregation .logit_subjective. .* no subjectivity head"):
        scorer.with_scoring(scorer.scoring.model_copy(update={"aggregation": "logit_subjective"}))
    with pytest.raises(ValueError, match="no subjectivity head"):
        OnnxScorer(session, tokenizer, scorer.scoring.model_copy(update={"aggregation": "prob_subjective"}))


def test_the_head_and_its_choice_are_saved_with_the_version(learned_tracking):
    from scoring.model_files import load_tokenizer_and_scoring

    _, scoring = load_tokenizer_and_scoring(learned_tracking.model_uri)
    model, _ = load_components(learned_tracking.model_uri)
    head = getattr(model.config, CONFIG_KEY)[HEAD_KEY]
    assert len(head["weight"]) == model.config.hidden_size and isinstance(head["bias"], float)
    assert json.loads(json.dumps(head)) == head and 0.2 <= scoring.long_threshold <= 0.8
    assert pd.Series(head["weight"]).abs().sum() > 0  # a fitted head, not zeros
