"""Reviewing the app's feedback before it may train: list, accept, reject, the agreement rule, retention.

``POST /feedback`` stores every row ``pending`` with its sender's hashed credential. Training
(``include_feedback``) reads **accepted** rows only. A row is accepted by a reviewer
(``python -m pipelines feedback accept ID …``) or by the agreement rule (``feedback accept --rule``,
``feedback_min_senders`` = N ≥ 1): a pending text is accepted when at least N distinct credentials sent it
with the same label and no credential, ever, sent it with the other label, and no row of that text was
rejected. Rows without a sender (stored before credentials existed) never count towards the rule.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from pipelines.config import ConfigError, FeedbackSection
from scoring import inference_log

RULE_REVIEWER = "rule:min_senders={n}"


def listing(inference_db: str, status: str = "pending", limit: int = 50) -> list[dict[str, Any]]:
    """Feedback rows of one status (``all``: every status), newest first, at most ``limit`` (0 = all)."""
    if status != "all" and status not in inference_log.FEEDBACK_STATUSES:
        raise ConfigError(f"--status: must be all or one of {', '.join(inference_log.FEEDBACK_STATUSES)}, "
                          f"not {status!r}")
    rows = inference_log.read_feedback(inference_db or None, None if status == "all" else (status,))
    rows = rows.iloc[::-1]
    rows = rows.head(limit) if limit > 0 else rows
    return [{k: (None if pd.isna(v) else v) for k, v in row.items()} for row in rows.to_dict("records")]


def review(inference_db: str, ids: list[int], status: str, reviewer: str) -> dict[str, Any]:
    """Mark rows accepted or rejected by ``reviewer``; ConfigError naming ``ids`` for ids that do not exist."""
    if not ids:
        raise ConfigError("ids: give the feedback ids to review (see `feedback list`)")
    if not reviewer.strip():
        raise ConfigError("--by: the reviewer's name must not be empty")
    db = inference_log.connect(inference_db or None)
    try:
        done = inference_log.set_feedback_status(db, ids, status, reviewer)
    finally:
        db.close()
    missing = sorted(set(ids) - set(done))
    if missing:
        raise ConfigError(f"ids: no feedback row {', '.join(map(str, missing))}"
                          f"{f' (the others were {status})' if done else ''}")
    return {"status": status, "ids": done, "by": reviewer}


def agreed(rows: pd.DataFrame, min_senders: int) -> list[int]:
    """Ids of the pending rows the agreement rule accepts (see the module's docstring)."""
    if min_senders < 1 or rows.empty:
        return []
    ids: list[int] = []
    for _, same in rows.groupby(rows["text"].str.strip()):
        if (same["status"] == "rejected").any() or same["label"].nunique() != 1:
            continue
        if same["sender"].dropna().nunique() >= min_senders:
            ids += same.loc[same["status"] == "pending", "id"].astype(int).tolist()
    return sorted(ids)


def accept_by_rule(inference_db: str, feedback: FeedbackSection) -> dict[str, Any]:
    """Accept what the agreement rule allows (``feedback_min_senders``); refused while the rule is off."""
    n = feedback.feedback_min_senders
    if n < 1:
        raise ConfigError("parameter feedback_min_senders: the agreement rule is off (0); set it to N >= 1 "
                          "distinct senders, e.g. -p feedback_min_senders 3")
    ids = agreed(inference_log.read_feedback(inference_db or None), n)
    if not ids:
        return {"status": "accepted", "ids": [], "by": RULE_REVIEWER.format(n=n)}
    return review(inference_db, ids, "accepted", RULE_REVIEWER.format(n=n))


def purge(inference_db: str, feedback: FeedbackSection) -> dict[str, Any]:
    """Delete feedback and predictions older than their retention (``*_retention_days``; 0 = keep)."""
    db = inference_log.connect(inference_db or None)
    try:
        before = {"feedback": inference_log.cutoff(feedback.feedback_retention_days),
                  "predictions": inference_log.cutoff(feedback.inference_log_retention_days)}
        deleted = inference_log.purge(db, before["feedback"], before["predictions"])
    finally:
        db.close()
    return {"deleted": deleted, "before": before}
