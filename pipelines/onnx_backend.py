"""ONNX Runtime backend: export a logged model, quantize it to int8, score with it.

* :func:`export_onnx` writes the classifier as ONNX (the TorchScript exporter,
  ``dynamo=False``: torch 2.13's default dynamo exporter needs ``onnxscript``, which
  is not installed; dynamic batch and sequence axes) with its inputs named **in the model's
  ``forward`` order** (``input_ids, attention_mask, token_type_ids``), not the
  tokenizer's (``input_ids, token_type_ids, attention_mask``);
* :func:`quantize_int8` applies ONNX Runtime's dynamic int8 quantization;
* :func:`log_onnx` logs both files with a registered version (artifacts
  ``onnx/model.onnx`` and ``onnx/model.int8.onnx`` in the version's run, and
  ``onnx.*`` tags on the version);
* :class:`OnnxScorer` is a :class:`~pipelines.inference.Scorer` whose forward
  pass runs in ONNX Runtime, so tokenization, windows and aggregation stay
  identical; :func:`load_onnx_scorer` loads one for a model URI (the ``onnx``
  and ``onnx-int8`` backends of :mod:`pipelines.backends`).

``python -m pipelines.onnx_backend export`` logs the export of ``sentiment@production``.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import inspect
import json
import os
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnxruntime as ort

from pipelines.inference import POSITIVE, Scorer, ScoringConfig

ONNX_DIR = "onnx"
FILES = {False: "model.onnx", True: "model.int8.onnx"}
# version tags: onnx.run_id (run holding the files), onnx.path, onnx.int8_path, onnx.opset, onnx.inputs,
# onnx.max_abs_diff (fp32 vs torch, logits), onnx.int8_max_abs_diff (int8 vs torch, P(positive)) on CHECK_TEXTS
TAG = "onnx"
OPSET = 17
# Dynamic int8 quantizes activations with one scale per input tensor, so a window's answer would depend on what it
# is batched with (on the default run's model: 28 of 1,275 test labels flipped between batches of 64 and one text at
# a time, mean |ΔP| 0.02). The int8 scorer therefore runs one window per call: a text's answer never depends on other
# traffic (micro-batching still shares tokenization and the thread hop). fp32 gives equal answers in any batch.
INT8_BATCH_SIZE = 1
THREADS_ENV = "ONNX_THREADS"  # intra-op threads of ONNX Runtime sessions; 0 / unset = ONNX Runtime's default
CHECK_TEXTS = (
    "The movie was amazing",
    "A dull, lifeless mess.",
    "Not the best film of the year, but the cast is charming and the ending works.",
    "an overlong , overwrought and ultimately pointless exercise in style over substance , "
    "with a script that never decides what it wants to be and performances that drift from camp to stupor",
)


# -- export ----------------------------------------------------------------------------------
def forward_input_names(model: Any, tokenizer: Any) -> list[str]:
    """The tokenizer's inputs that the model takes, in the order of ``model.forward``'s signature."""
    wanted = set(tokenizer.model_input_names) | {"input_ids", "attention_mask"}
    return [p for p in inspect.signature(model.forward).parameters if p in wanted]


def _logits_module(model: Any, names: Sequence[str]) -> Any:
    import torch

    class LogitsOnly(torch.nn.Module):
        """Positional inputs (in ``names`` order) → logits."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.model(**dict(zip(names, inputs, strict=True))).logits

    return LogitsOnly().eval()  # a fresh module trains by default, and the exporter restores that mode


def export_onnx(model: Any, tokenizer: Any, path: str | Path, opset: int = OPSET) -> Path:
    """Write ``model`` (a transformers sequence classifier) as ONNX with dynamic batch/sequence axes."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = forward_input_names(model, tokenizer)
    sample = tokenizer(list(CHECK_TEXTS[:2]), padding=True, return_tensors="pt")
    args = tuple(sample[n] if n in sample else torch.zeros_like(sample["input_ids"]) for n in names)
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about Python control flow on shapes
        torch.onnx.export(
            _logits_module(model, names), args, str(path), dynamo=False, opset_version=opset,
            input_names=names, output_names=["logits"],
            dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, "logits": {0: "batch"}},
        )
    model.eval()
    return path


def quantize_int8(source: str | Path, target: str | Path) -> Path:
    """Dynamic int8 quantization: weights int8 ahead of time (one scale per output channel), activations at run time.

    Per-channel scales halve the mean |ΔP(positive)| vs per-tensor ones (0.017 vs 0.038 on the test split,
    98.3 % vs 96.2 % label agreement with PyTorch) at the same size and speed (see BENCHMARKS.md).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True)
    return Path(target)


# -- scoring ---------------------------------------------------------------------------------
def session_options(threads: int | None = None) -> ort.SessionOptions:
    """Full graph optimization, sequential execution, ``threads`` intra-op threads (0 = ORT's default: all cores).

    Idle worker threads sleep instead of spinning: on a shared or busy CPU spinning steals the cores that
    tokenization, the web server and other processes need (long texts, 2 threads, load 5 on 2 cores: 64 ms
    instead of 109 ms per call, see BENCHMARKS.md).
    """
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    threads = int(os.environ.get(THREADS_ENV, "0") or 0) if threads is None else threads
    opts.intra_op_num_threads = max(0, threads)
    opts.inter_op_num_threads = 1
    return opts


