"""``python -m pipelines``: run the pipeline, roll back, inspect the registry.

A thin shell: every sub-command, its flags and its function are declared in
:data:`pipelines.flow.commands.COMMANDS`; this module only builds argparse from that table,
reads the parameters (defaults < ``--config`` < ``-p``) and maps errors to exit statuses.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pipelines.config import ConfigError, PipelineConfig, build_config, expand
from pipelines.flow.commands import COMMANDS, Command
from pipelines.flow.runner import StepFailed
from scoring.identity import RegistryError


def _config(args: argparse.Namespace, *takes: str) -> PipelineConfig:
    """Defaults < ``--config`` file < ``-p NAME VALUE`` overrides; with ``takes``, refuse parameters not in it."""
    cfg = build_config({name: value for name, value in (args.parameter or [])}, args.config)
    if takes:
        untaken = sorted(set(cfg.model_fields_set) - set(expand(takes)))
        if untaken:
            raise ConfigError(f"parameter(s) {', '.join(untaken)}: not taken by `{args.command}` "
                              f"(it takes {', '.join(expand(takes))})")
    return cfg


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", help="YAML file of parameter values")
    parser.add_argument(
        "-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
        help="override one parameter (repeatable), e.g. -p epochs 2",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of every command in the table."""
    parser = argparse.ArgumentParser(prog="python -m pipelines", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS.values():
        sub_parser = sub.add_parser(command.name, help=command.help, description=command.description or None)
        if command.config:
            _add_config_args(sub_parser)
        for flag in command.flags:
            sub_parser.add_argument(*flag.names, **flag.options)
        sub_parser.set_defaults(declared=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command: Command = args.declared
    try:
        cfg = _config(args, *command.takes) if command.config else None
        return command.load()(cfg, args)
    except (ConfigError, RegistryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except StepFailed as err:  # its notebook and runs are logged; a failed step never moves the alias
        print(f"error: {err}", file=sys.stderr)
        print("The alias was not moved; later steps did not run.", file=sys.stderr)
        return 1
