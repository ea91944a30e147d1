"""Real input files for the batch tests: reviews with bad rows mixed in, in every input format, and the CLI."""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.cli import main
from scoring.texts import MAX_TEXT_CHARS

MISSING = object()  # a JSONL row without the text key
# bad cells, and the error each gets per input format: CSV/TSV have no null and no numbers ("" and "42"),
# Parquet's column is strings (42 is written "42"), JSONL keeps each cell's JSON type
BAD: dict[str, Any] = {"empty": "", "whitespace": "  \t  ", "null": None, "number": 42, "missing": MISSING,
                       "too_long": "long review. " * (MAX_TEXT_CHARS // 12 + 1)}
EXPECTED_KIND = {
    "empty": dict.fromkeys(("csv", "tsv", "jsonl", "parquet"), "empty"),
    "whitespace": dict.fromkeys(("csv", "tsv", "jsonl", "parquet"), "empty"),
    "null": {"csv": "empty", "tsv": "empty", "jsonl": "null", "parquet": "null"},
    "number": {"csv": None, "tsv": None, "jsonl": "not_string", "parquet": None},
    "missing": {"csv": "empty", "tsv": "empty", "jsonl": "null", "parquet": "null"},
    "too_long": dict.fromkeys(("csv", "tsv", "jsonl", "parquet"), "too_long"),
}


def review_cells(texts: Sequence[str], n: int = 240) -> tuple[list[Any], list[str | None]]:
    """``n`` real reviews (one of them long: several windows) with each bad cell mixed in three times.

    Returns the cells and, per cell, the name of its bad kind (None for a review).
    """
    cells: list[Any] = list(texts[:n])
    cells[5] = " ".join(texts[n:n + 30])  # a long review: the sliding windows
    kinds: list[str | None] = [None] * len(cells)
    for i, (name, value) in enumerate(BAD.items()):
        for position in (3 + i, 100 + 7 * i, len(cells) - 1 - i):
            cells.insert(position, value)
            kinds.insert(position, name)
    return cells, kinds


def write_inputs(folder: Path, cells: Sequence[Any]) -> dict[str, Path]:
    """The cells, with an ``id`` column, as CSV, TSV, JSONL and Parquet files."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = [f"r{i:05d}" for i in range(len(cells))]
    as_text = [None if c is None or c is MISSING else str(c) for c in cells]
    frame = pd.DataFrame({"id": ids, "text": as_text})
    paths = {fmt: folder / f"reviews.{fmt}" for fmt in ("csv", "tsv", "jsonl", "parquet")}
    frame.to_csv(paths["csv"], index=False)
    frame.to_csv(paths["tsv"], index=False, sep="\t")
    with open(paths["jsonl"], "w", encoding="utf-8") as out:
        for row_id, cell in zip(ids, cells, strict=True):
            row = {"id": row_id} if cell is MISSING else {"id": row_id, "text": cell}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    pq.write_table(pa.table({"id": pa.array(ids), "text": pa.array(as_text, pa.string())}), paths["parquet"],
                   row_group_size=100)
    return paths


def cli(*argv: Any) -> tuple[int, dict[str, Any] | None, str]:
    """``python -m pipelines ARGV`` in this process: exit status, the stdout JSON (if any), stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    text = out.getvalue()
    return code, json.loads(text) if text.strip().startswith("{") else None, err.getvalue()


def cell_value(value: Any) -> Any:
    """A cell read back from any output format: None for null / NaN / missing."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def answers(frame: pd.DataFrame) -> list[tuple[Any, Any, Any]]:
    """(sentiment, confidence, error) per row, in ``row`` order, nulls as None."""
    frame = frame.sort_values("row")
    return [tuple(cell_value(v) for v in row) for row in frame[["sentiment", "confidence", "error"]].itertuples(
        index=False)]
