"""The monitoring flows: the monitor step on its own, and monitor-then-retrain (the loop's closing edge).

``python -m pipelines monitor`` and ``python -m pipelines retrain-if-drift`` call these;
the exit statuses are :data:`pipelines.monitor.verdict.EXIT_CODES`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.config import PipelineConfig, settled
from pipelines.flow.runner import run_pipeline
from pipelines.flow.steps import FLOWS, check_parameters, steps_of
from pipelines.monitor.verdict import EXIT_CODES, exit_code


def run_monitor(cfg: PipelineConfig, output_dir: Path | None = None, progress: bool = False) -> dict[str, Any]:
    """Run the monitor notebook through the pipeline runner; return its verdict with the run ids."""
    result = run_pipeline(cfg, FLOWS["monitor"], output_dir=output_dir, progress=progress, tags={"trigger": "monitor"})
    verdict = result.steps["monitor"]
    return {**verdict, "parent_run_id": result.parent_run_id, "output_dir": str(result.output_dir)}


def retrain_if_drift(
    cfg: PipelineConfig, output_dir: Path | None = None, progress: bool = False
) -> tuple[dict[str, Any], int]:
    """Monitor; on drift run train → evaluate → promote (the gate decides). Return the summary and exit status.

    Exit status: 0 no drift, or retrained and promoted; 3 drift, retrained, but the gate kept production
    (a human should look); 4 insufficient data (nothing done).  A failing step raises StepFailed.
    Parameters are checked against both flows before the monitor runs.
    """
    check_parameters(cfg, steps_of(FLOWS["monitor"] + FLOWS["retrain"]))
    cfg = settled(cfg)  # checked for both runs: each run takes its own share
    verdict = run_monitor(cfg, output_dir, progress)
    summary: dict[str, Any] = {"monitor": verdict, "retrained": False}
    if verdict["verdict"] != "drift":
        return summary, exit_code(verdict)
    tags = {"trigger": "drift", "monitor_run_id": verdict["parent_run_id"],
            "drifted_signals": ",".join(verdict["drifted_signals"])}
    out = Path(output_dir) / "retrain" if output_dir else None
    result = run_pipeline(cfg, FLOWS["retrain"], output_dir=out, progress=progress, tags=tags)
    promote = result.steps.get("promote", {})
    summary.update(retrained=True, retrain_run_id=result.parent_run_id, retrain_output_dir=str(result.output_dir),
                   model_version=str(promote.get("model_version", "")), promoted=bool(promote.get("promoted")),
                   decision=promote.get("decision"), production_version=str(promote.get("production_version", "")))
    return summary, 0 if summary["promoted"] else EXIT_CODES["drift"]
