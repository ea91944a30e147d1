"""The one place for configuration defaults, in sections composed into one flat config.

Each stage takes the section it uses (``load_splits(cfg.data)``, ``train(cfg.train,
cfg.scoring, …)``, ``Thresholds.from_config(cfg.monitor)``), while the names stay flat
and unique, so the same name works everywhere: the notebooks' ``parameters`` cells,
``python -m pipelines run -p NAME VALUE``, config files, and the serving app's
environment variables (upper-cased, e.g. ``LONG_TEXT_STRATEGY``). Which step takes which
parameters is declared in :mod:`pipelines.flow.steps`; a test keeps each notebook's
parameters cell equal to it, with the defaults below.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from scoring.config import BACKEND_NAMES, DEFAULT_BACKEND, ScoringConfig
from scoring.inference_log import FEEDBACK_RETENTION_DAYS, INFERENCE_LOG_RETENTION_DAYS

EMBEDDED_MODEL = "embedded:all-MiniLM-L6-v2"
EMBEDDED_DATASET = "embedded:rotten_tomatoes"
PROMOTION_METRICS = ("accuracy", "roc_auc", "f1", "precision", "recall")


class ConfigError(ValueError):
    """A parameter has an unknown name or an invalid value; the message names it."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrackingSection(_Section):
    """Where runs are recorded."""

    tracking_uri: str = Field("", description="MLflow tracking URI; '' = $MLFLOW_TRACKING_URI or the project store")
    experiment_name: str = Field("sentiment", min_length=1)


class RegistrySection(_Section):
    """The registered model and the alias the server follows."""

    registered_model_name: str = Field("sentiment", min_length=1)
    alias: str = Field("production", min_length=1)


class LockSection(_Section):
    """The registry lock that serialises promotions and rollbacks (:mod:`pipelines.registry.lock`)."""

    lock_timeout: float = Field(60.0, ge=0, le=86400, description="seconds to wait for another promotion or "
                                "rollback to finish before giving up with an error naming it")
    lock_lease: float = Field(600.0, gt=0, le=86400, description="seconds after which a lock whose holder "
                              "died (on another machine) may be broken")


class DataSection(_Section):
    """The labelled texts and their fixed split."""

    dataset: str = Field(EMBEDDED_DATASET, min_length=1)
    text_column: str = Field("text", min_length=1)
    label_column: str = Field("label", min_length=1)
    val_size: float = Field(0.1, gt=0, lt=0.5)
    test_size: float = Field(0.1, gt=0, lt=0.5)
    seed: int = Field(42, description="the split's seed, and training's")
    max_train_samples: int = Field(0, ge=0, description="0 = all")
    include_feedback: bool = Field(False, description="add labelled feedback from the serving app to training")
    inference_db: str = Field(
        "", description="inference log + feedback: a SQLite file or a database URL (postgresql://…, password in "
        "INFERENCE_DB_PASSWORD); empty = <state dir>/inference.db",
    )


class FeedbackSection(_Section):
    """Reviewing and keeping the app's feedback (``python -m pipelines feedback``; docs/security.md)."""

    feedback_min_senders: int = Field(
        0, ge=0, description="`feedback accept --rule`: accept a pending text when at least N distinct credentials "
                             "sent it with one label and none with the other; 0 = the rule is off (reviewers only)",
    )
    feedback_retention_days: float = Field(
        FEEDBACK_RETENTION_DAYS, ge=0, description="`feedback purge` deletes feedback older than this; 0 = keep",
    )
    inference_log_retention_days: float = Field(
        INFERENCE_LOG_RETENTION_DAYS, ge=0, description="`feedback purge` deletes predictions older than this; "
                                                        "0 = keep",
    )


