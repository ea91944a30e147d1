"""Promotions and rollbacks are serialised by the registry lock and crash-safe (issue 26, item 3).

Real processes on a real SQLite registry: two promotions started together (one moves the alias, the other
exits non-zero naming the holder), and SIGKILL at each step of a promotion and of a rollback (stopped there by
``SENTIMENT_MLOPS_PAUSE_AT``), after which ``python -m pipelines history`` and the alias agree. The versions are
bare registry entries: the lock and the journal do not look at the weights.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipelines.registry import audit, versions
from pipelines.registry.rule import Decision

ROOT = Path(__file__).resolve().parents[1]
NAME = "sentiment"
STEPS = ("locked", "journaled", "tagged", "moved")

PROMOTE = """
import sys
from pipelines.config import LockSection
from pipelines.registry.moves import apply_decision
from pipelines.registry.rule import Decision
candidate, champion, timeout = sys.argv[1], sys.argv[2] or None, float(sys.argv[3])
apply_decision("sentiment", "production", Decision(True, ["test"], "accuracy", candidate, 0.9, champion, 0.8),
               lock=LockSection(lock_timeout=timeout))
print("moved to", candidate)
"""


@pytest.fixture()
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    """A SQLite registry with versions 1–4 of ``sentiment``, v1 in production (promoted by the gate)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    import mlflow

    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    client.create_registered_model(NAME)
    for _ in range(4):
        client.create_model_version(NAME, source=str(tmp_path), run_id=None)
    from pipelines.registry.moves import apply_decision

    apply_decision(NAME, "production", Decision(True, ["first"], "accuracy", "1", 0.8))
    return client


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def _start_promotion(candidate: str, champion: str, timeout: float = 60, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", PROMOTE, candidate, champion, str(timeout)], cwd=ROOT,
                            env=_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


ROLLBACK = """
from pipelines.registry.rollback import rollback
print(rollback("sentiment", "production"))
"""


def _start_rollback(**env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", ROLLBACK], cwd=ROOT, env=_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_stopped(proc: subprocess.Popen, timeout: float = 60) -> None:
    """Until ``proc`` has stopped itself (SIGSTOP at the pause point)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "T":
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the process never reached its pause point")


def _history() -> list[dict]:
    """What ``python -m pipelines history`` prints (its two calls, in this process: the CLI imports the runtimes)."""
    audit.repair_now(NAME)
    return versions.history(NAME)


def _production(client: MlflowClient) -> str:
    return str(client.get_model_version_by_alias(NAME, "production").version)


def history_says_production(rows: list[dict]) -> str:
    """The version that the record says holds production: the last completed promotion or rollback."""
    events = []
    for row in rows:
        if row.get("promotion.decision") == "promoted" and row.get("promotion.state", "done") == "done":
            events.append((row["promotion.time"], str(row["version"])))
        if row.get("rollback.from_version") and row.get("rollback.state", "done") == "done":
            events.append((row["rollback.time"], str(row["version"])))
        assert row.get("promotion.state") != "pending" and row.get("rollback.state") != "pending", row
    return str(max(events)[1])


@pytest.mark.e2e
def test_two_promotions_started_together_one_moves_the_alias(registry: MlflowClient) -> None:
    holder = _start_promotion("2", "1", SENTIMENT_MLOPS_PAUSE_AT="locked")
    _wait_stopped(holder)  # holds the lock, stopped: the second one starts now
    loser = _start_promotion("3", "1", timeout=2)
    _, err = loser.communicate(timeout=120)
    assert loser.returncode != 0
    assert "registry lock for 'sentiment' is held" in err and f"pid {holder.pid}" in err, err
    holder.send_signal(signal.SIGCONT)
    _, err = holder.communicate(timeout=120)
    assert holder.returncode == 0, err
    assert _production(registry) == "2"
    rows = {str(r["version"]): r for r in _history()}
    assert rows["2"]["promotion.decision"] == "promoted" and "promotion.decision" not in rows["3"]
    # the loser's decision was taken against v1; production is v2 now: compare-and-set refuses it
    stale = _start_promotion("3", "1")
    _, err = stale.communicate(timeout=120)
    assert stale.returncode != 0 and "moved to v2 since the decision was taken" in err, err
    assert _production(registry) == "2"
    assert not any(m.name == "sentiment.lock" for m in registry.search_registered_models())


@pytest.mark.e2e
@pytest.mark.parametrize("operation", ["promotion", "rollback"])
def test_sigkill_at_each_step_leaves_history_true(registry: MlflowClient, operation: str) -> None:
    candidates = iter(["2", "3", "4"] * 4)
    for step in STEPS:
        if operation == "rollback":  # a completed promotion gives the rollback a version to go back to
            promoted = _start_promotion(next(candidates), _production(registry))
            assert promoted.wait(timeout=120) == 0
        before = _production(registry)
        if operation == "promotion":
            proc = _start_promotion(next(candidates), before, SENTIMENT_MLOPS_PAUSE_AT=step)
        else:
            proc = _start_rollback(SENTIMENT_MLOPS_PAUSE_AT=step)
        _wait_stopped(proc)
        proc.kill()
        proc.communicate(timeout=30)
        # history repairs what the killed one left (its holder is gone: the lock is broken at once)
        rows = _history()
        now = _production(registry)
        assert (now == before) == (step != "moved"), (step, before, now)
        assert history_says_production(rows) == now, (step, now, rows)
    # and the next move works: no lock or journal left behind
    final = _start_promotion(next(candidates), _production(registry))
    _, err = final.communicate(timeout=120)
    assert final.returncode == 0, err
    assert history_says_production(_history()) == _production(registry)
    assert "audit.pending" not in registry.get_registered_model(NAME).tags
