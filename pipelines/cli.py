"""``python -m pipelines``: run the pipeline, roll back, inspect the registry."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from pipelines import registry, tracking
from pipelines.config import ConfigError, build_config, defaults


def _param_pairs(pairs: list[list[str]] | None) -> dict[str, str]:
    return {name: value for name, value in (pairs or [])}


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", help="YAML file of parameter values")
    parser.add_argument(
        "-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
        help="override one parameter (repeatable), e.g. -p epochs 2",
    )


def cmd_run(args: argparse.Namespace) -> int:
    from pipelines.runner import TRAINING_STEPS, StepFailed, run_pipeline

    cfg = build_config(_param_pairs(args.parameter), args.config)
    steps = tuple(s.strip() for s in args.steps.split(",")) if args.steps else TRAINING_STEPS
    unknown = [s for s in steps if s not in TRAINING_STEPS]
    if unknown:
        raise ConfigError(f"--steps: unknown step(s) {unknown}; choose from {', '.join(TRAINING_STEPS)}")
    try:
        result = run_pipeline(cfg, steps, output_dir=args.output_dir)
    except StepFailed as err:
        print(f"error: {err}", file=sys.stderr)
        print("The alias was not moved; later steps did not run.", file=sys.stderr)
        return 1
    print(json.dumps({"parent_run_id": result.parent_run_id, "output_dir": str(result.output_dir),
                      "steps": result.steps}, indent=2, default=str))
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    cfg = build_config(_param_pairs(args.parameter), args.config)
    tracking.setup(cfg.tracking_uri)
    old, new = registry.rollback(cfg.registered_model_name, cfg.alias, args.to_version or "")
    print(f"{cfg.registered_model_name}@{cfg.alias}: v{old} -> v{new}")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    cfg = build_config(_param_pairs(args.parameter), args.config)
    tracking.setup(cfg.tracking_uri)
    print(json.dumps(registry.history(cfg.registered_model_name), indent=2))
    return 0


def cmd_params(_: argparse.Namespace) -> int:
    print(json.dumps(defaults(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run eda → train → evaluate → promote with Papermill")
    _add_config_args(run)
    run.add_argument("--steps", help="comma-separated subset, e.g. train,evaluate")
    run.add_argument("--output-dir", help="where executed notebooks go (default output/<time>-<run>)")
    run.set_defaults(func=cmd_run)

    rollback = sub.add_parser("rollback", help="move the production alias back to the previous version")
    _add_config_args(rollback)
    rollback.add_argument("--to-version", help="a specific version instead of the previous one")
    rollback.set_defaults(func=cmd_rollback)

    history = sub.add_parser("history", help="versions with their evaluation, promotion and rollback tags")
    _add_config_args(history)
    history.set_defaults(func=cmd_history)

    params = sub.add_parser("params", help="print every parameter with its default")
    params.set_defaults(func=cmd_params)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, registry.RegistryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
