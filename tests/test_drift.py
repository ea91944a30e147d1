"""Reference profile and drift statistics on real data, real tokenizer, a stand-in classifier (fast)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from transformers import AutoTokenizer

from pipelines.config import ConfigError, build_config
from pipelines.data.embedded import embedded_model_dir
from pipelines.data.split import load_splits
from pipelines.monitor import drift, report, window
from pipelines.monitor import reference as profiles
from scoring import features, inference_log
from scoring.config import ScoringConfig

OTHER_DOMAIN = [
    "The firmware update bricked my router and the support ticket was closed without a refund.",
    "Battery drains overnight, the charger overheats and the bluetooth pairing fails every morning.",
    "Shipping took three weeks, the package arrived crushed and the warranty claim form is broken.",
    "The laptop fan is loud, the trackpad lags and the keyboard backlight flickers after the patch.",
    "Customer service kept me on hold, then the invoice charged twice for the subscription plan.",
]


class LexiconScorer:
    """A deterministic stand-in for the classifier: positive words push P(positive) up."""

    def __init__(self) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(str(embedded_model_dir()))
        self.scoring = ScoringConfig()

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        good = {"good", "great", "best", "funny", "fun", "beautiful", "love", "charming", "smart", "moving"}
        bad = {"bad", "dull", "worst", "boring", "mess", "fails", "broken", "stupid", "loud", "lags"}
        score = np.array([sum((w in good) - (w in bad) for w in profiles.words(t)) for t in texts], float)
        jitter = np.array([(hash(t) % 1000) / 1000 - 0.5 for t in texts])
        return 1 / (1 + np.exp(-(score + jitter)))


@pytest.fixture(scope="module")
def scorer() -> LexiconScorer:
    return LexiconScorer()


@pytest.fixture(scope="module")
def splits():
    return load_splits(build_config({"max_train_samples": 3000}).data)


@pytest.fixture(scope="module")
def reference(scorer, splits) -> dict:
    return profiles.build_profile(scorer, splits)


def _rows(scorer, texts, version="1", log_text=True) -> pd.DataFrame:
    return pd.DataFrame(inference_log.scored_rows(scorer, texts, "sentiment", version, log_text=log_text))


def test_text_features_count_special_and_unknown_tokens(scorer):
    f = features.text_features(scorer.tokenizer, ["Great movie!", "🤖 🤖 ok", ""])
    assert list(f.columns) == list(features.FEATURE_COLUMNS)
    assert f["n_chars"].tolist() == [12, 6, 0]
    assert f["n_tokens"].tolist() == [5, 5, 2]  # [CLS] great movie ! [SEP]; [CLS] [UNK] [UNK] ok [SEP]; [CLS] [SEP]
    assert f["unk_ratio"].tolist() == [0.0, pytest.approx(2 / 5), 0.0]
    assert features.text_features(scorer.tokenizer, []).empty


def test_profile_holds_training_and_validation_references(reference, splits):
    assert reference["data"]["digest"] == splits.digest
    assert reference["train"]["n"] == len(splits.train) == len(reference["train"]["features"]["n_tokens"]["values"])
    assert sum(reference["train"]["label_ratio"].values()) == pytest.approx(1)
    assert sum(reference["validation"]["predicted_label_ratio"].values()) == pytest.approx(1)
    assert len(reference["validation"]["confidence"]["values"]) == len(splits.validation)
    assert {"the", "film", "movie"} <= set(reference["train"]["vocabulary"]["top_words"])
    assert 0 < reference["validation"]["oov_rate"] < 0.3
    assert len(reference["train"]["text_sample"]) == profiles.TEXT_SAMPLE_SIZE


def test_psi_is_small_for_the_same_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, 5000)
    assert drift.psi(ref, rng.normal(0, 1, 500)) < 0.05
    assert drift.psi(ref, rng.normal(1.5, 1, 500)) > 1
    assert drift.psi_shares([0.5, 0.5], [0.5, 0.5]) == 0


def test_held_out_texts_do_not_drift(scorer, reference, splits):
    verdict = drift.detect(reference, _rows(scorer, splits.test["text"].tolist()[:400]), drift.Thresholds(), "1")
    assert verdict["verdict"] == "no_drift", verdict["reasons"]
    assert verdict["drift"] is False and verdict["drifted_signals"] == []
    assert {s["status"] for s in verdict["signals"].values()} == {"ok"}
    assert verdict["signals"]["domain_classifier"]["effect_value"] < 0.65


def test_long_texts_of_another_domain_drift_on_length_vocabulary_and_domain(scorer, reference):
    rng = np.random.default_rng(1)
    texts = [" ".join(rng.permutation(OTHER_DOMAIN)) + f" Ticket {i}." for i in range(300)]
    verdict = drift.detect(reference, _rows(scorer, texts), drift.Thresholds(), "1")
    assert verdict["verdict"] == "drift"
    assert {"n_chars", "n_tokens", "vocabulary", "domain_classifier"} <= set(verdict["drifted_signals"])
    assert "unk_ratio" not in verdict["drifted_signals"]
    vocab = verdict["signals"]["vocabulary"]
    assert vocab["production"]["oov_rate"] > vocab["reference"]["oov_rate"] + 0.1
    assert any(r.startswith("n_tokens: median") for r in verdict["reasons"])


def test_skewed_label_mix_and_unknown_tokens_are_named(scorer, reference, splits):
    rows = _rows(scorer, splits.test["text"].tolist()[:300], log_text=False)
    rows["label"], rows["confidence"] = "Negative", rows["confidence"].clip(lower=0.9)
    rows["unk_ratio"] = np.where(np.arange(len(rows)) % 2 == 0, 0.2, 0.0)  # emoji-heavy traffic
    verdict = drift.detect(reference, rows, drift.Thresholds(), "1")
    assert {"predicted_label", "confidence", "unk_ratio"} <= set(verdict["drifted_signals"])
    assert {"n_chars", "n_tokens"}.isdisjoint(verdict["drifted_signals"])
    assert verdict["signals"]["vocabulary"]["status"] == "skipped"  # no raw text logged


def test_too_little_traffic_is_insufficient_data_not_an_alarm(scorer, reference):
    rows = _rows(scorer, ["a " * 500] * 20)
    verdict = drift.detect(reference, rows, drift.Thresholds(min_samples=200), "1")
    assert verdict["verdict"] == "insufficient_data" and verdict["drift"] is None
    assert "only 20 predictions" in verdict["reasons"][0]


def test_output_signals_use_only_the_monitored_version(scorer, reference, splits):
    rows = _rows(scorer, splits.test["text"].tolist()[:300])
    rows.loc[:99, "model_version"] = "7"
    verdict = drift.detect(reference, rows, drift.Thresholds(), "1")
    assert verdict["counts"] == {"predictions": 300, "predictions_of_version": 200, "with_text": 300}
    assert verdict["signals"]["confidence"]["n_production"] == 200
    verdict = drift.detect(reference, rows, drift.Thresholds(min_samples=250), "1")
    assert verdict["signals"]["confidence"]["status"] == "insufficient_data"
    assert verdict["signals"]["n_tokens"]["status"] == "ok"


def test_report_renders_every_signal(scorer, reference, splits):
    rows = _rows(scorer, splits.test["text"].tolist()[:250])
    verdict = drift.detect(reference, rows, drift.Thresholds(), "1")
    page = report.render_report(verdict, report.figures(reference, rows, verdict))
    assert "NO_DRIFT" in page and page.count("data:image/png;base64,") >= 2
    for name in verdict["signals"]:
        assert name in page


def test_window_and_parameter_checks(tmp_path):
    cfg = build_config({"until": "2025-01-02T00:00:00", "window_hours": "6"})
    assert window.window(cfg.monitor) == ("2025-01-01T18:00:00.000+00:00", "2025-01-02T00:00:00.000+00:00")
    with pytest.raises(ConfigError, match="since"):
        window.window(build_config({"since": "2025-01-03", "until": "2025-01-02"}).monitor)
    with pytest.raises(ConfigError, match="inference_db"):
        window.validate(build_config({}).monitor, str(tmp_path / "missing.db"))
    with pytest.raises(ConfigError, match="reference_profile"):
        window.validate(build_config({"reference_profile": str(tmp_path / "missing.json")}).monitor)
    with pytest.raises(ConfigError, match="since"):
        build_config({"since": "yesterday"})
