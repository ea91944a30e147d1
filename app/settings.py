"""The serving app's settings: one object, read from environment variables.

Names match the pipeline configuration where they overlap (``INFERENCE_DB``,
``LONG_TEXT_STRATEGY``, ``WINDOW_STRIDE``, ``MAX_WINDOWS``, ``MAX_LENGTH``, ``AGGREGATION``,
``LONG_THRESHOLD``); the
tracking store is ``MLFLOW_TRACKING_URI`` as everywhere in MLflow.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.clients import parse_tokens
from scoring import inference_log, tracking
from scoring.config import AGGREGATION_PATTERN, DEFAULT_BACKEND, LONG_TEXT_PATTERN
from scoring.runtimes import BACKENDS
from scoring.texts import MAX_TEXT_CHARS


def _default_threads() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def _per_core(n: int) -> int:
    """``n`` per core this process may run on (its CPU affinity, else the machine's count)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return n * max(1, cores)


class Settings(BaseSettings):
    """Every knob of the server (environment variable = field name upper-cased)."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    model_uri: str = Field(
        "models:/sentiment@production",
        description="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/… or a local exported MLflow model folder",
    )
    tracking_uri: str = Field(
        default_factory=tracking.resolve_tracking_uri,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "TRACKING_URI"),
        description="MLflow tracking/registry store; default: the project's SQLite store",
    )
    backend: str = Field(
        DEFAULT_BACKEND, description="model runtime: onnx-int8 (default), onnx (fp32) or torch; see docs/serving.md"
    )
    host: str = Field("127.0.0.1", description="bind address of `python -m app` (0.0.0.0 in a container)")
    port: int = Field(8000, ge=1, le=65535)
    torch_threads: int = Field(default_factory=_default_threads, ge=1, description="cap on torch threads")
    onnx_threads: int = Field(0, ge=0, description="ONNX Runtime intra-op threads per call; 0 = the cores shared "
                                                   "among ONNX_PARALLEL calls")
    onnx_parallel: int = Field(0, ge=0, description="ONNX Runtime calls at once (the texts of a micro-batch); "
                                                    "0 = one per core")
    reload_interval_s: float = Field(30.0, ge=0, description="alias polling period; 0 = off")
    reload_jitter: float = Field(
        0.2, ge=0, lt=1,
        description="each poll waits RELOAD_INTERVAL_S × (1 ± this): replicas do not hit the registry together",
    )
    drain_s: float = Field(
        0.0, ge=0, le=300,
        description="`python -m app` on SIGTERM: /ready answers 503 for this long (the balancer takes the replica "
                    "out) while requests are still served, then uvicorn stops listening and finishes in-flight ones",
    )
    graceful_timeout_s: float = Field(
        20.0, gt=0, le=600, description="`python -m app`: longest wait for in-flight requests after SIGTERM's drain",
    )
    admin_token: SecretStr | None = Field(None, description="bearer token of /admin/*; unset = disabled")
    feedback_tokens: SecretStr | None = Field(
        None, description="bearer tokens of POST /feedback, comma-separated (one per sender); unset (and no "
        "FEEDBACK_TOKENS_FILE) = feedback disabled (403)",
    )
    feedback_tokens_file: str = Field("", description="a file of feedback tokens, one a line (# comments)")
    feedback_rate_per_minute: float = Field(
        30.0, gt=0, description="POST /feedback per credential per minute (per replica), else 429 with Retry-After",
    )
    feedback_burst: int = Field(30, ge=1, description="feedback requests a credential may send at once")
    feedback_retention_days: float = Field(
        inference_log.FEEDBACK_RETENTION_DAYS, ge=0,
        description="feedback older than this is deleted at start-up (and by `python -m pipelines feedback purge`); "
                    "0 = kept forever",
    )
    inference_log_retention_days: float = Field(
        inference_log.INFERENCE_LOG_RETENTION_DAYS, ge=0,
        description="prediction rows older than this are deleted at start-up (and by the purge command); 0 = kept",
    )
    trust_forwarded_for: bool = Field(
        False, description="behind a balancer that appends X-Forwarded-For: a prediction's client id is the hash of "
                           "its last entry (else of the peer address)",
    )
    max_text_chars: int = Field(MAX_TEXT_CHARS, ge=1)
    max_batch: int = Field(64, ge=1)
    micro_batch_ms: float = Field(
        3.0, ge=0, le=1000,
        description="score concurrent requests together, waiting up to N ms for more (a lone one never waits); 0 = off",
    )
    max_body_bytes: int = Field(1_048_576, ge=1)
    max_concurrency: int = Field(
        default_factory=lambda: _per_core(4), ge=1,
        description="scoring requests run at once (default 4 per core); see MAX_QUEUE",
    )
    max_queue: int = Field(
        default_factory=lambda: _per_core(1), ge=0,
        description="scoring requests waiting for a slot (default 1 per core: an accepted request's latency grows "
                    "by about (MAX_CONCURRENCY + MAX_QUEUE) / MAX_CONCURRENCY at saturation); beyond, 503 with "
                    "Retry-After at once",
    )
    request_timeout_s: float = Field(30.0, gt=0, description="a scoring request unanswered this long gets 504")
    retry_after_s: int = Field(1, ge=0, description="Retry-After of an overload 503")
    inference_db: str = Field(
        "", description="inference log + feedback: a SQLite file, or a database URL shared by replicas "
        "(postgresql://user@host/db; password in INFERENCE_DB_PASSWORD[_FILE]); '' = the default file",
    )
    inference_log: bool = True
    log_raw_text: bool = False
    log_queue_size: int = Field(
        10_000, ge=1, description="prediction rows buffered for the log writer (also while its database is down) "
                                  "before dropping (counted)",
    )
    log_retry_s: float = Field(5.0, gt=0, description="retry period of an unreachable inference log database")
    # long-text scoring: None = what the model was saved with
    long_text_strategy: str | None = Field(None, pattern=LONG_TEXT_PATTERN)
    window_stride: int | None = Field(None, ge=0)
    max_windows: int | None = Field(None, ge=1)
    max_length: int | None = Field(None, ge=8, le=512)
    aggregation: str | None = Field(None, pattern=AGGREGATION_PATTERN)
    long_threshold: float | None = Field(None, gt=0, lt=1)

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value not in BACKENDS:
            raise ValueError(f"unknown backend {value!r}; available: {', '.join(sorted(BACKENDS))}")
        return value

    @field_validator("admin_token", "feedback_tokens", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def feedback_token_list(self) -> tuple[str, ...]:
        """The feedback tokens of FEEDBACK_TOKENS and FEEDBACK_TOKENS_FILE; empty = feedback disabled."""
        text = self.feedback_tokens.get_secret_value() if self.feedback_tokens else ""
        if self.feedback_tokens_file:
            text += "\n" + Path(self.feedback_tokens_file).read_text()
        return parse_tokens(text)

    @field_validator("feedback_tokens_file")
    @classmethod
    def _readable_file(cls, value: str) -> str:
        if value and not Path(value).is_file():
            raise ValueError(f"{value} is not a file")
        return value

    @property
    def inference_db_target(self) -> str:
        """The log's file path or database URL."""
        return self.inference_db or str(inference_log.default_path())

    def scoring_overrides(self) -> dict[str, Any]:
        return {
            "long_text_strategy": self.long_text_strategy, "window_stride": self.window_stride,
            "max_windows": self.max_windows, "max_length": self.max_length,
            "aggregation": self.aggregation, "long_threshold": self.long_threshold,
        }
