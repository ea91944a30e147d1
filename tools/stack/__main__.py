"""python -m tools.stack up|down|status|env [pipeline|serving]: the team stack on this machine (docs/team.md)."""

from __future__ import annotations

import argparse
import shlex
import sys

from tools.stack.processes import StackError
from tools.stack.settings import StackSettings
from tools.stack.stack import Stack

EPILOG = "Ports, folder and secrets come from STACK_* variables:\n" + "\n".join(
    f"  STACK_{name.upper():<22} default {field.default if field.default_factory is None else '<state dir>/.stack'}"
    for name, field in StackSettings.model_fields.items()
) + "\n  STACK_<SECRET>[_FILE]        e.g. STACK_ADMIN_PASSWORD; else generated into <home>/secrets/"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.stack", description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start PostgreSQL, SeaweedFS and the MLflow server; wait until they answer")
    sub.add_parser("down", help="stop them (the data stays in the stack's folder)")
    sub.add_parser("status", help="what runs")
    env = sub.add_parser("env", help="print `export` lines for a client (no S3 keys): eval \"$(… env)\"")
    env.add_argument("role", nargs="?", default="pipeline", choices=("pipeline", "serving"))
    args = parser.parse_args(argv)
    try:
        stack = Stack()
        if args.command == "up":
            seconds = stack.up()
            s = stack.settings
            print(f"stack up in {seconds:.0f} s: MLflow {s.tracking_uri} (UI: log in as admin, password in "
                  f"{s.home / 'secrets' / 'admin_password'})\n"
                  f"clients: set -a; . {stack.env_file('pipeline')}; set +a   (the API: {stack.env_file('serving')})")
        elif args.command == "down":
            stack.down()
        elif args.command == "status":
            status = stack.status()
            for name, running in status.items():
                print(f"{name:<11} {'running' if running else 'stopped'}")
            return 0 if all(status.values()) else 1
        else:
            for key, value in stack.client_env(args.role).items():
                print(f"export {key}={shlex.quote(value)}")
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
