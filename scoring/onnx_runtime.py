"""The ONNX Runtime scorer: :class:`~scoring.scorer.Scorer` with its forward pass in ONNX Runtime.

Tokenization, windows and aggregation stay identical to PyTorch's; only the model call
differs. :func:`load_onnx_scorer` loads one for a model URI (the ``onnx`` and
``onnx-int8`` backends of :mod:`scoring.runtimes`), from the files logged with the
version at training time, from ``onnx/`` inside an exported folder, or, for a version
that has none, from a conversion made on the spot.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import onnxruntime as ort

from scoring.config import ScoringConfig
from scoring.identity import resolve_version
from scoring.integrity import check_folder_files, check_version_files, onnx_key
from scoring.labels import POSITIVE
from scoring.machine import cores
from scoring.model_files import load_components, load_tokenizer_and_scoring
from scoring.onnx_convert import FILES, ONNX_DIR, export_onnx, quantize_int8
from scoring.scorer import Scorer, WindowScores, check_scoring, logit_margin
from scoring.subjectivity import OUTPUT as SUBJECTIVITY
from scoring.subjectivity import sigmoid
from scoring.version_tags import ONNX_PATHS, ONNX_RUN_ID

# Dynamic int8 quantizes activations with one scale per input tensor, so a window's answer would depend on what it
# is batched with (on the default run's model: 28 of 1,275 test labels flipped between batches of 64 and one text at
# a time, mean |ΔP| 0.02). The int8 scorer therefore never puts windows of two texts in one call: with
# INT8_CALLS=text (the default) all windows of one text go in one call, so a text's answer depends on that text
# alone, never on other traffic; INT8_CALLS=window runs one window per call (the scorer before per-text calls).
# A text of one window is one call either way. fp32 gives equal answers in any batch and runs batched.
INT8_CALLS_ENV = "INT8_CALLS"
INT8_CALLS = ("text", "window")
# intra-op threads of each ONNX Runtime call; 0 / unset = all cores for a call on its own, the cores shared among
# the calls for calls side by side
THREADS_ENV = "ONNX_THREADS"
# ONNX Runtime calls that run at once (texts of one scoring call, each a call of its own); 0 / unset = one per core.
# On small inputs (windows of 64 tokens) one single-threaded call per core does more than one call spread over all
# cores: the threads of one call spend their time waiting for each other (BENCHMARKS.md, long reviews). A lone text
# still gets every core. A text's answer does not depend on it: one thread or several give the same logits.
PARALLEL_ENV = "ONNX_PARALLEL"


# ONNX Runtime graph rewrites left out. SkipLayerNormFusion folds the residual Add and LayerNormalization after each
# int8 MatMul into one SkipLayerNormalization node, whose CPU kernel took 17 % of an int8 call on windows of 64 tokens
# where the Add and LayerNormalization it replaces take 10 % (ORT 1.32 profile; BENCHMARKS.md, long reviews).
DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)


def _env_int(name: str) -> int:
    value = os.environ.get(name, "").strip() or "0"
    if not value.isdigit():
        raise ValueError(f"{name}={value!r}: a whole number ≥ 0 (0 = the default)")
    return int(value)


def parallel_setting(parallel: int | None = None) -> int:
    """Calls at once: ``parallel``, else ``$ONNX_PARALLEL``, else one per core (0 counts as unset)."""
    value = _env_int(PARALLEL_ENV) if parallel is None else parallel
    return value if value > 0 else cores()


def threads_setting(threads: int | None = None, parallel: int | None = None) -> int:
    """Intra-op threads per call: ``threads``, else ``$ONNX_THREADS``, else the cores shared among the calls."""
    value = _env_int(THREADS_ENV) if threads is None else threads
    return value if value > 0 else max(1, cores() // parallel_setting(parallel))


def session_options(threads: int | None = None, parallel: int = 1) -> ort.SessionOptions:
    """Full graph optimization, sequential execution, :func:`threads_setting` intra-op threads.

    Idle worker threads sleep instead of spinning: on a shared or busy CPU spinning steals the cores that
    tokenization, the web server and other processes need (long texts, 2 threads, load 5 on 2 cores: 64 ms
    instead of 109 ms per call, see BENCHMARKS.md).
    """
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads_setting(threads, parallel)
    opts.inter_op_num_threads = 1
    return opts


def make_session(path: str | Path, threads: int | None = None, parallel: int = 1) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), session_options(threads, parallel), providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(DISABLED_OPTIMIZERS))


def make_sessions(path: str | Path, threads: int | None, parallel: int) -> tuple[ort.InferenceSession,
                                                                                  ort.InferenceSession | None]:
    """A session for a call on its own (a lone text: every thread it may have) and, where the threads differ, one
    for calls side by side (``parallel`` at once)."""
    alone = make_session(path, threads, parallel=1)
    if parallel == 1 or threads_setting(threads, parallel) == threads_setting(threads, 1):
        return alone, None
    return alone, make_session(path, threads, parallel)


@cache
def _executor(workers: int) -> ThreadPoolExecutor:
    """One pool per size for the whole process (scorers come and go with hot reloads; the threads stay)."""
    return ThreadPoolExecutor(workers, thread_name_prefix="onnx-call")


class _InFlight:
    """How many scoring calls of one scorer (and its :meth:`~Scorer.with_scoring` copies) are running."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def enter(self) -> int:
        """Count one more call; the calls that were already running."""
        with self.lock:
            self.count += 1
            return self.count - 1

    def leave(self) -> None:
        with self.lock:
            self.count -= 1


