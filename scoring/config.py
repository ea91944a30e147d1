"""How a model turns text into windows, and the names of the runtimes that score them.

The settings are saved in the logged model's config (``config.sentiment_mlops``) at
training time, so every consumer of a version scores long texts the same way; the
server may override them (``LONG_TEXT_STRATEGY``, …). The same class is the
``scoring`` section of the pipeline configuration (:mod:`pipelines.config`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

CONFIG_KEY = "sentiment_mlops"  # where the settings live in a transformers model's config
LONG_TEXT_STRATEGIES = ("truncate", "head_tail", "sliding_window")  # see scoring.scorer
LONG_TEXT_PATTERN = f"^({'|'.join(LONG_TEXT_STRATEGIES)})$"
BACKEND_NAMES = ("onnx-int8", "onnx", "torch")  # serving runtimes, see scoring.runtimes
DEFAULT_BACKEND = "onnx-int8"  # what the server runs (BACKEND) and the gate compares; the reference scores are PyTorch


class ScoringConfig(BaseModel):
    """Tokens per window and the long-text strategy (``truncate``, ``head_tail``, ``sliding_window``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_length: int = Field(64, ge=8, le=512, description="tokens per window (training truncates here too)")
    long_text_strategy: str = Field("sliding_window", pattern=LONG_TEXT_PATTERN)
    window_stride: int = Field(16, ge=0, description="tokens shared by consecutive windows")
    max_windows: int = Field(16, ge=1)

    @classmethod
    def from_model(cls, model: Any, **overrides: Any) -> ScoringConfig:
        """The settings saved in ``model.config`` (defaults where absent), with non-None ``overrides``."""
        saved = getattr(model.config, CONFIG_KEY, None) or {}
        known = {k: v for k, v in saved.items() if k in cls.model_fields}
        return cls.model_validate({**known, **{k: v for k, v in overrides.items() if v is not None}})


def save_scoring_config(model: Any, scoring: ScoringConfig, **extra: Any) -> None:
    """Store the scoring settings (and extras such as the threshold) in the model config."""
    setattr(model.config, CONFIG_KEY, {**scoring.model_dump(), **extra})
