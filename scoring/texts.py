"""What counts as a text the model may score: the rules the API applies to a request and batch scoring to a row.

The API refuses a bad text with a 422 (:mod:`app.schemas`, :mod:`app.errors`); batch scoring
writes the same reason into the row's ``error`` column and goes on. Both use the messages here,
so a row and a request fail for the same reason in the same words.
"""

from __future__ import annotations

from typing import NamedTuple

MAX_TEXT_CHARS = 20_000  # the API's MAX_TEXT_CHARS default, batch scoring's --max-text-chars
EMPTY = "text must not be empty or whitespace only"
SURROGATE = "text is not valid Unicode (it holds a lone surrogate)"


class TextProblem(NamedTuple):
    """Why a value cannot be scored: a short ``kind`` (counted in summaries) and a message."""

    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


def too_long_message(chars: int, limit: int) -> str:
    return f"text has {chars} characters; the limit is MAX_TEXT_CHARS={limit}"


def content_problem(text: str) -> TextProblem | None:
    """An empty or whitespace-only string, or one holding a lone UTF-16 surrogate; None if it is fine."""
    if not text.strip():
        return TextProblem("empty", EMPTY)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return TextProblem("invalid_unicode", SURROGATE)
    return None


def text_problem(value: object, limit: int = MAX_TEXT_CHARS) -> TextProblem | None:
    """Why ``value`` (a cell of an input file) cannot be scored: null, not a string, empty, too long; else None."""
    if value is None:
        return TextProblem("null", "no text (null or missing)")
    if not isinstance(value, str):
        return TextProblem("not_string", f"text is a {type(value).__name__}, not a string")
    problem = content_problem(value)  # checked first, as the API's request schema does
    if problem is None and len(value) > limit:
        problem = TextProblem("too_long", too_long_message(len(value), limit))
    return problem
