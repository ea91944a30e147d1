"""``python -m pipelines``: run the pipeline, roll back, inspect the registry."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipelines.batch import predict as batch_predict
from pipelines.batch import spark as batch_spark
from pipelines.batch.files import INPUT_FORMATS, OUTPUT_FORMATS
from pipelines.batch.model import resolve_model
from pipelines.config import ConfigError, PipelineConfig, build_config, defaults, expand
from pipelines.data import feedback as review_feedback
from pipelines.data.split import load_splits
from pipelines.evaluate import heldout
from pipelines.evaluate.full_reviews import by_length
from pipelines.flow.retrain import retrain_if_drift, run_monitor
from pipelines.flow.runner import StepFailed, run_pipeline
from pipelines.flow.steps import FLOWS
from pipelines.monitor import reference_store
from pipelines.monitor.verdict import exit_code
from pipelines.registry import audit, model_folder, rollback, versions
from pipelines.train import devices, onnx_logging
from scoring import inference_log, tracking
from scoring.config import BACKEND_NAMES, DEFAULT_BACKEND, ScoringConfig
from scoring.identity import RegistryError, resolve_version
from scoring.runtimes import load_scorer
from scoring.texts import MAX_TEXT_CHARS


def _config(args: argparse.Namespace, *takes: str) -> PipelineConfig:
    """Defaults < ``--config`` file < ``-p NAME VALUE`` overrides; with ``takes``, refuse parameters not in it."""
    cfg = build_config({name: value for name, value in (args.parameter or [])}, args.config)
    if takes:
        untaken = sorted(set(cfg.model_fields_set) - set(expand(takes)))
        if untaken:
            raise ConfigError(f"parameter(s) {', '.join(untaken)}: not taken by `{args.command}` "
                              f"(it takes {', '.join(expand(takes))})")
    return cfg


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", help="YAML file of parameter values")
    parser.add_argument(
        "-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
        help="override one parameter (repeatable), e.g. -p epochs 2",
    )


def _model_uri(args: argparse.Namespace, cfg: PipelineConfig) -> str:
    """``--model-uri``, else the configured registered model's alias."""
    return args.model_uri or f"models:/{cfg.registered_model_name}@{cfg.alias}"


def _scoring_overrides(cfg: PipelineConfig) -> dict:
    """The long-text settings given with ``-p`` (the rest stay as saved with the model, as the server does)."""
    return {name: getattr(cfg, name) for name in ScoringConfig.model_fields if name in cfg.model_fields_set}


def _batch_job(args: argparse.Namespace) -> dict[str, Any]:
    """The fields of :class:`pipelines.batch.rows.BatchJob` from the flags ``predict`` and ``spark-predict`` share."""
    return {"input": args.input, "output": args.output, "text_column": args.text_column,
            "keep_columns": tuple(c.strip() for c in args.keep_columns.split(",") if c.strip()),
            "max_text_chars": args.max_text_chars, "overwrite": args.overwrite}


