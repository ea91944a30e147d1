"""``python -m pipelines predict``: a file of reviews scored on one machine, chunk by chunk, resumable.

:func:`prepare` checks everything before any work (the input is read once: its columns and rows; the output
is free and no other run writes it: a lock beside it, held until the run ends; the model resolves to a
version; a ``--resume`` matches the partial run), :func:`run` scores chunk after chunk with a progress bar
(rows/s, ETA), keeping each finished chunk on disk (:mod:`pipelines.batch.checkpoint`), and publishes the
output when the last chunk is done, then its metadata. Memory holds one chunk at a time, whatever the size
of the file.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
from tqdm.auto import tqdm

from pipelines.batch.checkpoint import OutputLock, WorkDir
from pipelines.batch.files import INPUT_FORMATS, OUTPUT_FORMATS, Chunk, Sink, Source, file_format
from pipelines.batch.model import BatchModel, resolve_model
from pipelines.batch.rows import ANSWER_COLUMNS, ROW, VERSION, BatchJob, score_cells
from pipelines.config import ConfigError
from scoring.clock import now
from scoring.runtimes import ScorerLike


@dataclass(frozen=True)
class PredictJob(BatchJob):
    """What ``predict`` scores and where it writes (the CLI's flags)."""

    input_format: str = ""
    output_format: str = ""
    chunk_rows: int = 1000
    resume: bool = False

    @property
    def input_path(self) -> Path:
        return Path(self.input).expanduser()

    @property
    def output_path(self) -> Path:
        return Path(self.output).expanduser()


@dataclass
class Prepared:
    """A checked job: its input, output format, model and partial run (what :func:`run` needs)."""

    job: PredictJob
    source: Source
    output_format: str
    model: BatchModel
    work: WorkDir
    resume_state: dict[str, Any] | None
    lock: OutputLock

    def key(self) -> dict[str, Any]:
        """What a resumed run must share with the partial one."""
        stat = self.job.input_path.stat()
        return {
            "input": str(self.job.input_path.resolve()), "input_bytes": stat.st_size,
            "input_mtime_ns": stat.st_mtime_ns,
            "input_format": self.source.fmt, "text_column": self.job.text_column,
            "keep_columns": list(self.job.keep_columns), "chunk_rows": self.job.chunk_rows,
            "max_text_chars": self.job.max_text_chars, "output_format": self.output_format,
            "model_source": self.model.source, "backend": self.model.backend,
            "scoring_overrides": self.model.scoring_overrides,
        }


def prepare(job: PredictJob, model_uri: str, backend: str, tracking_uri: str,
            scoring_overrides: dict[str, Any] | None = None) -> Prepared:
    """Check the job before any work; ConfigError naming the flag otherwise."""
    if job.chunk_rows < 1:
        raise ConfigError("--chunk-rows: must be at least 1")
    job.check()
    source = Source(job.input_path, file_format(job.input_path, job.input_format, INPUT_FORMATS, "--input"),
                    job.text_column, job.keep_columns)
    out_fmt = file_format(job.output_path, job.output_format, OUTPUT_FORMATS, "--output")
    lock = OutputLock(job.output_path).acquire("--output")  # before the partial run is read: its writer is us
    try:
        work = WorkDir(job.output_path)
        state = work.state() if job.resume else None
        pinned = state is not None and state["job"].get("model_requested") == model_uri
        # resumed, the alias means the version the partial run resolved, even if it has moved since
        model = resolve_model(state["job"]["model_source"] if pinned else model_uri, backend, tracking_uri,
                              scoring_overrides)
        if pinned:
            model = replace(model, requested=model_uri)
        prepared = Prepared(job, source, out_fmt, model, work, state, lock)
        if state is not None:
            recorded = {k: state["job"].get(k) for k in prepared.key()}
            differ = sorted(k for k, v in prepared.key().items() if recorded[k] != v)
            if differ:
                raise ConfigError(f"--resume: the partial run in {work.path} differs in {', '.join(differ)}; "
                                  "rerun without --resume to start over")
    except BaseException:
        lock.release()
        raise
    return prepared


def _chunk_table(chunk: Chunk, first_row: int, scored: dict[str, list[Any]], version: str) -> pa.Table:
    """A chunk's output rows: ``row``, the carried columns, the answers, ``model_version``."""
    n = len(chunk)
    columns: dict[str, pa.Array] = {ROW: pa.array(range(first_row, first_row + n), pa.int64())}
    columns.update({name: chunk.carried.column(name) for name in chunk.carried.column_names})
    columns["sentiment"] = pa.array(scored["sentiment"], pa.string())
    columns["confidence"] = pa.array(scored["confidence"], pa.float64())
    columns[VERSION] = pa.array([version] * n, pa.string())
    columns["error"] = pa.array(scored["error"], pa.string())
    return pa.table(columns)


def _begin(prepared: Prepared) -> dict[str, Any]:
    """The state to go on from: the partial run's when resuming, else a new one (discarding any partial run)."""
    work, job = prepared.work, prepared.job
    if prepared.resume_state is not None:
        state = prepared.resume_state
        print(f"resuming after chunk {state['chunks_done']} ({state['rows_done']} of {prepared.source.rows} rows "
              "done)", file=sys.stderr)
        return state
    if job.resume:
        print(f"nothing to resume in {work.path}: starting from the first row", file=sys.stderr)
    elif work.state() is not None:
        print(f"discarding the partial run in {work.path} (--resume would continue it)", file=sys.stderr)
    return work.start({**prepared.key(), "model_requested": prepared.model.requested})


def _score_chunks(prepared: Prepared, scorer: ScorerLike, state: dict[str, Any],
                  progress: bool) -> tuple[dict[str, Any], float]:
    """Score the chunks after ``state``'s last one, committing each; the final state, and the seconds spent in
    :func:`score_cells` (the scorer; the rest of the loop is reading, building and writing)."""
    job, work = prepared.job, prepared.work
    problems = Counter(state["problems"])
    in_scorer = 0.0
    with tqdm(total=prepared.source.rows, initial=state["rows_done"], unit="rows", desc="scoring", file=sys.stderr,
              disable=not progress, dynamic_ncols=True, mininterval=0.5) as bar:
        for index, chunk in enumerate(prepared.source.chunks(job.chunk_rows)):
            if index < state["chunks_done"]:
                continue
            started = time.perf_counter()
            scored = score_cells(scorer, chunk.texts, job.max_text_chars)
            in_scorer += time.perf_counter() - started
            problems.update(scored.problems())
            table = _chunk_table(chunk, state["rows_done"], scored.columns(), prepared.model.version)
            state = {**state, "chunks_done": index + 1, "rows_done": state["rows_done"] + len(chunk),
                     "problems": dict(problems)}
            work.commit_chunk(index, table, state)
            bar.update(len(chunk))
    return state, in_scorer


def _publish(prepared: Prepared, chunks: int, summary: dict[str, Any]) -> None:
    """Copy the parts in order into the output (metadata inside a Parquet file, else beside it), then rename."""
    work = prepared.work
    schema = next(work.parts(1)).schema if chunks else _chunk_table(
        Chunk([], prepared.source.empty_carried()), 0, {c: [] for c in ANSWER_COLUMNS}, prepared.model.version,
    ).schema

    def write(tmp: Path) -> None:
        sink = Sink(tmp, prepared.output_format, schema, summary)
        try:
            for part in work.parts(chunks):
                sink.write(part)
        finally:
            sink.close()

    work.finish(write, None if prepared.output_format == "parquet" else summary)


def run(prepared: Prepared, scorer: ScorerLike, progress: bool = True) -> dict[str, Any]:
    """Score every chunk not done yet, keep each on disk, publish the output; the run's summary.

    The output's lock (taken by :func:`prepare`) is released at the end, whatever happens.
    """
    try:
        return _run(prepared, scorer, progress)
    finally:
        prepared.lock.release()


def _run(prepared: Prepared, scorer: ScorerLike, progress: bool) -> dict[str, Any]:
    job, model = prepared.job, prepared.model
    state = _begin(prepared)
    resumed_after = state["rows_done"]
    started = time.perf_counter()
    state, in_scorer = _score_chunks(prepared, scorer, state, progress)
    seconds = time.perf_counter() - started
    problems = state["problems"]
    summary = {
        "input": job.input, "output": job.output, "output_format": prepared.output_format,
        "rows": state["rows_done"], "scored": state["rows_done"] - sum(problems.values()),
        "errors": sum(problems.values()), "error_kinds": dict(sorted(problems.items())),
        "model": {k: v for k, v in model.record().items() if k != "tracking_uri"},
        "scoring": scorer.scoring.model_dump(), "max_text_chars": job.max_text_chars,
        "text_column": job.text_column, "chunk_rows": job.chunk_rows, "chunks": state["chunks_done"],
        "resumed_after_rows": resumed_after, "seconds": round(seconds, 3), "scorer_seconds": round(in_scorer, 3),
        "rows_per_s": round((state["rows_done"] - resumed_after) / seconds, 2) if seconds > 0 else None,
        "created_at": now(),
    }
    started = time.perf_counter()
    _publish(prepared, state["chunks_done"], summary)
    return {**summary, "publish_seconds": round(time.perf_counter() - started, 3)}
