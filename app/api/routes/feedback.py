"""``POST /feedback``: a labelled review from a credentialed sender, stored ``pending`` until a reviewer accepts it."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, status

from app.api.deps import BODY_TOO_LARGE, FEEDBACK_REFUSALS, FeedbackSender, LogStoreDep, SettingsDep
from app.errors import JSONBodyRoute, check_text_lengths
from app.logwriter import LogUnavailable
from app.schemas import ErrorMessage, FeedbackRequest, FeedbackResponse

router = APIRouter(tags=["feedback"], route_class=JSONBodyRoute)

FEEDBACK_EXAMPLES = {
    "label": {"summary": "A labelled review", "value": {"text": "The movie was amazing", "label": "Positive"}},
    "number": {"summary": "Labels may be 1 / 0", "value": {"text": "A dull, lifeless mess.", "label": 0}},
}


UNAVAILABLE = "feedback not stored: its database is unreachable or slow; retry later"
LOG_DOWN: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorMessage, "description": "the feedback database is unreachable: nothing stored, retry"},
}


@router.post("/feedback", response_model=FeedbackResponse, status_code=status.HTTP_201_CREATED,
             responses=FEEDBACK_REFUSALS | BODY_TOO_LARGE | LOG_DOWN)
async def feedback(
    sender: FeedbackSender, settings: SettingsDep, logstore: LogStoreDep,
    body: Annotated[FeedbackRequest, Body(openapi_examples=FEEDBACK_EXAMPLES)],
) -> FeedbackResponse:
    """Store a labelled review, with its sender's hashed token, as ``pending``: it trains (``include_feedback``)
    only once accepted (``python -m pipelines feedback accept``). Needs ``Authorization: Bearer <feedback token>``.
    Written on the log store's own thread, never a scoring one; 503 (nothing stored) while its database is down."""
    check_text_lengths([body.text], settings.max_text_chars, "text")
    future = logstore.add_feedback_async(body.text, body.label, sender)
    try:
        row_id = await asyncio.wait_for(asyncio.wrap_future(future), settings.request_timeout_s)
    except (LogUnavailable, TimeoutError):
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, UNAVAILABLE,
                            headers={"Retry-After": str(max(1, settings.retry_after_s))}) from None
    return FeedbackResponse(id=row_id, label=body.label)
