"""A sweep's search space, in the pipeline's own parameter names, checked before any trial runs.

``-p learning_rate 1e-5:1e-4:log`` (a range, log-uniform), ``-p warmup_ratio 0:0.2`` (a uniform range),
``-p epochs 2,3,4`` (a choice); or the same as a YAML mapping (``--space sweep.yaml``) whose values are
those strings or lists. A grid sweep takes choices only.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from pipelines.config import ConfigError, PipelineConfig, build_config, read_mapping

Space = dict[str, BaseDistribution]
# what a trial may not vary: where it records, what it reads, and what makes it a sweep
FIXED = frozenset({"tracking_uri", "experiment_name", "registered_model_name", "alias", "dataset", "text_column",
                   "label_column", "val_size", "test_size", "resume_from", "model_version"})


def _value(name: str, text: Any) -> Any:
    """One value of ``name``, typed and validated as the config would take it (ConfigError names it)."""
    return getattr(build_config({name: text}), name)


def parse_one(name: str, spec: Any) -> BaseDistribution:
    """The distribution of one parameter from ``lo:hi[:log]``, ``a,b,c`` or a YAML list."""
    if name not in PipelineConfig.model_fields:
        raise ConfigError(f"sweep parameter {name!r}: not a pipeline parameter (python -m pipelines params)")
    if name in FIXED:
        raise ConfigError(f"sweep parameter {name!r}: fixed for the whole sweep; give it with --config instead")
    if isinstance(spec, list | tuple):
        choices = list(spec)
    elif isinstance(spec, str) and ":" in spec:
        return _range(name, spec)
    else:
        choices = [c.strip() for c in str(spec).split(",") if c.strip()]
    if not choices:
        raise ConfigError(f"sweep parameter {name!r}: no values in {spec!r}")
    values = [_value(name, c) for c in choices]
    if len(set(map(repr, values))) != len(values):
        raise ConfigError(f"sweep parameter {name!r}: repeated values in {spec!r}")
    return CategoricalDistribution(values)


def _range(name: str, spec: str) -> BaseDistribution:
    parts = spec.split(":")
    log = len(parts) == 3 and parts[2] == "log"
    if len(parts) not in (2, 3) or (len(parts) == 3 and not log):
        raise ConfigError(f"sweep parameter {name!r}: a range is lo:hi or lo:hi:log, not {spec!r}")
    annotation = PipelineConfig.model_fields[name].annotation
    if annotation not in (int, float):
        raise ConfigError(f"sweep parameter {name!r}: a range needs a number parameter; give choices a,b,c")
    low, high = (_value(name, p) for p in parts[:2])
    if not low < high:
        raise ConfigError(f"sweep parameter {name!r}: the range {spec!r} needs lo < hi")
    if log and low <= 0:
        raise ConfigError(f"sweep parameter {name!r}: a log range needs lo > 0, not {spec!r}")
    return IntDistribution(low, high, log=log) if annotation is int else FloatDistribution(low, high, log=log)


def is_fixed(spec: Any) -> bool:
    """One plain value (no range, no choices): a parameter the whole sweep holds fixed."""
    return not isinstance(spec, list | tuple) and not (isinstance(spec, str) and (":" in spec or "," in spec))


def parse_space(pairs: list[tuple[str, str]] | None, space_file: str | None) -> tuple[Space, dict[str, Any]]:
    """The space and the fixed values from ``--space`` then ``-p NAME SPEC`` pairs (a pair wins).

    A plain value (``-p dataset x.csv``) holds a parameter fixed; an empty space is refused.
    """
    specs: dict[str, Any] = {}
    if space_file:
        specs.update(read_mapping(space_file, "--space", "must be a mapping of parameter names to ranges or lists"))
    specs.update(dict(pairs or []))
    fixed = {name: spec for name, spec in specs.items() if is_fixed(spec)}
    build_config(fixed)  # a bad fixed value is refused by name too
    space = {name: parse_one(name, spec) for name, spec in specs.items() if name not in fixed}
    if not space:
        raise ConfigError("sweep: no search space; give -p NAME lo:hi[:log] / a,b,c or --space FILE")
    return space, fixed


def grid_points(space: Space) -> list[dict[str, Any]]:
    """Every combination of a choices-only space, in order; a range is refused, naming it."""
    points: list[dict[str, Any]] = [{}]
    for name, dist in space.items():
        if not isinstance(dist, CategoricalDistribution):
            raise ConfigError(f"sweep parameter {name!r}: a grid sweep takes choices (a,b,c), not a range; "
                              f"give --trials N for the TPE sampler")
        points = [{**p, name: c} for p in points for c in dist.choices]
    return points


def suggest(trial: optuna.Trial, space: Space) -> dict[str, Any]:
    """The trial's values of every parameter in the space (an enqueued grid point's own)."""
    out: dict[str, Any] = {}
    for name, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            out[name] = trial.suggest_categorical(name, dist.choices)
        elif isinstance(dist, IntDistribution):
            out[name] = trial.suggest_int(name, dist.low, dist.high, log=dist.log)
        else:
            out[name] = trial.suggest_float(name, dist.low, dist.high, log=dist.log)
    return out


def check_metric(metric: str) -> str:
    """The objective: a validation metric of the train step (``val_*``); the test split is never one."""
    if not metric.startswith("val_") or len(metric) <= len("val_"):
        raise ConfigError(f"--metric {metric!r}: the objective must be a validation metric (val_accuracy, val_f1, "
                          f"val_roc_auc, …); the test split is for the final evaluation only")
    return metric


def direction(metric: str) -> str:
    """``minimize`` for a loss, else ``maximize``."""
    return "minimize" if metric.endswith("loss") else "maximize"
