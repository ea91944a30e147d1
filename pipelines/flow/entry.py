"""The flow commands of ``python -m pipelines``: run, monitor, retrain-if-drift, params (see commands.py)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from pipelines import shell
from pipelines.config import ConfigError, PipelineConfig, defaults
from pipelines.flow import retrain
from pipelines.flow.runner import run_pipeline
from pipelines.flow.steps import FLOWS
from pipelines.monitor.verdict import exit_code


def run(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    steps = tuple(s.strip() for s in args.steps.split(",")) if args.steps else FLOWS["training"]
    unknown = [s for s in steps if s not in FLOWS["training"]]
    if unknown:
        raise ConfigError(f"--steps: unknown step(s) {unknown}; choose from {', '.join(FLOWS['training'])}")
    kwargs = {"notebooks_dir": Path(args.notebooks_dir).resolve()} if args.notebooks_dir else {}
    result = run_pipeline(cfg, steps, output_dir=args.output_dir, **kwargs)
    shell.print_json({"parent_run_id": result.parent_run_id, "output_dir": str(result.output_dir),
                      "steps": result.steps})
    return 0


def monitor(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    """Drift check of the production window; stdout is the verdict JSON only (progress goes to stderr)."""
    with contextlib.redirect_stdout(sys.stderr):
        verdict = retrain.run_monitor(cfg, args.output_dir)
    shell.print_json(verdict)
    return exit_code(verdict)


def retrain_if_drift(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    """Monitor; on drift run train → evaluate → promote; stdout is the summary JSON."""
    with contextlib.redirect_stdout(sys.stderr):
        summary, code = retrain.retrain_if_drift(cfg, args.output_dir)
    shell.print_json(summary)
    return code


def params(_: PipelineConfig | None, __: argparse.Namespace) -> int:
    print(json.dumps(defaults(), indent=2))
    return 0
