"""A batch run's progress on disk, and its output published only when complete.

While a run writes ``out.parquet``, its work lives in ``out.parquet.partial/`` beside it: one
``part-000041.parquet`` per finished chunk and ``state.json`` (the job, and how many chunks are done).
Each is written under a temporary name, fsync'd and renamed, so it is either complete or absent, and the
state counts a chunk only after its part is on disk. At the end the parts are copied in order into the
output format under a temporary name in that folder, fsync'd and renamed to ``out.parquet`` (after its
``.meta.json`` sidecar for CSV / JSONL); then the folder goes. A killed run therefore leaves no file named
like the output, and ``--resume`` goes on after the last chunk ``state.json`` counts.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

STATE = "state.json"


def fsync_path(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: Path, final: Path) -> None:
    """Make ``tmp`` durable and rename it to ``final`` (same folder: atomic), then make the rename durable."""
    fsync_path(tmp)
    os.replace(tmp, final)
    fsync_path(final.parent)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """``path`` holds ``data`` completely, or keeps what it held."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    publish(tmp, path)


class WorkDir:
    """``<output>.partial/``: the parts and state of the run writing ``output``."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.path = output.with_name(output.name + ".partial")

    @property
    def state_path(self) -> Path:
        return self.path / STATE

    def state(self) -> dict[str, Any] | None:
        """What the last run recorded, or None if there is no partial run."""
        return json.loads(self.state_path.read_text()) if self.state_path.is_file() else None

    def start(self, job: dict[str, Any]) -> dict[str, Any]:
        """A new partial run of ``job`` (any earlier one is discarded); its state."""
        self.discard()
        self.path.mkdir(parents=True)
        state = {"job": job, "chunks_done": 0, "rows_done": 0, "problems": {}}
        write_json(self.state_path, state)
        return state

    def part(self, index: int) -> Path:
        return self.path / f"part-{index:06d}.parquet"

    def commit_chunk(self, index: int, table: pa.Table, state: dict[str, Any]) -> None:
        """Write chunk ``index`` durably, then record ``state`` (which counts it)."""
        tmp = self.part(index).with_suffix(".tmp")
        pq.write_table(table, tmp)
        publish(tmp, self.part(index))
        write_json(self.state_path, state)

    def parts(self, count: int) -> Iterator[pa.Table]:
        for index in range(count):
            yield pq.read_table(self.part(index))

    def finish(self, write: Callable[[Path], None], sidecar: dict[str, Any] | None = None) -> None:
        """``write(tmp)`` the output, publish the sidecar (if any) and then the output, remove the folder."""
        tmp = self.path / f"output{self.output.suffix}.tmp"
        write(tmp)
        if sidecar is not None:
            write_json(sidecar_path(self.output), sidecar)
        publish(tmp, self.output)
        self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def sidecar_path(output: Path) -> Path:
    """Where a CSV / JSONL output's run metadata goes: ``<output>.meta.json``."""
    return output.with_name(output.name + ".meta.json")