class TrainSection(_Section):
    """Fine-tuning: the base model, the optimizer and the schedule."""

    model_name: str = Field(EMBEDDED_MODEL, min_length=1)
    epochs: int = Field(4, ge=1, le=100)
    learning_rate: float = Field(5e-5, ge=0, lt=1)
    batch_size: int = Field(32, ge=1, le=4096)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0, lt=1)
    early_stopping_patience: int = Field(2, ge=0)
    tune_threshold: bool = True
    average_checkpoints: bool = Field(True, description="try the mean of the epoch weights; keep it if val is better")
    padding: str = Field("dynamic", pattern="^(dynamic|max_length)$")
    num_threads: int = Field(0, ge=0, description="torch threads; 0 = all cores")
    onnx_export: bool = Field(True, description="log the ONNX (fp32 + int8) export the server runs with the version")
    calibrate_long_texts: bool = Field(True, description="choose aggregation and long_threshold on validation long "
                                                         "texts (else keep the given ones)")
    device: str = Field("auto", pattern="^(auto|cpu|cuda|mps)$", description="auto = CUDA, else Apple MPS, else CPU")
    precision: str = Field("auto", pattern="^(auto|fp32|bf16|fp16)$",
                           description="auto = bf16 on a GPU that has it, else fp16 on CUDA, fp32 on the CPU")
    num_processes: int = Field(1, ge=1, le=1024, description="data-parallel processes (torchrun: NCCL on GPUs, "
                                                             "gloo on the CPU)")
    gradient_accumulation_steps: int = Field(1, ge=1, le=1024, description="batch_size is the effective batch: "
                                             "num_processes x per-device batch x this")
    resume_from: str = Field("", description="continue a killed train step from its last checkpoint: its MLflow "
                                             "run id or a checkpoint folder")
    log_checkpoints: bool = Field(False, description="also log each epoch's checkpoint to the step's MLflow run")
    distill_layers: int = Field(4, ge=0, le=256, description="then distil the fine-tuned model into a student of its "
                                "first N layers, which is registered (fewer operations per window); 0 = register "
                                "the fine-tuned model")
    distill_temperature: float = Field(2.0, gt=0, le=100, description="softmax temperature of the teacher's soft "
                                                                       "targets")
    distill_alpha: float = Field(0.5, ge=0, le=1, description="weight of the soft targets in the student's loss "
                                                               "(the rest: the labels)")
    distill_learning_rate: float = Field(1e-4, gt=0, lt=1, description="the student's peak learning rate")
    teacher_model: str = Field("", description="a teacher of any encoder (local folder, hub id or embedded name such "
                               "as all-mpnet-base-v2) fine-tuned, then distilled through its logits into model_name's "
                               "first distill_layers layers; '' = model_name itself teaches")
    teacher_from: str = Field("", description="an MLflow run id whose logged teacher/ (its logits over the training "
                                              "texts) teaches the student, without fine-tuning a teacher again")
    student_init: str = Field("pretrained", pattern="^(pretrained|fine-tuned)$", description="where the student of "
                              "teacher_model/teacher_from starts: model_name's pre-trained first layers, or fine-tuned "
                              "by the recipe first (as the default run's student starts), then cut")