def make_session(path: str | Path, threads: int | None = None) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])


class OnnxScorer(Scorer):
    """:class:`Scorer` with the forward pass in ONNX Runtime (numpy in, numpy out)."""

    def __init__(self, session: ort.InferenceSession, tokenizer: Any, scoring: ScoringConfig, batch_size: int = 64):
        self.model = None
        self.session = session
        self.tokenizer = tokenizer
        self.scoring = scoring
        self.batch_size = batch_size
        self.input_names = [i.name for i in session.get_inputs()]
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.pad_left = getattr(tokenizer, "padding_side", "right") == "left"

    def feeds(self, windows: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
        """Padded ``input_ids``, ``attention_mask`` and zero ``token_type_ids`` (what ``tokenizer.pad`` gives)."""
        width = max(len(w) for w in windows)
        ids = np.full((len(windows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(windows), width), dtype=np.int64)
        for row, window in enumerate(windows):
            cols = slice(width - len(window), width) if self.pad_left else slice(0, len(window))
            ids[row, cols] = window
            mask[row, cols] = 1
        known = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        return {name: known[name] for name in self.input_names}

    def logits(self, windows: Sequence[Sequence[int]]) -> np.ndarray:
        return self.session.run(["logits"], self.feeds(windows))[0]

    def window_probabilities(self, ids: list[list[int]]) -> np.ndarray:
        """P(positive) per window, batched by similar length (dynamic padding), as in :class:`Scorer`."""
        out = np.empty(len(ids), dtype=np.float64)
        order = np.argsort([len(x) for x in ids], kind="stable")
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            logits = self.logits([ids[i] for i in batch]).astype(np.float32)
            shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
            out[batch] = (shifted / shifted.sum(axis=-1, keepdims=True))[:, POSITIVE]
        return out


# -- the registry side -----------------------------------------------------------------------
def resolve_version(model_uri: str) -> Any | None:
    """The ModelVersion behind ``models:/name/version`` or ``models:/name@alias`` (None for other URIs)."""
    from mlflow import MlflowClient

    from pipelines.export import parse_registry_uri

    parsed = parse_registry_uri(model_uri)
    if parsed is None:
        return None
    name, alias, version = parsed
    client = MlflowClient()
    return client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)


def _model_file(model_uri: str, sub: str) -> Path:
    """A file or folder inside an MLflow model (local folder, ``runs:/`` or ``models:/`` URI)."""
    local = Path(model_uri)
    if local.is_dir():
        return local / sub
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{model_uri.rstrip('/')}/{sub}"))
    except MlflowException:  # URIs without sub-paths (models:/<logged model id>): the whole model
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri)) / sub


def load_tokenizer_and_scoring(model_uri: str, **overrides: Any) -> tuple[Any, ScoringConfig]:
    """The logged tokenizer and scoring settings, without loading the PyTorch weights."""
    import yaml
    from transformers import AutoTokenizer

    flavors = (yaml.safe_load(_model_file(model_uri, "MLmodel").read_text()) or {}).get("flavors", {})
    if "transformers" not in flavors:
        raise ValueError(f"{model_uri} is not an MLflow transformers model (flavors: {', '.join(flavors) or 'none'})")
    tokenizer = AutoTokenizer.from_pretrained(str(_model_file(model_uri, "components/tokenizer")))
    config = json.loads(_model_file(model_uri, "model/config.json").read_text())
    holder = SimpleNamespace(config=SimpleNamespace(**{k: v for k, v in config.items() if k == "sentiment_mlops"}))
    return tokenizer, ScoringConfig.from_model(holder, **overrides)


def max_abs_diff(model: Any, tokenizer: Any, session: ort.InferenceSession, texts: Sequence[str] = CHECK_TEXTS,
                 batch_size: int = 64) -> dict[str, float]:
    """Largest |torch − ONNX| difference of logits and of P(positive) on ``texts`` (windows included)."""
    import torch

    torch_scorer = Scorer(model, tokenizer)
    onnx_scorer = OnnxScorer(session, tokenizer, torch_scorer.scoring, batch_size)
    ids, _ = torch_scorer.windows(texts)
    with torch.inference_mode():
        expected = model(**tokenizer.pad({"input_ids": ids}, return_tensors="pt")).logits.numpy()
    return {
        "logits": float(np.abs(onnx_scorer.logits(ids) - expected).max()),
        "p_positive": float(np.abs(onnx_scorer.predict_proba(texts) - torch_scorer.predict_proba(texts)).max()),
    }


