"""What is served is what was registered: SHA-256 of every file a runtime loads, checked on every load.

A sealed version's run holds ``integrity/manifest.json`` (artifact path → ``sha256``, ``size``) and the
manifest's own SHA-256 as the run PARAM ``integrity.manifest_sha256``. Params cannot change once logged
(unlike tags and artifact files), so editing a weight file, the manifest, or an ``onnx.*`` tag that points
elsewhere is found at the next load and refused with :class:`IntegrityError`. The manifest is written by
:mod:`pipelines.registry.sealing`; the checks here are what every load calls.

Keys: ``model/<path inside the logged model>`` (weights, tokenizer, scoring settings in ``config.json``,
``MLmodel``) and the ONNX files' artifact paths in the run (``onnx/model.onnx``, ``onnx/model.int8.onnx``).
Versions without a manifest (registered before sealing) load only with ``ALLOW_UNVERIFIED_MODELS=true``.

An exported folder (``python -m pipelines export``, which ``make image`` runs to bake the model) is checked when
it is exported, against the registry, and carries the version's manifest as ``integrity.json``; every load of
the folder checks the files it reads against that copy (:func:`check_folder_files`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from scoring.onnx_convert import FILES, ONNX_DIR
from scoring.version_tags import ONNX_PATHS, ONNX_RUN_ID

MANIFEST_PATH = "integrity/manifest.json"  # artifact path in the version's run
MANIFEST_PARAM = "integrity.manifest_sha256"  # run param: the manifest's digest (immutable once logged)
MODEL_PREFIX = "model/"  # manifest keys of the logged MLflow model's files
FOLDER_MANIFEST = "integrity.json"  # an exported folder's copy of its version's manifest
UNSEALED = frozenset({"registered_model_meta"})  # MLflow rewrites it at each registration; no runtime reads it
ALLOW_ENV = "ALLOW_UNVERIFIED_MODELS"
# default on until every way of registering a version seals it (train step, export-onnx, test fixtures)
ALLOW_DEFAULT = "true"


class IntegrityError(RuntimeError):
    """A model file differs from what its version's manifest recorded (or the manifest is missing / altered)."""


def onnx_key(quantized: bool) -> str:
    """Manifest key of the fp32 or int8 ONNX graph (fixed, whatever run or path the ``onnx.*`` tags name)."""
    return f"{ONNX_DIR}/{FILES[quantized]}"


def allow_unverified() -> bool:
    return os.environ.get(ALLOW_ENV, ALLOW_DEFAULT).strip().lower() in ("1", "true", "yes", "on")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def loaded_files(folder: str | Path) -> list[Path]:
    """The files under ``folder`` that a runtime may load: all but MLflow's ``registered_model_meta``, the record
    of the latest registration that MLflow rewrites whenever the logged model is registered again."""
    return [p for p in sorted(Path(folder).rglob("*")) if p.is_file() and p.name not in UNSEALED]


def folder_entries(folder: str | Path, prefix: str = "") -> dict[str, dict[str, Any]]:
    """``prefix + relative path`` → ``{"sha256", "size"}`` for every file under ``folder`` a runtime may load."""
    root = Path(folder)
    return {prefix + p.relative_to(root).as_posix(): {"sha256": sha256_file(p), "size": p.stat().st_size}
            for p in loaded_files(root)}


def manifest_bytes(files: Mapping[str, Mapping[str, Any]], **about: Any) -> bytes:
    """The manifest as canonical JSON (sorted keys), so its digest does not depend on dict order."""
    return json.dumps({**about, "files": dict(files)}, sort_keys=True, indent=1).encode()


def check_files(manifest: Mapping[str, Any], files: Mapping[str, str | Path], where: str) -> None:
    """Each ``key → local path`` must be listed in ``manifest`` with the same size and SHA-256."""
    listed = manifest.get("files", {})
    for key, path in files.items():
        entry = listed.get(key)
        if entry is None:
            raise IntegrityError(f"{where}: {key} is not in the integrity manifest (refused; seal the version "
                                 "again after checking it: python -m pipelines seal --version N)")
        size, digest = Path(path).stat().st_size, sha256_file(path)
        if size != entry.get("size") or digest != entry.get("sha256"):
            raise IntegrityError(f"{where}: {key} differs from the integrity manifest "
                                 f"(sha256 {digest[:12]}…, expected {str(entry.get('sha256'))[:12]}…): refused")


