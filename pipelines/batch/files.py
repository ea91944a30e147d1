"""Batch files in chunks: CSV / TSV / JSONL / Parquet in, Parquet / CSV / JSONL out.

Reading streams with the ecosystem's readers: pyarrow's CSV reader (quoted fields may hold newlines),
pandas' chunked JSON-lines reader (it keeps each cell's JSON type, so a number where a text should be is
seen as one), pyarrow's Parquet batches. :meth:`Source.chunks` yields chunks of exactly ``rows`` rows (the
last one shorter), so chunk ``k`` is the same rows on every run: what ``--resume`` relies on. Writing
appends chunks with pyarrow's Parquet and CSV writers and pandas' JSON lines.

Columns carried through (``--keep-columns``) keep their type from Parquet; from CSV, TSV and JSONL they are
strings (a JSON value that is not a string is written as its JSON text), so every chunk has one schema.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from pipelines.config import ConfigError

INPUT_FORMATS = ("csv", "tsv", "jsonl", "parquet")
OUTPUT_FORMATS = ("parquet", "csv", "jsonl")
META_KEY = b"sentiment_mlops.batch"  # the run's metadata in a Parquet output's key-value metadata
CSV_BLOCK_BYTES = 1 << 20


def file_format(path: Path, given: str, choices: Sequence[str], flag: str) -> str:
    """``given``, else the format the file's suffix names; ConfigError naming ``flag`` if neither does."""
    fmt = given or path.suffix.lower().lstrip(".")
    if fmt not in choices:
        raise ConfigError(f"{flag}: cannot tell the format of {path} from its suffix; name it with "
                          f"{flag}-format ({', '.join(choices)})")
    return fmt


@dataclass(frozen=True)
class Chunk:
    """Consecutive input rows: the text cells as Python values (None where null or missing), the carried columns."""

    texts: list[Any]
    carried: pa.Table

    def __len__(self) -> int:
        return len(self.texts)