class OnnxScorer(Scorer):
    """:class:`Scorer` with the forward pass in ONNX Runtime (numpy in, numpy out).

    Its forward pass never touches the tokenizer and ONNX Runtime sessions take concurrent runs, so with one
    call per text (int8) up to ``parallel`` scoring calls may run at once (:attr:`calls_at_once`): the app's
    micro-batcher then starts the next batch while one text of the last is still being scored.
    """

    def __init__(self, session: ort.InferenceSession, tokenizer: Any, scoring: ScoringConfig, batch_size: int = 64,
                 per_text: bool = False, parallel: int = 1, side_session: ort.InferenceSession | None = None):
        self.model = None
        self.parallel = parallel  # calls run at once (ONNX Runtime releases the GIL; a session serves many)
        self.session = session  # a call on its own
        self.side_session = side_session or session  # calls side by side (fewer threads each)
        self.tokenizer = tokenizer
        # graphs exported with a subjectivity head (versions since issue 25) give P(subjective) as a second output
        self.output_names = [o.name for o in session.get_outputs() if o.name in ("logits", SUBJECTIVITY)]
        self.head = None
        self.scoring = check_scoring(scoring, self.has_subjectivity)
        self.batch_size = batch_size
        self.per_text = per_text  # one call per text (its windows only) instead of length-sorted batches
        self.input_names = [i.name for i in session.get_inputs()]
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.pad_left = getattr(tokenizer, "padding_side", "right") == "left"
        self.in_flight = _InFlight()

    @property
    def has_subjectivity(self) -> bool:  # type: ignore[override]
        return SUBJECTIVITY in self.output_names

    @property
    def calls_at_once(self) -> int:  # type: ignore[override]
        """Per text, the calls of several scoring calls share the cores; batched (fp32), one scoring call at a time."""
        return self.parallel if self.per_text else 1

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

    def logits(self, windows: Sequence[Sequence[int]], session: ort.InferenceSession | None = None) -> np.ndarray:
        return (session or self.session).run(["logits"], self.feeds(windows))[0]

    def outputs(self, windows: Sequence[Sequence[int]],
                session: ort.InferenceSession | None = None) -> list[np.ndarray]:
        """The logits and, where the graph has it, the subjectivity logit of each window, from one call."""
        return (session or self.session).run(self.output_names, self.feeds(windows))

    def window_logits(self, ids: list[list[int]], owner: np.ndarray | None = None) -> WindowScores:
        """P(positive), logit margin and P(subjective) (with the head) per window: with ``per_text``, one call per
        text (``owner``: the text of each window; without it, one call per window), else batched by similar length
        as in :class:`Scorer`."""
        probs, margins = np.empty(len(ids), dtype=np.float64), np.empty(len(ids), dtype=np.float64)
        subjectivity = np.empty(len(ids), dtype=np.float64) if self.has_subjectivity else None
        if self.per_text:  # a text's windows are consecutive
            owner = np.arange(len(ids)) if owner is None else owner
            calls = np.split(np.arange(len(ids)), np.flatnonzero(np.diff(owner)) + 1)
        else:
            order = np.argsort([len(x) for x in ids], kind="stable")
            calls = [order[start : start + self.batch_size] for start in range(0, len(order), self.batch_size)]
        others = self.in_flight.enter()
        try:
            if self.parallel > 1 and (len(calls) > 1 or others):  # side by side, here or with other scoring calls
                results = list(_executor(self.parallel).map(
                    lambda batch: self.outputs([ids[i] for i in batch], self.side_session), calls))
            else:  # a lone call: every thread it may have
                results = [self.outputs([ids[i] for i in batch]) for batch in calls]
        finally:
            self.in_flight.leave()
        for batch, raw in zip(calls, results, strict=True):
            logits = raw[0].astype(np.float32)
            shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
            probs[batch] = (shifted / shifted.sum(axis=-1, keepdims=True))[:, POSITIVE]
            margins[batch] = logit_margin(logits)
            if subjectivity is not None:
                subjectivity[batch] = sigmoid(raw[1].reshape(-1))
        return WindowScores(probs, margins, subjectivity)