class GateSection(_Section):
    """The candidate and the champion/challenger rule that may move the alias."""

    model_version: str = Field("", description="candidate version; '' = the newest")
    promotion_metric: str = Field("accuracy", description="compared by the gate; early stopping and the threshold "
                                                          "optimise it too")
    promotion_backend: str = Field(DEFAULT_BACKEND, description="runtime whose test scores the gate compares")
    min_delta: float = Field(0.002, ge=0, le=1)
    min_metric: float = Field(0.70, ge=0, le=1, description="absolute floor for the promotion metric")

    @field_validator("promotion_metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        return _one_of(value, PROMOTION_METRICS)

    @field_validator("promotion_backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        return _one_of(value, BACKEND_NAMES)


class MonitorSection(_Section):
    """Drift of production traffic in the inference log (see docs/monitoring.md)."""

    reference_profile: str = Field(
        "", description="reference profile JSON (path or MLflow URI); '' = the one logged with the version's run"
    )
    window_hours: float = Field(24.0, gt=0, description="monitor the last N hours before until")
    since: str = Field("", description="window start (ISO-8601, UTC if no offset); '' = until - window_hours")
    until: str = Field("", description="window end (ISO-8601, UTC if no offset); '' = now")
    min_samples: int = Field(200, ge=1, description="fewer predictions in the window: verdict insufficient_data")
    drift_alpha: float = Field(0.01, gt=0, lt=1, description="significance level of a check (Bonferroni-split)")
    psi_threshold: float = Field(0.2, gt=0, description="population stability index that counts as a shift")
    unk_ratio_delta: float = Field(0.02, gt=0, lt=1, description="rise of the mean unknown-token ratio that counts")
    domain_auc_threshold: float = Field(0.7, gt=0.5, le=1, description="domain-classifier ROC-AUC that counts")
    max_client_share: float = Field(
        0.2, gt=0, le=1, description="most of a window's predictions one client may make up; a client's rows "
                                     "above it are down-sampled (one client alone cannot trip drift)",
    )

    @field_validator("since", "until")
    @classmethod
    def _iso_time(cls, value: str) -> str:
        if value:
            try:
                datetime.fromisoformat(value)
            except ValueError:
                raise ValueError("must be an ISO-8601 time such as 2025-01-31T12:00:00+00:00") from None
        return value


class SweepSection(_Section):
    """The sweep report notebook's study (docs/sweeps.md); ``python -m pipelines sweep`` sets them."""

    study_name: str = Field("", description="the Optuna study of a sweep; '' = the newest one in the storage")
    sweep_storage: str = Field("", description="Optuna RDB URL of the study (password in SWEEP_STORAGE_PASSWORD); "
                                               "'' = $SWEEP_STORAGE, else optuna.db beside mlflow.db")


def _one_of(value: str, names: tuple[str, ...]) -> str:
    if value not in names:
        raise ValueError(f"must be one of {', '.join(names)}")
    return value


SECTIONS: dict[str, type[BaseModel]] = {
    "tracking": TrackingSection, "registry": RegistrySection, "lock": LockSection, "data": DataSection,
    "feedback": FeedbackSection, "train": TrainSection,
    "scoring": ScoringConfig, "gate": GateSection, "monitor": MonitorSection, "sweep": SweepSection,
}


class PipelineConfig(SweepSection, MonitorSection, GateSection, ScoringConfig, TrainSection, FeedbackSection,
                     DataSection, LockSection, RegistrySection, TrackingSection):
    """Every parameter of the pipeline, with its default: the sections above, flat (fields in section order)."""

    model_config = ConfigDict(extra="forbid", frozen=False, validate_assignment=True)

    def section(self, cls: type[BaseModel]) -> Any:
        """This config's values of one section, as that section's type."""
        return cls.model_validate({name: getattr(self, name) for name in cls.model_fields})

    @property
    def tracking(self) -> TrackingSection:
        return self.section(TrackingSection)

    @property
    def registry(self) -> RegistrySection:
        return self.section(RegistrySection)

    @property
    def lock(self) -> LockSection:
        return self.section(LockSection)

    @property
    def data(self) -> DataSection:
        return self.section(DataSection)

    @property
    def feedback(self) -> FeedbackSection:
        return self.section(FeedbackSection)

    @property
    def train(self) -> TrainSection:
        return self.section(TrainSection)

    @property
    def scoring(self) -> ScoringConfig:
        return self.section(ScoringConfig)

    @property
    def gate(self) -> GateSection:
        return self.section(GateSection)

    @property
    def monitor(self) -> MonitorSection:
        return self.section(MonitorSection)

    @property
    def sweep(self) -> SweepSection:
        return self.section(SweepSection)


def expand(names: Iterable[str]) -> tuple[str, ...]:
    """Parameter names, with section names (``data``) replaced by their fields, in order, without repeats."""
    out: dict[str, None] = {}
    for name in names:
        if name in SECTIONS:
            out.update(dict.fromkeys(SECTIONS[name].model_fields))
        elif name in PipelineConfig.model_fields:
            out[name] = None
        else:
            raise KeyError(f"{name!r} is neither a config section ({', '.join(SECTIONS)}) nor a parameter")
    return tuple(out)


def defaults() -> dict[str, Any]:
    """All parameter names with their default values."""
    return PipelineConfig().model_dump()


def _coerce(name: str, value: Any) -> Any:
    """Turn a CLI string into the field's type (papermill-style literal parsing)."""
    if not isinstance(value, str):
        return value
    field = PipelineConfig.model_fields[name]
    if field.annotation is bool:
        low = value.strip().lower()
        if low in {"1", "true", "yes", "on"}:
            return True
        if low in {"0", "false", "no", "off"}:
            return False
    return value


def read_mapping(file: str | Path, label: str, must: str) -> dict[str, Any]:
    """A YAML file's mapping; ConfigError naming ``label`` when the file is missing or holds no mapping."""
    path = Path(file)
    if not path.is_file():
        raise ConfigError(f"{label}: {path} does not exist")
    loaded = yaml.safe_load(path.read_text()) or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{label}: {path} {must}")
    return loaded


def build_config(overrides: dict[str, Any] | None = None, config_file: str | Path | None = None) -> PipelineConfig:
    """Defaults < config file < overrides; raise ConfigError naming the bad parameter.

    The names given (in the file or as overrides) are the config's ``model_fields_set``: what a user asked
    for, which the runner checks against the steps it runs.
    """
    values: dict[str, Any] = {}
    if config_file:
        values.update(read_mapping(config_file, "config file", "must hold a mapping of parameter names to values"))
    values.update(overrides or {})
    known = PipelineConfig.model_fields
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown parameter(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    try:
        return PipelineConfig(**{k: _coerce(k, v) for k, v in values.items()})
    except ValidationError as err:
        first = err.errors()[0]
        name = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"parameter {name}: {first['msg']} (got {first.get('input')!r})") from None


def settled(cfg: PipelineConfig) -> PipelineConfig:
    """The same values with no parameter marked as given: for runs whose parameters were checked already."""
    return PipelineConfig.model_construct(_fields_set=set(), **cfg.model_dump())
