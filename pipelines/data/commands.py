"""The data stage's command: ``python -m pipelines feedback`` (declared in pipelines/flow/commands.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines import shell
from pipelines.config import ConfigError, PipelineConfig
from pipelines.data import feedback as review_feedback
from scoring import inference_log


def feedback_command(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    """Review the app's feedback (list, accept, reject) and apply retention (purge); stdout is JSON."""
    db = cfg.inference_db
    if db and not inference_log.is_url(db) and not Path(db).expanduser().is_file():
        raise ConfigError(f"parameter inference_db: {db} does not exist")
    if args.action != "accept" and args.rule:
        raise ConfigError("--rule: only `feedback accept` applies the agreement rule")
    if args.action in ("list", "purge") and args.ids:
        raise ConfigError(f"ids: `feedback {args.action}` takes no ids")
    if args.action == "list":
        shell.print_json({"rows": review_feedback.listing(db, args.status, args.limit)})
    elif args.action == "purge":
        shell.print_json(review_feedback.purge(db, cfg.feedback))
    elif args.rule:
        if args.ids:
            raise ConfigError("ids: `feedback accept --rule` takes no ids (the rule chooses them)")
        shell.print_json(review_feedback.accept_by_rule(db, cfg.feedback))
    else:
        status = "accepted" if args.action == "accept" else "rejected"
        shell.print_json(review_feedback.review(db, args.ids, status, args.by))
    return 0
