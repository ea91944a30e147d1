"""The ONNX Runtime backend: the export matches PyTorch, is logged with the version, and serves."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import mlflow
import numpy as np
import onnx
import pandas as pd
import pytest
from conftest import NEGATIVE_REVIEW, POSITIVE_REVIEW

from pipelines.train import onnx_logging
from scoring import tracking
from scoring.identity import resolve_version
from scoring.model_files import load_components
from scoring.onnx_convert import EXPORT_ATTENTION, export_onnx, forward_input_names
from scoring.onnx_runtime import OnnxScorer, load_onnx_scorer, make_session
from scoring.runtimes import load_scorer
from scoring.scorer import Scorer
from tools.model_store import Store, sqlite_uri

TOLERANCE = 1e-4
EXPECTED_INPUTS = ["input_ids", "attention_mask", "token_type_ids"]  # BertForSequenceClassification.forward order


@pytest.fixture(scope="module")
def texts(rt_frame: pd.DataFrame) -> list[str]:
    """Real snippets of all lengths, plus two full reviews long enough for several windows."""
    sample = rt_frame.sample(40, random_state=1)["text"].tolist()
    reviews = [" ".join(rt_frame["text"].iloc[i : i + 12]) for i in (0, 100)]
    return [POSITIVE_REVIEW, NEGATIVE_REVIEW, *sample, *reviews]


@pytest.fixture(scope="module")
def logged(learned_store: Store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """A copy of the learned store whose production version has its ONNX export logged (files in a temp run)."""
    folder = tmp_path_factory.mktemp("onnx-store")
    shutil.copy(learned_store.root / "mlflow.db", folder / "mlflow.db")
    uri = sqlite_uri(folder)
    previous = mlflow.get_tracking_uri()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        tracking.setup(uri)
        experiment = mlflow.create_experiment("onnx-test", artifact_location=(folder / "artifacts").as_uri())
        run_id = mlflow.MlflowClient().create_run(experiment).info.run_id  # keeps the shared cache's run untouched
        tags = onnx_logging.log_onnx(learned_store.model_uri, run_id=run_id)
        yield learned_store.model_uri, tags
    mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="module")
def torch_parts(logged) -> tuple[object, object]:
    return load_components(logged[0])


def test_inputs_follow_the_forward_signature_not_the_tokenizer(torch_parts) -> None:
    model, tokenizer = torch_parts
    assert list(tokenizer.model_input_names) != EXPECTED_INPUTS  # the trap: input_ids, token_type_ids, attention_mask
    assert forward_input_names(model, tokenizer) == EXPECTED_INPUTS


def test_logged_export_matches_torch(logged, torch_parts, texts: list[str]) -> None:
    _, tags = logged
    model, tokenizer = torch_parts
    assert tags["onnx.inputs"] == ",".join(EXPECTED_INPUTS)
    assert float(tags["onnx.max_abs_diff"]) <= TOLERANCE
    version = mlflow.MlflowClient().get_model_version_by_alias("sentiment", "production")
    assert version.tags["onnx.path"] == "onnx/model.onnx" and version.tags["onnx.int8_path"] == "onnx/model.int8.onnx"
    path = mlflow.artifacts.download_artifacts(artifact_uri=f"runs:/{tags['onnx.run_id']}/onnx/model.onnx")
    session = make_session(path)
    assert [i.name for i in session.get_inputs()] == EXPECTED_INPUTS
    diff = onnx_logging.max_abs_diff(model, tokenizer, session, texts)
    assert diff["logits"] <= TOLERANCE and diff["p_positive"] <= TOLERANCE, diff


def test_backends_score_like_torch(logged, torch_parts, texts: list[str]) -> None:
    model_uri, _ = logged
    expected = Scorer(*torch_parts).predict_proba(texts)
    onnx = load_scorer(model_uri, backend="onnx")
    assert isinstance(onnx, OnnxScorer)
    np.testing.assert_allclose(onnx.predict_proba(texts), expected, atol=TOLERANCE)
    int8 = load_scorer(model_uri, backend="onnx-int8").predict_proba(texts)
    assert np.abs(int8 - expected).mean() < 0.05 and np.abs(int8 - expected).max() < 0.35  # int8 is approximate
    assert np.mean((int8 >= 0.5) == (expected >= 0.5)) >= 0.9
    short = load_scorer(model_uri, backend="onnx", long_text_strategy="truncate")
    assert short.scoring.long_text_strategy == "truncate"


def test_calls_side_by_side_answer_as_calls_in_turn(logged, texts: list[str]) -> None:
    """ONNX_PARALLEL: a scoring call's int8 calls (one per text) run at once, one thread each, with the answers of
    one call at a time on all cores."""
    model_uri, _ = logged
    in_turn = load_scorer(model_uri, backend="onnx-int8", threads=2, parallel=1)
    side_by_side = load_scorer(model_uri, backend="onnx-int8", threads=1, parallel=2)
    assert (in_turn.parallel, side_by_side.parallel) == (1, 2) and in_turn.side_session is in_turn.session
    expected = in_turn.predict_proba(texts)
    np.testing.assert_array_equal(side_by_side.predict_proba(texts), expected)
    # scoring calls of their own at once (the micro-batcher's overlapping batches): the same answers
    assert (in_turn.calls_at_once, side_by_side.calls_at_once) == (1, 2)
    assert load_scorer(model_uri, backend="onnx", parallel=2).calls_at_once == 1  # fp32 batches texts together
    chunks = [texts[i::4] for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(side_by_side.predict_proba, chunks * 3))
    for i, answer in enumerate(answers):
        np.testing.assert_array_equal(answer, expected[i % 4 :: 4])
    assert side_by_side.in_flight.count == 0


def test_the_export_traces_eager_attention_and_leaves_the_model_as_it_was(torch_parts, tmp_path, texts) -> None:
    """EXPORT_ATTENTION: the graph ONNX Runtime runs faster (no SDPA mask ops), with the same logits as PyTorch."""
    model, tokenizer = torch_parts
    own = model.config._attn_implementation
    assert own != EXPORT_ATTENTION == "eager"
    ops = {}
    for attention in (EXPORT_ATTENTION, "sdpa"):
        path = export_onnx(model, tokenizer, tmp_path / f"{attention}.onnx", attention=attention)
        assert model.config._attn_implementation == own and not model.training
        ops[attention] = {node.op_type for node in onnx.load(str(path)).graph.node}
        diff = onnx_logging.max_abs_diff(model, tokenizer, make_session(path), texts)
        assert diff["logits"] <= TOLERANCE, (attention, diff)
    assert "IsNaN" in ops["sdpa"] and "IsNaN" not in ops[EXPORT_ATTENTION]


def test_without_a_logged_export_it_exports_on_the_fly(logged, torch_parts) -> None:
    texts = [POSITIVE_REVIEW, NEGATIVE_REVIEW]
    source = mlflow.MlflowClient().get_model_version_by_alias("sentiment", "production").source
    folder = mlflow.artifacts.download_artifacts(artifact_uri=source)  # a plain model folder: no onnx/ in it
    assert resolve_version(folder) is None
    scorer = load_onnx_scorer(folder)
    np.testing.assert_allclose(scorer.predict_proba(texts), Scorer(*torch_parts).predict_proba(texts), atol=TOLERANCE)
    assert scorer.predict_proba(texts).round().tolist() == [1.0, 0.0]
