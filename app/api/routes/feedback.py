"""``POST /feedback``: a labelled review from a credentialed sender, stored ``pending`` until a reviewer accepts it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, status

from app.api.deps import BODY_TOO_LARGE, FEEDBACK_REFUSALS, FeedbackSender, LogDbDep, SettingsDep
from app.errors import JSONBodyRoute, check_text_lengths
from app.schemas import FeedbackRequest, FeedbackResponse
from scoring import inference_log

router = APIRouter(tags=["feedback"], route_class=JSONBodyRoute)

FEEDBACK_EXAMPLES = {
    "label": {"summary": "A labelled review", "value": {"text": "The movie was amazing", "label": "Positive"}},
    "number": {"summary": "Labels may be 1 / 0", "value": {"text": "A dull, lifeless mess.", "label": 0}},
}


@router.post("/feedback", response_model=FeedbackResponse, status_code=status.HTTP_201_CREATED,
             responses=FEEDBACK_REFUSALS | BODY_TOO_LARGE)
def feedback(
    sender: FeedbackSender, settings: SettingsDep, logdb: LogDbDep,
    body: Annotated[FeedbackRequest, Body(openapi_examples=FEEDBACK_EXAMPLES)],
) -> FeedbackResponse:
    """Store a labelled review, with its sender's hashed token, as ``pending``: it trains (``include_feedback``)
    only once accepted (``python -m pipelines feedback accept``). Needs ``Authorization: Bearer <feedback token>``."""
    check_text_lengths([body.text], settings.max_text_chars, "text")
    row_id = inference_log.add_feedback(logdb, body.text, body.label, sender=sender)
    return FeedbackResponse(id=row_id, label=body.label)
