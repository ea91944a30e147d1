"""``python -m pipelines spark-predict``: the file path's scoring on Spark, Parquet in and out.

The model runs as a Spark pandas UDF over the same :class:`~scoring.scorer.Scorer`, runtime (ONNX Runtime
int8 by default) and rules for bad texts as ``predict`` and ``/predict`` (:func:`pipelines.batch.rows.score_cells`),
not as ``mlflow.pyfunc.spark_udf``: that runs the transformers flavor's pipeline in PyTorch fp32 and scores
only the first ``max_length`` tokens of a long review, so its answers differ from the API's, and it is
slower on the same cores (both measured: BENCHMARKS.md, "Batch scoring"). What the two share, and what is
handled here:

* each Python worker (one per core) loads its own copy of the model, once, and keeps it for the tasks it
  runs (``spark.python.worker.reuse``); each scores with one thread (ONNX Runtime intra-op threads = 1,
  ``OMP_NUM_THREADS=1``), so N workers use N cores instead of fighting over them;
* the workers import this package and its dependencies from their own Python (like ``env_manager="local"``):
  in local mode that is this venv (``PYSPARK_PYTHON``); on a cluster install the project on the executors;
* every worker loads ``models:/NAME/N``, the version the alias meant when the job started.

The input's rows keep their position: ``row`` is ``_metadata.row_index`` (the row's index in its Parquet
file), with ``file`` when the input is a folder of files. The output is a folder of Parquet part files,
written by Spark under ``<output>.partial`` and renamed to ``<output>`` when the job succeeded, with the
run's metadata in ``<output>/_sentiment_mlops.json`` (Spark and Parquet readers skip ``_`` files). An older
output (``--overwrite``) is removed only once the new one is in place: a failed run leaves it; a second run
on the same local output is refused while one runs (a lock beside it).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pa_dataset

from pipelines.batch.checkpoint import OutputLock, fsync_path
from pipelines.batch.files import cells
from pipelines.batch.model import BatchModel
from pipelines.batch.rows import FILE, ROW, VERSION, BatchJob, score_cells
from pipelines.config import ConfigError
from pipelines.registry.model_folder import replace_folder
from scoring import tracking
from scoring.clock import now
from scoring.runtimes import ScorerLike

ANSWER_SCHEMA = "sentiment string, confidence double, error string"
METADATA_FILE = "_sentiment_mlops.json"
# pyspark 4.x warns on pandas 3 at every import of its pandas layer; the UDFs here use plain Series/DataFrames
PANDAS_WARNING = "PySpark does not yet fully support pandas"
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
              "PYTHONWARNINGS": f"ignore:{PANDAS_WARNING}:FutureWarning"}

_worker_scorers: dict[tuple[Any, ...], ScorerLike] = {}  # one model per Python worker process, kept across tasks


def require_spark() -> None:
    """ConfigError unless pyspark is installed and Java can be found (before any work)."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise ConfigError("spark-predict: pyspark is not installed; pip install 'sentiment-mlops[spark]' "
                          "(or make install, which includes it)") from None
    java_home = os.environ.get("JAVA_HOME", "")
    if not shutil.which("java") and not (java_home and (Path(java_home) / "bin" / "java").is_file()):
        raise ConfigError("spark-predict: Java was not found (set JAVA_HOME or put java on PATH; on Debian: "
                          "apt-get install openjdk-17-jre-headless)")


