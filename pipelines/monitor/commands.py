"""The monitor stage's command: ``python -m pipelines profile`` (declared in pipelines/flow/commands.py)."""

from __future__ import annotations

import argparse

from pipelines.config import PipelineConfig
from pipelines.monitor import reference_store
from scoring import tracking


def profile_command(cfg: PipelineConfig, _: argparse.Namespace) -> int:
    tracking.setup(cfg.tracking_uri)
    mv, uri = reference_store.backfill(cfg.registered_model_name, cfg.alias, cfg.model_version, cfg.data)
    print(f"reference profile of {mv.name} v{mv.version}: {uri}")
    return 0
