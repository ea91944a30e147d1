"""Request and response bodies: the API's contract, as ``/openapi.json`` and Swagger at ``/docs`` show it.

The schema says what the server enforces, so schema-driven clients and fuzzers are not misled
(``tests/test_api_contract.py`` runs schemathesis against a live server):

* a text is a string with at least one character that is not whitespace (:data:`NON_BLANK_PATTERN`,
  which the validator itself uses) and at most ``MAX_TEXT_CHARS`` characters;
* ``texts`` holds 1 to ``MAX_BATCH`` of them;
* a feedback label is ``"Positive"`` / ``"Negative"`` in any case, ``"1"`` / ``"0"`` (padding whitespace
  allowed: :data:`LABEL_PATTERN`, again the validator's own), or the number 1 / 0.

The settings-dependent limits are marked with :data:`LIMITS` here and filled in with the values of the
app's :class:`~app.settings.Settings` by :func:`openapi_with_limits` (``app.main.create_app``).
Patterns spell whitespace out code point by code point (Python's ``str.isspace``), never ``\\s``:
``\\s`` means other sets in Python, ECMA-262 and Rust, and every one of them must read the same schema.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from scoring.texts import content_problem

if TYPE_CHECKING:
    from app.settings import Settings

Sentiment = Literal["Positive", "Negative"]

# every character str.isspace() is true for (what str.strip() removes), as a regex class body
WHITESPACE = r"\u0009-\u000d\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NON_BLANK_PATTERN = f"[^{WHITESPACE}]"  # a text must match it somewhere: one character that is not whitespace
LABEL_PATTERN = (
    f"^[{WHITESPACE}]*(?:[Pp][Oo][Ss][Ii][Tt][Ii][Vv][Ee]|[Nn][Ee][Gg][Aa][Tt][Ii][Vv][Ee]|1|0)[{WHITESPACE}]*$"
)
_LABEL = re.compile(LABEL_PATTERN)

# {"keyword": "settings_field"} in a schema: the keyword gets that field's value (openapi_with_limits)
LIMITS = "x-limits"


def _check_text(value: str) -> str:
    problem = content_problem(value)
    if problem is not None:
        raise ValueError(problem.message)
    return value


# strict: a number or a list is refused, never turned into a string
Text = Annotated[
    str,
    Field(strict=True, json_schema_extra={
        "minLength": 1, "pattern": NON_BLANK_PATTERN, LIMITS: {"maxLength": "max_text_chars"},
    }),
    AfterValidator(_check_text),
]

LABEL_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "string", "pattern": LABEL_PATTERN}, {"type": "integer", "enum": [0, 1]}],
    "description": '"Positive" / "Negative" (any case) or 1 / 0; stored as 1 / 0',
}


def openapi_with_limits(schema: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """``schema`` with every :data:`LIMITS` marker replaced by the keywords it names, at ``settings``' values."""
    if isinstance(schema, dict):
        limits = schema.pop(LIMITS, None) or {}
        for value in schema.values():
            openapi_with_limits(value, settings)
        schema.update({keyword: getattr(settings, field) for keyword, field in limits.items()})
    elif isinstance(schema, list):
        for item in schema:
            openapi_with_limits(item, settings)
    return schema


class ErrorMessage(BaseModel):
    """The body of a 413 or a 503 (and of 401/403/502 on ``/admin``)."""

    detail: str


class PredictRequest(BaseModel):
    text: Text = Field(description="a review: any language, 1 to MAX_TEXT_CHARS characters, not only whitespace")

    model_config = ConfigDict(json_schema_extra={"examples": [{"text": "The movie was amazing"}]})


class BatchRequest(BaseModel):
    texts: list[Text] = Field(
        min_length=1, description="1 to MAX_BATCH reviews", json_schema_extra={LIMITS: {"maxItems": "max_batch"}}
    )

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
    label: Annotated[int, WithJsonSchema(LABEL_SCHEMA)]

    model_config = ConfigDict(json_schema_extra={"examples": [{"text": "The movie was amazing", "label": "Positive"}]})

    @field_validator("label", mode="before")
    @classmethod
    def _label(cls, value: Any) -> int:
        """What LABEL_SCHEMA says: the pattern's strings, and 1 / 0 (JSON Schema's integers: 1.0 is 1, true is not)."""
        if isinstance(value, str) and _LABEL.search(value):
            return 1 if value.strip().lower() in {"positive", "1"} else 0
        if isinstance(value, int | float) and not isinstance(value, bool) and value in (0, 1):
            return int(value)
        raise ValueError('label must be "Positive", "Negative" (any case), 1 or 0')


class FeedbackResponse(BaseModel):
    id: int
    label: Literal[0, 1] = Field(description="1 = Positive, 0 = Negative")


class ModelInfo(BaseModel):
    loaded: bool
    name: str | None = None
    version: str | None = None
    alias: str | None = None
    run_id: str | None = Field(None, description="admin callers only")
    source: str | None = Field(None, description="admin callers only")
    model_uri: str | None = Field(None, description="MODEL_URI; admin callers only")
    backend: str
    loaded_at: str | None = None
    load_seconds: float | None = None
    metrics: dict[str, float] = Field(default_factory=dict, description="the version's eval.* tags")
    scoring: dict[str, Any] = Field(default_factory=dict, description="long-text strategy and its settings")
    reload_interval_s: float
    last_checked_at: str | None = None
    last_reload_error: dict[str, Any] | None = Field(
        None, description="time, origin, target_version; its message for admin callers only")


class ReloadResponse(BaseModel):
    status: Literal["loaded", "unchanged", "skipped", "failed"]
    previous_version: str | None = None
    version: str | None = None
    error: str | None = None
