"""Sweeps end to end: `python -m pipelines sweep` worker processes, Papermill's train notebook, a SQLite
MLflow store and a SQLite Optuna study, on tiny parameters (a trial is one short train step)."""

from __future__ import annotations

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState
from test_sweeps import _fixed, _storage, _sweep

pytestmark = pytest.mark.e2e


def _nested(client: MlflowClient, run_id: str, step: str | None = None) -> list:
    run = client.get_run(run_id)
    where = f"tags.mlflow.parentRunId = '{run_id}'" + (f" and tags.step = '{step}'" if step else "")
    return client.search_runs([run.info.experiment_id], where)


def _notebooks(client: MlflowClient, run_id: str) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, "notebook")}


def test_grid_sweep_with_two_workers_runs_each_point_once_nested_with_notebooks(mlflow_uri, tiny_csv, tmp_path):
    out = _sweep("--study", "grid", "--workers", "2", "-p", "learning_rate", "5e-5,1e-4", *_fixed(tiny_csv),
                 tmp_path=tmp_path)
    study = optuna.load_study(study_name="grid", storage=_storage(mlflow_uri))
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2, out.stderr[-3000:]
    assert sorted(t.params["learning_rate"] for t in trials) == [5e-5, 1e-4], "each grid point once"
    assert len({t.user_attrs["worker"] for t in trials}) == 2, "both worker processes ran a trial"

    client = MlflowClient()
    parent_id = study.user_attrs["parent_run_id"]
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["step"] == "sweep"
    assert {"sweep/trials.csv", "sweep/parallel_coordinates.png", "sweep/best.json"} <= {
        a.path for a in client.list_artifacts(parent_id, "sweep")}
    assert parent.data.metrics["best_val_accuracy"] == study.best_value
    pipelines = _nested(client, parent_id)
    trial_runs = [r for r in pipelines if "sweep_trial" in r.data.tags]
    assert {r.info.run_id for r in trial_runs} == {t.user_attrs["pipeline_run_id"] for t in trials}
    for run in trial_runs:
        train = _nested(client, run.info.run_id, "train")[0]
        assert _notebooks(client, train.info.run_id) == {"notebook/train.ipynb", "notebook/train.html"}
        trial = trials[int(run.data.tags["sweep_trial"])]
        assert float(train.data.params["learning_rate"]) == trial.params["learning_rate"]
        assert train.data.metrics["val_accuracy"] == trial.value
    # the report notebook, nested too, reads the study and names the best trial
    report = next(r for r in pipelines if "sweep_trial" not in r.data.tags)
    step = _nested(client, report.info.run_id, "sweep")[0]
    assert _notebooks(client, step.info.run_id) == {"notebook/sweep.ipynb", "notebook/sweep.html"}
    assert step.data.tags["result.best_trial"] == str(study.best_trial.number)
    assert "plots/parallel_coordinates.png" in {a.path for a in client.list_artifacts(step.info.run_id, "plots")}


def test_a_trial_below_the_median_after_an_epoch_is_pruned_and_registers_nothing(mlflow_uri, tiny_csv, tmp_path):
    # trial 0 learns (1e-4); trial 1's rate wrecks the encoder in its first steps, so after its epoch its
    # validation ROC-AUC is below trial 0's (the median of one) and the pruner stops it
    out = _sweep("--study", "prune", "-p", "learning_rate", "1e-4,0.5", "--metric", "val_roc_auc",
                 "--prune-startup", "1", *_fixed(tiny_csv), tmp_path=tmp_path)
    study = optuna.load_study(study_name="prune", storage=_storage(mlflow_uri))
    good, bad = study.get_trials()
    assert good.state == TrialState.COMPLETE and good.params["learning_rate"] == 1e-4, out.stderr[-3000:]
    assert bad.state == TrialState.PRUNED, out.stderr[-3000:]
    assert bad.user_attrs["pruned_at"]["epoch"] == 1 and list(bad.intermediate_values) == [1]
    assert bad.intermediate_values[1] < good.intermediate_values[1]
    assert "model_version" not in bad.user_attrs and "pruned" in out.stderr

    client = MlflowClient()
    assert [str(v.version) for v in client.search_model_versions("name = 'sentiment'")] == [good.user_attrs[
        "model_version"]], "the pruned trial registered nothing"
    pruned = next(r for r in _nested(client, study.user_attrs["parent_run_id"])
              if r.data.tags.get("sweep_trial") == str(bad.number))
    train = _nested(client, pruned.info.run_id, "train")[0]
    for run in (pruned, client.get_run(train.info.run_id)):
        assert run.info.status == "KILLED" and run.data.tags["sweep_pruned"] == "true"
    assert _notebooks(client, train.info.run_id) == {"notebook/train.ipynb", "notebook/train.html"}
    assert "best_val_roc_auc" in client.get_run(study.user_attrs["parent_run_id"]).data.metrics


def test_tpe_sweep_samples_the_range_and_a_resumed_finished_study_runs_nothing_again(mlflow_uri, tiny_csv,
                                                                                      tmp_path):
    _sweep("--study", "tpe", "--trials", "2", "-p", "learning_rate", "3e-5:2e-4:log", "--no-prune",
           *_fixed(tiny_csv), tmp_path=tmp_path)
    study = optuna.load_study(study_name="tpe", storage=_storage(mlflow_uri))
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert all(3e-5 <= t.params["learning_rate"] <= 2e-4 for t in trials)
    client = MlflowClient()
    for trial in trials:
        train = _nested(client, trial.user_attrs["pipeline_run_id"], "train")[0]
        assert _notebooks(client, train.info.run_id) == {"notebook/train.ipynb", "notebook/train.html"}

    again = _sweep("--resume", "tpe", tmp_path=tmp_path)
    assert len(optuna.load_study(study_name="tpe", storage=_storage(mlflow_uri)).get_trials()) == 2, again.stderr
