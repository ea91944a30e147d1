"""Batch scoring on one machine (``python -m pipelines predict``) on real files the tests write.

Every input format (CSV, TSV, JSONL, Parquet) and output format (Parquet, CSV, JSONL), with bad rows
mixed in; the answers are those of the model scored in this process and of ``/predict`` of a real server;
bad invocations fail before any work; a run killed with SIGKILL leaves no complete-looking output and
``--resume`` finishes it with the result of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from batch_helpers import EXPECTED_KIND, MISSING, answers, cell_value, cli, review_cells, write_inputs
from serving_helpers import Server

from pipelines.batch.files import Source, read_metadata, rechunk
from pipelines.batch.rows import score_cells
from scoring.config import DEFAULT_BACKEND
from scoring.runtimes import load_scorer
from scoring.texts import MAX_TEXT_CHARS, text_problem
from tools.harness import child_env, wait_for


@pytest.fixture(scope="module")
def store(learned_tracking):
    return learned_tracking


@pytest.fixture(scope="module")
def reviews(rt_frame):
    return review_cells(rt_frame["text"].sample(400, random_state=3).tolist())


@pytest.fixture(scope="module")
def inputs(reviews, tmp_path_factory):
    return write_inputs(tmp_path_factory.mktemp("batch-inputs"), reviews[0])


@pytest.fixture(scope="module")
def reference(store):
    """The served runtime in this process: what each valid text must get."""
    scorer = load_scorer(store.model_uri, DEFAULT_BACKEND)

    def answer(texts: list[str]) -> dict[str, tuple[str, float]]:
        rows = score_cells(scorer, texts, MAX_TEXT_CHARS)
        return {t: (s, c) for t, s, c in zip(texts, rows.sentiment, rows.confidence, strict=True)}

    return answer


def expected(reviews, fmt: str, reference) -> list[tuple]:
    """(sentiment, confidence, error kind) per row for an input of format ``fmt``."""
    cells, kinds = reviews
    read = [str(c) if k == "number" and fmt != "jsonl" else c for c, k in zip(cells, kinds, strict=True)]
    valid = [c for c, k in zip(read, kinds, strict=True) if k is None or EXPECTED_KIND[k][fmt] is None]
    ref = reference(valid)
    out = []
    for cell, kind in zip(read, kinds, strict=True):
        error = EXPECTED_KIND[kind][fmt] if kind else None
        out.append((None, None, error) if error else (*ref[cell], None))
    return out


def check(frame: pd.DataFrame, want: list[tuple], version: str) -> None:
    got = answers(frame)
    assert len(got) == len(want)
    for i, ((sentiment, confidence, error), (w_sentiment, w_confidence, w_kind)) in enumerate(
            zip(got, want, strict=True)):
        if w_kind:
            assert sentiment is None and confidence is None and error.startswith(f"{w_kind}: "), (i, error)
        else:
            assert error is None, (i, error)
            assert sentiment == w_sentiment and abs(confidence - w_confidence) <= 1e-6, (i, sentiment, confidence)
    assert set(frame["model_version"]) == {version}
    assert frame.sort_values("row")["id"].tolist() == [f"r{i:05d}" for i in range(len(want))]


# -- the rules and the chunking, on their own ----------------------------------------------------------------
def test_a_bad_cell_gets_the_reason_the_api_gives(store):
    assert text_problem("fine") is None
    assert text_problem("x" * MAX_TEXT_CHARS) is None  # the limit itself is fine, as for /predict
    kinds = {"": "empty", " \n\t": "empty", None: "null", "a\ud800b": "invalid_unicode", "x" * 20_001: "too_long"}
    for value, kind in kinds.items():
        assert text_problem(value).kind == kind
    for value in (42, 4.2, True, ["a"], {"text": "a"}):
        assert text_problem(value).kind == "not_string"
    scored = score_cells(load_scorer(store.model_uri, DEFAULT_BACKEND), ["A wonderful film.", None, 7, ""], 100)
    assert scored.sentiment[0] == "Positive" and scored.sentiment[1:] == [None] * 3
    assert scored.problems() == Counter({"null": 1, "not_string": 1, "empty": 1})


def test_chunks_have_the_same_rows_whatever_the_reader_batches():
    batches = [pa.record_batch({"a": list(range(s, e))}) for s, e in ((0, 3), (3, 10), (10, 11), (11, 25))]
    sizes = [t.num_rows for t in rechunk(batches, 4)]
    assert sizes == [4] * 6 + [1]
    assert [v for t in rechunk(batches, 4) for v in t.column("a").to_pylist()] == list(range(25))



def test_a_parquet_file_is_read_one_row_group_at_a_time(tmp_path):
    """Arrow's buffers stay near a row group's size, not the file's (pyarrow's pre_buffer reads them all ahead)."""
    path, groups, rows = tmp_path / "big.parquet", 20, 5_000
    rng = np.random.default_rng(0)
    with pq.ParquetWriter(path, pa.schema([("text", pa.string())])) as writer:
        for _ in range(groups):  # incompressible texts: the file is as large as its buffers
            writer.write_table(pa.table({"text": [rng.bytes(50).hex() for _ in range(rows)]}))
    size = path.stat().st_size
    before, peak, seen = pa.total_allocated_bytes(), 0, 0
    for chunk in Source(path, "parquet", "text").chunks(1000):
        peak, seen = max(peak, pa.total_allocated_bytes() - before), seen + len(chunk)
    assert seen == groups * rows
    assert peak < size / 4, f"{peak / 2**20:.1f} MB of Arrow buffers for a {size / 2**20:.1f} MB file"

# -- formats ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_each_input_format_is_scored_with_bad_rows_marked(fmt, store, reviews, inputs, reference, tmp_path):
    out = tmp_path / "predictions.parquet"
    code, summary, err = cli("predict", "-i", inputs[fmt], "-o", out, "--keep-columns", "id", "--chunk-rows", 64,
                             "--no-progress")
    assert code == 0, err
    want = expected(reviews, fmt, reference)
    check(pd.read_parquet(out), want, store.version)
    kinds = Counter(w[2] for w in want if w[2])
    assert summary["rows"] == len(want) and summary["errors"] == sum(kinds.values())
    assert summary["error_kinds"] == dict(kinds)
    meta = read_metadata(out)  # the run is reproducible from the file alone
    assert meta["model"] | {"scoring_overrides": None} == {
        "requested": store.model_uri, "source": f"models:/{store.model_name}/{store.version}",
        "name": store.model_name, "version": store.version, "backend": DEFAULT_BACKEND, "scoring_overrides": None}
    assert meta["error_kinds"] == dict(kinds) and meta["scoring"]["long_text_strategy"] == "sliding_window"
    assert f"= {store.model_name} v{store.version}" in err  # the resolved version is printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.parquet"]  # no partial left


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_each_output_format_holds_the_same_answers(fmt, store, reviews, inputs, reference, tmp_path):
    out = tmp_path / f"predictions.{fmt}"
    code, summary, err = cli("predict", "-i", inputs["jsonl"], "-o", out, "--keep-columns", "id", "--no-progress")
    assert code == 0, err
    frame = pd.read_csv(out, dtype={"model_version": str}) if fmt == "csv" else pd.read_json(
        out, lines=True, dtype={"model_version": str})
    check(frame, expected(reviews, "jsonl", reference), store.version)
    meta = json.loads((tmp_path / f"predictions.{fmt}.meta.json").read_text())
    assert meta["model"]["version"] == store.version and meta["rows"] == summary["rows"] == len(frame)


def test_long_text_settings_are_the_servers(store, reviews, inputs, tmp_path):
    """``-p long_text_strategy truncate`` scores as the server with LONG_TEXT_STRATEGY=truncate does."""
    out = tmp_path / "truncated.parquet"
    code, summary, err = cli("predict", "-i", inputs["parquet"], "-o", out, "-p", "long_text_strategy", "truncate",
                             "--no-progress")
    assert code == 0, err
    assert summary["scoring"]["long_text_strategy"] == "truncate"
    assert summary["model"]["scoring_overrides"] == {"long_text_strategy": "truncate"}
    truncating = load_scorer(store.model_uri, DEFAULT_BACKEND, long_text_strategy="truncate")
    frame = pd.read_parquet(out).dropna(subset=["confidence"])
    texts = [str(reviews[0][i]) for i in frame["row"]]
    assert frame["confidence"].tolist() == score_cells(truncating, texts, MAX_TEXT_CHARS).confidence
    cells, kinds = reviews
    long_row = max((i for i, k in enumerate(kinds) if k is None), key=lambda i: len(cells[i]))
    sliding = score_cells(load_scorer(store.model_uri, DEFAULT_BACKEND), [cells[long_row]], MAX_TEXT_CHARS)
    assert abs(frame.set_index("row")["confidence"][long_row] - sliding.confidence[0]) > 1e-4  # it did change


# -- refused before any work ---------------------------------------------------------------------------------
def test_bad_invocations_exit_2_naming_the_flag_before_any_work(store, inputs, tmp_path):
    bad_parquet = tmp_path / "bad.parquet"
    bad_parquet.write_bytes(b"not a parquet file at all")
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("id,text\n1,fine\n2,too,many,fields\n")
    other = tmp_path / "other.csv"
    pd.DataFrame({"review": ["a"]}).to_csv(other, index=False)
    taken = tmp_path / "taken.parquet"
    taken.write_text("an earlier result")
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    out = tmp_path / "out.parquet"
    cases = [
        (["-i", tmp_path / "nope.csv", "-o", out], "--input: "),
        (["-i", bad_parquet, "-o", out], "--input: cannot read"),
        (["-i", ragged, "-o", out], "--input: cannot read"),
        (["-i", tmp_path / "reviews.xlsx", "-o", out], "--input: "),
        (["-i", other, "-o", out], "--text-column: "),
        (["-i", inputs["csv"], "-o", out, "--keep-columns", "id,stars"], "--keep-columns: "),
        (["-i", inputs["csv"], "-o", out, "--keep-columns", "sentiment"], "--keep-columns: "),
        (["-i", inputs["csv"], "-o", tmp_path / "out.xlsx"], "--output: cannot tell the format"),
        (["-i", inputs["csv"], "-o", taken], "--output: "),
        (["-i", inputs["csv"], "-o", tmp_path / "no-folder" / "out.csv"], "--output: "),
        (["-i", inputs["csv"], "-o", out, "--model-uri", "models:/nope@production"], "--model-uri: "),
        (["-i", inputs["csv"], "-o", out, "--model-uri", tmp_path / "no-such-model"], "--model-uri: "),
        (["-i", inputs["csv"], "-o", out, "--model-uri", not_a_model], "--model-uri: cannot load"),
        (["-i", inputs["csv"], "-o", out, "--chunk-rows", "0"], "--chunk-rows: "),
        (["-i", inputs["csv"], "-o", out, "-p", "epochs", "2"], "not taken by `predict`"),
    ]
    for args, message in cases:
        code, summary, err = cli("predict", *args, "--no-progress")
        assert (code, summary) == (2, None), (args, err)
        assert err.splitlines()[-1].startswith("error: ") and message in err, (args, err)
        assert "scoring" not in err, args  # no progress bar: nothing was scored
    assert not out.exists() and not (tmp_path / "out.parquet.partial").exists()
    assert taken.read_text() == "an earlier result"


# -- the same answer as /predict -----------------------------------------------------------------------------
@pytest.mark.e2e
def test_the_file_path_answers_as_predict_does(store, reviews, inputs, tmp_path):
    out = tmp_path / "predictions.parquet"
    code, _, err = cli("predict", "-i", inputs["jsonl"], "-o", out, "--keep-columns", "id", "--no-progress")
    assert code == 0, err
    rows = pd.read_parquet(out).sort_values("row")
    server = Server({"MLFLOW_TRACKING_URI": store.tracking_uri, "SENTIMENT_MLOPS_HOME": str(tmp_path),
                     "RELOAD_INTERVAL_S": "0", "INFERENCE_DB": str(tmp_path / "inference.db")}, tmp_path / "app.log")
    try:
        server.wait_ready()
        for (cell, _), row in zip(zip(*reviews, strict=True), rows.itertuples(), strict=True):
            response = server.client.post("/predict", json={} if cell is MISSING else {"text": cell})
            if cell_value(row.error) is not None:
                assert response.status_code == 422, (row.row, row.error, response.text)
                continue
            assert response.status_code == 200, (row.row, response.text)
            body = response.json()
            assert body["sentiment"] == row.sentiment, row.row
            assert abs(body["confidence"] - row.confidence) <= 1e-6, (row.row, body, row.confidence)
            assert body["model_version"] == row.model_version
    finally:
        server.stop()


# -- killed and resumed --------------------------------------------------------------------------------------
def _chunks_done(state: Path) -> int:
    try:
        return json.loads(state.read_text())["chunks_done"]
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.e2e
def test_a_killed_run_leaves_no_output_and_resume_finishes_it(store, reviews, tmp_path):
    cells = [c for c in reviews[0] if c is not MISSING] * 8  # ~2,100 rows, 42 chunks
    big = write_inputs(tmp_path / "in", cells)["csv"]
    out = tmp_path / "out" / "predictions.csv"
    out.parent.mkdir()
    state = out.with_name(out.name + ".partial") / "state.json"
    args = ["predict", "-i", big, "-o", out, "--keep-columns", "id", "--chunk-rows", "50", "--no-progress"]
    log = (tmp_path / "killed.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "pipelines", *map(str, args)], stdout=log, stderr=log,
                            env=child_env({"MLFLOW_TRACKING_URI": store.tracking_uri}))
    try:
        wait_for(lambda: _chunks_done(state) >= 1 or proc.poll() is not None, timeout=300, interval=0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(60)
        log.close()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()
    done = json.loads(state.read_text())
    total = -(-len(cells) // 50)
    assert 1 <= done["chunks_done"] < total
    # nothing named like the output, and nothing complete-looking: the partial folder and the lock no one holds
    assert sorted(p.name for p in out.parent.iterdir()) == ["predictions.csv.lock", "predictions.csv.partial"]

    code, _, err = cli(*args[:-3], "--chunk-rows", "40", "--resume", "--no-progress")  # another job: refused
    assert code == 2 and "--resume: " in err and "chunk_rows" in err
    code, summary, err = cli(*args, "--resume")
    assert code == 0, err
    assert summary["resumed_after_rows"] == done["rows_done"] > 0 and summary["rows"] == len(cells)
    assert sorted(p.name for p in out.parent.iterdir()) == ["predictions.csv", "predictions.csv.meta.json"]

    whole = tmp_path / "whole.csv"
    code, whole_summary, err = cli(*args[:4], whole, *args[5:])
    assert code == 0, err
    assert whole_summary["error_kinds"] == summary["error_kinds"]
    pd.testing.assert_frame_equal(pd.read_csv(out), pd.read_csv(whole))