def int8_calls_setting(value: str | None = None) -> str:
    """``value``, else ``$INT8_CALLS``, else ``text``; a ValueError for anything but ``text`` / ``window``."""
    value = (value or os.environ.get(INT8_CALLS_ENV, "") or "text").strip().lower()
    if value not in INT8_CALLS:
        raise ValueError(f"{INT8_CALLS_ENV}={value!r}: choose from {', '.join(INT8_CALLS)}")
    return value


def load_onnx_scorer(model_uri: str, quantized: bool = False, threads: int | None = None,
                     parallel: int | None = None, **scoring_overrides: Any) -> OnnxScorer:
    """An :class:`OnnxScorer` for ``model_uri``.

    Uses ``onnx/`` inside a local model folder, else the files logged with the registered version
    (``onnx.*`` tags); otherwise converts (and quantizes) the PyTorch model in a temporary folder first.
    int8 calls hold the windows of one text (``$INT8_CALLS``, see :data:`INT8_CALLS`); up to ``parallel``
    calls run at once (:data:`PARALLEL_ENV`), each on ``threads`` threads (:data:`THREADS_ENV`).
    """
    tokenizer, scoring = load_tokenizer_and_scoring(model_uri, **scoring_overrides)
    calls = int8_calls_setting() if quantized else ""
    batch_size, per_text = (1 if calls == "window" else 64), calls == "text"
    parallel = parallel_setting(parallel)

    def scorer(sessions: tuple[ort.InferenceSession, ort.InferenceSession | None]) -> OnnxScorer:
        return OnnxScorer(sessions[0], tokenizer, scoring, batch_size, per_text, parallel, sessions[1])

    in_folder = Path(model_uri) / ONNX_DIR / FILES[quantized]  # an exported model folder that carries its ONNX
    if in_folder.is_file():
        check_folder_files(model_uri, [in_folder])  # the graph its version sealed, or refused
        return scorer(make_sessions(in_folder, threads, parallel))
    mv = resolve_version(model_uri)
    logged_run = mv.tags.get(ONNX_RUN_ID) if mv is not None else None
    if logged_run:
        # a copy in a folder of our own, gone once the session holds the model (each load and hot reload
        # used to leave one more in the temp dir)
        with tempfile.TemporaryDirectory(prefix="onnx-download-") as tmp:
            path = mlflow.artifacts.download_artifacts(
                artifact_uri=f"runs:/{logged_run}/{mv.tags[ONNX_PATHS[quantized]]}", dst_path=tmp)
            check_version_files(mv, {onnx_key(quantized): path})  # the graph that was sealed, or refused
            sessions = make_sessions(path, threads, parallel)
        return scorer(sessions)
    where = f"{mv.name} v{mv.version}" if mv is not None else model_uri
    print(f"no ONNX export logged with {where}: exporting it now "
          f"(log one with: python -m pipelines export-onnx --model-uri {model_uri})", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="onnx-export-") as tmp:
        model, torch_tokenizer = load_components(model_uri)
        path = export_onnx(model, torch_tokenizer, Path(tmp) / FILES[False])
        if quantized:
            path = quantize_int8(path, Path(tmp) / FILES[True])
        sessions = make_sessions(path, threads, parallel)  # the sessions hold the model; the files can go
    return scorer(sessions)
