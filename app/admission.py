"""Admission control of the scoring routes: a concurrency limit, a bounded wait, a request timeout.

At most ``MAX_CONCURRENCY`` scoring requests run at once and ``MAX_QUEUE`` more wait for a
slot; any further one is refused at once with 503 and ``Retry-After: RETRY_AFTER_S`` (so an
overloaded replica sheds load instead of letting every latency grow), counted in
``sentiment_requests_rejected_total{reason="overload"}``.  A request still unanswered after
``REQUEST_TIMEOUT_S`` (waiting included) gets 504 (``reason="timeout"``).  Other routes
(probes, ``/metrics``, ``/feedback``, ``/admin``) are not limited: a busy replica still answers
its probes.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# the routes that score (what the limits protect): /predict, /predict/batch, /invocations, V2 infer
SCORING_PATHS = re.compile(r"^/(predict(/batch)?|invocations|v2/models/[^/]+(/versions/[^/]+)?/infer)$")


class Admission:
    """Counts of running and waiting scoring requests; ``None`` from :meth:`enter` means refused."""

    def __init__(self, max_concurrency: int, max_queue: int) -> None:
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.running = 0
        self.waiting = 0
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._loop is not loop:  # one per event loop (tests run several)
            self._slots, self._loop, self.running, self.waiting = asyncio.Semaphore(self.max_concurrency), loop, 0, 0
        return self._slots

    def reserve(self) -> bool:
        """Take a place in the line at once (no await in between: no race); False when there is none."""
        self._semaphore()
        if self.running + self.waiting >= self.max_concurrency + self.max_queue:
            return False
        self.waiting += 1
        return True

    async def acquire(self) -> None:
        """Wait (in the place :meth:`reserve` took) for a slot to run."""
        try:
            await self._semaphore().acquire()
        finally:
            self.waiting -= 1
        self.running += 1

    def release(self) -> None:
        self.running -= 1
        if self._slots is not None:
            self._slots.release()


class AdmissionMiddleware:
    """Pure-ASGI middleware applying :class:`Admission` and the request timeout to :data:`SCORING_PATHS`."""

    def __init__(self, app: ASGIApp, admission: Admission, timeout_s: float, retry_after_s: int,
                 on_reject: Callable[[str], None]) -> None:
        self.app = app
        self.admission = admission
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not SCORING_PATHS.match(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        if not self.admission.reserve():
            self.on_reject("overload")
            await _error(send, 503, "overloaded: too many scoring requests in flight; retry after "
                                    f"{self.retry_after_s} s", {"retry-after": str(self.retry_after_s)})
            return
        started = False

        async def send_started(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        async def admitted() -> None:
            await self.admission.acquire()
            try:
                await self.app(scope, receive, send_started)
            finally:
                self.admission.release()

        try:
            await asyncio.wait_for(admitted(), self.timeout_s)
        except TimeoutError:
            self.on_reject("timeout")
            if not started:
                await _error(send, 504, f"request timeout: not scored within REQUEST_TIMEOUT_S "
                                        f"({self.timeout_s:g} s); retry later", {})


async def _error(send: Send, status: int, detail: str, headers: dict[str, str]) -> None:
    """Answer ``{"detail": ...}`` (the API's error body) with ``status``."""
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           *((k.encode(), v.encode()) for k, v in headers.items())]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
