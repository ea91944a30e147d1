"""Which registered model version a URI or an exported folder is.

``models:/NAME@ALIAS`` and ``models:/NAME/VERSION`` are turned into a registry version
here and nowhere else (:func:`resolve_version`); :func:`resolve` adds what the server
reports about it. An exported folder (``python -m pipelines export``) carries the same
facts in its ``registered_model.json`` manifest, so a server started on the folder
knows what it serves without a tracking store.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from scoring.version_tags import recorded_metrics

MANIFEST = "registered_model.json"
_REGISTRY_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))/?$")


class RegistryError(RuntimeError):
    """A registry operation cannot be done (missing version or alias, nothing to roll back to…)."""


@dataclass
class ModelIdentity:
    """What a served model is: registered name, version, alias, run and evaluation metrics."""

    name: str = ""
    version: str = ""
    alias: str = ""
    run_id: str = ""
    source: str = ""  # the URI or folder the weights come from
    metrics: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def model_uri(name: str, version: str | int) -> str:
    """``models:/NAME/VERSION``: a URI that keeps meaning the same weights when the alias moves."""
    return f"models:/{name}/{version}"


def parse_registry_uri(uri: str) -> tuple[str, str, str] | None:
    """``models:/name@alias`` → (name, alias, ""); ``models:/name/3`` → (name, "", "3"); else None."""
    match = _REGISTRY_URI.match(uri.strip())
    if not match:
        return None
    return match["name"], match["alias"] or "", match["version"] or ""


def _lookup(uri: str, name: str, alias: str, version: str) -> ModelVersion:
    client = MlflowClient()
    try:
        return client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException as err:
        raise RegistryError(f"{uri}: {err.message}") from err


def resolve_version(uri: str) -> ModelVersion | None:
    """The registry version ``uri`` means now (None for ``runs:/…`` and folders); RegistryError if it has none."""
    parsed = parse_registry_uri(uri)
    return None if parsed is None else _lookup(uri, *parsed)


def resolve(uri: str) -> ModelIdentity:
    """The identity of what ``uri`` means now; other URIs (``runs:/…``, folders) come back with only ``source``."""
    parsed = parse_registry_uri(uri)
    if parsed is None:
        return ModelIdentity(source=uri)
    mv = _lookup(uri, *parsed)
    return ModelIdentity(
        name=mv.name, version=str(mv.version), alias=parsed[1], run_id=mv.run_id or "",
        source=model_uri(mv.name, mv.version), metrics=recorded_metrics(dict(mv.tags)),
    )


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """``registered_model.json`` inside the model folder or next to it, if any."""
    folder = Path(folder)
    for path in (folder / MANIFEST, folder.parent / MANIFEST):
        if path.is_file():
            return json.loads(path.read_text())
    return None


def folder_identity(folder: Path) -> ModelIdentity:
    """The identity an exported folder's manifest records (empty fields where it has none)."""
    manifest = read_manifest(folder) or {}
    return ModelIdentity(
        name=str(manifest.get("name", "")), version=str(manifest.get("version", "")),
        alias=str(manifest.get("alias", "")), run_id=str(manifest.get("run_id", "")),
        source=str(folder), metrics={k: float(v) for k, v in (manifest.get("metrics") or {}).items()},
    )


def local_folder(uri: str) -> Path | None:
    """The local model folder ``uri`` names (an exported model), or None for ``models:/``, ``runs:/`` and URLs."""
    if "://" in uri or uri.startswith(("models:", "runs:")):
        return None
    folder = Path(os.path.expanduser(uri))
    return folder if folder.is_dir() else None


def identify(uri: str) -> ModelIdentity:
    """What ``uri`` is now: an exported folder's manifest, else the registry version (RegistryError if none)."""
    folder = local_folder(uri)
    return folder_identity(folder) if folder is not None else resolve(uri)
