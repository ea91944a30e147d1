"""End to end: the real notebooks run by Papermill against a temporary SQLite MLflow store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import nbformat
import pytest
import torch
from conftest import LEARNED_PARAMS
from mlflow import MlflowClient

from pipelines import cli
from pipelines.config import build_config
from pipelines.flow.runner import NOTEBOOKS_DIR, StepFailed, run_pipeline
from pipelines.flow.steps import FLOWS
from pipelines.registry import promotion, rule, versions
from scoring.config import AGGREGATIONS
from scoring.version_tags import METRIC_NAMES

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parent.parent
TINY = {"epochs": 1, "max_length": 32, "min_metric": 0.0, "batch_size": 16}


def _cli(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipelines", *args], capture_output=True, text=True, cwd=cwd,
        env={**os.environ, **(env or {})}, timeout=900,
    )


def _step_runs(parent_run_id: str) -> dict[str, mlflow.entities.Run]:
    runs = mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'", output_format="list",
                              search_all_experiments=True)
    return {r.data.tags["step"]: r for r in runs}


def test_full_pipeline_on_tiny_parameters(mlflow_uri, tiny_csv, tmp_path):
    cfg = build_config({**TINY, "dataset": str(tiny_csv)})
    result = run_pipeline(cfg, output_dir=tmp_path / "out", progress=False)

    prod = versions.alias_version("sentiment", "production")
    assert prod is not None and str(prod.version) == str(result.steps["train"]["model_version"]) == "1"
    assert prod.tags["promotion.decision"] == "promoted" and prod.tags["data_digest"]
    assert prod.tags["git_commit"] and prod.tags["run_id"]
    assert prod.tags["aggregation"] in AGGREGATIONS and 0 < float(prod.tags["long_threshold"]) < 1  # the scoring
    assert (prod.tags["layers"], prod.tags["teacher_layers"]) == ("4", "6"), "the default: a distilled student"

    client = MlflowClient()
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    runs = _step_runs(result.parent_run_id)
    assert set(runs) == set(FLOWS["training"])
    for step, run in runs.items():
        assert run.info.status == "FINISHED", step
        files = {a.path for a in client.list_artifacts(run.info.run_id, "notebook")}
        assert files == {f"notebook/{step}.ipynb", f"notebook/{step}.html"}, step
    html = (tmp_path / "out" / "evaluate.html").read_text()
    assert "<html" in html.lower() and "Against the baselines" in html

    metrics = runs["evaluate"].data.metrics
    for name in ("accuracy", "precision", "recall", "f1", "roc_auc"):
        assert 0.0 <= metrics[f"test_{name}"] <= 1.0
        assert 0.0 <= float(prod.tags[f"eval.{name}"]) <= 1.0
        assert 0.0 <= float(prod.tags[f"eval.onnx-int8.{name}"]) <= 1.0  # the served runtime, what the gate read
    assert prod.tags["promotion.backend"] == "onnx-int8"
    assert 0.0 <= float(prod.tags["eval.onnx-int8.label_agreement"]) <= 1.0
    assert "baseline_tfidf_logreg_accuracy" in metrics and "baseline_majority_accuracy" in metrics
    train_metrics = runs["train"].data.metrics
    assert {"train_loss", "val_accuracy", "threshold"} <= set(train_metrics)
    train_artifacts = {a.path for a in client.list_artifacts(runs["train"].info.run_id)}
    assert "model" in train_artifacts or any(p.startswith("plots") for p in train_artifacts)
    assert runs["train"].inputs.dataset_inputs, "the data is logged with mlflow.log_input"


def test_worse_challenger_is_refused(learned_copy, tmp_path):
    """A barely trained model does not replace the learned production model (no evaluate step: the gate scores
    a candidate that no evaluation recorded itself, on the served runtime)."""
    before = versions.alias_version(learned_copy.model_name, "production").version
    cfg = build_config({"max_train_samples": 64, "epochs": 1, "max_length": 32, "learning_rate": 1e-6,
                        "tune_threshold": False, "distill_layers": 0, "calibrate_long_texts": False})
    result = run_pipeline(cfg, steps=("train", "promote"), output_dir=tmp_path / "out", progress=False)
    assert result.steps["promote"]["promoted"] is False
    assert versions.alias_version(learned_copy.model_name, "production").version == before
    candidate = versions.get_version(learned_copy.model_name, result.steps["train"]["model_version"])
    assert candidate.tags["promotion.decision"] == "rejected"
    assert "does not beat production" in candidate.tags["promotion.reason"]
    assert json.loads(candidate.tags["promotion.deltas"])["accuracy"] < 0


def test_injected_failure_leaves_alias_and_logs_the_notebook(learned_copy, tiny_csv, tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    for nb in NOTEBOOKS_DIR.glob("*.ipynb"):
        (notebooks / nb.name).write_bytes(nb.read_bytes())
    evaluate = nbformat.read(notebooks / "evaluate.ipynb", as_version=4)
    evaluate.cells.insert(3, nbformat.v4.new_code_cell('raise RuntimeError("injected failure")'))
    nbformat.write(evaluate, notebooks / "evaluate.ipynb")
    before = versions.alias_version(learned_copy.model_name, "production").version

    proc = _cli("run", "--notebooks-dir", str(notebooks), "--output-dir", str(tmp_path / "out"),
                "--steps", "train,evaluate,promote", *[a for k, v in TINY.items() for a in ("-p", k, str(v))],
                "-p", "dataset", str(tiny_csv))
    assert proc.returncode != 0
    assert "step 'evaluate' failed" in proc.stderr and "injected failure" in proc.stderr
    assert versions.alias_version(learned_copy.model_name, "production").version == before
    assert not (tmp_path / "out" / "promote.ipynb").exists(), "later steps must not run"

    failed = mlflow.search_runs(filter_string="tags.step = 'evaluate'", output_format="list",
                                search_all_experiments=True)
    failed = [r for r in failed if r.info.status == "FAILED"]
    assert len(failed) == 1 and "injected failure" in failed[0].data.tags["error"]
    files = {a.path for a in MlflowClient().list_artifacts(failed[0].info.run_id, "notebook")}
    assert files == {"notebook/evaluate.ipynb", "notebook/evaluate.html"}
    logged = MlflowClient().download_artifacts(failed[0].info.run_id, "notebook/evaluate.ipynb", str(tmp_path))
    assert "injected failure" in Path(logged).read_text()
    parent_id = failed[0].data.tags["mlflow.parentRunId"]
    assert MlflowClient().get_run(parent_id).info.status == "FAILED"


def test_step_failed_is_raised_in_process(mlflow_uri, tiny_csv, tmp_path):
    notebooks = tmp_path / "nb"
    notebooks.mkdir()
    eda = nbformat.read(NOTEBOOKS_DIR / "eda.ipynb", as_version=4)
    eda.cells.append(nbformat.v4.new_code_cell("1 / 0"))
    nbformat.write(eda, notebooks / "eda.ipynb")
    with pytest.raises(StepFailed, match="eda"):
        run_pipeline(build_config({"dataset": str(tiny_csv)}), steps=("eda",), output_dir=tmp_path / "o",
                     notebooks_dir=notebooks, progress=False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "epochs", "0"], "parameter epochs"),
        (["-p", "epoch", "2"], "unknown parameter(s): epoch"),
        (["-p", "dataset", "/nonexistent/reviews.csv"], "parameter dataset: /nonexistent/reviews.csv does not exist"),
        (["-p", "promotion_metric", "loss"], "parameter promotion_metric"),
        (["-p", "device", "cuda"], "parameter device: cuda asked for, but torch"),
        (["-p", "device", "tpu"], "parameter device"),
        (["-p", "num_processes", "512"], "parameter num_processes: 512 processes asked for, but this machine has"),
        (["-p", "precision", "fp16"], "parameter precision: fp16 needs a GPU"),
        (["-p", "gradient_accumulation_steps", "3"], "parameter batch_size: 32 is the effective batch"),
    ],
)
def test_bad_parameters_are_refused_before_training(mlflow_uri, args, message, capsys):
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert cli.main(["run", *args]) == 2  # in process: the CLI's own main (one case below runs `python -m`)
    assert message in capsys.readouterr().err
    assert MlflowClient().search_experiments(filter_string="name = 'sentiment'") == []


def test_the_command_line_refuses_a_bad_parameter_with_exit_status_2(mlflow_uri):
    proc = _cli("run", "-p", "epochs", "0")
    assert proc.returncode == 2 and "parameter epochs" in proc.stderr, proc.stderr
    assert MlflowClient().search_experiments(filter_string="name = 'sentiment'") == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("review,stars\ngreat,5\nbad,1\n", "parameter text_column"),
        ("text,label\ngreat,5\nbad,1\nok,3\n", "parameter label_column: column 'label' is not binary"),
        ("text,label\n", "parameter dataset"),
    ],
)
def test_bad_csv_is_refused_before_training(mlflow_uri, tmp_path, content, message, capsys):
    path = tmp_path / "reviews.csv"
    path.write_text(content)
    assert cli.main(["run", "-p", "dataset", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert MlflowClient().search_experiments(filter_string="name = 'sentiment'") == []


def test_papermill_standalone_train_as_on_the_card(mlflow_uri, tiny_csv, tmp_path):
    """`papermill notebooks/train.ipynb out.ipynb -p epochs 1` works from the repo root."""
    out = tmp_path / "out.ipynb"
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "papermill"), "notebooks/train.ipynb", str(out), "-p", "epochs", "1",
         "-p", "dataset", str(tiny_csv), "-p", "max_length", "32"],
        cwd=ROOT, capture_output=True, text=True, timeout=900, env=os.environ,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    mv = versions.get_version("sentiment")
    assert str(mv.version) == "1" and versions.alias_version("sentiment", "production") is None
    run = MlflowClient().get_run(mv.run_id)
    assert run.info.status == "FINISHED" and run.data.params["epochs"] == "1"


def test_gate_compares_the_served_runtime(learned_copy):
    """A candidate that is better in PyTorch but worse as served (int8) is refused; gating on torch promotes it."""
    name = learned_copy.model_name
    v1 = versions.alias_version(name, "production")
    digest = v1.tags["eval.test_digest"]
    v2 = mlflow.register_model(f"runs:/{v1.run_id}/model", name)
    torch_scores = versions.eval_metrics(v1, digest)
    with mlflow.start_run(run_name="evaluate v2") as run:  # an evaluation run that scored v2 so
        versions.record_evaluation(name, v2.version, {k: v + 0.01 for k, v in torch_scores.items()}, digest,
                                   run.info.run_id)
        versions.record_evaluation(name, v2.version, {k: 0.5 for k in torch_scores}, digest, run.info.run_id,
                                   backend="onnx-int8")
    cfg = build_config({**LEARNED_PARAMS, "tracking_uri": learned_copy.tracking_uri, "model_version": str(v2.version)})

    # v1 has no int8 scores yet: scored now, recorded
    candidate, champion, scores, _ = promotion.gather(cfg.gate, cfg.data, cfg.registry)
    assert scores[f"production v{v1.version}"]["accuracy"] > 0.7, scores
    decision = promotion.decide_and_apply(cfg.gate, cfg.registry, candidate, champion, scores)
    assert not decision.promote and "onnx-int8 runtime" in decision.reasons[0]
    assert versions.get_version(name, v2.version).tags["promotion.backend"] == "onnx-int8"
    assert versions.eval_metrics(versions.get_version(name, v1.version), digest, "onnx-int8") is not None
    row = next(r for r in versions.history(name) if str(r["version"]) == str(v2.version))
    assert row["eval.onnx-int8.accuracy"] == "0.500000" and row["promotion.backend"] == "onnx-int8"

    torch_cfg = cfg.model_copy(update={"promotion_backend": "torch"})
    gathered = promotion.gather(torch_cfg.gate, torch_cfg.data, torch_cfg.registry)[:3]
    decision = promotion.decide_and_apply(torch_cfg.gate, torch_cfg.registry, *gathered)
    assert decision.promote and str(versions.alias_version(name, "production").version) == str(v2.version)


def test_the_gate_reads_scores_from_evaluation_runs_not_from_editable_tags(learned_copy):
    """Forged ``eval.*`` tags (higher scores, a run id pointed at the champion's evaluation) and a value appended
    to a recorded metric change nothing: the gate reads each version's scores from the run that evaluated it,
    the first value of each metric, and scores a version without such a record itself."""
    name = learned_copy.model_name
    v1 = versions.alias_version(name, "production")
    digest = v1.tags["eval.test_digest"]
    recorded = versions.eval_metrics(v1, digest)
    assert recorded is not None and recorded["accuracy"] > 0.7, "the fixture's evaluation run holds v1's scores"
    _, keys = versions._record_keys(name, v1.version, "torch")
    MlflowClient().log_metric(v1.tags["eval.run_id"], keys["accuracy"], 0.999)  # appended later: not what it measured
    assert versions.eval_metrics(versions.get_version(name, v1.version), digest) == recorded

    v2 = mlflow.register_model(f"runs:/{v1.run_id}/model", name)  # the same weights as production
    versions.set_tags(name, v2.version, {**{f"eval.{m}": "0.990000" for m in METRIC_NAMES},
                                         "eval.test_digest": digest, "eval.run_id": v1.tags["eval.run_id"]})
    assert versions.eval_metrics(versions.get_version(name, v2.version), digest) is None, "v1's run scored v1 only"
    cfg = build_config({**LEARNED_PARAMS, "tracking_uri": learned_copy.tracking_uri, "model_version": str(v2.version),
                        "promotion_backend": "torch"})
    candidate, champion, scores, _ = promotion.gather(cfg.gate, cfg.data, cfg.registry)
    assert scores[f"candidate v{v2.version}"]["accuracy"] == pytest.approx(recorded["accuracy"], abs=1e-6), \
        "scored now, not the forged 0.99"
    decision = promotion.decide_and_apply(cfg.gate, cfg.registry, candidate, champion, scores)
    assert not decision.promote and any("does not beat production" in r for r in decision.reasons), decision.reasons
    assert str(versions.alias_version(name, "production").version) == str(v1.version)


def test_rollback_moves_production_back(learned_copy):
    name = learned_copy.model_name
    v1 = versions.alias_version(name, "production")
    v2 = mlflow.register_model(f"runs:/{v1.run_id}/model", name)
    metrics = versions.eval_metrics(v1, v1.tags["eval.test_digest"])
    better = {k: min(1.0, v + 0.01) for k, v in metrics.items()}
    decision = rule.decide(better, metrics, "accuracy", 0.002, 0.5, v2.version, v1.version)
    promotion.apply_decision(name, "production", decision)
    assert str(versions.alias_version(name, "production").version) == str(v2.version)

    proc = _cli("rollback")
    assert proc.returncode == 0, proc.stderr
    assert f"v{v2.version} -> v{v1.version}" in proc.stdout
    now = versions.alias_version(name, "production")
    assert now.version == v1.version and now.tags["rollback.from_version"] == str(v2.version)
    rows = {str(r["version"]): r for r in versions.history(name)}
    assert rows[str(v1.version)]["aliases"] == "production" and rows[str(v2.version)]["aliases"] == ""
    again = _cli("rollback")
    assert again.returncode == 2 and "no previous version" in again.stderr