def rechunk(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Tables of exactly ``rows`` rows (the last one shorter) from record batches of any size."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        while batch.num_rows:
            take = min(rows - held, batch.num_rows)
            pending.append(batch.slice(0, take))
            held += take
            batch = batch.slice(take)
            if held == rows:
                yield pa.Table.from_batches(pending)
                pending, held = [], 0
    if held:
        yield pa.Table.from_batches(pending)


def _json_text(value: Any) -> str | None:
    """A JSON cell as a string column's value: strings as they are, anything else as its JSON text."""
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def cells(series: pd.Series) -> list[Any]:
    """The values of a pandas column, None where missing (NaN, None, pd.NA)."""
    return series.astype(object).where(series.notna(), None).tolist()


class Source:
    """An input file: its format, its columns, its rows, and its chunks of the text column and carried columns."""

    def __init__(self, path: Path, fmt: str, text_column: str, keep_columns: Sequence[str] = ()) -> None:
        if not path.is_file():
            raise ConfigError(f"--input: {path} {'is not a file' if path.exists() else 'does not exist'}")
        self.path, self.fmt, self.text_column = path, fmt, text_column
        self.keep_columns = tuple(keep_columns)
        self.columns, self.rows = self._scan()
        missing = [c for c in (text_column, *self.keep_columns) if c not in self.columns]
        if missing:
            flag = "--text-column" if text_column in missing else "--keep-columns"
            raise ConfigError(f"{flag}: {path} has no column {missing[0]!r} "
                              f"(columns: {', '.join(map(str, self.columns))})")

    def _fail(self, err: Exception) -> ConfigError:
        return ConfigError(f"--input: cannot read {self.path} as {self.fmt}: {str(err).strip()[:500]}")

    # -- the whole file once: its columns and rows (a malformed text file fails here, before any scoring) --
    def _scan(self) -> tuple[list[str], int]:
        try:
            if self.fmt == "parquet":
                meta = pq.ParquetFile(self.path)
                return list(meta.schema_arrow.names), meta.metadata.num_rows
            if self.fmt == "jsonl":
                columns: dict[str, None] = {}
                rows = 0
                for frame in self._json_frames(10_000):
                    columns.update(dict.fromkeys(map(str, frame.columns)))
                    rows += len(frame)
                return list(columns), rows
            columns_csv = list(self._csv_reader(()).schema.names)  # opening reads the header and first block only
            return columns_csv, sum(batch.num_rows for batch in self._csv_reader(columns_csv[:1]))
        except (pa.ArrowException, OSError, ValueError) as err:
            raise self._fail(err) from None

    def _csv_reader(self, columns: Sequence[str]) -> pcsv.CSVStreamingReader:
        """pyarrow's streaming reader of ``columns`` (all if empty) as strings: no type guessed per block."""
        return pcsv.open_csv(
            self.path, read_options=pcsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
            parse_options=pcsv.ParseOptions(delimiter="\t" if self.fmt == "tsv" else ",", newlines_in_values=True),
            convert_options=pcsv.ConvertOptions(include_columns=list(columns),
                                                column_types=dict.fromkeys(columns, pa.string())),
        )

    def _json_frames(self, rows: int) -> Iterator[pd.DataFrame]:
        with pd.read_json(self.path, lines=True, chunksize=rows, dtype=False) as reader:
            yield from reader

    def empty_carried(self) -> pa.Table:
        """The carried columns with no rows, typed as :meth:`chunks` types them."""
        if self.fmt == "parquet":
            schema = pq.read_schema(self.path)
            return pa.table({c: pa.array([], schema.field(c).type) for c in self.keep_columns})
        return pa.table({c: pa.array([], pa.string()) for c in self.keep_columns})

    # -- chunks ------------------------------------------------------------------------------------------
    def chunks(self, rows: int) -> Iterator[Chunk]:
        """The file in chunks of ``rows`` rows; ConfigError if it cannot be read (it changed since the scan)."""
        wanted = list(dict.fromkeys((self.text_column, *self.keep_columns)))
        try:
            if self.fmt == "jsonl":
                for frame in self._json_frames(rows):
                    frame = frame.reindex(columns=wanted)  # a chunk may lack a key altogether
                    carried = pa.table({c: pa.array([_json_text(v) for v in cells(frame[c])], pa.string())
                                        for c in self.keep_columns})
                    yield Chunk(cells(frame[self.text_column]), carried)
                return
            if self.fmt == "parquet":
                # pre_buffer (pyarrow's default) reads ahead every row group's column chunks: memory would grow
                # with the file (measured: +70 MB of Arrow buffers over a 74 MB file of 1M rows); off, one at a time
                parquet = pq.ParquetFile(self.path, pre_buffer=False)
                batches: Iterable[pa.RecordBatch] = parquet.iter_batches(rows, columns=wanted)
            else:
                batches = self._csv_reader(wanted)
            for table in rechunk(batches, rows):
                yield Chunk(table.column(self.text_column).to_pylist(), table.select(list(self.keep_columns)))
        except (pa.ArrowException, OSError, ValueError) as err:
            raise self._fail(err) from None


class Sink:
    """An output file written chunk by chunk: Parquet (``metadata`` in its key-value metadata), CSV or JSONL."""

    def __init__(self, path: Path, fmt: str, schema: pa.Schema, metadata: dict[str, Any]) -> None:
        self.path, self.fmt = path, fmt
        self._parquet: pq.ParquetWriter | None = None
        self._csv: pcsv.CSVWriter | None = None
        self._jsonl = None
        if fmt == "parquet":
            meta = {**(schema.metadata or {}), META_KEY: json.dumps(metadata, default=str).encode()}
            self._parquet = pq.ParquetWriter(path, schema.with_metadata(meta))
        elif fmt == "csv":
            self._csv = pcsv.CSVWriter(path, schema)
        else:
            self._jsonl = open(path, "w", encoding="utf-8")  # noqa: SIM115 (closed by close())

    def write(self, table: pa.Table) -> None:
        if self._parquet is not None:
            self._parquet.write_table(table)
        elif self._csv is not None:
            self._csv.write_table(table)
        elif table.num_rows:
            text = table.to_pandas().to_json(orient="records", lines=True, force_ascii=False)
            self._jsonl.write(text if text.endswith("\n") else text + "\n")

    def close(self) -> None:
        for writer in (self._parquet, self._csv, self._jsonl):
            if writer is not None:
                writer.close()


def read_metadata(path: Path) -> dict[str, Any]:
    """The run metadata of a Parquet output (what :class:`Sink` wrote)."""
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta[META_KEY]) if META_KEY in meta else {}
