"""Exporting a registered version into a self-contained folder the server loads without a registry.

``export_model("models:/sentiment@production", "build/model")`` downloads the version
the URI means (an ordinary MLflow model folder: ``MLmodel``, weights, tokenizer), copies
the ONNX files logged with it into ``onnx/``, and writes the ``registered_model.json``
manifest (:mod:`scoring.identity`) with the registered name, version, alias, run id and
the version's ``eval.*`` metrics. ``make image`` bakes such a folder into the Docker image.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from scoring.clock import now
from scoring.identity import MANIFEST, ModelIdentity, RegistryError, resolve
from scoring.onnx_convert import ONNX_DIR
from scoring.version_tags import ONNX_PATHS, ONNX_RUN_ID


def _copy_onnx_export(identity: ModelIdentity, out: Path) -> list[str]:
    """Copy the ONNX files logged with the version (``onnx.*`` tags) into ``out/onnx/``; [] if it has none.

    The ``onnx`` / ``onnx-int8`` backends load them from there, so the folder serves without a registry.
    """
    if not identity.version:
        return []
    tags = MlflowClient().get_model_version(identity.name, identity.version).tags
    run_id = tags.get(ONNX_RUN_ID)
    if not run_id:
        return []
    target = out / ONNX_DIR
    target.mkdir(exist_ok=True)
    copied = []
    for tag in (ONNX_PATHS[False], ONNX_PATHS[True]):
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"runs:/{run_id}/{tags[tag]}"))
        shutil.copy(local, target / local.name)
        copied.append(f"{ONNX_DIR}/{local.name}")
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
