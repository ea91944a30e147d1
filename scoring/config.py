"""How a model turns text into windows and windows into one answer, and the names of the runtimes.

The settings are saved in the logged model's config (``config.sentiment_mlops``) at
training time, so every consumer of a version scores long texts the same way; the
server may override them (``LONG_TEXT_STRATEGY``, …). The same class is the
``scoring`` section of the pipeline configuration (:mod:`pipelines.config`).

A saved config that lacks a setting scores as the versions logged before that setting
existed (:data:`LEGACY`), so an older version keeps its answers.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

CONFIG_KEY = "sentiment_mlops"  # where the settings live in a transformers model's config
LONG_TEXT_STRATEGIES = ("truncate", "head_tail", "sliding_window")  # see scoring.scorer
LONG_TEXT_PATTERN = f"^({'|'.join(LONG_TEXT_STRATEGIES)})$"
# how the windows of one text become its P(positive) (see scoring.scorer.aggregate): the mean of the windows'
# probabilities or of their logits (z1 - z0), weighted by window length, uniformly, by confidence (|logit| x length),
# with the first and last windows (or the last alone) counting double, or by length x P(subjective) (the model's
# subjectivity head, scoring.subjectivity; versions since issue 25); "prob_length" is what every version before
# these settings was scored with
AGGREGATIONS = ("prob_length", "prob", "logit_length", "logit", "logit_confidence", "prob_confidence", "logit_ends",
                "logit_last", "logit_subjective", "prob_subjective", "logit_subjective_last")
AGGREGATION_PATTERN = f"^({'|'.join(AGGREGATIONS)})$"
BACKEND_NAMES = ("onnx-int8", "onnx", "torch")  # serving runtimes, see scoring.runtimes
DEFAULT_BACKEND = "onnx-int8"  # what the server runs (BACKEND) and the gate compares; the reference scores are PyTorch


class ScoringConfig(BaseModel):
    """Tokens per window, the long-text strategy and how a long text's windows make one answer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_length: int = Field(64, ge=8, le=512, description="tokens per window (training truncates here too)")
    long_text_strategy: str = Field("sliding_window", pattern=LONG_TEXT_PATTERN)
    window_stride: int = Field(0, ge=0, description="tokens shared by consecutive windows")
    max_windows: int = Field(8, ge=1, description="most windows scored per text (evenly spread)")
    aggregation: str = Field("prob_length", pattern=AGGREGATION_PATTERN,
                             description="how the windows of a long text make its P(positive)")
    long_threshold: float = Field(0.5, gt=0, lt=1, description="decision threshold on a long text's aggregate "
                                                              "(texts of one window keep the folded one)")

    @classmethod
    def from_model(cls, model: Any, **overrides: Any) -> ScoringConfig:
        """The settings saved in ``model.config`` (:data:`LEGACY` where absent), with non-None ``overrides``."""
        saved = getattr(model.config, CONFIG_KEY, None) or {}
        known = {k: v for k, v in saved.items() if k in cls.model_fields}
        return cls.model_validate({**LEGACY, **known, **{k: v for k, v in overrides.items() if v is not None}})


def needs_subjectivity(aggregation: str) -> bool:
    """Whether ``aggregation`` weighs windows by P(subjective) (a model with a subjectivity head)."""
    return "subjective" in aggregation


# what a saved config without these keys means: how versions were scored before the settings existed
LEGACY = {"window_stride": 16, "max_windows": 16, "aggregation": "prob_length", "long_threshold": 0.5}


def save_scoring_config(model: Any, scoring: ScoringConfig, **extra: Any) -> None:
    """Store the scoring settings (and extras such as the threshold) in the model config."""
    setattr(model.config, CONFIG_KEY, {**scoring.model_dump(), **extra})
