"""Monitoring end to end: the real model, an inference log written like the app's, the monitor notebook via the CLI.

One log holds three days of traffic, picked with ``since``/``until``:
day 1 held-out test texts (in distribution), day 2 long texts of another domain
(customer-support complaints), day 3 a trickle of 20 predictions.
"""

from __future__ import annotations

import json
from contextlib import closing
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import LEARNED_PARAMS
from mlflow import MlflowClient

from pipelines import cli
from pipelines.config import build_config
from pipelines.data.split import load_splits
from pipelines.monitor import reference, reference_store
from pipelines.registry import versions
from scoring import inference_log
from scoring.identity import model_uri
from scoring.model_files import load_components
from scoring.scorer import Scorer

pytestmark = pytest.mark.e2e

DAYS = {"in_distribution": "2025-03-01", "shifted": "2025-03-02", "trickle": "2025-03-03"}
COMPLAINTS = [
    "The firmware update bricked my router and support closed the ticket without a refund.",
    "The battery drains overnight, the charger overheats and bluetooth pairing fails every morning.",
    "Shipping took three weeks, the package arrived crushed and the warranty claim form is broken.",
    "The laptop fan is loud, the trackpad lags and the keyboard backlight flickers after the patch.",
    "Customer service kept me on hold for an hour, then the invoice charged my card twice.",
    "The app crashes on login, the password reset email never arrives and the account is locked.",
    "The printer jams on every page, the ink cartridge leaks and the driver will not install.",
    "The delivery driver left the parcel in the rain and the replacement order was cancelled.",
]
FEEDBACK = {"An unexpectedly tender road movie with a great ending.": 1, "Two hours I will never get back.": 0}


def _window(day: str) -> list[str]:
    return ["-p", "since", f"{day}T00:00:00+00:00", "-p", "until", f"{day}T23:59:59+00:00"]


@pytest.fixture(scope="module")
def traffic(learned_store, tmp_path_factory) -> dict[str, Path]:
    """The reference profile of the learned model and a three-day inference log with feedback (accepted and not)."""
    folder = tmp_path_factory.mktemp("monitor")
    mlflow.set_tracking_uri(learned_store.tracking_uri)
    model, tokenizer = load_components(model_uri(learned_store.model_name, learned_store.version))
    scorer = Scorer(model, tokenizer)
    splits = load_splits(build_config(LEARNED_PARAMS).data)
    profile = folder / "reference_profile.json"
    profile.write_text(json.dumps(reference.build_profile(scorer, splits)))

    rng = np.random.default_rng(0)
    shifted = [" ".join(rng.permutation(COMPLAINTS)[:6]) + f" Order {i}." for i in range(300)]
    texts = {"in_distribution": splits.test["text"].tolist()[:300], "shifted": shifted,
             "trickle": splits.test["text"].tolist()[300:320]}
    db = folder / "inference.db"
    with closing(inference_log.connect(db)) as conn:
        for name, day in DAYS.items():
            rows = inference_log.scored_rows(scorer, texts[name], learned_store.model_name, learned_store.version,
                                         log_text=True)
            for i, row in enumerate(rows):  # spread over the morning, as real traffic would be
                row["ts"] = f"{day}T{i * 21600 // len(rows) // 3600:02d}:{i % 60:02d}:00.000+00:00"
            inference_log.append_predictions(conn, rows)
        accepted = [inference_log.add_feedback(conn, text, label, sender="e2e-sender01")
                    for text, label in FEEDBACK.items()]
        inference_log.set_feedback_status(conn, accepted, "accepted", "e2e-reviewer")
        for text, label in FEEDBACK.items():  # the same texts flipped, by another sender: pending, never trained
            inference_log.add_feedback(conn, f"{text} (flipped)", 1 - label, sender="e2e-sender02")
    return {"db": db, "reference": profile}


def _monitor(args: list[str], store, traffic, tmp_path, capsys, command: str = "monitor") -> tuple[int, dict]:
    code = cli.main([
        command, "-p", "tracking_uri", store.tracking_uri, "-p", "inference_db", str(traffic["db"]),
        "-p", "reference_profile", str(traffic["reference"]), "--output-dir", str(tmp_path / "out"), *args,
    ])
    out = capsys.readouterr().out
    return code, json.loads(out)  # stdout is the JSON only


def _stats(verdict: dict) -> dict:
    return {n: (s["status"], s["p_value"], s["effect_value"]) for n, s in verdict["signals"].items()}


def test_in_distribution_traffic_is_no_drift_and_the_report_is_logged(learned_copy, traffic, tmp_path, capsys):
    code, verdict = _monitor(_window(DAYS["in_distribution"]), learned_copy, traffic, tmp_path, capsys)
    print(json.dumps(_stats(verdict), indent=1))
    assert code == 0, verdict["reasons"]
    assert verdict["verdict"] == "no_drift" and verdict["drift"] is False
    assert verdict["counts"] == {"predictions": 300, "predictions_of_version": 300, "with_text": 300}
    assert {s["status"] for s in verdict["signals"].values()} == {"ok"}
    assert verdict["model"]["version"] == learned_copy.version

    run_id = verdict["mlflow_run_id"]
    client = MlflowClient(learned_copy.tracking_uri)
    names = {a.path for a in client.list_artifacts(run_id)} | {
        a.path for a in client.list_artifacts(run_id, "notebook")}
    assert {"drift_report.html", "drift_verdict.json", "notebook/monitor.ipynb", "notebook/monitor.html"} <= names
    run = client.get_run(run_id)
    assert run.data.tags["verdict"] == "no_drift" and run.data.tags["mlflow.parentRunId"] == verdict["parent_run_id"]
    assert client.get_run(verdict["parent_run_id"]).data.tags["verdict"] == "no_drift"
    report = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="drift_report.html",
                                                      dst_path=str(tmp_path / "dl")))
    assert "NO_DRIFT" in report.read_text()


