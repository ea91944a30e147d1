"""The batch commands of ``python -m pipelines``: predict and spark-predict (declared in pipelines/flow/commands.py)."""

from __future__ import annotations

import argparse
import sys

from pipelines import shell
from pipelines.batch import predict as batch_predict
from pipelines.batch import spark as batch_spark
from pipelines.batch.model import resolve_model
from pipelines.config import PipelineConfig
from scoring import tracking


def predict_command(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    """Score a file with a model version; stdout is the summary JSON (progress and the model go to stderr)."""
    tracking_uri = tracking.setup(cfg.tracking_uri)
    job = batch_predict.PredictJob(
        **shell.batch_job(args), input_format=args.input_format or "", output_format=args.output_format or "",
        chunk_rows=args.chunk_rows, resume=args.resume,
    )
    prepared = batch_predict.prepare(job, shell.model_uri(args, cfg), args.backend, tracking_uri,
                                     shell.scoring_overrides(cfg))
    model = prepared.model
    try:
        print(f"model: {model.describe()}; {prepared.source.rows} rows in {job.input}", file=sys.stderr, flush=True)
        scorer = model.load_checked(args.threads)
        shell.print_json(batch_predict.run(prepared, scorer, progress=not args.no_progress))
    finally:
        prepared.lock.release()
    return 0


def spark_predict_command(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    """Score a Parquet file (or folder) on Spark; stdout is the summary JSON."""
    tracking_uri = tracking.setup(cfg.tracking_uri)
    job = batch_spark.SparkJob(**shell.batch_job(args), partitions=args.partitions)
    batch_spark.require_spark()
    batch_spark.check_job(job)
    model = resolve_model(shell.model_uri(args, cfg), args.backend, tracking_uri, shell.scoring_overrides(cfg))
    print(f"model: {model.describe()} on Spark {args.master}", file=sys.stderr, flush=True)
    scoring = model.scoring_settings()  # a folder or version that is no transformers model fails here, not in workers
    with batch_spark.session(args.master, chunk_rows=args.chunk_rows) as spark:
        shell.print_json(batch_spark.spark_predict(spark, job, model, scoring))
    return 0
