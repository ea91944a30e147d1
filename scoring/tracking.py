"""Where MLflow state lives, pointing MLflow at it, and the commit a run comes from."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import mlflow

PROJECT_ROOT = Path(__file__).resolve().parent.parent
STATE_DIR_ENV = "SENTIMENT_MLOPS_HOME"


def state_dir() -> Path:
    """Folder for the default tracking store, artifacts and the inference log.

    ``$SENTIMENT_MLOPS_HOME`` wins; otherwise the project folder when running from a
    checkout, else the current directory.
    """
    env = os.environ.get(STATE_DIR_ENV)
    if env:
        return Path(env).resolve()
    if (PROJECT_ROOT / "pyproject.toml").is_file():
        return PROJECT_ROOT
    return Path.cwd()


def default_tracking_uri() -> str:
    """SQLite backend in the state folder (artifacts go to ``mlartifacts/`` beside it)."""
    return f"sqlite:///{state_dir() / 'mlflow.db'}"


def resolve_tracking_uri(tracking_uri: str = "") -> str:
    """Explicit value > ``$MLFLOW_TRACKING_URI`` > the project's SQLite store."""
    return tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def setup(tracking_uri: str = "", experiment_name: str | None = None) -> str:
    """Point MLflow at the store (and experiment) and return the URI in use."""
    uri = resolve_tracking_uri(tracking_uri)
    mlflow.set_tracking_uri(uri)
    if experiment_name:
        if mlflow.get_experiment_by_name(experiment_name) is None:
            artifact_location = None
            if uri.startswith("sqlite:///"):
                db_path = Path(uri.removeprefix("sqlite:///"))
                artifact_location = (db_path.resolve().parent / "mlartifacts").as_uri()
            mlflow.create_experiment(experiment_name, artifact_location=artifact_location)
        mlflow.set_experiment(experiment_name)
    return uri


def git_commit() -> str:
    """The checkout's commit (with ``-dirty`` when it has changes), or ``unknown``."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_ROOT, capture_output=True, text=True, check=True,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
