"""Appending the inference log off the request path.

Requests put rows on a bounded queue and return; one thread writes them to
the log's database in batches (:mod:`scoring.inference_log`).  When the queue is full the
rows are dropped and counted rather than slowing requests down.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from scoring import inference_log

log = logging.getLogger("app.logwriter")
_STOP = object()


class InferenceLogWriter:
    """A background thread that drains a queue of prediction rows into the inference log."""

    def __init__(self, db: inference_log.LogDatabase, maxsize: int = 10_000,
                 on_drop: Callable[[int], None] | None = None, batch: int = 500) -> None:
        self.db = db  # opened (file and tables created) by the caller: a bad INFERENCE_DB fails at startup
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=maxsize)
        self.on_drop = on_drop or (lambda n: None)
        self.batch = batch
        self.written = 0
        self._thread = threading.Thread(target=self._run, name="inference-log-writer", daemon=True)
        self._thread.start()

    def submit(self, rows: list[dict[str, Any]]) -> None:
        """Queue rows without blocking; drop them if the writer is behind."""
        for row in rows:
            try:
                self.queue.put_nowait(row)
            except queue.Full:
                self.on_drop(1)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the thread."""
        self.queue.put(_STOP)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            rows, stop = [], item is _STOP
            if not stop:
                rows.append(item)
            while not stop and len(rows) < self.batch:
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                else:
                    rows.append(item)
            if rows:
                try:
                    self.written += inference_log.append_predictions(self.db, rows)
                except Exception:  # a full disk or a lost database must not kill the thread
                    log.exception("could not append %d inference log rows", len(rows))
                    self.on_drop(len(rows))
            if stop:
                return
