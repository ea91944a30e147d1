"""Registry model URIs: which version they mean, and exporting one to a self-contained folder.

``export_model("models:/sentiment@production", "build/model")`` downloads the
version the alias points at (an ordinary MLflow model folder: ``MLmodel``,
weights, tokenizer) and writes ``registered_model.json`` into it with the
registered name, version, alias, run id and the version's ``eval.*`` metrics, so
a server started on the folder (``MODEL_URI=build/model``) can report what it
serves without a tracking store.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipelines.registry import RegistryError, model_uri, now, recorded_metrics

MANIFEST = "registered_model.json"
_REGISTRY_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))/?$")


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


def parse_registry_uri(uri: str) -> tuple[str, str, str] | None:
    """``models:/name@alias`` → (name, alias, ""); ``models:/name/3`` → (name, "", "3"); else None."""
    match = _REGISTRY_URI.match(uri.strip())
    if not match:
        return None
    return match["name"], match["alias"] or "", match["version"] or ""


def resolve(uri: str) -> ModelIdentity:
    """The registered version a ``models:/`` URI means now (an alias is looked up in the registry).

    Other URIs (``runs:/…``, folders) come back with only ``source`` set.
    """
    parsed = parse_registry_uri(uri)
    if parsed is None:
        return ModelIdentity(source=uri)
    name, alias, version = parsed
    try:
        c = MlflowClient()
        mv = c.get_model_version_by_alias(name, alias) if alias else c.get_model_version(name, version)
    except MlflowException as err:
        raise RegistryError(f"{uri}: {err.message}") from err
    return ModelIdentity(
        name=mv.name, version=str(mv.version), alias=alias, run_id=mv.run_id or "",
        source=model_uri(mv.name, mv.version), metrics=recorded_metrics(dict(mv.tags)),
    )


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """``registered_model.json`` inside the model folder or next to it, if any."""
    folder = Path(folder)
    for path in (folder / MANIFEST, folder.parent / MANIFEST):
        if path.is_file():
            return json.loads(path.read_text())
    return None


def _copy_onnx_export(identity: ModelIdentity, out: Path) -> list[str]:
    """Copy the ONNX files logged with the version (``onnx.*`` tags) into ``out/onnx/``; [] if it has none.

    The ``onnx`` / ``onnx-int8`` backends load them from there, so the folder serves without a registry.
    """
    if not identity.version:
        return []
    tags = MlflowClient().get_model_version(identity.name, identity.version).tags
    run_id = tags.get("onnx.run_id")
    if not run_id:
        return []
    target = out / "onnx"
    target.mkdir(exist_ok=True)
    copied = []
    for tag in ("onnx.path", "onnx.int8_path"):
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"runs:/{run_id}/{tags[tag]}"))
        shutil.copy(local, target / local.name)
        copied.append(f"onnx/{local.name}")
    return copied


def export_model(model_uri: str, out_dir: str | Path, overwrite: bool = False) -> ModelIdentity:
    """Download ``model_uri`` into ``out_dir`` and write its ``registered_model.json``."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty (pass overwrite=True / --overwrite to replace it)")
        shutil.rmtree(out)
    identity = resolve(model_uri)
    out.mkdir(parents=True, exist_ok=True)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=identity.source, dst_path=str(out)))
    if local.resolve() != out.resolve():  # some stores nest the files: flatten them into out
        for item in local.iterdir():
            shutil.move(str(item), out / item.name)
    if not (out / "MLmodel").is_file():
        raise RegistryError(f"{model_uri}: the download holds no MLmodel file, so it is not an MLflow model")
    onnx_files = _copy_onnx_export(identity, out)
    manifest = {**identity.as_dict(), "requested_uri": model_uri, "exported_at": now(), "onnx_files": onnx_files}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return identity
