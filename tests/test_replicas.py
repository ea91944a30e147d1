"""Replicas behind HAProxy under closed-loop load: an alias move, a rolling restart and a SIGKILL.

Two ``python -m app`` replicas (``tools.replicas.Cluster``, as ``make replicas`` starts them) polling the alias
every 2 s (± 20 %), behind Debian's HAProxy health-checking ``/ready``; 8 closed-loop clients through the
balancer.  The 60-second, 3-replica, 16-client version of the same scenarios is the ``replicas`` benchmark.
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from serving_helpers import promote, register_copy

from tools import loadgen
from tools.replicas import Cluster, haproxy_binary

pytestmark = [
    pytest.mark.e2e, pytest.mark.timeout(600),
    pytest.mark.skipif(haproxy_binary() is None, reason="haproxy is not installed (apt-get install haproxy)"),
]
POLL_S, JITTER = 2.0, 0.2
LOAD_S = 10.0  # a generous bound on loading a version on a busy 2-core machine


@pytest.fixture
def cluster(learned_copy, tmp_path):
    env = {"MLFLOW_TRACKING_URI": learned_copy.tracking_uri, "SENTIMENT_MLOPS_HOME": str(learned_copy.root),
           "RELOAD_INTERVAL_S": str(POLL_S), "RELOAD_JITTER": str(JITTER)}
    with Cluster(2, env, tmp_path / "replicas") as running:
        yield running


def test_alias_move_and_rolling_restart_under_load_fail_nothing_and_each_replica_switches_once(
        cluster, learned_copy):
    name = learned_copy.model_name
    v2 = register_copy(name, "1")
    moved: dict[str, float] = {}

    async def move_then_restart(started: float) -> list[float]:
        await asyncio.sleep(3)
        await asyncio.to_thread(promote, name, v2, "1")
        moved["at"] = time.monotonic()
        await asyncio.sleep(POLL_S * (1 + JITTER) + LOAD_S)
        return [await asyncio.to_thread(cluster.restart, i) for i in range(len(cluster.replicas))]

    records, _, (exits,) = asyncio.run(loadgen.closed_loop(cluster.url, 8, 10, [move_then_restart]))
    assert not loadgen.failures(records), loadgen.failures(records)[:5]
    per_replica = loadgen.switches(records)
    assert set(per_replica) == {"r1", "r2"}
    for replica, seen in per_replica.items():
        assert seen["versions"] == ["1", v2] and seen["flaps"] == 0, (replica, seen)
        assert seen["first_seen"][v2] - moved["at"] < POLL_S * (1 + JITTER) + LOAD_S, (replica, seen)
    assert all(e < 2 + 20 for e in exits), exits  # DRAIN_S + GRACEFUL_TIMEOUT_S
    assert [r.version for r in records[-20:]] == [v2] * 20


def test_a_replica_killed_mid_load_costs_at_most_its_requests_in_flight(cluster):
    killed: dict[str, float] = {}

    async def kill(started: float) -> None:
        await asyncio.sleep(2)
        cluster.replicas[1].signal(signal.SIGKILL)
        killed["at"] = time.monotonic()

    clients = 8
    records, _, _ = asyncio.run(loadgen.closed_loop(cluster.url, clients, 6, [kill]))
    failed = loadgen.failures(records)
    assert len(failed) <= clients, failed  # only what was in flight on r2 (HAProxy retries the rest)
    after = [r for r in records if r.start > killed["at"] + 2 and r.status == 200]
    assert after and {r.replica for r in after} == {"r1"}
    assert cluster.servers_up()["r2"].startswith("DOWN")
