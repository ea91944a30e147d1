"""Exporting a registered version into a self-contained folder the server loads without a registry.

``export_model("models:/sentiment@production", "build/model")`` downloads the version
the URI means (an ordinary MLflow model folder: ``MLmodel``, weights, tokenizer), copies
the ONNX files logged with it into ``onnx/``, and writes the ``registered_model.json``
manifest (:mod:`scoring.identity`) with the registered name, version, alias, run id and
the version's ``eval.*`` metrics. ``make image`` bakes such a folder into the Docker image.

The folder is built beside the destination (``.<name>.export-*``) and renamed into place only when complete
(:func:`replace_folder`): a failed export leaves the old folder as it was, and no half-written one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from scoring.clock import now
from scoring.identity import MANIFEST, ModelIdentity, RegistryError, resolve
from scoring.integrity import (
    FOLDER_MANIFEST,
    check_files,
    manifest_digest,
    model_folder_files,
    onnx_key,
    version_manifest,
)
from scoring.onnx_convert import FILES, ONNX_DIR
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
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"runs:/{run_id}/{tags[tag]}",
                                                         dst_path=str(target)))
        copied.append(f"{ONNX_DIR}/{local.name}")
    return copied


def replace_folder(new: Path, final: Path) -> None:
    """Put the complete folder ``new`` at ``final`` (same parent folder) by renames, never by copying.

    An existing ``final`` is renamed aside first and removed only once ``new`` is in its place; if that rename
    fails, it is renamed back. Either way ``final`` is the old folder or the new one, never a mixture.
    """
    aside = None
    if final.exists():
        aside = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.replace(final, aside / final.name)
    try:
        os.replace(new, final)
    except BaseException:
        if aside is not None:
            os.replace(aside / final.name, final)
        raise
    finally:
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)


def export_model(model_uri: str, out_dir: str | Path, overwrite: bool = False) -> ModelIdentity:
    """Download ``model_uri`` into ``out_dir`` (built beside it, then renamed) and write its manifest."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise FileExistsError(f"{out} is not empty (pass overwrite=True / --overwrite to replace it)")
    identity = resolve(model_uri)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=identity.source, dst_path=str(staging)))
        if local.resolve() != staging.resolve():  # some stores nest the files: flatten them
            for item in local.iterdir():
                shutil.move(str(item), staging / item.name)
        if not (staging / "MLmodel").is_file():
            raise RegistryError(f"{model_uri}: the download holds no MLmodel file, so it is not an MLflow model")
        mv = MlflowClient().get_model_version(identity.name, identity.version) if identity.version else None
        sealed = version_manifest(mv) if mv is not None else None  # fetched and its digest checked once
        where = f"{identity.name} v{identity.version}"
        if sealed is not None:  # the files its version sealed, or refused (nothing is written)
            check_files(sealed, model_folder_files(staging), where)
        onnx_files = _copy_onnx_export(identity, staging)
        if sealed is not None:  # the folder carries its manifest: every load of it checks the files it reads
            check_files(sealed, {onnx_key(name == f"{ONNX_DIR}/{FILES[True]}"): staging / name for name in onnx_files},
                        where)
            (staging / FOLDER_MANIFEST).write_text(json.dumps(sealed, indent=1, sort_keys=True) + "\n")
        manifest = {**identity.as_dict(), "requested_uri": model_uri, "exported_at": now(),
                    "onnx_files": onnx_files, "manifest_sha256": manifest_digest(mv) if mv is not None else ""}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the folder from the image's other users
        replace_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # only still there when the export failed
    return identity
