"""Request and response bodies (what Swagger at ``/docs`` shows)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from scoring.texts import content_problem

Sentiment = Literal["Positive", "Negative"]


def _check_text(value: str) -> str:
    problem = content_problem(value)
    if problem is not None:
        raise ValueError(problem.message)
    return value


# strict: a number or a list is refused, never turned into a string
Text = Annotated[str, Field(strict=True), AfterValidator(_check_text)]


class PredictRequest(BaseModel):
    text: Text = Field(description="a review, any language or length up to MAX_TEXT_CHARS characters")

    model_config = ConfigDict(json_schema_extra={"examples": [{"text": "The movie was amazing"}]})


class BatchRequest(BaseModel):
    texts: list[Text] = Field(min_length=1, description="1 to MAX_BATCH reviews")

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"texts": ["The movie was amazing", "A dull, lifeless mess."]}]}
    )


class Prediction(BaseModel):
    sentiment: Sentiment
    confidence: float = Field(ge=0.5, le=1.0, description="probability of the returned label")

    model_config = ConfigDict(json_schema_extra={"examples": [{"sentiment": "Positive", "confidence": 0.87}]})


class PredictResponse(Prediction):
    model_version: str = Field(description="registered version that scored the text")

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"sentiment": "Positive", "confidence": 0.87, "model_version": "3"}]}
    )


class BatchResponse(BaseModel):
    predictions: list[Prediction]
    model_version: str


class FeedbackRequest(BaseModel):
    text: Text
    label: int = Field(description='"Positive" / "Negative" (any case) or 1 / 0')

    model_config = ConfigDict(json_schema_extra={"examples": [{"text": "The movie was amazing", "label": "Positive"}]})

    @field_validator("label", mode="before")
    @classmethod
    def _label(cls, value: Any) -> int:
        if isinstance(value, str) and value.strip().lower() in {"positive", "1"}:
            return 1
        if isinstance(value, str) and value.strip().lower() in {"negative", "0"}:
            return 0
        if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
            return value
        raise ValueError('label must be "Positive", "Negative", 1 or 0')


class FeedbackResponse(BaseModel):
    id: int
    label: int


class ModelInfo(BaseModel):
    loaded: bool
    name: str | None = None
    version: str | None = None
    alias: str | None = None
    run_id: str | None = None
    source: str | None = None
    model_uri: str
    backend: str
    loaded_at: str | None = None
    load_seconds: float | None = None
    metrics: dict[str, float] = Field(default_factory=dict, description="the version's eval.* tags")
    scoring: dict[str, Any] = Field(default_factory=dict, description="long-text strategy and its settings")
    reload_interval_s: float
    last_checked_at: str | None = None
    last_reload_error: dict[str, Any] | None = None


class ReloadResponse(BaseModel):
    status: Literal["loaded", "unchanged", "skipped", "failed"]
    previous_version: str | None = None
    version: str | None = None
    error: str | None = None