@contextlib.contextmanager
def session(master: str = "local[*]", ui: bool = True, chunk_rows: int = 1000) -> Iterator[Any]:
    """A SparkSession whose Python workers run this interpreter, one thread each, ``chunk_rows`` per UDF call.

    An active session is reused (and left running); one started here is stopped on exit.
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        yield active
        return

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # local mode: workers use this venv
    warnings.filterwarnings("ignore", message=PANDAS_WARNING, category=FutureWarning)
    builder = (SparkSession.builder.master(master).appName("sentiment-mlops batch")
               .config("spark.ui.enabled", str(ui).lower())
               .config("spark.python.worker.reuse", "true")
               .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(chunk_rows)))
    for name, value in WORKER_ENV.items():
        builder = builder.config(f"spark.executorEnv.{name}", value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    try:
        yield spark
    finally:
        spark.stop()


def worker_scorer(model: BatchModel) -> ScorerLike:
    """The model of this Python worker: loaded at its first task with one thread, then reused."""
    key = (model.source, model.backend, tuple(sorted(model.scoring_overrides.items())))
    if key not in _worker_scorers:
        import torch

        torch.set_num_threads(1)
        tracking.setup(model.tracking_uri)
        _worker_scorers[key] = model.load(threads=1, parallel=1)
    return _worker_scorers[key]


def answers_udf(model: BatchModel, max_chars: int) -> Any:
    """The pandas UDF: a column of texts → struct(sentiment, confidence, error), through :func:`score_cells`."""
    from pyspark.sql.functions import pandas_udf

    def score(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        scorer = worker_scorer(model)
        for texts in batches:
            yield pd.DataFrame(score_cells(scorer, cells(texts), max_chars).columns())

    return pandas_udf(score, ANSWER_SCHEMA)


@dataclass(frozen=True)
class SparkJob(BatchJob):
    """What ``spark-predict`` scores and where it writes (the CLI's flags)."""

    partitions: int = 0  # 0 = at least 4 per core


def _is_local(path: str) -> bool:
    return "://" not in path


def _check_columns(job: SparkJob, columns: list[str]) -> None:
    missing = [c for c in (job.text_column, *job.keep_columns) if c not in columns]
    if missing:
        flag = "--text-column" if job.text_column in missing else "--keep-columns"
        raise ConfigError(f"{flag}: {job.input} has no column {missing[0]!r} (columns: {', '.join(columns)})")


def check_job(job: SparkJob) -> None:
    """Before Spark starts: the shared checks, and a local input is Parquet with the columns asked for."""
    job.check()
    if _is_local(job.input):
        if not Path(job.input).exists():
            raise ConfigError(f"--input: {job.input} does not exist")
        try:
            columns = pa_dataset.dataset(job.input, format="parquet").schema.names
        except (pa.ArrowException, OSError) as err:
            raise ConfigError(f"--input: cannot read {job.input} as Parquet: {str(err).strip()[:300]}") from None
        _check_columns(job, columns)


def spark_predict(spark: Any, job: SparkJob, model: BatchModel, scoring: dict[str, Any]) -> dict[str, Any]:
    """Score ``job.input`` on ``spark``; the run's summary (also written beside the part files).

    A local output is locked for the run (:class:`~pipelines.batch.checkpoint.OutputLock`): a second run on it
    is refused while this one writes its ``.partial`` folder.
    """
    if not _is_local(job.output):
        return _spark_predict(spark, job, model, scoring)
    with OutputLock(Path(job.output)):
        return _spark_predict(spark, job, model, scoring)


def _spark_predict(spark: Any, job: SparkJob, model: BatchModel, scoring: dict[str, Any]) -> dict[str, Any]:
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F

    try:
        frame = spark.read.parquet(job.input)
    except AnalysisException as err:
        raise ConfigError(f"--input: cannot read {job.input} as Parquet: {str(err).splitlines()[0]}") from None
    _check_columns(job, frame.columns)
    folder_input = _is_local(job.input) and Path(job.input).is_dir()
    ids = [F.col("_metadata.row_index").alias(ROW)]
    ids += [F.col("_metadata.file_name").alias(FILE)] if folder_input else []
    frame = frame.select(*ids, *(F.col(c) for c in job.keep_columns), F.col(job.text_column).alias("_text"))
    wanted = job.partitions or 4 * spark.sparkContext.defaultParallelism
    if frame.rdd.getNumPartitions() < wanted:  # a file of few row groups is one task: spread it over the cores
        frame = frame.repartition(wanted)
    scored = frame.select(
        *(c for c in frame.columns if c != "_text"),
        answers_udf(model, job.max_text_chars)(F.col("_text")).alias("_answer"),
    ).select(
        *(c for c in frame.columns if c != "_text"), "_answer.sentiment", "_answer.confidence",
        F.lit(model.version).alias(VERSION), "_answer.error",
    )
    target = job.output + ".partial" if _is_local(job.output) else job.output
    if _is_local(target):
        shutil.rmtree(target, ignore_errors=True)
    started = time.perf_counter()
    scored.write.mode("overwrite" if job.overwrite or _is_local(target) else "errorifexists").parquet(target)
    seconds = time.perf_counter() - started
    written = spark.read.parquet(target)
    kinds = {row["kind"]: row["count"] for row in written.where(F.col("error").isNotNull())
             .groupBy(F.substring_index("error", ":", 1).alias("kind")).count().collect()}
    rows = written.count()
    summary = {
        "input": job.input, "output": job.output, "output_format": "parquet", "engine": "spark",
        "master": spark.sparkContext.master, "rows": rows, "scored": rows - sum(kinds.values()),
        "errors": sum(kinds.values()), "error_kinds": dict(sorted(kinds.items())),
        "model": {k: v for k, v in model.record().items() if k != "tracking_uri"}, "scoring": scoring,
        "max_text_chars": job.max_text_chars, "text_column": job.text_column,
        "tasks": frame.rdd.getNumPartitions(), "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds, 2) if seconds > 0 else None, "created_at": now(),
    }
    if _is_local(job.output):
        (Path(target) / METADATA_FILE).write_text(json.dumps(summary, indent=2) + "\n")
        _replace_folder(Path(target), Path(job.output))
    return summary


def _replace_folder(new: Path, final: Path) -> None:
    """Rename the finished ``new`` folder to ``final``; an existing one (--overwrite) is removed only once the
    new one is in place (:func:`~pipelines.registry.model_folder.replace_folder`): a failed run leaves it."""
    fsync_path(new)
    replace_folder(new, final)
    fsync_path(final.parent)
