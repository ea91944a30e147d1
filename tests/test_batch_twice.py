"""Batch and export are safe to run twice: a second ``predict`` on an output another run writes is refused
naming the output and its lock; the metadata is published after the output; ``export`` (and Spark's output
folder) replace the old folder by renames, so a failed run leaves the old one.

Real processes (``python -m pipelines``) on a tiny registered model in a SQLite store; a predict run is
paused (SIGSTOP) mid-run, so it holds its lock for certain while the second one starts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from tiny_model import tiny_store

from pipelines.batch.checkpoint import OutputLock, OutputLockedError, WorkDir, sidecar_path
from pipelines.registry.model_folder import replace_folder
from scoring.identity import MANIFEST
from tools.harness import ROOT, child_env, wait_for


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    with tiny_store(tmp_path_factory.mktemp("twice-store")) as store:
        yield store


def pipelines(uri: str, *args: object, **popen: object) -> subprocess.Popen:
    """``python -m pipelines ARGS`` in a new process on the store ``uri``."""
    return subprocess.Popen([sys.executable, "-m", "pipelines", *map(str, args)], cwd=ROOT,
                            env=child_env({"MLFLOW_TRACKING_URI": uri}), **popen)


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, (out or b"").decode() + (err or b"").decode()


def reviews(path: Path, rows: int) -> Path:
    pd.DataFrame({"id": range(rows), "text": [f"review {i}: a fine, warm film" for i in range(rows)]}).to_csv(path)
    return path


def chunks_done(state: Path) -> int:
    try:
        return json.loads(state.read_text())["chunks_done"]
    except (OSError, ValueError, KeyError):
        return 0


def test_a_second_predict_on_the_same_output_is_refused_while_the_first_runs(store, tmp_path):
    _, uri = store
    source, out = reviews(tmp_path / "in.csv", 1500), tmp_path / "out" / "predictions.csv"
    out.parent.mkdir()
    args = ("predict", "-i", source, "-o", out, "--backend", "torch", "--chunk-rows", "25", "--no-progress")
    first = pipelines(uri, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        state = WorkDir(out).state_path
        wait_for(lambda: chunks_done(state) >= 1 or first.poll() is not None, timeout=300, interval=0.02)
        first.send_signal(signal.SIGSTOP)  # mid-run, holding the lock, for as long as the second one takes
        assert first.poll() is None, finish(first)[1]
        code, err = finish(pipelines(uri, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        lock = OutputLock(out).path
        assert code != 0
        assert f"--output: {out} is being written by another run (pid {first.pid})" in err, err
        assert str(lock) in err and "Traceback" not in err
        assert chunks_done(state) >= 1  # the second run touched nothing of the first's
    finally:
        first.send_signal(signal.SIGCONT)
    code, log = finish(first)
    assert code == 0, log
    assert sorted(p.name for p in out.parent.iterdir()) == ["predictions.csv", "predictions.csv.meta.json"]
    assert len(pd.read_csv(out)) == 1500
    # the metadata is published after the output: written once the output was in place
    assert sidecar_path(out).stat().st_mtime_ns >= out.stat().st_mtime_ns


def test_a_dead_runs_lock_does_not_block_the_next_run(store, tmp_path):
    _, uri = store
    source, out = reviews(tmp_path / "in.csv", 1500), tmp_path / "predictions.parquet"
    args = ("predict", "-i", source, "-o", out, "--backend", "torch", "--chunk-rows", "25", "--no-progress")
    killed = pipelines(uri, *args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: chunks_done(WorkDir(out).state_path) >= 1 or killed.poll() is not None, timeout=300,
             interval=0.02)
    killed.kill()
    killed.wait(60)
    assert OutputLock(out).path.exists()  # left behind, but no process holds it
    code, log = finish(pipelines(uri, *args, "--resume", stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    assert code == 0, log
    assert json.loads(log[: log.rindex("}") + 1])["rows"] == 1500 and not OutputLock(out).path.exists()


def test_the_lock_is_exclusive_between_processes(tmp_path):
    out = tmp_path / "predictions.csv"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from pipelines.batch.checkpoint import OutputLock; "
        f"lock = OutputLock(Path({str(out)!r})).acquire(); print('held', flush=True); sys.stdin.read()")],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env())
    try:
        assert holder.stdout.readline().strip() == b"held"
        with pytest.raises(OutputLockedError, match="another run"):
            OutputLock(out).acquire()
    finally:
        holder.communicate(b"", timeout=60)
    with OutputLock(out) as lock:  # free once the holder exited
        assert lock.path.exists()
    assert not lock.path.exists()


def test_a_failed_publish_leaves_the_old_output_and_its_metadata(tmp_path):
    out = tmp_path / "predictions.csv"
    out.write_text("old output\n")
    sidecar_path(out).write_text('{"old": true}\n')
    work = WorkDir(out)
    work.start({"job": "new"})

    def failing_write(tmp: Path) -> None:
        tmp.write_text("half a new out")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        work.finish(failing_write, {"new": True})
    assert out.read_text() == "old output\n" and json.loads(sidecar_path(out).read_text()) == {"old": True}
    work.finish(lambda tmp: tmp.write_text("new output\n"), {"new": True})
    assert out.read_text() == "new output\n" and json.loads(sidecar_path(out).read_text()) == {"new": True}


def test_a_failed_export_leaves_the_old_folder(store, tmp_path):
    folder, uri = store
    out = tmp_path / "build" / "model"
    code, log = finish(pipelines(uri, "export", "-o", out, "--model-uri", "models:/sentiment/1",
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    assert code == 0, log
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    empty = folder / "not-a-model"
    empty.mkdir()
    (empty / "README").write_text("no MLmodel here\n")
    broken = MlflowClient().create_model_version("sentiment", empty.as_uri()).version
    code, log = finish(pipelines(uri, "export", "-o", out, "--model-uri", f"models:/sentiment/{broken}",
                                 "--overwrite", stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    assert code != 0 and "no MLmodel file" in log, log
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert json.loads((out / MANIFEST).read_text())["version"] == "1"
    assert sorted(p.name for p in out.parent.iterdir()) == ["model"]  # no staging folder left behind
    code, log = finish(pipelines(uri, "export", "-o", out, "--model-uri", "models:/sentiment/1", "--overwrite",
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    assert code == 0 and sorted(p.name for p in out.parent.iterdir()) == ["model"], log


def test_replace_folder_puts_the_old_folder_back_when_the_rename_fails(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "part-0.parquet").write_text("old")
    with pytest.raises(FileNotFoundError):
        replace_folder(tmp_path / "never-written", final)  # Spark's .partial missing: the rename fails
    assert (final / "part-0.parquet").read_text() == "old" and sorted(os.listdir(tmp_path)) == ["out"]
    new = tmp_path / "out.partial"
    new.mkdir()
    (new / "part-0.parquet").write_text("new")
    replace_folder(new, final)
    assert (final / "part-0.parquet").read_text() == "new" and sorted(os.listdir(tmp_path)) == ["out"]
