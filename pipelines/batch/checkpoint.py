"""A batch run's progress on disk, and its output published only when complete.

While a run writes ``out.parquet``, its work lives in ``out.parquet.partial/`` beside it: one
``part-000041.parquet`` per finished chunk and ``state.json`` (the job, and how many chunks are done).
Each is written under a temporary name, fsync'd and renamed, so it is either complete or absent, and the
state counts a chunk only after its part is on disk. At the end the parts are copied in order into the
output format under a temporary name in that folder, fsync'd and renamed to ``out.parquet``, and then its
``.meta.json`` sidecar for CSV / JSONL is published (an older sidecar is removed first, so a sidecar always
describes the output beside it); then the folder goes. A killed run therefore leaves no file named like the
output, and ``--resume`` goes on after the last chunk ``state.json`` counts.

One run at a time per output: :class:`OutputLock` holds ``flock`` on ``out.parquet.lock`` for the whole run,
so a second run on the same output is refused at once, naming the output and the lock.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.config import ConfigError

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
        """``write(tmp)`` the output, publish it and then the sidecar (if any), remove the folder."""
        tmp = self.path / f"output{self.output.suffix}.tmp"
        write(tmp)
        sidecar_path(self.output).unlink(missing_ok=True)  # an older run's must not describe the new output
        publish(tmp, self.output)
        if sidecar is not None:
            write_json(sidecar_path(self.output), sidecar)
        self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def sidecar_path(output: Path) -> Path:
    """Where a CSV / JSONL output's run metadata goes: ``<output>.meta.json``."""
    return output.with_name(output.name + ".meta.json")


class OutputLockedError(ConfigError):
    """Another run holds the output's lock (the message names the flag, the output and the lock)."""


class OutputLock:
    """An exclusive ``flock`` on ``<output>.lock`` beside ``output``, held from :meth:`acquire` to :meth:`release`.

    Refused at once (:class:`OutputLockedError`, naming the output and the lock) while another process holds it;
    the kernel releases it if the holder dies. The file is removed on release, and a lock taken on a file
    another run removed meanwhile is taken again on the new one.
    """

    def __init__(self, output: Path) -> None:
        self.output = output
        self.path = output.with_name(output.name + ".lock")
        self._fd: int | None = None

    def acquire(self, flag: str = "--output") -> OutputLock:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                    raise
                holder = self.path.read_text().strip() if self.path.is_file() else "?"
                raise OutputLockedError(
                    f"{flag}: {self.output} is being written by another run (pid {holder or '?'}), which holds "
                    f"the lock {self.path}; wait for it to finish or choose another {flag}") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self._fd = fd
                return self
            os.close(fd)  # the holder removed it as we opened it: lock the current file

    def release(self) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
