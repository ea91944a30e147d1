"""The ONNX export at training time: convert the registered weights, check them, log them with the version.

The train step calls :func:`log_onnx` right after registering a version, so what the
server runs by default (``BACKEND=onnx-int8``) is made once, from the registered
weights, and stays tied to the registry: the files go to ``onnx/`` in the version's run,
and ``onnx.*`` tags on the version say where they are and how far they are from
PyTorch. The conversion itself is :mod:`scoring.onnx_convert`; the runtime is
:mod:`scoring.onnx_runtime`. ``python -m pipelines export-onnx`` does the same for a
version registered without it.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from mlflow import MlflowClient

from pipelines import shell
from pipelines.config import ConfigError, PipelineConfig
from pipelines.registry import versions
from scoring import tracking
from scoring.identity import model_uri, resolve_version
from scoring.model_files import load_components
from scoring.onnx_convert import FILES, ONNX_DIR, OPSET, export_onnx, forward_input_names, quantize_int8
from scoring.onnx_runtime import OnnxScorer, make_session
from scoring.scorer import Scorer
from scoring.version_tags import ONNX_PATHS, ONNX_RUN_ID

MAX_FP32_DIFF = 1e-4  # the fp32 export is refused beyond this |Δlogit| from PyTorch
# what the export is checked on: short, medium, and a text longer than the windows
CHECK_TEXTS = (
    "The movie was amazing",
    "A dull, lifeless mess.",
    "Not the best film of the year, but the cast is charming and the ending works.",
    "an overlong , overwrought and ultimately pointless exercise in style over substance , "
    "with a script that never decides what it wants to be and performances that drift from camp to stupor",
)


def max_abs_diff(model: Any, tokenizer: Any, session: ort.InferenceSession, texts: Sequence[str] = CHECK_TEXTS,
                 per_text: bool = False) -> dict[str, float]:
    """Largest |torch − ONNX| difference of logits and of P(positive) on ``texts`` (windows included).

    ``per_text``: score P(positive) with one call per text, as the int8 runtime serves.
    """
    torch_scorer = Scorer(model, tokenizer)
    onnx_scorer = OnnxScorer(session, tokenizer, torch_scorer.scoring, per_text=per_text)
    ids, _ = torch_scorer.windows(texts)
    with torch.inference_mode():
        expected = model(**tokenizer.pad({"input_ids": ids}, return_tensors="pt")).logits.numpy()
    return {
        "logits": float(np.abs(onnx_scorer.logits(ids) - expected).max()),
        "p_positive": float(np.abs(onnx_scorer.predict_proba(texts) - torch_scorer.predict_proba(texts)).max()),
    }


def export_model_files(uri: str, folder: str | Path, opset: int = OPSET) -> dict[str, Any]:
    """Export ``uri`` as ``model.onnx`` and ``model.int8.onnx`` in ``folder``, with their differences."""
    folder = Path(folder)
    model, tokenizer = load_components(uri)
    fp32 = export_onnx(model, tokenizer, folder / FILES[False], opset)
    int8 = quantize_int8(fp32, folder / FILES[True])
    return {
        "fp32": fp32, "int8": int8, "inputs": ",".join(forward_input_names(model, tokenizer)),
        "diff_fp32": max_abs_diff(model, tokenizer, make_session(fp32)),
        "diff_int8": max_abs_diff(model, tokenizer, make_session(int8), per_text=True),
    }


def log_onnx(uri: str, run_id: str = "", opset: int = OPSET) -> dict[str, str]:
    """Export a registered version, log the files with it and tag it; return the tags.

    The files go to ``onnx/`` in ``run_id`` (default: the run that logged the version).
    Refuses (ValueError) if the fp32 export differs from PyTorch by more than ``MAX_FP32_DIFF``.
    """
    mv = resolve_version(uri)
    if mv is None:
        raise ValueError(f"{uri}: give a registered version (models:/name/N or models:/name@alias)")
    run_id = run_id or mv.run_id or mv.tags.get("run_id", "")
    if not run_id:
        raise ValueError(f"{mv.name} v{mv.version} has no run to log the ONNX files to; pass run_id")
    with tempfile.TemporaryDirectory(prefix="onnx-export-") as tmp:
        out = export_model_files(model_uri(mv.name, mv.version), tmp, opset)
        if out["diff_fp32"]["logits"] > MAX_FP32_DIFF:
            raise ValueError(f"ONNX export differs from PyTorch: {out['diff_fp32']}")
        client = MlflowClient()
        for key in ("fp32", "int8"):
            client.log_artifact(run_id, str(out[key]), ONNX_DIR)
    tags = {
        ONNX_RUN_ID: run_id,
        ONNX_PATHS[False]: f"{ONNX_DIR}/{FILES[False]}",
        ONNX_PATHS[True]: f"{ONNX_DIR}/{FILES[True]}",
        "onnx.opset": str(opset),
        "onnx.exporter": f"torch.onnx (TorchScript) torch=={md.version('torch').split('+')[0]}",
        "onnx.onnxruntime": ort.__version__,
        "onnx.inputs": out["inputs"],
        "onnx.max_abs_diff": f"{out['diff_fp32']['logits']:.2e}",  # fp32 vs torch, logits
        "onnx.int8_max_abs_diff": f"{out['diff_int8']['p_positive']:.2e}",  # int8 vs torch, P(positive)
    }
    versions.set_tags(mv.name, mv.version, tags)
    return tags


def export_command(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    """``python -m pipelines export-onnx``: export a registered version (fp32 + int8), log the files, tag it."""
    tracking.setup(cfg.tracking_uri)
    try:
        shell.print_json(log_onnx(shell.model_uri(args, cfg), args.run_id))
    except ValueError as err:
        raise ConfigError(f"--model-uri: {err}") from None
    return 0
