"""The app's lifespan: load the model before serving, poll its alias while serving, flush the log on shutdown.

Startup configures logging and the runtimes (torch threads, no progress bars), points
MLflow at the tracking store, starts the inference log store (:class:`app.logwriter.LogStore`:
a log database that is down does not stop the start, the store retries in the background and
purges old rows once it is reached), loads the model
on a one-thread executor (one load at a time, never on the event loop); while serving,
a task reloads every ``RELOAD_INTERVAL_S`` seconds (± ``RELOAD_JITTER``, so replicas
started together do not poll the registry together) when the alias moved.  What it
creates lives on ``app.state``: ``manager``, ``writer`` (the log store while INFERENCE_LOG is on, else None),
``loader``; ``gc.freeze()`` after the load keeps the model's objects out of later collections (flat RSS).

Shutdown (after uvicorn has finished the requests in flight) stops polling, scores what
the micro-batcher still holds, and flushes the inference log.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress

from fastapi import FastAPI

from app.logwriter import LogStore
from app.model import ModelManager
from app.settings import Settings
from app.telemetry import ServingMetrics
from scoring import inference_log, tracking

log = logging.getLogger("app")


def _configure_runtime(threads: int) -> None:
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(threads)
    hf_logging.disable_progress_bar()  # no "Loading weights" bars in the server log


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load the model before serving; poll the alias while serving; flush the log on shutdown."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings: Settings = app.state.settings
    metrics: ServingMetrics = app.state.metrics
    _configure_runtime(settings.torch_threads)
    tracking.setup(settings.tracking_uri)
    logstore: LogStore = app.state.logstore

    def purge(db: inference_log.LogDatabase) -> None:
        purged = inference_log.purge(db, inference_log.cutoff(settings.feedback_retention_days),
                                     inference_log.cutoff(settings.inference_log_retention_days))
        log.info("retention: deleted %d feedback rows, %d prediction rows", purged["feedback"], purged["predictions"])

    logstore.on_connect = purge
    await asyncio.get_running_loop().run_in_executor(None, logstore.start)  # never raises: a down DB is retried
    writer = logstore if settings.inference_log else None
    manager = ModelManager(
        settings,
        on_change=lambda model: metrics.model_changed(model, settings.backend),
        on_attempt=metrics.reload_attempted,
    )
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-loader")  # one load at a time
    app.state.manager, app.state.writer, app.state.loader = manager, writer, executor
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(executor, manager.reload, "startup")
    gc.freeze()  # what the load built is never collected again: later collections stay short, RSS flat
    poller = None
    if settings.reload_interval_s > 0:
        poller = asyncio.create_task(_poll(manager, settings.reload_interval_s, settings.reload_jitter, executor))
    try:
        yield
    finally:
        if poller:
            poller.cancel()
            with suppress(asyncio.CancelledError):
                await poller
        executor.shutdown(wait=False, cancel_futures=True)
        if app.state.batcher is not None:
            await app.state.batcher.aclose()
        logstore.close()


def poll_delay(interval: float, jitter: float) -> float:
    """The wait before the next alias check: ``interval`` × a uniform factor in [1 − jitter, 1 + jitter]."""
    return interval * random.uniform(1 - jitter, 1 + jitter)


async def _poll(manager: ModelManager, interval: float, jitter: float, executor: ThreadPoolExecutor) -> None:
    """Reload (if the alias moved) every ``interval`` (± ``jitter``) seconds, whatever the previous attempt did."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(poll_delay(interval, jitter))
        try:
            await loop.run_in_executor(executor, manager.reload, "poll")
        except Exception:  # keep polling whatever happened
            log.exception("alias polling failed")
