"""``python -m pipelines``: run the pipeline, roll back, inspect the registry."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from pipelines import registry, tracking
from pipelines.config import BACKEND_NAMES, DEFAULT_BACKEND, ConfigError, PipelineConfig, build_config, defaults
from pipelines.steps import StepFailed


def _config(args: argparse.Namespace) -> PipelineConfig:
    """Defaults < ``--config`` file < ``-p NAME VALUE`` overrides."""
    return build_config({name: value for name, value in (args.parameter or [])}, args.config)


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", help="YAML file of parameter values")
    parser.add_argument(
        "-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
        help="override one parameter (repeatable), e.g. -p epochs 2",
    )


def _model_uri(args: argparse.Namespace, cfg: PipelineConfig) -> str:
    """``--model-uri``, else the configured registered model's alias."""
    return args.model_uri or f"models:/{cfg.registered_model_name}@{cfg.alias}"


def _print_json(data: dict) -> None:
    print(json.dumps(data, indent=2, default=str), flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    from pipelines.runner import TRAINING_STEPS, run_pipeline

    cfg = _config(args)
    steps = tuple(s.strip() for s in args.steps.split(",")) if args.steps else TRAINING_STEPS
    unknown = [s for s in steps if s not in TRAINING_STEPS]
    if unknown:
        raise ConfigError(f"--steps: unknown step(s) {unknown}; choose from {', '.join(TRAINING_STEPS)}")
    kwargs = {"notebooks_dir": Path(args.notebooks_dir).resolve()} if args.notebooks_dir else {}
    result = run_pipeline(cfg, steps, output_dir=args.output_dir, **kwargs)
    _print_json({"parent_run_id": result.parent_run_id, "output_dir": str(result.output_dir), "steps": result.steps})
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    cfg = _config(args)
    tracking.setup(cfg.tracking_uri)
    old, new = registry.rollback(cfg.registered_model_name, cfg.alias, args.to_version or "")
    print(f"{cfg.registered_model_name}@{cfg.alias}: v{old} -> v{new}")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    cfg = _config(args)
    tracking.setup(cfg.tracking_uri)
    print(json.dumps(registry.history(cfg.registered_model_name), indent=2))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from pipelines.export import export_model

    cfg = _config(args)
    tracking.setup(cfg.tracking_uri)
    uri = _model_uri(args, cfg)
    try:
        identity = export_model(uri, args.output, overwrite=args.overwrite)
    except FileExistsError as err:
        raise ConfigError(f"--output: {err}") from None
    print(f"exported {identity.name} v{identity.version} ({uri}) to {args.output}")
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    """Drift check of the production window; stdout is the verdict JSON only (progress goes to stderr)."""
    from pipelines import monitoring

    cfg = _config(args)
    with contextlib.redirect_stdout(sys.stderr):
        verdict = monitoring.run_monitor(cfg, args.output_dir)
    _print_json(verdict)
    return monitoring.exit_code(verdict)


def cmd_retrain_if_drift(args: argparse.Namespace) -> int:
    """Monitor; on drift run train → evaluate → promote; stdout is the summary JSON."""
    from pipelines import monitoring

    cfg = _config(args)
    with contextlib.redirect_stdout(sys.stderr):
        summary, code = monitoring.retrain_if_drift(cfg, args.output_dir)
    _print_json(summary)
    return code


def cmd_profile(args: argparse.Namespace) -> int:
    from pipelines import profile

    cfg = _config(args)
    tracking.setup(cfg.tracking_uri)
    mv, uri = profile.backfill(cfg)
    print(f"reference profile of {mv.name} v{mv.version}: {uri}")
    return 0


def cmd_heldout(args: argparse.Namespace) -> int:
    """Score a version on held-out real reviews (see pipelines.heldout); record the figures on it."""
    from pipelines import heldout
    from pipelines.backends import load_scorer
    from pipelines.data import load_splits
    from pipelines.onnx_backend import resolve_version

    cfg = _config(args)
    tracking.setup(cfg.tracking_uri)
    uri = _model_uri(args, cfg)
    try:
        archive = heldout.fetch(args.archive)
    except heldout.HeldoutError as err:
        raise ConfigError(str(err)) from None
    except OSError as err:
        raise ConfigError(f"cannot download {heldout.TARBALL_URL} ({err}); pass --archive PATH to a copy") from None
    sets = {name: heldout.load_set(archive, name) for name in heldout.SETS}
    train = load_splits(cfg).train
    with contextlib.redirect_stdout(sys.stderr):
        table = heldout.evaluate(load_scorer(uri, args.backend), train, sets, cfg.seed)
    mv = resolve_version(uri)
    if mv is not None:
        registry.set_tags(mv.name, mv.version, heldout.tags_for(table, args.backend))
    print(f"{uri}{f' (v{mv.version})' if mv is not None else ''}, backend {args.backend}, "
          f"baselines trained on the {len(train)} training texts of {cfg.dataset}:")
    print(table.round(4).to_string(index=False))
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
    run.add_argument("--notebooks-dir", help="folder of the step notebooks (default: the project's notebooks/)")
    run.set_defaults(func=cmd_run)

    rollback = sub.add_parser("rollback", help="move the production alias back to the previous version")
    _add_config_args(rollback)
    rollback.add_argument("--to-version", help="a specific version instead of the previous one")
    rollback.set_defaults(func=cmd_rollback)

    history = sub.add_parser("history", help="versions with their evaluation, promotion and rollback tags")
    _add_config_args(history)
    history.set_defaults(func=cmd_history)

    export = sub.add_parser("export", help="download the production model into a folder the server can load")
    _add_config_args(export)
    export.add_argument("--output", "-o", required=True, help="destination folder (MODEL_URI for the server)")
    export.add_argument("--model-uri", help="default: models:/<registered_model_name>@<alias>")
    export.add_argument("--overwrite", action="store_true", help="replace a non-empty --output folder")
    export.set_defaults(func=cmd_export)

    monitor = sub.add_parser(
        "monitor", help="drift check of production traffic; prints the verdict JSON",
        description="Exit status: 0 no drift, 3 drift, 4 insufficient data, 1 the monitor step failed, "
                    "2 bad parameters. See docs/monitoring.md.",
    )
    _add_config_args(monitor)
    monitor.add_argument("--output-dir", help="where the executed notebook and report go")
    monitor.set_defaults(func=cmd_monitor)

    retrain = sub.add_parser(
        "retrain-if-drift", help="monitor, and on drift run train → evaluate → promote (the gate decides)",
        description="Exit status: 0 no drift, or retrained and promoted; 3 retrained but the gate kept "
                    "production; 4 insufficient data; 1 a step failed; 2 bad parameters. See docs/monitoring.md.",
    )
    _add_config_args(retrain)
    retrain.add_argument("--output-dir", help="where executed notebooks and the report go")
    retrain.set_defaults(func=cmd_retrain_if_drift)

    prof = sub.add_parser("profile", help="compute and log the reference profile of a version that lacks one")
    _add_config_args(prof)
    prof.set_defaults(func=cmd_profile)

    held = sub.add_parser(
        "heldout", help="score a version on held-out real reviews (IMDb, Yelp, Amazon sentences)",
        description="Downloads the UCI Sentiment Labelled Sentences once (npm sentiment@5.0.2, sha512-checked) "
                    "unless --archive gives a copy. See pipelines/heldout.py.",
    )
    _add_config_args(held)
    held.add_argument("--model-uri", help="default: models:/<registered_model_name>@<alias>")
    held.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKEND_NAMES, help="runtime, as BACKEND")
    held.add_argument("--archive", help="a local sentiment-5.0.2.tgz instead of the download")
    held.set_defaults(func=cmd_heldout)

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
    except StepFailed as err:  # its notebook and runs are logged; a failed step never moves the alias
        print(f"error: {err}", file=sys.stderr)
        print("The alias was not moved; later steps did not run.", file=sys.stderr)
        return 1