def manifest_digest(mv: ModelVersion) -> str:
    """The sealed manifest digest of ``mv``'s run ('' when unsealed)."""
    if not mv.run_id:
        return ""
    return MlflowClient().get_run(mv.run_id).data.params.get(MANIFEST_PARAM, "")


def version_fingerprint(mv: ModelVersion) -> str:
    """Changes when the version's sealed manifest or its ``onnx.*`` tags do (hot reload compares it)."""
    return "|".join([manifest_digest(mv), *(mv.tags.get(k, "") for k in (ONNX_RUN_ID, *ONNX_PATHS.values()))])


def version_manifest(mv: ModelVersion) -> dict[str, Any] | None:
    """The manifest of a sealed version, its digest checked against the run param; None when unsealed."""
    digest = manifest_digest(mv)
    where = f"{mv.name} v{mv.version}"
    if not digest:
        if allow_unverified():
            return None
        raise IntegrityError(f"{where} has no integrity manifest (registered before sealing): refused; "
                             f"seal it after a check (python -m pipelines seal --version {mv.version}) "
                             f"or set {ALLOW_ENV}=true")
    with tempfile.TemporaryDirectory(prefix="integrity-") as tmp:
        path = mlflow.artifacts.download_artifacts(artifact_uri=f"runs:/{mv.run_id}/{MANIFEST_PATH}", dst_path=tmp)
        data = Path(path).read_bytes()
    if hashlib.sha256(data).hexdigest() != digest:
        raise IntegrityError(f"{where}: its integrity manifest was altered after sealing: refused")
    return json.loads(data)


def check_version_files(mv: ModelVersion | None, files: Mapping[str, str | Path]) -> None:
    """Check files of a registered version (``None``: not a registry URI, nothing to check against)."""
    if mv is None:
        return
    manifest = version_manifest(mv)
    if manifest is not None:
        check_files(manifest, files, f"{mv.name} v{mv.version}")


def model_folder_files(folder: str | Path) -> dict[str, Path]:
    """Manifest key (``model/…``) → path of every file of a downloaded MLflow model folder a runtime may load."""
    root = Path(folder)
    return {MODEL_PREFIX + p.relative_to(root).as_posix(): p for p in loaded_files(root)}


def check_model_folder(mv: ModelVersion | None, folder: str | Path) -> None:
    """Check every file of a downloaded MLflow model folder (keys ``model/…``)."""
    if mv is None:
        return
    check_version_files(mv, model_folder_files(folder))


def folder_key(relative: str) -> str:
    """The manifest key of a file of an exported folder: its ONNX graphs as in the run, the rest under ``model/``."""
    return relative if relative.startswith(f"{ONNX_DIR}/") else MODEL_PREFIX + relative


def check_folder_files(folder: str | Path, files: list[str | Path]) -> None:
    """Check ``files`` of a local model folder against the manifest it carries (an export); a folder without
    one loads only with ``ALLOW_UNVERIFIED_MODELS=true``."""
    root = Path(folder)
    manifest_file = root / FOLDER_MANIFEST
    if not manifest_file.is_file():
        if allow_unverified():
            return
        raise IntegrityError(f"{root} carries no {FOLDER_MANIFEST} (not an export of a sealed version): refused; "
                             f"export a sealed version (python -m pipelines export) or set {ALLOW_ENV}=true")
    manifest = json.loads(manifest_file.read_text())
    check_files(manifest, {folder_key(Path(p).resolve().relative_to(root.resolve()).as_posix()): p for p in files},
                str(root))


def model_files_of(folder: str | Path) -> list[Path]:
    """The logged MLflow model's files in a local folder (not its ONNX graphs or the export's own records)."""
    root = Path(folder)
    skip = {FOLDER_MANIFEST, "registered_model.json"}
    return [p for p in loaded_files(root) if p.relative_to(root).parts[0] != ONNX_DIR
            and p.relative_to(root).as_posix() not in skip]
