"""Where a version's reference profile lives, in MLflow: logging it, finding it, reading it, backfilling it.

The profile is logged as ``reference_profile.json`` into the version's source run
(``ModelVersion.run_id``) and the version is tagged ``reference_profile`` with its URI.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

from pipelines.config import DataSection
from pipelines.data.split import Splits, load_splits
from pipelines.monitor.reference import build_profile
from pipelines.registry import versions
from scoring.identity import RegistryError, model_uri
from scoring.runtimes import load_scorer

ARTIFACT = "reference_profile.json"
VERSION_TAG = "reference_profile"  # set on the model version: runs:/<run_id>/reference_profile.json


class ProfileMissing(LookupError):
    """A model version has no reference profile; the message says how to make one."""


def log_profile(profile: dict[str, Any], run_id: str | None = None) -> str:
    """Log the profile as ``reference_profile.json`` into ``run_id`` (default: the active run); return its URI."""
    if run_id is None:
        run = mlflow.active_run()
        if run is None:
            raise RuntimeError("log_profile needs an active MLflow run or a run_id")
        run_id = run.info.run_id
    mlflow.MlflowClient().log_dict(run_id, profile, ARTIFACT)
    return f"runs:/{run_id}/{ARTIFACT}"


def tag_version(name: str, version: str, uri: str) -> None:
    """Point the model version at its profile (tag ``reference_profile``)."""
    versions.set_tags(name, version, {VERSION_TAG: uri})


def profile_uri(mv: Any) -> str:
    """Where a model version's profile lives: its tag, else its source run."""
    return mv.tags.get(VERSION_TAG) or f"runs:/{mv.run_id}/{ARTIFACT}"


def read_profile(location: str) -> dict[str, Any]:
    """A profile from a local path or an MLflow artifact URI (``runs:/…``, ``models:/…``, ``file:…``)."""
    path = Path(location).expanduser()
    if path.is_file():
        return json.loads(path.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=tmp)
        except (MlflowException, OSError) as err:
            raise ProfileMissing(f"no reference profile at {location}: {err}") from None
        return json.loads(Path(local).read_text())


def load_for_version(mv: Any, override: str = "") -> tuple[dict[str, Any], str]:
    """The profile to monitor ``mv`` against (``override`` wins) and where it came from."""
    location = override or profile_uri(mv)
    try:
        return read_profile(location), location
    except ProfileMissing:
        if override:
            raise
        raise ProfileMissing(
            f"{mv.name} v{mv.version} has no {ARTIFACT} in its run {mv.run_id} (registered before profiling "
            f"existed?): run `python -m pipelines profile` to compute and log it, or pass -p reference_profile PATH"
        ) from None


def log_for_version(scorer: Any, splits: Splits, mv: Any, run_id: str = "") -> str:
    """Build the profile of a registered version, log it into its run (default: ``mv.run_id``) and tag the version."""
    run_id = run_id or mv.run_id
    if not run_id:
        raise ProfileMissing(f"{mv.name} v{mv.version} has no source run to log its profile into")
    model = {"name": mv.name, "version": str(mv.version), "run_id": run_id}
    uri = log_profile(build_profile(scorer, splits, extra={"model": model}), run_id)
    tag_version(mv.name, str(mv.version), uri)
    return uri


def backfill(registered_model_name: str, alias: str, model_version: str, data: DataSection) -> tuple[Any, str]:
    """Compute and log the profile of ``model_version`` (default: the alias's version), e.g. for old versions.

    The data parameters are taken from the version's run when it logged them, else from ``data``.
    """
    mv = versions.get_version(registered_model_name, model_version) if model_version else (
        versions.alias_version(registered_model_name, alias))
    if mv is None:
        raise RegistryError(f"{registered_model_name}@{alias} does not exist")
    logged = mlflow.MlflowClient().get_run(mv.run_id).data.params if mv.run_id else {}
    data = DataSection.model_validate({**data.model_dump(), **{k: logged[k] for k in DataSection.model_fields
                                                               if k in logged}})
    scorer = load_scorer(model_uri(mv.name, mv.version))
    return mv, log_for_version(scorer, load_splits(data), mv)
