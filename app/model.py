"""The served model and its hot reload.

:class:`ModelManager` holds one immutable :class:`LoadedModel`.  A request takes
``manager.current`` once and scores with it, so a reload (load the new version
aside, then swap one reference) never disturbs requests in flight: they finish on
the model they started with.  If the new version cannot be loaded, the old one
keeps serving and the error is kept for ``GET /model``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.settings import Settings
from scoring.clock import now
from scoring.features import token_stats
from scoring.identity import MANIFEST, ModelIdentity, folder_identity, local_folder, resolve, resolve_version
from scoring.integrity import version_fingerprint
from scoring.runtimes import ScorerLike, load_scorer

log = logging.getLogger("app.model")


@dataclass(frozen=True)
class LoadedModel:
    """A loaded scorer with what it is; never mutated after the swap."""

    scorer: ScorerLike
    identity: ModelIdentity
    fingerprint: str
    loaded_at: str
    load_seconds: float
    # the tokenizer is not safe to call from several threads at once, nor is a scorer whose calls_at_once is 1
    lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    @property
    def calls_at_once(self) -> int:
        """Scoring calls that may run at once (ONNX Runtime, one call per text: ``ONNX_PARALLEL``), else 1."""
        return self.scorer.calls_at_once

    def score(self, texts: Sequence[str], with_stats: bool) -> tuple[np.ndarray, list[tuple[int, float]]]:
        """P(positive) per text and, if asked, (tokens, unknown-token ratio) per text."""
        texts = list(texts)
        if not texts:
            return np.empty(0), []
        with self.lock:
            ids, owner = self.scorer.windows(texts)
            stats = token_stats(self.scorer.tokenizer, texts) if with_stats else []
            if self.calls_at_once == 1:
                return self.scorer.score_windows(ids, owner, len(texts)), stats
        return self.scorer.score_windows(ids, owner, len(texts)), stats  # the forward passes, beside other calls


@dataclass
class ReloadResult:
    """What one load attempt did: ``loaded``, ``unchanged``, ``skipped`` or ``failed``."""

    status: str
    origin: str
    previous_version: str | None = None
    version: str | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _local_target(folder: Path) -> tuple[ModelIdentity, str]:
    """What an exported folder's manifest says it is, and a fingerprint that changes when its files do."""
    identity = folder_identity(folder)
    stamps = [p.stat().st_mtime_ns for p in (folder / "MLmodel", folder / MANIFEST) if p.exists()]
    return identity, f"{folder.resolve()}|{identity.version}|{max(stamps, default=0)}"


class ModelManager:
    """Loads the configured model, checks whether its alias moved, swaps atomically."""

    def __init__(self, settings: Settings, on_change: Callable[[LoadedModel], None] | None = None,
                 on_attempt: Callable[[ReloadResult], None] | None = None):
        self.settings = settings
        self.current: LoadedModel | None = None
        self.last_error: dict[str, Any] | None = None
        self.last_checked_at: str | None = None
        self._failed_fingerprint: str | None = None
        self._lock = threading.Lock()
        self._on_change = on_change
        self._on_attempt = on_attempt

    def target(self) -> tuple[ModelIdentity, str]:
        """What MODEL_URI means now, and a fingerprint that changes when it points elsewhere."""
        uri = self.settings.model_uri
        folder = local_folder(uri)
        if folder is not None:
            return _local_target(folder)
        identity = resolve(uri)
        mv = resolve_version(identity.source)  # the manifest digest and onnx.* tags: an edited tag reloads (refused)
        return identity, f"{identity.source}|{identity.version}|{version_fingerprint(mv) if mv else ''}"

    def reload(self, origin: str = "admin", force: bool = False) -> ReloadResult:
        """Load the version MODEL_URI points at if it differs from the served one (or ``force``).

        Polling does not retry a version that already failed while another one serves;
        an admin reload always tries.
        """
        with self._lock:
            result = self._reload(origin, force)
        if self._on_attempt:
            self._on_attempt(result)
        return result

    def _reload(self, origin: str, force: bool) -> ReloadResult:
        current = self.current
        previous = current.identity.version if current else None
        self.last_checked_at = now()
        try:
            identity, fingerprint = self.target()
        except Exception as err:  # registry unreachable, alias deleted…
            return self._failed(origin, previous, None, "", f"cannot resolve {self.settings.model_uri}: {err}")
        if current is not None and not force:
            if fingerprint == current.fingerprint:  # the alias points at what is served: any error is moot
                self.last_error, self._failed_fingerprint = None, None
                return ReloadResult("unchanged", origin, previous, previous)
            if origin == "poll" and fingerprint == self._failed_fingerprint:
                return ReloadResult("skipped", origin, previous, previous, (self.last_error or {}).get("message"))
        log.info("loading %s (%s v%s) with backend %s", identity.source, identity.name, identity.version,
                 self.settings.backend)
        start = time.perf_counter()
        try:
            scorer = load_scorer(identity.source, self.settings.backend, threads=self.settings.onnx_threads,
                                 parallel=self.settings.onnx_parallel,
                                 **self.settings.scoring_overrides())
            _smoke_test(scorer)
        except Exception as err:  # any failure leaves the served model in place
            return self._failed(origin, previous, identity.version, fingerprint, f"{type(err).__name__}: {err}")
        loaded = LoadedModel(scorer, identity, fingerprint, now(), time.perf_counter() - start)
        self.current = loaded  # the swap: one reference assignment
        self.last_error, self._failed_fingerprint = None, None
        log.info("serving %s v%s (loaded in %.1fs)", identity.name, identity.version, loaded.load_seconds)
        if self._on_change:
            self._on_change(loaded)
        return ReloadResult("loaded", origin, previous, identity.version)

    def _failed(self, origin: str, previous: str | None, target: str | None, fingerprint: str,
                message: str) -> ReloadResult:
        message = message.strip()[:2000]
        log.error("model load failed (%s): %s; still serving %s", origin, message, previous or "nothing")
        self.last_error = {"time": now(), "origin": origin, "target_version": target, "message": message}
        self._failed_fingerprint = fingerprint or None
        return ReloadResult("failed", origin, previous, previous, message)


def _smoke_test(scorer: ScorerLike) -> None:
    """A model that cannot score two short texts into probabilities is not swapped in."""
    probs = np.asarray(scorer.predict_proba(["The movie was amazing", "A dull, lifeless mess."]))
    if probs.shape != (2,) or not np.all(np.isfinite(probs)) or probs.min() < 0 or probs.max() > 1:
        raise ValueError(f"smoke test: expected two probabilities, got {probs!r}")
