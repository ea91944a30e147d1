"""``POST /predict`` and ``POST /predict/batch``: the sentiment of reviews.

Both score through :func:`score_texts`: with the model served when the request
arrived, in the micro-batcher or a worker thread (never on the event loop); the
predictions are counted in the metrics and their rows queued for the inference log.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Request, Response, status
from starlette.concurrency import run_in_threadpool

from app.api.deps import BODY_TOO_LARGE, SCORING_LIMITS, SettingsDep, served_model, tag_version
from app.batcher import BatcherFull
from app.clients import client_id
from app.errors import JSONBodyRoute, check_batch_size, check_text_lengths
from app.logwriter import LogStore
from app.model import LoadedModel
from app.schemas import BatchRequest, BatchResponse, PredictRequest, PredictResponse
from scoring import inference_log
from scoring.labels import label_and_confidence

router = APIRouter(tags=["predict"], route_class=JSONBodyRoute)

PREDICT_EXAMPLES = {
    "positive": {"summary": "A positive review", "value": {"text": "The movie was amazing"}},
    "negative": {"summary": "A negative review", "value": {"text": "A dull, lifeless mess. A complete waste of time."}},
    "emoji": {"summary": "Any Unicode is fine", "value": {"text": "Loved every minute 😍🍿"}},
}
BATCH_EXAMPLES = {
    "two": {"summary": "Two reviews", "value": {"texts": ["The movie was amazing", "A dull, lifeless mess."]}},
}


async def score_texts(request: Request, texts: list[str], endpoint: str) -> tuple[list[dict[str, Any]], LoadedModel]:
    """Score with the model served when the request arrived; log and count the predictions."""
    model = await served_model(request)  # after the input checks: a bad request is a 422 even with no model
    state, settings = request.app.state, request.app.state.settings
    writer: LogStore | None = state.writer
    start = time.perf_counter()
    if state.batcher is not None:  # MICRO_BATCH_MS > 0: one model call for concurrent requests
        try:
            probs, stats = await state.batcher.score(model, texts, writer is not None)
        except BatcherFull:
            state.metrics.rejected.labels(reason="overload").inc()
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "overloaded: the micro-batch queue is full",
                                headers={"Retry-After": str(settings.retry_after_s)}) from None
    else:
        probs, stats = await run_in_threadpool(model.score, texts, writer is not None)
    latency_ms = 1000 * (time.perf_counter() - start) / len(texts)
    predictions = [label_and_confidence(p) for p in probs]
    state.metrics.observe_predictions(predictions, texts)
    if writer is not None:
        writer.submit(inference_log.prediction_rows(
            texts, probs, predictions, stats, model_name=model.identity.name, model_version=model.identity.version,
            endpoint=endpoint, latency_ms=latency_ms, log_text=settings.log_raw_text,
            client=client_id(request, settings.trust_forwarded_for),
        ))
    return predictions, model


@router.post("/predict", response_model=PredictResponse, responses=SCORING_LIMITS | BODY_TOO_LARGE)
async def predict(
    request: Request, response: Response, settings: SettingsDep,
    body: Annotated[PredictRequest, Body(openapi_examples=PREDICT_EXAMPLES)],
) -> PredictResponse:
    """Sentiment of one review: the label and the probability of that label."""
    check_text_lengths([body.text], settings.max_text_chars, "text")
    (prediction,), model = await score_texts(request, [body.text], "/predict")
    tag_version(response, model)
    return PredictResponse(**prediction, model_version=model.identity.version)


@router.post("/predict/batch", response_model=BatchResponse, responses=SCORING_LIMITS | BODY_TOO_LARGE)
async def predict_batch(
    request: Request, response: Response, settings: SettingsDep,
    body: Annotated[BatchRequest, Body(openapi_examples=BATCH_EXAMPLES)],
) -> BatchResponse:
    """Sentiment of up to MAX_BATCH reviews, in order."""
    check_batch_size(len(body.texts), settings.max_batch)
    check_text_lengths(body.texts, settings.max_text_chars, "texts")
    predictions, model = await score_texts(request, body.texts, "/predict/batch")
    tag_version(response, model)
    return BatchResponse(predictions=predictions, model_version=model.identity.version)
