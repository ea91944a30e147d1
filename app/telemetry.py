"""Prometheus metrics of the server and the middleware that counts requests.

One :class:`ServingMetrics` per app, on its own registry (so two apps in one
process never clash).  Run one worker per container: the counters live in the
process.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.model import LoadedModel, ReloadResult

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CONFIDENCE_BUCKETS = (0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.99, 1.0)
CHARS_BUCKETS = (50, 100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600)


class ServingMetrics:
    """Request, prediction and model metrics (prefix ``sentiment_``)."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.requests = Counter(
            "sentiment_http_requests", "HTTP requests", ["method", "endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "sentiment_http_request_duration_seconds", "HTTP request latency", ["method", "endpoint"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.predictions = Counter("sentiment_predictions", "Predictions per returned label", ["label"], registry=r)
        self.confidence = Histogram(
            "sentiment_prediction_confidence", "Probability of the returned label", buckets=CONFIDENCE_BUCKETS,
            registry=r,
        )
        self.text_chars = Histogram("sentiment_text_chars", "Characters per scored text", buckets=CHARS_BUCKETS,
                                    registry=r)
        self.model_info = Info("sentiment_model", "The served model", registry=r)
        self.model_version = Gauge("sentiment_model_version", "Served registered version (-1: none)", registry=r)
        self.model_loaded = Gauge("sentiment_model_loaded", "1 when a model is loaded", registry=r)
        self.reloads = Counter("sentiment_model_reloads", "Model load attempts that did something", ["result"],
                               registry=r)
        self.log_dropped = Counter("sentiment_inference_log_dropped", "Log rows dropped (queue full or write error)",
                                   registry=r)
        self.log_queue = Gauge("sentiment_inference_log_queue", "Log rows waiting for the writer", registry=r)
        self.rejected = Counter("sentiment_requests_rejected", "Scoring requests refused (overload: 503) or timed "
                                "out (timeout: 504)", ["reason"], registry=r)
        self.in_flight = Gauge("sentiment_requests_in_flight", "Scoring requests running (admitted)", registry=r)
        self.waiting = Gauge("sentiment_requests_waiting", "Scoring requests waiting for a slot", registry=r)
        self.degraded = Gauge("sentiment_degraded", "1 while a component is unavailable (the API still serves)",
                              ["component"], registry=r)
        self.model_version.set(-1)
        self.model_loaded.set(0)

    def watch_admission(self, admission: Any, logstore: Any) -> None:
        """Read the admission controller's counts and the log store's state at each scrape."""
        self.in_flight.set_function(lambda: admission.running)
        self.waiting.set_function(lambda: admission.waiting)
        self.degraded.labels(component="inference_log").set_function(lambda: float(logstore.degraded))
        self.log_queue.set_function(logstore.queue.qsize)

    def model_changed(self, model: LoadedModel, backend: str) -> None:
        ident = model.identity
        self.model_info.info({
            "name": ident.name, "version": ident.version, "alias": ident.alias, "run_id": ident.run_id,
            "source": ident.source, "backend": backend, "loaded_at": model.loaded_at,
        })
        try:
            self.model_version.set(float(ident.version))
        except ValueError:
            self.model_version.set(-1)
        self.model_loaded.set(1)

    def reload_attempted(self, result: ReloadResult) -> None:
        if result.status in {"loaded", "failed"}:
            self.reloads.labels(result="success" if result.status == "loaded" else "failure").inc()

    def observe_predictions(self, predictions: Iterable[dict[str, Any]], texts: Iterable[str]) -> None:
        for pred, text in zip(predictions, texts, strict=True):
            self.predictions.labels(label=pred["sentiment"]).inc()
            self.confidence.observe(pred["confidence"])
            self.text_chars.observe(len(text))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts every HTTP request and times it, labelled by route template (not raw path)."""

    def __init__(self, app: ASGIApp, metrics: ServingMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method=method, endpoint=endpoint, status=str(status)).inc()
            self.metrics.latency.labels(method=method, endpoint=endpoint).observe(time.perf_counter() - start)
