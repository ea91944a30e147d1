"""Sweeps (python -m pipelines sweep) on real components: the CLI, Papermill's train notebook, a SQLite
MLflow store and a SQLite Optuna study, on tiny parameters."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from pipelines import cli
from pipelines.sweep import study as studies

ROOT = Path(__file__).resolve().parent.parent
# the tiny settings of test_pipeline_e2e, and the costly extras off: a trial is one short train step
TINY = {"epochs": "1", "max_length": "32", "batch_size": "16", "distill_layers": "0", "onnx_export": "false",
        "calibrate_long_texts": "false", "average_checkpoints": "false"}


def _sweep(*args: str, tmp_path: Path, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "SENTIMENT_MLOPS_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "pipelines", "sweep", *args], capture_output=True, text=True,
                            cwd=ROOT, env=env, timeout=900, **kwargs)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def _fixed(dataset: Path) -> list[str]:
    return [a for name, value in {**TINY, "dataset": str(dataset)}.items() for a in ("-p", name, value)]


def _storage(mlflow_uri: str) -> str:
    return f"sqlite:///{Path(mlflow_uri.removeprefix('sqlite:///')).parent / 'optuna.db'}"


@pytest.mark.parametrize(("args", "named"), [
    (["-p", "learning_rate", "1e-5:1e-4:log", "-p", "epochs", "2,3"], "'learning_rate': a grid sweep takes choices"),
    (["-p", "epochs", "2,3", "--metric", "test_accuracy"], "--metric 'test_accuracy'"),
    (["-p", "warmup_ratio", "0.2:0.1", "--trials", "3"], "'warmup_ratio': the range '0.2:0.1' needs lo < hi"),
    (["-p", "learning_rate", "0:1e-4:log", "--trials", "3"], "'learning_rate': a log range needs lo > 0"),
    (["-p", "epochs", "2,x"], "epochs"),
    (["-p", "dataset", "a.csv,b.csv"], "'dataset': fixed for the whole sweep"),
    (["-p", "no_such", "1,2"], "'no_such': not a pipeline parameter"),
])
def test_bad_space_or_metric_is_refused_before_any_trial(args, named, mlflow_uri, tmp_path, capsys):
    assert cli.main(["sweep", *args]) == 2
    err = capsys.readouterr().err
    assert named in err, err
    assert not (tmp_path / "optuna.db").exists(), "no study was created"
    assert not MlflowClient().search_runs(["0"]), "no run was created"


CLAIM = """
import socket, sys
from pipelines.sweep import study as studies
study = studies.open_study("claims", sys.argv[1])
while True:
    with studies.claim_lock(sys.argv[1]):
        trial = studies.claim_waiting(study)
    if trial is None:
        break
    trial.set_user_attr("worker", studies.worker_id())
    study.tell(trial, 0.0)
"""


def claimed_by_two_workers(storage: str, points: int = 40) -> None:
    """Queue ``points`` trials in a new study in ``storage``; two worker processes claim them: each exactly once,
    and both take some."""
    study = studies.open_study("claims", storage, "maximize")
    for x in range(points):
        study.enqueue_trial({"x": x})
    workers = [subprocess.Popen([sys.executable, "-c", CLAIM, storage], cwd=ROOT) for _ in range(2)]
    assert [w.wait(timeout=300) for w in workers] == [0, 0]
    trials = study.get_trials()
    assert len(trials) == points and all(t.state == TrialState.COMPLETE for t in trials), "no trial ran twice"
    assert sorted(t.system_attrs["fixed_params"]["x"] for t in trials) == list(range(points))
    assert len({t.user_attrs["worker"] for t in trials}) == 2, "both processes claimed trials"


ASK = """
import sys
from pipelines.sweep import command, study as studies
study = studies.open_study("asks", sys.argv[1])
while (trial := command._next_trial(study, sys.argv[1], grid=False)) is not None:
    trial.set_user_attr("worker", studies.worker_id())
    study.tell(trial, trial.suggest_float("x", 0, 1))
