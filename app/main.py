"""The sentiment API: ``uvicorn app.main:app`` (``make serve``).

The model is loaded once at startup and swapped atomically when its alias moved
(polling every ``RELOAD_INTERVAL_S`` seconds, or ``POST /admin/reload``).
Scoring runs in worker threads, never on the event loop.  See docs/serving.md.

Layout: :mod:`app.lifespan` (load, poll, log writer), :mod:`app.api.deps` (what routes
depend on), :mod:`app.api.routes` (one router per tag); this module only assembles them.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from app.admission import Admission, AdmissionMiddleware
from app.api.router import api_router
from app.api.routes.docs import SWAGGER_STATIC
from app.batcher import MicroBatcher
from app.clients import TokenBucket
from app.errors import BodyLimitMiddleware, validation_error_handler
from app.lifespan import lifespan
from app.logwriter import LogStore
from app.schemas import openapi_with_limits
from app.settings import Settings
from app.telemetry import MetricsMiddleware, ServingMetrics


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app serving with ``settings`` (default: read from the environment)."""
    settings = settings or Settings()
    app = FastAPI(
        title="Sentiment API",
        version="1.0.0",
        summary="Movie-review sentiment from the MLflow Model Registry",
        description="Scores reviews with the registered model the production alias points at. See docs/serving.md.",
        lifespan=lifespan,
        docs_url=None,  # served by app.api.routes.docs from local files: no CDN, works offline and in the container
    )
    app.mount(SWAGGER_STATIC, StaticFiles(directory=str(swagger_ui_path)), name="swagger")
    app.state.settings = settings
    app.state.draining = False  # set by app.server on SIGTERM: /ready answers 503 from then on
    app.state.metrics = ServingMetrics()
    # the inference log and feedback: opened by the lifespan (or the first /feedback), reopened after an outage
    app.state.logstore = LogStore(settings.inference_db_target, settings.log_queue_size, settings.log_retry_s,
                                  on_drop=app.state.metrics.log_dropped.inc)
    app.state.admission = admission = Admission(settings.max_concurrency, settings.max_queue)
    app.state.metrics.watch_admission(admission, app.state.logstore)
    app.state.feedback_tokens = settings.feedback_token_list  # read once: a changed file needs a restart
    app.state.feedback_limiter = TokenBucket(settings.feedback_rate_per_minute, settings.feedback_burst)
    app.state.batcher = (MicroBatcher(settings.micro_batch_ms, settings.max_batch,
                                      max_pending=settings.max_concurrency + settings.max_queue)
                         if settings.micro_batch_ms else None)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(AdmissionMiddleware, admission=admission, timeout_s=settings.request_timeout_s,
                       retry_after_s=settings.retry_after_s,
                       on_reject=lambda reason: app.state.metrics.rejected.labels(reason=reason).inc())
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)  # outermost: counts the 413s too
    app.include_router(api_router)
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        """FastAPI's schema with this app's MAX_TEXT_CHARS and MAX_BATCH in it (built once)."""
        if app.openapi_schema is None:
            app.openapi_schema = openapi_with_limits(default_openapi(), settings)
        return app.openapi_schema

    app.openapi = openapi
    return app


app = create_app()
