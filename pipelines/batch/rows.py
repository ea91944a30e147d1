"""The rows of a batch output: one chunk of text cells → sentiment, confidence and error, as ``/predict`` answers.

The valid texts go to the scorer in one ``predict_proba`` call (the Scorer the API runs, with its long-text
strategy); a cell the API would refuse (:func:`scoring.texts.text_problem`: null, not a string, empty or
whitespace only, longer than MAX_TEXT_CHARS, a lone surrogate) gets ``error`` = ``"<kind>: <message>"`` and
no answer. The local loop and the Spark UDF both score through :func:`score_cells`; :class:`BatchJob` is what
both are given.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.config import ConfigError
from scoring.labels import label_and_confidence
from scoring.runtimes import ScorerLike
from scoring.texts import MAX_TEXT_CHARS, text_problem

ANSWER_COLUMNS = ("sentiment", "confidence", "error")
ROW, FILE, VERSION = "row", "file", "model_version"  # the row's index in its file, the file (Spark), the version
OWN_COLUMNS = (ROW, FILE, *ANSWER_COLUMNS, VERSION)  # every output column that is not an input's


@dataclass(frozen=True)
class BatchJob:
    """What both engines are given: input and output (paths; URIs too on Spark), the columns, the text limit."""

    input: str
    output: str
    text_column: str = "text"
    keep_columns: tuple[str, ...] = ()  # input columns copied to the output (an id, say)
    max_text_chars: int = MAX_TEXT_CHARS
    overwrite: bool = False

    def check(self) -> None:
        """The flags both engines check first: the limit, the carried columns, a free local output."""
        if self.max_text_chars < 1:
            raise ConfigError("--max-text-chars: must be at least 1")
        clash = sorted(set(self.keep_columns) & set(OWN_COLUMNS))
        if clash:
            raise ConfigError(f"--keep-columns: {', '.join(clash)} would clash with the output's own columns "
                              f"({', '.join(OWN_COLUMNS)})")
        if "://" in self.output:  # a URI: Spark's to check
            return
        output = Path(self.output)
        if output.exists() and not self.overwrite:
            raise ConfigError(f"--output: {output} exists; pass --overwrite to replace it")
        if not output.parent.is_dir():
            raise ConfigError(f"--output: folder {output.parent} does not exist")


@dataclass(frozen=True)
class Scored:
    """The answer columns of a chunk (None where a row has an error)."""

    sentiment: list[str | None]
    confidence: list[float | None]
    error: list[str | None]

    def columns(self) -> dict[str, list[Any]]:
        return {name: getattr(self, name) for name in ANSWER_COLUMNS}

    def problems(self) -> Counter[str]:
        """Rows with an error, by kind (``empty``, ``null``, ``not_string``, ``too_long``, ``invalid_unicode``)."""
        return Counter(error_kind(e) for e in self.error if e is not None)


def error_kind(error: str) -> str:
    """The kind an ``error`` cell starts with."""
    return error.split(":", 1)[0]


def score_cells(scorer: ScorerLike, cells: Sequence[Any], max_chars: int) -> Scored:
    """Score the valid cells in one call; the others get their error."""
    problems = [text_problem(cell, max_chars) for cell in cells]
    valid = [i for i, problem in enumerate(problems) if problem is None]
    sentiment: list[str | None] = [None] * len(cells)
    confidence: list[float | None] = [None] * len(cells)
    if valid:
        for i, p in zip(valid, scorer.predict_proba([cells[i] for i in valid]), strict=True):
            answer = label_and_confidence(p)
            sentiment[i], confidence[i] = answer["sentiment"], answer["confidence"]
    return Scored(sentiment, confidence, [None if p is None else str(p) for p in problems])
