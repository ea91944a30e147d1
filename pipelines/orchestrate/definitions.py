"""The Dagster definitions, generated from the tables: ``dagster dev -m pipelines.orchestrate.definitions``.

- one job per flow that a command of :data:`pipelines.flow.commands.COMMANDS` runs (training, monitor,
  retrain): ``start`` → the flow's step ops in order → ``finish``;
- a schedule of the monitor job (``MONITOR_CRON``, default hourly);
- a sensor that requests one retrain run per monitor run whose verdict is ``drift`` (its cursor is the
  newest monitor run it has seen; the run key is the monitor run's id);
- training and retrain runs carry the tag ``sentiment/training``, limited to one at a time by the
  instance's run queue (deploy/dagster/dagster.yaml).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

from dagster import (
    DagsterRunStatus,
    Definitions,
    GraphDefinition,
    JobDefinition,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)
from dagster._core.definitions.dependency import DependencyDefinition

from pipelines.flow.commands import COMMANDS
from pipelines.flow.steps import FLOWS
from pipelines.orchestrate.ops import STEP_OPS, finish, start

MONITOR_CRON = os.environ.get("MONITOR_CRON", "0 * * * *")  # hourly
TRAINING_TAG = "sentiment/training"  # at most one run with it at a time (tag_concurrency_limits)
TRAINING_FLOWS = ("training", "retrain")


def flow_job(flow: str, description: str) -> JobDefinition:
    """The job of one flow: start → its steps → finish, each fed the previous op's state."""
    names = ["start", *FLOWS[flow], "finish"]
    nodes = [start, *(STEP_OPS[s] for s in FLOWS[flow]), finish]
    deps = {names[i]: {"state": DependencyDefinition(names[i - 1])} for i in range(1, len(names))}
    graph = GraphDefinition(name=f"{flow}_graph", node_defs=nodes, dependencies=deps, description=description)
    tags = {TRAINING_TAG: "1"} if flow in TRAINING_FLOWS else {}
    return graph.to_job(name=flow, tags=tags, description=description)


JOBS: dict[str, JobDefinition] = {c.flow: flow_job(c.flow, c.help) for c in COMMANDS.values() if c.flow}

monitor_schedule = ScheduleDefinition(name="monitor_schedule", job=JOBS["monitor"], cron_schedule=MONITOR_CRON,
                                      tags={"trigger": "schedule"})


@sensor(job=JOBS["retrain"], minimum_interval_seconds=60)
def retrain_on_drift(context: SensorEvaluationContext):
    """One retrain run per successful monitor run with the verdict ``drift``; the cursor is the newest seen."""
    after = float(context.cursor) if context.cursor else None
    runs = context.instance.get_run_records(RunsFilter(
        job_name="monitor", statuses=[DagsterRunStatus.SUCCESS],
        updated_after=datetime.fromtimestamp(after, tz=UTC) if after else None),
        order_by="update_timestamp", ascending=True)
    if not runs:
        return SkipReason("no finished monitor run since the last tick")
    context.update_cursor(str(runs[-1].update_timestamp.timestamp()))
    requests = []
    for record in runs:
        run = record.dagster_run
        if run.tags.get("verdict") != "drift":
            continue
        config = {"ops": {"start": {"config": (run.run_config.get("ops", {}).get("start", {}).get("config", {}))}}}
        requests.append(RunRequest(run_key=run.run_id, run_config=config,
                                   tags={"trigger": "drift", "monitor_dagster_run": run.run_id}))
    return requests or SkipReason("no drift verdict since the last tick")


defs = Definitions(jobs=list(JOBS.values()), schedules=[monitor_schedule], sensors=[retrain_on_drift])