def _print_json(data: dict) -> None:
    print(json.dumps(data, indent=2, default=str), flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _config(args)
    steps = tuple(s.strip() for s in args.steps.split(",")) if args.steps else FLOWS["training"]
    unknown = [s for s in steps if s not in FLOWS["training"]]
    if unknown:
        raise ConfigError(f"--steps: unknown step(s) {unknown}; choose from {', '.join(FLOWS['training'])}")
    kwargs = {"notebooks_dir": Path(args.notebooks_dir).resolve()} if args.notebooks_dir else {}
    result = run_pipeline(cfg, steps, output_dir=args.output_dir, **kwargs)
    _print_json({"parent_run_id": result.parent_run_id, "output_dir": str(result.output_dir), "steps": result.steps})
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    cfg = _config(args, "tracking", "registry", "lock")
    tracking.setup(cfg.tracking_uri)
    old, new = rollback.rollback(cfg.registered_model_name, cfg.alias, args.to_version or "", cfg.lock)
    print(f"{cfg.registered_model_name}@{cfg.alias}: v{old} -> v{new}")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    cfg = _config(args, "tracking", "registered_model_name", "lock")
    tracking.setup(cfg.tracking_uri)
    audit.repair_now(cfg.registered_model_name, cfg.lock)
    print(json.dumps(versions.history(cfg.registered_model_name), indent=2))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    cfg = _config(args, "tracking", "registry")
    tracking.setup(cfg.tracking_uri)
    uri = _model_uri(args, cfg)
    try:
        identity = model_folder.export_model(uri, args.output, overwrite=args.overwrite)
    except FileExistsError as err:
        raise ConfigError(f"--output: {err}") from None
    print(f"exported {identity.name} v{identity.version} ({uri}) to {args.output}")
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    """Drift check of the production window; stdout is the verdict JSON only (progress goes to stderr)."""
    cfg = _config(args)
    with contextlib.redirect_stdout(sys.stderr):
        verdict = run_monitor(cfg, args.output_dir)
    _print_json(verdict)
    return exit_code(verdict)


def cmd_retrain_if_drift(args: argparse.Namespace) -> int:
    """Monitor; on drift run train → evaluate → promote; stdout is the summary JSON."""
    cfg = _config(args)
    with contextlib.redirect_stdout(sys.stderr):
        summary, code = retrain_if_drift(cfg, args.output_dir)
    _print_json(summary)
    return code


def cmd_profile(args: argparse.Namespace) -> int:
    cfg = _config(args, "tracking", "registry", "data", "model_version")
    tracking.setup(cfg.tracking_uri)
    mv, uri = reference_store.backfill(cfg.registered_model_name, cfg.alias, cfg.model_version, cfg.data)
    print(f"reference profile of {mv.name} v{mv.version}: {uri}")
    return 0


def cmd_heldout(args: argparse.Namespace) -> int:
    """Score a version on held-out real reviews (see pipelines.evaluate.heldout); record the figures on it."""
    cfg = _config(args, "tracking", "registry", "data", "device")
    device = devices.inference_device(cfg.device)  # where --backend torch scores (ONNX runs on the CPU)
    tracking.setup(cfg.tracking_uri)
    uri = _model_uri(args, cfg)
    try:
        archive = heldout.fetch(args.archive)
    except heldout.HeldoutError as err:
        raise ConfigError(str(err)) from None
    except OSError as err:
        raise ConfigError(f"cannot download {heldout.TARBALL_URL} ({err}); pass --archive PATH to a copy") from None
    sets = {name: heldout.load_set(archive, name) for name in heldout.SETS}
    train = load_splits(cfg.data).train
    with contextlib.redirect_stdout(sys.stderr):
        scorer = load_scorer(uri, args.backend)
        if args.backend == "torch":
            scorer.model.to(device)
        table = heldout.evaluate(scorer, train, sets, cfg.seed)
        reviews = heldout.full_reviews(sets["imdb"])
        texts = reviews["text"].tolist()
        lengths = by_length(texts, reviews["label"].to_numpy(), scorer.predict_proba(texts))
    mv = resolve_version(uri)
    if mv is not None:
        versions.set_tags(mv.name, mv.version, heldout.tags_for(table, args.backend, lengths))
    print(f"{uri}{f' (v{mv.version})' if mv is not None else ''}, backend {args.backend}, "
          f"baselines trained on the {len(train)} training texts of {cfg.dataset}:")
    print(table.round(4).to_string(index=False))
    print(f"\nIMDb users' sentences made into {len(reviews)} full reviews (with plot summaries), by length in "
          "characters:")
    print(lengths.round(4).to_string())
    return 0


def cmd_export_onnx(args: argparse.Namespace) -> int:
    """Export a registered version to ONNX (fp32 + int8), log the files with it and tag it."""
    cfg = _config(args, "tracking", "registry")
    tracking.setup(cfg.tracking_uri)
    try:
        _print_json(onnx_logging.log_onnx(_model_uri(args, cfg), args.run_id))
    except ValueError as err:
        raise ConfigError(f"--model-uri: {err}") from None
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Score a file with a model version; stdout is the summary JSON (progress and the model go to stderr)."""
    cfg = _config(args, "tracking", "registry", "scoring")
    tracking_uri = tracking.setup(cfg.tracking_uri)
    job = batch_predict.PredictJob(
        **_batch_job(args), input_format=args.input_format or "", output_format=args.output_format or "",
        chunk_rows=args.chunk_rows, resume=args.resume,
    )
    prepared = batch_predict.prepare(job, _model_uri(args, cfg), args.backend, tracking_uri, _scoring_overrides(cfg))
    model = prepared.model
    try:
        print(f"model: {model.describe()}; {prepared.source.rows} rows in {job.input}", file=sys.stderr, flush=True)
        scorer = model.load_checked(args.threads)
        _print_json(batch_predict.run(prepared, scorer, progress=not args.no_progress))
    finally:
        prepared.lock.release()
    return 0


def cmd_spark_predict(args: argparse.Namespace) -> int:
    """Score a Parquet file (or folder) on Spark; stdout is the summary JSON."""
    cfg = _config(args, "tracking", "registry", "scoring")
    tracking_uri = tracking.setup(cfg.tracking_uri)
    job = batch_spark.SparkJob(**_batch_job(args), partitions=args.partitions)
    batch_spark.require_spark()
    batch_spark.check_job(job)
    model = resolve_model(_model_uri(args, cfg), args.backend, tracking_uri, _scoring_overrides(cfg))
    print(f"model: {model.describe()} on Spark {args.master}", file=sys.stderr, flush=True)
    scoring = model.scoring_settings()  # a folder or version that is no transformers model fails here, not in workers
    with batch_spark.session(args.master, chunk_rows=args.chunk_rows) as spark:
        _print_json(batch_spark.spark_predict(spark, job, model, scoring))
    return 0


def _batch_parser(sub: argparse._SubParsersAction, name: str, help_text: str, description: str,
                  func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    """The sub-command ``name`` with the flags ``predict`` and ``spark-predict`` share."""
    parser = sub.add_parser(name, help=help_text, description=description)
    _add_config_args(parser)
    parser.add_argument("--input", "-i", required=True, help="the file of reviews")
    parser.add_argument("--output", "-o", required=True, help="where the predictions go (must not exist)")
    parser.add_argument("--text-column", default="text", help="the column holding the reviews (default: text)")
    parser.add_argument("--keep-columns", default="", help="comma-separated input columns copied to the output "
                                                            "(an id, say); every output row also has its `row`")
    parser.add_argument("--model-uri", help="default: models:/<registered_model_name>@<alias>; or a model folder")
    parser.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKEND_NAMES, help="runtime, as BACKEND")
    parser.add_argument("--max-text-chars", type=int, default=MAX_TEXT_CHARS,
                        help=f"longer texts get an error, as MAX_TEXT_CHARS (default {MAX_TEXT_CHARS})")
    parser.add_argument("--chunk-rows", type=int, default=1000, help="rows scored per call (default 1000)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    parser.set_defaults(func=func)
    return parser


def cmd_feedback(args: argparse.Namespace) -> int:
    """Review the app's feedback (list, accept, reject) and apply retention (purge); stdout is JSON."""
    cfg = _config(args, "inference_db", "feedback")
    db = cfg.inference_db
    if db and not inference_log.is_url(db) and not Path(db).expanduser().is_file():
        raise ConfigError(f"parameter inference_db: {db} does not exist")
    if args.action != "accept" and args.rule:
        raise ConfigError("--rule: only `feedback accept` applies the agreement rule")
    if args.action in ("list", "purge") and args.ids:
        raise ConfigError(f"ids: `feedback {args.action}` takes no ids")
    if args.action == "list":
        _print_json({"rows": review_feedback.listing(db, args.status, args.limit)})
    elif args.action == "purge":
        _print_json(review_feedback.purge(db, cfg.feedback))
    elif args.rule:
        if args.ids:
            raise ConfigError("ids: `feedback accept --rule` takes no ids (the rule chooses them)")
        _print_json(review_feedback.accept_by_rule(db, cfg.feedback))
    else:
        status = "accepted" if args.action == "accept" else "rejected"
        _print_json(review_feedback.review(db, args.ids, status, args.by))
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
                    "unless --archive gives a copy. See pipelines/evaluate/heldout.py.",
    )
    _add_config_args(held)
    held.add_argument("--model-uri", help="default: models:/<registered_model_name>@<alias>")
    held.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKEND_NAMES, help="runtime, as BACKEND")
    held.add_argument("--archive", help="a local sentiment-5.0.2.tgz instead of the download")
    held.set_defaults(func=cmd_heldout)

    onnx = sub.add_parser(
        "export-onnx", help="export a registered version to ONNX (+ int8) and log it with the version",
        description="The train step does this for every new version (onnx_export); this is for older ones.",
    )
    _add_config_args(onnx)
    onnx.add_argument("--model-uri", help="default: models:/<registered_model_name>@<alias>")
    onnx.add_argument("--run-id", default="", help="run to log the files to (default: the version's run)")
    onnx.set_defaults(func=cmd_export_onnx)

    predict = _batch_parser(
        sub, "predict", "score a CSV / TSV / JSONL / Parquet file of reviews; Parquet / CSV / JSONL out",
        "Streams the input in chunks; a killed run leaves no complete-looking output and --resume continues "
        "after the last finished chunk. Long-text settings: -p long_text_strategy …, as the server's "
        "LONG_TEXT_STRATEGY. Exit status: 0 done, 2 bad flags or input (before any work). See docs/batch.md.",
        cmd_predict,
    )
    predict.add_argument("--input-format", choices=INPUT_FORMATS, help="default: from the input's suffix")
    predict.add_argument("--output-format", choices=OUTPUT_FORMATS, help="default: from the output's suffix")
    predict.add_argument("--threads", type=int, default=0,
                         help="ONNX Runtime intra-op threads per call (default 0: the cores shared among the "
                              "ONNX_PARALLEL calls side by side, as ONNX_THREADS)")
    predict.add_argument("--resume", action="store_true", help="continue the partial run of the same job")
    predict.add_argument("--no-progress", action="store_true", help="no progress bar")

    spark = _batch_parser(
        sub, "spark-predict", "score a Parquet file or folder on Spark (the [spark] extra and Java 17)",
        "The same Scorer, runtime and bad-row rules as predict, as a Spark pandas UDF; one model and one thread "
        "per Python worker. Output: a folder of Parquet files, renamed into place when the job succeeded. "
        "See docs/batch.md.",
        cmd_spark_predict,
    )
    spark.add_argument("--master", default="local[*]", help="Spark master URL (default local[*])")
    spark.add_argument("--partitions", type=int, default=0,
                       help="spread the input over N tasks (default 0: at least 4 per core)")

    fb = sub.add_parser(
        "feedback", help="review the app's feedback before it trains: list, accept, reject; purge old rows",
        description="Only accepted feedback trains (include_feedback). accept/reject take ids from `list`; "
                    "`accept --rule` accepts texts that feedback_min_senders distinct credentials agree on; "
                    "purge deletes feedback and predictions older than feedback_retention_days / "
                    "inference_log_retention_days. See docs/security.md.",
    )
    _add_config_args(fb)
    fb.add_argument("action", choices=("list", "accept", "reject", "purge"))
    fb.add_argument("ids", nargs="*", type=int, help="feedback ids (accept, reject)")
    fb.add_argument("--status", default="pending", help="list: pending (default), accepted, rejected or all")
    fb.add_argument("--limit", type=int, default=50, help="list: newest N rows (default 50; 0 = all)")
    fb.add_argument("--by", default=os.environ.get("USER") or os.environ.get("LOGNAME") or "",
                    help="accept/reject: the reviewer recorded (default: $USER)")
    fb.add_argument("--rule", action="store_true", help="accept: apply the agreement rule instead of ids")
    fb.set_defaults(func=cmd_feedback)

    params = sub.add_parser("params", help="print every parameter with its default")
    params.set_defaults(func=cmd_params)

    sweep = sub.add_parser("sweep", help="a parameter sweep of the train step in one Optuna study (docs/sweeps.md)")
    from pipelines.sweep import command as sweep_command  # here: the hook stays a few lines
    sweep_command.add_arguments(sweep)
    sweep.set_defaults(func=lambda args: sweep_command.cmd_sweep(args))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, RegistryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except StepFailed as err:  # its notebook and runs are logged; a failed step never moves the alias
        print(f"error: {err}", file=sys.stderr)
        print("The alias was not moved; later steps did not run.", file=sys.stderr)
        return 1
