"""``python -m app``: one uvicorn process serving one app, with a drain before the graceful shutdown.

On SIGTERM (Kubernetes deleting a pod, ``make replicas-down``, a rolling restart) the server
first *drains*: for ``DRAIN_S`` seconds ``/ready`` answers 503 while every request is still
served, so the load balancer's health check (or the kubelet's readiness probe) takes the
replica out of rotation before it stops listening.  Then uvicorn's own graceful shutdown
runs: it closes the listening socket and idle connections, waits up to
``GRACEFUL_TIMEOUT_S`` for the requests in flight (micro-batches included: the batcher works
until the lifespan ends), and the lifespan flushes the inference log.  A second SIGTERM, or
SIGINT, skips what is left of the drain.  Longest exit: DRAIN_S + GRACEFUL_TIMEOUT_S + the
log flush (at most 10 s).
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import uvicorn
from fastapi import FastAPI

from app.main import create_app
from app.settings import Settings

log = logging.getLogger("app.server")


class DrainingServer(uvicorn.Server):
    """``uvicorn.Server`` whose first SIGTERM marks the app not ready and shuts down ``drain_s`` seconds later."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, drain_s: float) -> None:
        super().__init__(config)
        self.app, self.drain_s = app, drain_s
        self._timer: threading.Timer | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM or self.drain_s <= 0 or self.app.state.draining:
            if self._timer is not None:
                self._timer.cancel()
            super().handle_exit(sig, frame)
            return
        self.app.state.draining = True
        log.info("SIGTERM: not ready any more; draining for %.1fs before the graceful shutdown", self.drain_s)
        self._timer = threading.Timer(self.drain_s, super().handle_exit, (sig, frame))
        self._timer.daemon = True
        self._timer.start()


def serve(settings: Settings | None = None) -> None:
    """Serve ``create_app(settings)`` on HOST:PORT until SIGTERM/SIGINT (one worker: the model is in memory)."""
    settings = settings or Settings()
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, workers=1, log_level="info",
                            timeout_graceful_shutdown=int(settings.graceful_timeout_s + 0.999))
    DrainingServer(config, app, settings.drain_s).run()