"""


def asked_by_two_workers(storage: str, trials: int = 30) -> None:
    """A TPE study of ``trials`` trials; two worker processes ask for trials until it is full: between them
    they begin exactly ``trials`` (counting and asking is one claim), and both take some."""
    study = studies.open_study("asks", storage, "maximize")
    study.set_user_attr("trials", trials)
    workers = [subprocess.Popen([sys.executable, "-c", ASK, storage], cwd=ROOT) for _ in range(2)]
    assert [w.wait(timeout=300) for w in workers] == [0, 0]
    done = study.get_trials()
    assert len(done) == trials and all(t.state == TrialState.COMPLETE for t in done), f"{len(done)} trials"
    assert len({t.user_attrs["worker"] for t in done}) == 2, "both processes asked"


def test_two_worker_processes_claim_each_queued_trial_once(tmp_path):
    claimed_by_two_workers(f"sqlite:///{tmp_path / 'optuna.db'}")


def test_two_tpe_workers_begin_exactly_the_studys_trials(tmp_path):
    asked_by_two_workers(f"sqlite:///{tmp_path / 'optuna.db'}")


def test_a_killed_workers_trial_is_failed_and_its_point_queued_again(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = studies.open_study("resume", storage, "maximize")
    study.enqueue_trial({"x": 1})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    trial = studies.claim_waiting(study)
    trial.set_user_attr("worker", f"{socket.gethostname()}:{dead.pid}")
    alive = studies.open_study("resume", storage)
    assert studies.reclaim_dead(alive) == [trial.number]
    again = studies.claim_waiting(alive)
    assert again is not None and again.number != trial.number
    assert again.suggest_int("x", 0, 9) == 1, "the same grid point"
    assert alive.get_trials()[0].state == TrialState.FAIL
    assert studies.reclaim_dead(alive) == [], "a live worker's trial is left alone"


def test_workers_on_one_machine_share_its_cores() -> None:
    from pipelines.sweep.command import worker_threads

    assert worker_threads(1, 16) == 0, "one worker: every core (num_threads 0)"
    assert (worker_threads(2, 2), worker_threads(4, 16), worker_threads(3, 2)) == (1, 4, 1)


def test_the_report_notebook_gets_the_storage_without_its_password_and_puts_it_back(monkeypatch) -> None:
    import sqlalchemy as sa

    full = "postgresql://sweep:pw-1%40x@db.example:5433/optuna?sslmode=require"
    bare = studies.without_password(full)
    assert "pw-1" not in bare and "***" not in bare and bare.startswith("postgresql://sweep@db.example:5433/")
    monkeypatch.setenv(studies.PASSWORD_ENV, sa.make_url(full).password)
    assert sa.make_url(studies.storage_url(bare)) == sa.make_url(full), "the same URL, password and options"


def test_no_trial_is_stopped_in_its_stages_warmup_epochs() -> None:
    from types import SimpleNamespace

    import optuna

    from pipelines.sweep.pruning import Pruned, PruningCallback

    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=2))
    for _ in range(2):  # two finished trials at 0.8 after each of 3 epochs
        done = study.ask()
        for epoch in (1, 2, 3):
            done.report(0.8, epoch)
        study.tell(done, 0.8)
    late = PruningCallback(study.ask(), "eval_accuracy", 0, warmup=2)
    for epoch in (1, 2):  # below the median, but within the warm-up
        late.on_evaluate(None, SimpleNamespace(epoch=epoch), None, metrics={"eval_accuracy": 0.5})
    with pytest.raises(Pruned, match="after epoch 3 of the fine-tuning"):
        late.on_evaluate(None, SimpleNamespace(epoch=3), None, metrics={"eval_accuracy": 0.5})
    eager = PruningCallback(study.ask(), "eval_accuracy", 0)
    with pytest.raises(Pruned, match="after epoch 1"):
        eager.on_evaluate(None, SimpleNamespace(epoch=1), None, metrics={"eval_accuracy": 0.5})
