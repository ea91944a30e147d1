"""The pipeline declared in one table: each step's notebook, parameters, checks and results; the flows.

==========  ===========================================  ======================  =============================
step        takes (config sections, single parameters)   checked before a run    passes on / tags the parent
==========  ===========================================  ======================  =============================
eda         tracking, data, model_name, max_length       the dataset reads       —
train       tracking, data, train, scoring,              the dataset reads;      model_version
            registered_model_name, promotion_metric      device, precision,
                                                         num_processes, batch
evaluate    tracking, data, registered_model_name,       the dataset reads;      model_version
            model_version, device                        the device
promote     tracking, registry, lock, data, gate         the dataset reads       model_version, promoted,
                                                                                 decision
monitor     tracking, registry, monitor, inference_db    the window, the files   verdict
sweep       tracking, sweep                              the study exists        best_trial
==========  ===========================================  ======================  =============================

A step's notebook declares exactly the parameters it takes (a test checks each
``parameters`` cell against this table and the defaults of :mod:`pipelines.config`);
the runner passes exactly those, and refuses a given parameter that no step of the run
takes. Step modules never import the runner: the runner reads this table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pipelines.config import ConfigError, PipelineConfig, expand
from pipelines.data import sources
from pipelines.monitor import window
from pipelines.train import devices, distill


def _check_data(cfg: PipelineConfig) -> None:
    sources.validate(cfg.data)


def _check_train(cfg: PipelineConfig) -> None:
    sources.validate(cfg.data)
    placement = devices.resolve(cfg.device, cfg.precision, cfg.num_processes)
    devices.per_device_batch(cfg.batch_size, cfg.gradient_accumulation_steps, placement)
    if cfg.teacher_model or cfg.teacher_from:
        distill.check_other_teacher(cfg.model_name, cfg.distill_layers, cfg.teacher_model, cfg.teacher_from)
    elif cfg.student_init != "pretrained":
        raise ConfigError(f"parameter student_init: {cfg.student_init!r} is for the student of another teacher "
                          "(teacher_model or teacher_from); model_name's own student starts fine-tuned already")
    elif cfg.distill_layers:
        distill.check_layers(cfg.model_name, cfg.distill_layers)


def _check_evaluate(cfg: PipelineConfig) -> None:
    sources.validate(cfg.data)
    devices.resolve_device(cfg.device)


def _check_monitor(cfg: PipelineConfig) -> None:
    window.validate(cfg.monitor, cfg.inference_db)


def _check_sweep(cfg: PipelineConfig) -> None:
    from pipelines.sweep import study  # the [dev] extra's optuna: only a sweep report needs it

    study.find_study(cfg.study_name, study.storage_url(cfg.sweep_storage, cfg.tracking_uri))


@dataclass(frozen=True)
class Step:
    """One notebook of the pipeline."""

    name: str
    takes: tuple[str, ...]  # config sections and single parameters, passed to the notebook
    check: Callable[[PipelineConfig], None] | None = None  # refuses bad parameters before any step runs
    passes: tuple[str, ...] = ()  # result keys given to the later steps of the run as parameters
    tags: tuple[str, ...] = ()  # result keys tagged on the pipeline's parent run

    @property
    def notebook(self) -> str:
        return f"{self.name}.ipynb"

    @property
    def parameters(self) -> tuple[str, ...]:
        return expand(self.takes)


STEPS: dict[str, Step] = {step.name: step for step in (
    Step("eda", ("tracking", "data", "model_name", "max_length"), _check_data),
    Step("train", ("tracking", "data", "train", "scoring", "registered_model_name", "promotion_metric"), _check_train,
         passes=("model_version",), tags=("model_version",)),
    Step("evaluate", ("tracking", "data", "registered_model_name", "model_version", "device"), _check_evaluate,
         passes=("model_version",), tags=("model_version",)),
    Step("promote", ("tracking", "registry", "lock", "data", "gate"), _check_data,
         tags=("model_version", "promoted", "decision")),
    Step("monitor", ("tracking", "registry", "monitor", "inference_db"), _check_monitor, tags=("verdict",)),
    Step("sweep", ("tracking", "sweep"), _check_sweep, tags=("best_trial",)),
)}

FLOWS: dict[str, tuple[str, ...]] = {
    "training": ("eda", "train", "evaluate", "promote"),  # python -m pipelines run
    "retrain": ("train", "evaluate", "promote"),  # after drift (python -m pipelines retrain-if-drift)
    "monitor": ("monitor",),  # python -m pipelines monitor
    "sweep_report": ("sweep",),  # the report notebook at the end of python -m pipelines sweep
}


def steps_of(names: Iterable[str]) -> list[Step]:
    """The steps named, in the given order; ConfigError for an unknown name."""
    names = list(names)
    unknown = [n for n in names if n not in STEPS]
    if unknown:
        raise ConfigError(f"--steps: unknown step(s) {unknown}; choose from {', '.join(STEPS)}")
    return [STEPS[n] for n in names]


def check_parameters(cfg: PipelineConfig, steps: Iterable[Step]) -> None:
    """Refuse given parameters that none of ``steps`` takes, then run each distinct check once."""
    steps = list(steps)
    taken = {name for step in steps for name in step.parameters}
    untaken = sorted(set(cfg.model_fields_set) - taken)
    if untaken:
        where = {n: [s.name for s in STEPS.values() if n in s.parameters] for n in untaken}
        detail = "; ".join(f"{n} is taken by {', '.join(w) or 'no step'}" for n, w in where.items())
        raise ConfigError(f"parameter(s) {', '.join(untaken)}: not taken by the step(s) run here "
                          f"({', '.join(s.name for s in steps)}): {detail}")
    for check in dict.fromkeys(step.check for step in steps if step.check):
        check(cfg)


def carried(step: Step, result: dict[str, Any]) -> dict[str, Any]:
    """What ``step``'s result gives the later steps (as parameters)."""
    return {key: str(result[key]) for key in step.passes if key in result}
