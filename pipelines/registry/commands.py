"""The registry's commands: rollback, history, export, seal (declared in pipelines/flow/commands.py)."""

from __future__ import annotations

import argparse
import json

from pipelines import shell
from pipelines.config import ConfigError, PipelineConfig
from pipelines.registry import audit, model_folder, rollback, sealing, versions
from scoring import tracking


def rollback_command(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    tracking.setup(cfg.tracking_uri)
    old, new = rollback.rollback(cfg.registered_model_name, cfg.alias, args.to_version or "", cfg.lock)
    print(f"{cfg.registered_model_name}@{cfg.alias}: v{old} -> v{new}")
    return 0


def history_command(cfg: PipelineConfig, _: argparse.Namespace) -> int:
    tracking.setup(cfg.tracking_uri)
    audit.repair_now(cfg.registered_model_name, cfg.lock)  # what a killed promotion or rollback left
    print(json.dumps(versions.history(cfg.registered_model_name), indent=2))
    return 0


def export_command(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    tracking.setup(cfg.tracking_uri)
    uri = shell.model_uri(args, cfg)
    try:
        identity = model_folder.export_model(uri, args.output, overwrite=args.overwrite)
    except FileExistsError as err:
        raise ConfigError(f"--output: {err}") from None
    print(f"exported {identity.name} v{identity.version} ({uri}) to {args.output}")
    return 0


def seal_command(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    """Seal a version registered before sealing (after a human check): its integrity manifest and digest."""
    tracking.setup(cfg.tracking_uri)
    shell.print_json({"manifest_sha256": sealing.seal(cfg.registered_model_name, args.version)})
    return 0
