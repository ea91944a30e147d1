"""The sentiment API: ``uvicorn app.main:app`` (``make serve``).

The model is loaded once at startup and swapped atomically when its alias moves
(polling every ``RELOAD_INTERVAL_S`` seconds, or ``POST /admin/reload``).
Scoring runs in worker threads, never on the event loop.  See docs/serving.md.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, closing, suppress
from dataclasses import asdict, is_dataclass
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool
from swagger_ui_bundle import swagger_ui_path

from app.batcher import MicroBatcher
from app.errors import BodyLimitMiddleware, check_batch_size, check_text_lengths, validation_error_handler
from app.logwriter import InferenceLogWriter
from app.model import LoadedModel, ModelManager
from app.schemas import (
    BatchRequest,
    BatchResponse,
    FeedbackRequest,
    FeedbackResponse,
    ModelInfo,
    PredictRequest,
    PredictResponse,
    ReloadResponse,
)
from app.settings import Settings
from app.telemetry import MetricsMiddleware, ServingMetrics
from pipelines import inference_log, tracking
from pipelines.inference import label_and_confidence

log = logging.getLogger("app")

PREDICT_EXAMPLES = {
    "positive": {"summary": "A positive review", "value": {"text": "The movie was amazing"}},
    "negative": {"summary": "A negative review", "value": {"text": "A dull, lifeless mess. A complete waste of time."}},
    "emoji": {"summary": "Any Unicode is fine", "value": {"text": "Loved every minute 😍🍿"}},
}
BATCH_EXAMPLES = {
    "two": {"summary": "Two reviews", "value": {"texts": ["The movie was amazing", "A dull, lifeless mess."]}},
}
FEEDBACK_EXAMPLES = {
    "label": {"summary": "A labelled review", "value": {"text": "The movie was amazing", "label": "Positive"}},
    "number": {"summary": "Labels may be 1 / 0", "value": {"text": "A dull, lifeless mess.", "label": 0}},
}


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
    writer = None
    if settings.inference_log:
        writer = InferenceLogWriter(settings.inference_db_path, settings.log_queue_size, metrics.log_dropped.inc)
        metrics.log_queue.set_function(writer.queue.qsize)
    manager = ModelManager(
        settings,
        on_change=lambda model: metrics.model_changed(model, settings.backend),
        on_attempt=metrics.reload_attempted,
    )
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-loader")  # one load at a time
    app.state.manager, app.state.writer, app.state.loader = manager, writer, executor
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(executor, manager.reload, "startup")
    poller = None
    if settings.reload_interval_s > 0:
        poller = asyncio.create_task(_poll(manager, settings.reload_interval_s, executor))
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
        if writer:
            writer.close()


async def _poll(manager: ModelManager, interval: float, executor: ThreadPoolExecutor) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval)
        try:
            await loop.run_in_executor(executor, manager.reload, "poll")
        except Exception:  # keep polling whatever happened
            log.exception("alias polling failed")


# -- helpers -------------------------------------------------------------------------------
def _serving(request: Request) -> LoadedModel:
    model = request.app.state.manager.current
    if model is None:
        error = (request.app.state.manager.last_error or {}).get("message", "still loading")
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"no model loaded: {error}")
    return model


async def _score(request: Request, texts: list[str], endpoint: str) -> tuple[list[dict[str, Any]], LoadedModel]:
    """Score with the model served when the request arrived; log and count the predictions."""
    model = _serving(request)
    state, settings = request.app.state, request.app.state.settings
    writer: InferenceLogWriter | None = state.writer
    start = time.perf_counter()
    if state.batcher is not None:  # MICRO_BATCH_MS > 0: one model call for concurrent requests
        probs, stats = await state.batcher.score(model, texts, writer is not None)
    else:
        probs, stats = await run_in_threadpool(model.score, texts, writer is not None)
    latency_ms = 1000 * (time.perf_counter() - start) / len(texts)
    predictions = [label_and_confidence(p) for p in probs]
    state.metrics.observe_predictions(predictions, texts)
    if writer is not None:
        writer.submit(inference_log.prediction_rows(
            texts, probs, predictions, stats, model_name=model.identity.name, model_version=model.identity.version,
            endpoint=endpoint, latency_ms=latency_ms, log_text=settings.log_raw_text,
        ))
    return predictions, model


bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <ADMIN_TOKEN>")


def require_admin(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    token = request.app.state.settings.admin_token
    if token is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admin endpoints disabled: set ADMIN_TOKEN to enable them")
    given = credentials.credentials if credentials else ""
    if not secrets.compare_digest(given.encode(), token.get_secret_value().encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "missing or wrong admin token (send Authorization: Bearer <ADMIN_TOKEN>)",
            headers={"WWW-Authenticate": "Bearer"},
        )


# -- the app -------------------------------------------------------------------------------
def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(
        title="Sentiment API",
        version="1.0.0",
        summary="Movie-review sentiment from the MLflow Model Registry",
        description="Scores reviews with the registered model the production alias points at. See docs/serving.md.",
        lifespan=lifespan,
        docs_url=None,  # served below from local files: no CDN, works offline and in the container
    )
    app.mount("/static/swagger", StaticFiles(directory=str(swagger_ui_path)), name="swagger")
    app.state.settings = settings
    app.state.metrics = ServingMetrics()
    app.state.batcher = MicroBatcher(settings.micro_batch_ms, settings.max_batch) if settings.micro_batch_ms else None
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)  # outermost: counts the 413s too

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url, title=f"{app.title} - Swagger UI",
            swagger_js_url="/static/swagger/swagger-ui-bundle.js", swagger_css_url="/static/swagger/swagger-ui.css",
            swagger_favicon_url="/static/swagger/favicon-32x32.png",
        )

    @app.post("/predict", response_model=PredictResponse, tags=["predict"],
              responses={503: {"description": "no model loaded"}})
    async def predict(
        request: Request, body: Annotated[PredictRequest, Body(openapi_examples=PREDICT_EXAMPLES)]
    ) -> PredictResponse:
        """Sentiment of one review: the label and the probability of that label."""
        check_text_lengths([body.text], settings.max_text_chars, "text")
        (prediction,), model = await _score(request, [body.text], "/predict")
        return PredictResponse(**prediction, model_version=model.identity.version)

    @app.post("/predict/batch", response_model=BatchResponse, tags=["predict"],
              responses={503: {"description": "no model loaded"}})
    async def predict_batch(
        request: Request, body: Annotated[BatchRequest, Body(openapi_examples=BATCH_EXAMPLES)]
    ) -> BatchResponse:
        """Sentiment of up to MAX_BATCH reviews, in order."""
        check_batch_size(len(body.texts), settings.max_batch)
        check_text_lengths(body.texts, settings.max_text_chars, "texts")
        predictions, model = await _score(request, body.texts, "/predict/batch")
        return BatchResponse(predictions=predictions, model_version=model.identity.version)

    @app.post("/feedback", response_model=FeedbackResponse, status_code=status.HTTP_201_CREATED, tags=["feedback"])
    def feedback(body: Annotated[FeedbackRequest, Body(openapi_examples=FEEDBACK_EXAMPLES)]) -> FeedbackResponse:
        """Store a labelled review for the next retraining (``include_feedback``)."""
        check_text_lengths([body.text], settings.max_text_chars, "text")
        with closing(inference_log.connect(settings.inference_db_path)) as conn:
            row_id = inference_log.add_feedback(conn, body.text, body.label)
        return FeedbackResponse(id=row_id, label=body.label)

    @app.get("/health", tags=["ops"])
    async def health() -> dict[str, str]:
        """The process is up (the model may still be loading)."""
        return {"status": "ok"}

    @app.get("/ready", tags=["ops"], responses={503: {"description": "no model loaded"}})
    async def ready(request: Request) -> dict[str, str]:
        """A model is loaded and requests are scored."""
        model = _serving(request)
        return {"status": "ready", "model_version": model.identity.version}

    @app.get("/model", response_model=ModelInfo, tags=["ops"])
    async def model_info(request: Request) -> ModelInfo:
        """What is served: registered name, version, alias, run, evaluation metrics, last reload error."""
        manager: ModelManager = request.app.state.manager
        model = manager.current
        info: dict[str, Any] = {
            "loaded": model is not None, "model_uri": settings.model_uri, "backend": settings.backend,
            "reload_interval_s": settings.reload_interval_s, "last_checked_at": manager.last_checked_at,
            "last_reload_error": manager.last_error,
        }
        if model is not None:
            scoring = model.scorer.scoring
            info.update(model.identity.as_dict(), loaded_at=model.loaded_at, load_seconds=round(model.load_seconds, 3),
                        scoring=asdict(scoring) if is_dataclass(scoring) else dict(scoring))
        return ModelInfo(**info)

    @app.get("/metrics", tags=["ops"], response_class=Response)
    async def metrics(request: Request) -> Response:
        """Prometheus exposition."""
        return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/admin/reload", response_model=ReloadResponse, tags=["admin"], dependencies=[Depends(require_admin)],
              responses={401: {"description": "missing or wrong token"}, 403: {"description": "ADMIN_TOKEN unset"},
                         502: {"description": "the new version could not be loaded; the old one still serves"}})
    async def reload(
        request: Request, force: Annotated[bool, Query(description="reload even if the version is unchanged")] = False
    ) -> Any:
        """Load the version MODEL_URI points at now and swap it in (the old one serves until then)."""
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(request.app.state.loader, request.app.state.manager.reload, "admin", force)
        body = ReloadResponse(**{k: v for k, v in result.as_dict().items() if k != "origin"})
        if result.status == "failed":
            return JSONResponse(body.model_dump(), status_code=status.HTTP_502_BAD_GATEWAY)
        return body

    return app


app = create_app()
