"""The inference log and feedback store, off the scoring path, surviving a database outage.

:class:`LogStore` opens the log's database lazily: the API starts and serves while it is
down (``degraded``), and a background thread retries every ``LOG_RETRY_S`` seconds.
Scoring requests put their rows on a bounded queue (``LOG_QUEUE_SIZE``) and return; the
thread writes them in batches once the database answers.  While it is down rows wait in
the queue (a failed batch is retried, not lost); beyond the queue they are dropped and
counted.  Feedback rows are written on the store's own thread (never a scoring thread); with the
database down :meth:`LogStore.add_feedback` raises :class:`LogUnavailable` (``/feedback``
answers 503): an accepted feedback row is always stored.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import sqlalchemy as sa

from scoring import inference_log

# what "the database is away" looks like (retried); any other write error is the rows' own (dropped, counted)
OUTAGE = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.DisconnectionError, OSError)

log = logging.getLogger("app.logwriter")
_STOP = object()


class LogUnavailable(Exception):
    """The log's database cannot be reached now (its error text stays in the server log)."""


class LogStore:
    """The log's database (opened lazily, reopened after an outage) and a thread writing queued prediction rows."""

    def __init__(self, target: str, maxsize: int = 10_000, retry_s: float = 5.0,
                 on_drop: Callable[[int], None] | None = None, on_connect: Callable[[Any], None] | None = None,
                 batch: int = 500) -> None:
        self.target = target
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=maxsize)
        self.retry_s = retry_s
        self.on_drop = on_drop or (lambda n: None)
        self.on_connect = on_connect or (lambda db: None)  # e.g. the retention purge, once per process
        self.batch = batch
        self.written = 0
        self.dropped = 0
        self.db: inference_log.LogDatabase | None = None
        self.failing = False  # the last write or connection attempt failed
        self._lock = threading.Lock()
        self._feedback = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feedback-writer")
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()

    @property
    def degraded(self) -> bool:
        """True while the database is not open or its last write failed."""
        return self.db is None or self.failing

    def start(self) -> None:
        """Try to open the database now (never raises), then start the writer thread."""
        self.connect()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="inference-log-writer", daemon=True)
            self._thread.start()

    def connect(self) -> inference_log.LogDatabase | None:
        """The open database, opening it if needed; None (logged) when it cannot be reached."""
        with self._lock:
            if self.db is None:
                try:
                    db = inference_log.connect(self.target)
                except Exception as err:
                    self.failing = True
                    log.warning("inference log database unreachable (%s); retrying every %g s",
                                type(err).__name__, self.retry_s)
                    return None
                self.db, self.failing = db, False
                log.info("inference log and feedback: %s", db.url)
                try:
                    self.on_connect(db)
                except Exception:  # a failed purge must not make the log unusable
                    log.exception("inference log: start-up task failed")
            return self.db

    def submit(self, rows: list[dict[str, Any]]) -> None:
        """Queue prediction rows without blocking; drop (and count) them when the queue is full."""
        for row in rows:
            try:
                self.queue.put_nowait(row)
            except queue.Full:
                self._drop(1)

    def add_feedback_async(self, text: str, label: int, sender: str) -> Future[int]:
        """Store a feedback row on the store's own thread; the future's result is its id (or LogUnavailable)."""
        return self._feedback.submit(self._add_feedback, text, label, sender)

    def _add_feedback(self, text: str, label: int, sender: str) -> int:
        db = self.connect()
        if db is None:
            raise LogUnavailable("the feedback database is unreachable")
        try:
            row_id = inference_log.add_feedback(db, text, label, sender=sender)
        except Exception as err:
            self.failing = True
            log.warning("feedback write failed: %s", type(err).__name__)
            raise LogUnavailable("the feedback database is unreachable") from err
        self.failing = False
        return row_id

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (within ``timeout`` while the database answers), then stop; the rest is dropped."""
        self._closing.set()
        self._feedback.shutdown(wait=True)
        if self._thread is not None:
            with contextlib.suppress(queue.Full):
                self.queue.put(_STOP, timeout=timeout)
            self._thread.join(timeout)
        left = self.queue.qsize()
        if left:
            self._drop(left)
        if self.db is not None:
            self.db.close()

    def _drop(self, n: int) -> None:
        self.dropped += n
        self.on_drop(n)

    def _take(self) -> tuple[list[dict[str, Any]], bool]:
        """The next batch of queued rows (waiting for the first) and whether close() asked to stop."""
        while True:
            try:
                item = self.queue.get(timeout=self.retry_s)
                break
            except queue.Empty:
                if self.db is None:  # idle while down: keep trying, so /ready stops saying degraded
                    self.connect()
        if item is _STOP:
            return [], True
        rows = [item]
        while len(rows) < self.batch:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return rows, True
            rows.append(item)
        return rows, False

    def _write(self, rows: list[dict[str, Any]]) -> bool:
        """Write ``rows``; False (nothing written) while the database is down."""
        db = self.connect()
        if db is None:
            return False
        try:
            self.written += inference_log.append_predictions(db, rows)
        except OUTAGE as err:  # a lost database or a full disk: retried, the thread lives on
            if not self.failing:
                log.warning("could not append %d inference log rows (%s); retrying every %g s",
                            len(rows), type(err).__name__, self.retry_s)
            self.failing = True
            return False
        except Exception:  # rows the database refuses: retrying would block the log for good
            log.exception("dropped %d inference log rows the database refused", len(rows))
            self._drop(len(rows))
        self.failing = False
        return True

    def _run(self) -> None:
        pending: list[dict[str, Any]] = []
        stop = False
        while True:
            if not pending:
                if stop:
                    return
                pending, stop = self._take()
                if not pending:
                    return
            if self._write(pending):
                pending = []
            elif self._closing.is_set():  # shutting down with the database away: what is left is dropped
                self._drop(len(pending))
                return
            else:
                time.sleep(self.retry_s)
