"""The champion/challenger rule and the metrics it reads."""

import numpy as np

from pipelines.evaluate.metrics import best_threshold, classification_metrics, majority_baseline
from pipelines.registry.rule import decide

M = {"accuracy": 0.85, "precision": 0.86, "recall": 0.88, "f1": 0.87, "roc_auc": 0.93}


def test_first_version_is_promoted_when_it_clears_the_floor():
    d = decide(M, None, "accuracy", 0.002, 0.7, "1")
    assert d.promote and "no production version" in " ".join(d.reasons)


def test_decision_names_the_runtime_it_compared():
    d = decide(M, None, "accuracy", 0.002, 0.7, "1", backend="onnx-int8")
    assert d.backend == "onnx-int8" and d.reasons[0] == "test scores of the onnx-int8 runtime"


def test_floor_blocks_even_without_a_champion():
    d = decide({**M, "accuracy": 0.6}, None, "accuracy", 0.002, 0.7, "1")
    assert not d.promote and "below the floor" in d.reasons[1]


def test_must_beat_champion_by_min_delta():
    champion = {**M, "accuracy": 0.849}
    assert not decide(M, champion, "accuracy", 0.002, 0.7, "2", "1").promote
    assert decide(M, {**M, "accuracy": 0.84}, "accuracy", 0.002, 0.7, "2", "1").promote
    d = decide(M, {**M, "accuracy": 0.9}, "accuracy", 0.0, 0.7, "2", "1")
    assert not d.promote and d.deltas["accuracy"] < 0


def test_metrics_and_threshold():
    y = np.array([0, 0, 1, 1, 1])
    p = np.array([0.1, 0.35, 0.4, 0.8, 0.9])
    m = classification_metrics(y, p)
    assert m["accuracy"] == 0.8 and m["roc_auc"] > 0.8
    t = best_threshold(y, p)
    assert 0.35 < t <= 0.4 and classification_metrics(y, p, t)["accuracy"] == 1.0
    assert majority_baseline(np.array([1, 1, 0]), y)["accuracy"] == 0.6
