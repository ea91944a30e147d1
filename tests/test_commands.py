"""The command table (pipelines/flow/commands.py) is the only place a command is declared."""

import ast
import importlib
from pathlib import Path

from pipelines.cli import build_parser
from pipelines.flow import reference
from pipelines.flow.commands import COMMANDS
from pipelines.flow.steps import FLOWS

ROOT = Path(__file__).resolve().parent.parent


def test_every_command_resolves_to_a_function_in_its_stage_package():
    for command in COMMANDS.values():
        module, _, name = command.function.partition(":")
        assert module.startswith("pipelines.") and module != "pipelines.cli", command.name
        assert callable(getattr(importlib.import_module(module), name)), command.function
        assert not command.flow or command.flow in FLOWS, command.name


def test_the_cli_has_exactly_the_table_commands():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert list(sub.choices) == list(COMMANDS)


def test_no_command_is_declared_anywhere_else():
    """No other file adds a sub-parser or defines a cmd_ function; cli.py stays a thin shell."""
    offenders = []
    for path in (ROOT / "pipelines").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("cmd_"):
                offenders.append(f"{path}: def {node.name}")
            parser_call = isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("add_parser",
                                                                                           "add_subparsers")
            if parser_call and path != ROOT / "pipelines" / "cli.py":
                offenders.append(f"{path}:{node.lineno} {node.func.attr}")
    assert not offenders
    cli = (ROOT / "pipelines" / "cli.py").read_text()
    assert cli.count("add_parser(") == 1 and len(cli.splitlines()) <= 150


def test_commands_doc_is_up_to_date():
    assert reference.DOCS.read_text() == reference.render(), "run python -m pipelines.flow.reference"
