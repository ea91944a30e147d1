"""The one seam through which served models are loaded.

``load_scorer(uri, backend)`` returns a scorer: an object with
``predict_proba(texts) -> np.ndarray`` (P(positive) per text), ``tokenizer`` and
``scoring`` (a :class:`~scoring.config.ScoringConfig`). The serving app, evaluation,
the promotion gate, monitoring and the benchmarks all go through it, so a new runtime
(another quantization, another engine) is one more entry in :data:`BACKENDS`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from scoring.config import ScoringConfig
from scoring.model_files import load_components
from scoring.onnx_runtime import load_onnx_scorer
from scoring.scorer import Scorer


class ScorerLike(Protocol):
    """What a backend returns (:class:`~scoring.scorer.Scorer` and its subclasses)."""

    tokenizer: Any
    scoring: ScoringConfig
    calls_at_once: int  # score_windows calls that may run at once from several threads

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray: ...

    def windows(self, texts: Sequence[str]) -> tuple[list[list[int]], np.ndarray]: ...

    def score_windows(self, ids: list[list[int]], owner: np.ndarray, n_texts: int) -> np.ndarray: ...


def _check_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(overrides) - set(ScoringConfig.model_fields))
    if unknown:
        raise ValueError(f"unknown scoring override(s) {unknown}; known: {', '.join(ScoringConfig.model_fields)}")
    return {k: v for k, v in overrides.items() if v is not None}


def load_torch(model_uri: str, threads: int | None = None, parallel: int | None = None,
               **scoring_overrides: Any) -> Scorer:
    """The logged transformers model in PyTorch, scored by :class:`Scorer` (torch threads are process-wide)."""
    model, tokenizer = load_components(model_uri)
    return Scorer(model, tokenizer, ScoringConfig.from_model(model, **scoring_overrides))


def load_onnx(model_uri: str, threads: int | None = None, parallel: int | None = None,
              **scoring_overrides: Any) -> ScorerLike:
    """ONNX Runtime fp32 (the export logged with the version, else converted on the spot)."""
    return load_onnx_scorer(model_uri, quantized=False, threads=threads, parallel=parallel, **scoring_overrides)


def load_onnx_int8(model_uri: str, threads: int | None = None, parallel: int | None = None,
                   **scoring_overrides: Any) -> ScorerLike:
    """ONNX Runtime with dynamic int8 quantization (weights int8, activations quantized at run time)."""
    return load_onnx_scorer(model_uri, quantized=True, threads=threads, parallel=parallel, **scoring_overrides)


# the names are also scoring.config.BACKEND_NAMES (settings and the CLI validate against it; a test keeps them equal)
BACKENDS: dict[str, Callable[..., ScorerLike]] = {"torch": load_torch, "onnx": load_onnx, "onnx-int8": load_onnx_int8}


def load_scorer(model_uri: str, backend: str = "torch", threads: int | None = None, parallel: int | None = None,
                **scoring_overrides: Any) -> ScorerLike:
    """Load ``model_uri`` (``models:/…``, ``runs:/…`` or a local MLflow model folder) with ``backend``.

    ONNX Runtime: up to ``parallel`` calls at once (``None`` = ``$ONNX_PARALLEL``, 0 = one per core), each on
    ``threads`` intra-op threads (``None`` = ``$ONNX_THREADS``, 0 = the cores shared among the calls).
    ``scoring_overrides`` (``max_length``, ``long_text_strategy``, ``window_stride``,
    ``max_windows``; ``None`` = keep the model's saved value) change how long texts are scored.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; available: {', '.join(sorted(BACKENDS))}")
    return BACKENDS[backend](model_uri, threads=threads, parallel=parallel, **_check_overrides(scoring_overrides))