def export_model_files(model_uri: str, folder: str | Path, opset: int = OPSET) -> dict[str, Any]:
    """Export ``model_uri`` as ``model.onnx`` and ``model.int8.onnx`` in ``folder``, with their differences."""
    from pipelines.registry import load_components

    folder = Path(folder)
    model, tokenizer = load_components(model_uri)
    fp32 = export_onnx(model, tokenizer, folder / FILES[False], opset)
    int8 = quantize_int8(fp32, folder / FILES[True])
    return {
        "fp32": fp32, "int8": int8, "inputs": ",".join(forward_input_names(model, tokenizer)),
        "diff_fp32": max_abs_diff(model, tokenizer, make_session(fp32)),
        "diff_int8": max_abs_diff(model, tokenizer, make_session(int8), batch_size=INT8_BATCH_SIZE),
    }


def log_onnx(model_uri: str, run_id: str = "", opset: int = OPSET) -> dict[str, str]:
    """Export a registered version, log the files with it and tag it; return the tags.

    The files go to ``onnx/`` in ``run_id`` (default: the run that logged the version).
    Refuses (ValueError) if the fp32 export differs from PyTorch by more than 1e-4.
    """
    from mlflow import MlflowClient

    from pipelines import registry

    mv = resolve_version(model_uri)
    if mv is None:
        raise ValueError(f"{model_uri}: give a registered version (models:/name/N or models:/name@alias)")
    run_id = run_id or mv.run_id or mv.tags.get("run_id", "")
    if not run_id:
        raise ValueError(f"{mv.name} v{mv.version} has no run to log the ONNX files to; pass run_id")
    with tempfile.TemporaryDirectory(prefix="onnx-export-") as tmp:
        out = export_model_files(f"models:/{mv.name}/{mv.version}", tmp, opset)
        if out["diff_fp32"]["logits"] > 1e-4:
            raise ValueError(f"ONNX export differs from PyTorch: {out['diff_fp32']}")
        client = MlflowClient()
        for key in ("fp32", "int8"):
            client.log_artifact(run_id, str(out[key]), ONNX_DIR)
    tags = {
        f"{TAG}.run_id": run_id,
        f"{TAG}.path": f"{ONNX_DIR}/{FILES[False]}",
        f"{TAG}.int8_path": f"{ONNX_DIR}/{FILES[True]}",
        f"{TAG}.opset": str(opset),
        f"{TAG}.exporter": f"torch.onnx (TorchScript) torch=={md.version('torch').split('+')[0]}",
        f"{TAG}.onnxruntime": ort.__version__,
        f"{TAG}.inputs": out["inputs"],
        f"{TAG}.max_abs_diff": f"{out['diff_fp32']['logits']:.2e}",
        f"{TAG}.int8_max_abs_diff": f"{out['diff_int8']['p_positive']:.2e}",
    }
    registry.set_tags(mv.name, mv.version, tags)
    return tags


def load_onnx_scorer(model_uri: str, quantized: bool = False, threads: int | None = None,
                     **scoring_overrides: Any) -> OnnxScorer:
    """An :class:`OnnxScorer` for ``model_uri``.

    Uses the files logged by :func:`log_onnx` when the URI names a registered version that has them
    (or ``onnx/`` inside a local model folder); otherwise exports (and quantizes) the PyTorch model
    into a temporary folder first.
    """
    import mlflow

    tokenizer, scoring = load_tokenizer_and_scoring(model_uri, **scoring_overrides)
    batch_size = INT8_BATCH_SIZE if quantized else 64
    in_folder = Path(model_uri) / ONNX_DIR / FILES[quantized]  # an exported model folder that carries its ONNX
    if in_folder.is_file():
        return OnnxScorer(make_session(in_folder, threads), tokenizer, scoring, batch_size)
    mv = resolve_version(model_uri)
    logged_run = mv.tags.get(f"{TAG}.run_id") if mv is not None else None
    if logged_run:
        path_tag = f"{TAG}.int8_path" if quantized else f"{TAG}.path"
        path = mlflow.artifacts.download_artifacts(artifact_uri=f"runs:/{logged_run}/{mv.tags[path_tag]}")
        return OnnxScorer(make_session(path, threads), tokenizer, scoring, batch_size)
    where = f"{mv.name} v{mv.version}" if mv is not None else model_uri
    print(f"no ONNX export logged with {where}: exporting it now "
          f"(log one with: python -m pipelines.onnx_backend export --model-uri {model_uri})", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="onnx-export-") as tmp:
        from pipelines.registry import load_components

        model, torch_tokenizer = load_components(model_uri)
        path = export_onnx(model, torch_tokenizer, Path(tmp) / FILES[False])
        if quantized:
            path = quantize_int8(path, Path(tmp) / FILES[True])
        session = make_session(path, threads)  # the session holds the model; the files can go
    return OnnxScorer(session, tokenizer, scoring, batch_size)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.onnx_backend", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="export a registered version to ONNX (+ int8) and log it with the version")
    export.add_argument("--model-uri", default="models:/sentiment@production")
    export.add_argument("--tracking-uri", default="", help="default: $MLFLOW_TRACKING_URI or the project store")
    export.add_argument("--run-id", default="", help="run to log the files to (default: the version's run)")
    args = parser.parse_args(argv)
    from pipelines import tracking

    tracking.setup(args.tracking_uri)
    print(json.dumps(log_onnx(args.model_uri, args.run_id), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
