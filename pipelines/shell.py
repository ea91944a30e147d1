"""What the commands' functions share: the model they act on, the JSON they print, the batch job's flags."""

from __future__ import annotations

import argparse
import json
from typing import Any

from pipelines.config import PipelineConfig
from scoring.config import ScoringConfig


def model_uri(args: argparse.Namespace, cfg: PipelineConfig) -> str:
    """``--model-uri``, else the configured registered model's alias."""
    return args.model_uri or f"models:/{cfg.registered_model_name}@{cfg.alias}"


def scoring_overrides(cfg: PipelineConfig) -> dict:
    """The long-text settings given with ``-p`` (the rest stay as saved with the model, as the server does)."""
    return {name: getattr(cfg, name) for name in ScoringConfig.model_fields if name in cfg.model_fields_set}


def batch_job(args: argparse.Namespace) -> dict[str, Any]:
    """The fields of :class:`pipelines.batch.rows.BatchJob` from the flags ``predict`` and ``spark-predict`` share."""
    return {"input": args.input, "output": args.output, "text_column": args.text_column,
            "keep_columns": tuple(c.strip() for c in args.keep_columns.split(",") if c.strip()),
            "max_text_chars": args.max_text_chars, "overwrite": args.overwrite}


def print_json(data: dict) -> None:
    print(json.dumps(data, indent=2, default=str), flush=True)
