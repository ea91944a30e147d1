"""Sealing a registered version: the SHA-256 of every file the runtimes load, logged once with its run.

:func:`seal` downloads the version's logged model and its ONNX files (``onnx.*`` tags), writes
``integrity/manifest.json`` into the version's run and records the manifest's digest as the run param
``integrity.manifest_sha256`` (see :mod:`scoring.integrity`, which checks it on every load). The train step
seals right after logging the ONNX export; ``python -m pipelines seal --version N`` seals a version
registered before sealing existed, after a human has checked it.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from pipelines.registry import versions
from scoring.identity import RegistryError, model_uri
from scoring.integrity import (
    MANIFEST_PARAM,
    MANIFEST_PATH,
    MODEL_PREFIX,
    folder_entries,
    manifest_bytes,
    onnx_key,
)
from scoring.version_tags import ONNX_PATHS, ONNX_RUN_ID


def seal(name: str, version: str | int) -> str:
    """Write the manifest of ``name`` v``version`` into its run and log its digest; the digest.

    Refuses (RegistryError) a version without a run or one already sealed (a param cannot change).
    """
    mv = versions.get_version(name, version)
    if not mv.run_id:
        raise RegistryError(f"{name} v{mv.version} has no run to hold its integrity manifest")
    client = MlflowClient()
    if MANIFEST_PARAM in client.get_run(mv.run_id).data.params:
        raise RegistryError(f"{name} v{mv.version} is already sealed (run {mv.run_id})")
    with tempfile.TemporaryDirectory(prefix="seal-") as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri(name, mv.version),
                                                    dst_path=str(Path(tmp) / "model"))
        files = folder_entries(local, MODEL_PREFIX)
        onnx_run = mv.tags.get(ONNX_RUN_ID)
        for quantized, tag in ONNX_PATHS.items():  # keyed by what the file is, not by where a tag says it lies
            if onnx_run and mv.tags.get(tag):
                path = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"runs:/{onnx_run}/{mv.tags[tag]}",
                                                                dst_path=str(Path(tmp) / f"onnx{int(quantized)}")))
                files[onnx_key(quantized)] = folder_entries(path.parent)[path.name]
        data = manifest_bytes(files, name=name, version=str(mv.version), run_id=mv.run_id)
        out = Path(tmp) / "manifest" / Path(MANIFEST_PATH).name
        out.parent.mkdir()
        out.write_bytes(data)
        client.log_artifact(mv.run_id, str(out), str(Path(MANIFEST_PATH).parent))
    digest = hashlib.sha256(data).hexdigest()
    client.log_param(mv.run_id, MANIFEST_PARAM, digest)
    versions.set_tags(name, mv.version, {MANIFEST_PARAM: digest})  # a readable copy; loads read the param
    return digest
