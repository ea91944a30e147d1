"""Micro-batching: concurrent requests scored in one model call (``MICRO_BATCH_MS`` > 0).

Requests put their texts on a queue; one worker task takes what is queued, waits up to
``window_ms`` for more (only while requests keep arriving together: after a batch of one
it does not wait, so a lone client pays no delay), scores everything with one
``LoadedModel.score`` call in a worker thread (one tokenizer call, one padded forward per
length bucket) and hands each request its slice.  Texts of different model versions (a
reload in between) are never mixed.

A model whose scoring calls may overlap (``LoadedModel.calls_at_once`` > 1: the int8
runtime, one ONNX Runtime call per text, ``ONNX_PARALLEL`` at once) gets up to that many
batches in flight: the next batch starts while the last one's longest text is still being
scored, so no core waits for a straggler (a batch is done only when its last text is).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool


class BatcherFull(Exception):
    """The micro-batcher's queue holds ``max_pending`` requests already (the caller answers 503)."""


@dataclass
class _Item:
    model: Any  # app.model.LoadedModel
    texts: list[str]
    with_stats: bool
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    """Collects concurrent ``score`` calls into batches of at most ``max_texts`` texts."""

    def __init__(self, window_ms: float, max_texts: int = 64, max_pending: int = 0):
        self.window = max(0.0, window_ms) / 1000
        self.max_texts = max(1, max_texts)
        self.max_pending = max(0, max_pending)  # requests queued at most (0 = unbounded); beyond: BatcherFull
        self.last_batch_requests = 0
        self.batches = 0
        self._queue: asyncio.Queue[_Item] | None = None
        self._worker: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._carry: _Item | None = None
        self._in_flight: set[asyncio.Task] = set()

    async def score(self, model: Any, texts: list[str], with_stats: bool) -> tuple[np.ndarray, list]:
        """What ``model.score(texts, with_stats)`` returns, computed together with concurrent calls."""
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done() or self._loop is not loop:
            self._queue, self._loop, self._carry = asyncio.Queue(self.max_pending), loop, None
            self._worker = loop.create_task(self._run(), name="micro-batcher")
        future = loop.create_future()
        try:
            self._queue.put_nowait(_Item(model, list(texts), with_stats, future))
        except asyncio.QueueFull:
            raise BatcherFull(f"micro-batch queue full ({self.max_pending} requests)") from None
        return await future

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        if self._in_flight:  # batches already being scored finish: their requests get their answers
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def _collect(self) -> list[_Item]:
        queue = self._queue
        assert queue is not None
        batch = [self._carry or await queue.get()]
        self._carry = None
        size = len(batch[0].texts)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.window if self.last_batch_requests > 1 else 0.0)
        while size < self.max_texts:
            try:
                if queue.empty() and (remaining := deadline - loop.time()) > 0:
                    item = await asyncio.wait_for(queue.get(), remaining)
                else:
                    item = queue.get_nowait()
            except (TimeoutError, asyncio.QueueEmpty):
                break
            if size + len(item.texts) > self.max_texts:
                self._carry = item  # first in the next batch
                break
            batch.append(item)
            size += len(item.texts)
        return batch

    async def _run(self) -> None:
        self._in_flight = set()
        at_once = 1  # batches in flight: the calls_at_once of the model last scored
        while True:
            while len(self._in_flight) >= at_once:
                await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
            batch = await self._collect()
            self.last_batch_requests, self.batches = len(batch), self.batches + 1
            groups: dict[int, list[_Item]] = {}  # one call per served model (by identity: models are unhashable)
            for item in batch:
                if not item.future.done():  # a cancelled request (client gone) is not scored
                    groups.setdefault(id(item.model), []).append(item)
            for items in groups.values():
                model = items[0].model
                at_once = max(1, getattr(model, "calls_at_once", 1))
                if at_once == 1:
                    await self._score(model, items)
                else:
                    task = asyncio.get_running_loop().create_task(self._score(model, items))
                    self._in_flight.add(task)
                    task.add_done_callback(self._in_flight.discard)

    @staticmethod
    async def _score(model: Any, items: list[_Item]) -> None:
        texts = [t for item in items for t in item.texts]
        try:
            probs, stats = await run_in_threadpool(model.score, texts, any(i.with_stats for i in items))
        except Exception as err:  # every waiting request gets the error
            for item in items:
                if not item.future.done():
                    item.future.set_exception(err)
            return
        start = 0
        for item in items:
            end = start + len(item.texts)
            if not item.future.done():
                item.future.set_result((probs[start:end], stats[start:end] if item.with_stats else []))
            start = end