def test_long_other_domain_traffic_is_drift_with_the_signals_named(learned_copy, traffic, tmp_path, capsys):
    code, verdict = _monitor(_window(DAYS["shifted"]), learned_copy, traffic, tmp_path, capsys)
    print(json.dumps(_stats(verdict), indent=1))
    assert code == 3
    assert verdict["verdict"] == "drift" and verdict["drift"] is True
    assert {"n_chars", "n_tokens", "vocabulary", "domain_classifier", "predicted_label"} <= set(
        verdict["drifted_signals"])
    assert "unk_ratio" not in verdict["drifted_signals"]
    assert any(r.startswith("n_tokens: median") for r in verdict["reasons"])
    label = verdict["signals"]["predicted_label"]
    assert label["production"]["share_Negative"] > label["reference"]["share_Negative"] + 0.3


def test_a_trickle_of_traffic_is_insufficient_data(learned_copy, traffic, tmp_path, capsys):
    code, verdict = _monitor(_window(DAYS["trickle"]), learned_copy, traffic, tmp_path, capsys)
    assert code == 4
    assert verdict["verdict"] == "insufficient_data" and verdict["drift"] is None
    assert verdict["counts"]["predictions"] == 20 and verdict["signals"] == {}


def test_bad_monitor_parameters_exit_2(learned_copy, tmp_path, capsys):
    assert cli.main(["monitor", "-p", "inference_db", str(tmp_path / "nope.db")]) == 2
    assert "parameter inference_db" in capsys.readouterr().err


def test_retrain_if_drift_registers_a_version_and_the_gate_decides(learned_copy, traffic, tiny_csv, tmp_path, capsys):
    tiny = ["-p", "dataset", str(tiny_csv), "-p", "epochs", "1", "-p", "max_length", "32",
            "-p", "include_feedback", "true"]
    code, summary = _monitor([*_window(DAYS["shifted"]), *tiny], learned_copy, traffic, tmp_path, capsys,
                             command="retrain-if-drift")
    print(json.dumps({k: v for k, v in summary.items() if k != "monitor"}, indent=1))
    assert summary["monitor"]["verdict"] == "drift" and summary["retrained"] is True
    new = versions.get_version(learned_copy.model_name)
    assert str(new.version) == summary["model_version"] == str(int(learned_copy.version) + 1)
    assert new.tags["promotion.decision"] == ("promoted" if summary["promoted"] else "rejected")
    production = str(versions.alias_version(learned_copy.model_name, "production").version)
    assert production == summary["production_version"]
    assert production == (str(new.version) if summary["promoted"] else learned_copy.version)
    assert code == (0 if summary["promoted"] else 3)

    retrain = MlflowClient().get_run(summary["retrain_run_id"]).data.tags
    assert retrain["trigger"] == "drift" and retrain["monitor_run_id"] == summary["monitor"]["parent_run_id"]
    # the train notebook logged the new version's reference profile, with the accepted feedback (only) in its
    # training data
    logged = reference_store.read_profile(reference_store.profile_uri(new))
    plain = load_splits(build_config({"dataset": str(tiny_csv)}).data)
    assert logged["model"]["version"] == str(new.version)
    assert logged["train"]["n"] == len(plain.train) + len(FEEDBACK)
    assert logged["data"]["digest"] == plain.digest

    # backfilling recomputes it from the data parameters the run logged (here: the tiny CSV plus feedback)
    assert cli.main(["profile", "-p", "tracking_uri", learned_copy.tracking_uri, "-p", "model_version",
                     str(new.version)]) == 0
    assert f"{learned_copy.model_name} v{new.version}" in capsys.readouterr().out
    backfilled = versions.get_version(learned_copy.model_name, new.version)
    again = reference_store.read_profile(reference_store.profile_uri(backfilled))
    assert again["train"]["n"] == logged["train"]["n"] and again["created"] >= logged["created"]


def test_no_drift_means_no_retraining(learned_copy, traffic, tmp_path, capsys):
    code, summary = _monitor(_window(DAYS["in_distribution"]), learned_copy, traffic, tmp_path, capsys,
                             command="retrain-if-drift")
    assert code == 0 and summary["retrained"] is False and summary["monitor"]["verdict"] == "no_drift"
    assert str(versions.get_version(learned_copy.model_name).version) == learned_copy.version


def test_scored_rows_match_the_inference_log_schema(traffic):
    rows = inference_log.read_predictions(traffic["db"])
    assert len(rows) == 620 and set(inference_log.PREDICTION_COLUMNS) <= set(rows.columns)
    assert pd.api.types.is_float_dtype(rows["unk_ratio"]) and (rows["n_tokens"] >= 3).all()
