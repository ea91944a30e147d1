"""What a drift verdict turns into: the command's exit status, and the verdict with its context."""

from __future__ import annotations

from typing import Any

# exit status of `python -m pipelines monitor` (1 = the monitor step failed, 2 = bad parameters)
EXIT_CODES = {"no_drift": 0, "drift": 3, "insufficient_data": 4}


def exit_code(verdict: dict[str, Any]) -> int:
    return EXIT_CODES[verdict["verdict"]]


def annotate(verdict: dict[str, Any], **context: Any) -> dict[str, Any]:
    """The verdict with ``context`` (model, run, window…) placed after its headline keys."""
    head = ("verdict", "drift", "drifted_signals", "reasons")
    return {**{k: verdict[k] for k in head}, **context, **{k: v for k, v in verdict.items() if k not in head}}
