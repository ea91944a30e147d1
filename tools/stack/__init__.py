"""The team stack on one machine: PostgreSQL + an S3 object store + MLflow's server with logins.

``python -m tools.stack up|down|status|env`` (``make stack-up`` / ``make stack-down``) starts and
stops it for development and tests, with its state in one folder (``.stack/`` by default).
What each part is and who holds which credential: docs/team.md.
"""

from tools.stack.settings import StackSettings
from tools.stack.stack import Stack

__all__ = ["Stack", "StackSettings"]
