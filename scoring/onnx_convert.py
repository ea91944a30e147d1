"""A transformers sequence classifier as ONNX, and its dynamic int8 quantization.

* :func:`export_onnx` writes the classifier (and its subjectivity head's logit as a second output,
  ``subjectivity``, where the model has one: :mod:`scoring.subjectivity`) with the TorchScript exporter
  (``dynamo=False``: torch 2.13's default dynamo exporter needs ``onnxscript``, which is
  not installed), dynamic batch and sequence axes, its inputs named **in the model's
  ``forward`` order** (``input_ids, attention_mask, token_type_ids``), not the
  tokenizer's (``input_ids, token_type_ids, attention_mask``), and attention traced
  from transformers' ``eager`` implementation (:data:`EXPORT_ATTENTION`);
* :func:`quantize_int8` applies ONNX Runtime's dynamic int8 quantization.

The train step runs both and logs the files with the version
(:mod:`pipelines.train.onnx_logging`); the server runs them itself only for a version
that arrives without them (:func:`scoring.onnx_runtime.load_onnx_scorer`).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from onnxruntime.quantization import QuantType, quantize_dynamic

from scoring.subjectivity import OUTPUT as SUBJECTIVITY
from scoring.subjectivity import SubjectivityHead, classifier_features

OPSET = 17
ONNX_DIR = "onnx"  # the files' folder, in the version's run and in an exported model folder
FILES = {False: "model.onnx", True: "model.int8.onnx"}  # fp32, int8
SAMPLE_TEXTS = ("The movie was amazing", "A dull, lifeless mess.")  # traced through the model once
# Attention as transformers' eager code writes it (MatMul, Add of the mask, Softmax) rather than as its SDPA path
# traces (the mask through IsNaN/Where around the softmax): the same logits (|Δ| ≤ 1e-7 in fp32) in a graph ONNX
# Runtime runs faster (BENCHMARKS.md, long reviews). The PyTorch model keeps its own implementation.
EXPORT_ATTENTION = "eager"


def forward_input_names(model: Any, tokenizer: Any) -> list[str]:
    """The tokenizer's inputs that the model takes, in the order of ``model.forward``'s signature."""
    wanted = set(tokenizer.model_input_names) | {"input_ids", "attention_mask"}
    return [p for p in inspect.signature(model.forward).parameters if p in wanted]


class _Outputs(torch.nn.Module):
    """Positional inputs (in ``names`` order) → logits and, with a subjectivity ``head``, its logit per window
    (read from the classifier's input features in the same forward pass)."""

    def __init__(self, model: Any, names: Sequence[str], head: torch.nn.Linear | None) -> None:
        super().__init__()
        self.model = model
        self.names = list(names)
        self.head = head

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        named = dict(zip(self.names, inputs, strict=True))
        if self.head is None:
            return self.model(**named).logits
        logits, features = classifier_features(self.model, **named)
        return logits, self.head(features).squeeze(-1)


def export_onnx(model: Any, tokenizer: Any, path: str | Path, opset: int = OPSET,
                attention: str = EXPORT_ATTENTION) -> Path:
    """Write ``model`` (a transformers sequence classifier) as ONNX with dynamic batch/sequence axes, its attention
    traced from transformers' ``attention`` implementation (``sdpa``: the exports before issue 16)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = forward_input_names(model, tokenizer)
    sample = tokenizer(list(SAMPLE_TEXTS), padding=True, return_tensors="pt")
    head = SubjectivityHead.from_model(model)
    outputs = ["logits"] + ([SUBJECTIVITY] if head is not None else [])
    args = tuple(sample[n] if n in sample else torch.zeros_like(sample["input_ids"]) for n in names)
    model.eval()
    own = getattr(model.config, "_attn_implementation", None)
    switch = bool(own) and own != attention
    if switch:
        model.set_attn_implementation(attention)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about Python control flow on shapes
            torch.onnx.export(
                # eval(): a fresh module trains, and the exporter restores the mode it found
                _Outputs(model, names, head.module() if head else None).eval(), args, str(path), dynamo=False,
                opset_version=opset, input_names=names, output_names=outputs,
                dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, **{o: {0: "batch"} for o in outputs}},
            )
    finally:
        if switch:
            model.set_attn_implementation(own)
    model.eval()
    return path


def quantize_int8(source: str | Path, target: str | Path) -> Path:
    """Dynamic int8 quantization: weights int8 ahead of time (one scale per output channel), activations at run time.

    Per-channel scales halve the mean |ΔP(positive)| vs per-tensor ones (0.017 vs 0.038 on the test split,
    98.3 % vs 96.2 % label agreement with PyTorch) at the same size and speed (see BENCHMARKS.md).
    """
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True)
    return Path(target)
