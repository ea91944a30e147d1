"""Every command of ``python -m pipelines`` declared once: what it takes and the function that runs it.

The argparse CLI (:mod:`pipelines.cli`), the command reference (docs/commands.md, written by
``python -m pipelines.flow.reference``) and the orchestrator (:mod:`pipelines.orchestrate`) are all
generated from :data:`COMMANDS`; the notebook steps and flows are declared in :mod:`pipelines.flow.steps`.

A command's function lives in its stage package as ``"module:function"``, has the signature
``function(cfg: PipelineConfig | None, args: argparse.Namespace) -> int`` (the exit status) and is
imported only when the command runs. ``takes`` lists the config sections and single parameters the
command accepts with ``-p``/``--config`` (empty: no check here; the flow's steps check them);
``config=False`` means the command reads no parameters at all.

Adding a command is one row here plus its function (``seal`` below is an example).
"""

from __future__ import annotations

import argparse
import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipelines.batch.files import INPUT_FORMATS, OUTPUT_FORMATS
from scoring.config import BACKEND_NAMES, DEFAULT_BACKEND
from scoring.texts import MAX_TEXT_CHARS


@dataclass(frozen=True)
class Flag:
    """One command-line flag or positional: argparse's names and keyword arguments."""

    names: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def dest(self) -> str:
        return self.options.get("dest") or next((n for n in self.names if n.startswith("--")), self.names[0]) \
            .lstrip("-").replace("-", "_")


def flag(*names: str, **options: Any) -> Flag:
    return Flag(names, options)


@dataclass(frozen=True)
class Command:
    """One sub-command of ``python -m pipelines``."""

    name: str
    function: str  # "module:function" in the command's stage package
    help: str
    description: str = ""
    takes: tuple[str, ...] = ()  # parameters accepted (config sections / names); () = checked by the flow's steps
    flags: tuple[Flag, ...] = ()
    config: bool = True  # False: no --config / -p at all
    flow: str = ""  # the flow of pipelines.flow.steps.FLOWS it runs, if any (the orchestrator's jobs)

    def load(self) -> Callable[..., int]:
        module, _, name = self.function.partition(":")
        return getattr(importlib.import_module(module), name)


MODEL_URI = flag("--model-uri", help="default: models:/<registered_model_name>@<alias>")
BACKEND = flag("--backend", default=DEFAULT_BACKEND, choices=BACKEND_NAMES, help="runtime, as BACKEND")
BATCH_FLAGS = (  # what predict and spark-predict share
    flag("--input", "-i", required=True, help="the file of reviews"),
    flag("--output", "-o", required=True, help="where the predictions go (must not exist)"),
    flag("--text-column", default="text", help="the column holding the reviews (default: text)"),
    flag("--keep-columns", default="", help="comma-separated input columns copied to the output "
                                            "(an id, say); every output row also has its `row`"),
    flag("--model-uri", help="default: models:/<registered_model_name>@<alias>; or a model folder"),
    BACKEND,
    flag("--max-text-chars", type=int, default=MAX_TEXT_CHARS,
         help=f"longer texts get an error, as MAX_TEXT_CHARS (default {MAX_TEXT_CHARS})"),
    flag("--chunk-rows", type=int, default=1000, help="rows scored per call (default 1000)"),
    flag("--overwrite", action="store_true", help="replace an existing --output"),
)

COMMANDS: dict[str, Command] = {c.name: c for c in (
    Command("run", "pipelines.flow.entry:run", "run eda → train → evaluate → promote with Papermill",
            flow="training", flags=(
                flag("--steps", help="comma-separated subset, e.g. train,evaluate"),
                flag("--output-dir", help="where executed notebooks go (default output/<time>-<run>)"),
                flag("--notebooks-dir", help="folder of the step notebooks (default: the project's notebooks/)"))),
    Command("rollback", "pipelines.registry.commands:rollback_command",
            "move the production alias back to the previous version", takes=("tracking", "registry", "lock"),
            flags=(flag("--to-version", help="a specific version instead of the previous one"),)),
    Command("history", "pipelines.registry.commands:history_command",
            "versions with their evaluation, promotion and rollback tags",
            takes=("tracking", "registered_model_name", "lock")),
    Command("export", "pipelines.registry.commands:export_command",
            "download the production model into a folder the server can load", takes=("tracking", "registry"),
            flags=(flag("--output", "-o", required=True, help="destination folder (MODEL_URI for the server)"),
                   MODEL_URI, flag("--overwrite", action="store_true", help="replace a non-empty --output folder"))),
    Command("monitor", "pipelines.flow.entry:monitor", "drift check of production traffic; prints the verdict JSON",
            "Exit status: 0 no drift, 3 drift, 4 insufficient data, 1 the monitor step failed, "
            "2 bad parameters. See docs/monitoring.md.", flow="monitor",
            flags=(flag("--output-dir", help="where the executed notebook and report go"),)),
    Command("retrain-if-drift", "pipelines.flow.entry:retrain_if_drift",
            "monitor, and on drift run train → evaluate → promote (the gate decides)",
            "Exit status: 0 no drift, or retrained and promoted; 3 retrained but the gate kept "
            "production; 4 insufficient data; 1 a step failed; 2 bad parameters. See docs/monitoring.md.",
            flow="retrain", flags=(flag("--output-dir", help="where executed notebooks and the report go"),)),
    Command("profile", "pipelines.monitor.commands:profile_command",
            "compute and log the reference profile of a version that lacks one",
            takes=("tracking", "registry", "data", "model_version")),
    Command("heldout", "pipelines.evaluate.heldout:score_version",
            "score a version on held-out real reviews (IMDb, Yelp, Amazon sentences)",
            "Downloads the UCI Sentiment Labelled Sentences once (npm sentiment@5.0.2, sha512-checked) "
            "unless --archive gives a copy. See pipelines/evaluate/heldout.py.",
            takes=("tracking", "registry", "data", "device"),
            flags=(MODEL_URI, BACKEND, flag("--archive", help="a local sentiment-5.0.2.tgz instead of the download"))),
    Command("export-onnx", "pipelines.train.onnx_logging:export_command",
            "export a registered version to ONNX (+ int8) and log it with the version",
            "The train step does this for every new version (onnx_export); this is for older ones.",
            takes=("tracking", "registry"),
            flags=(MODEL_URI, flag("--run-id", default="",
                                   help="run to log the files to (default: the version's run)"))),
    Command("seal", "pipelines.registry.commands:seal_command",
            "log the integrity manifest of a version registered before sealing",
            "Every version the train step registers is sealed; this is for older ones, after a human check. "
            "See docs/security.md.",
            takes=("tracking", "registry"),
            flags=(flag("--version", required=True, help="the version to seal (check it first)"),)),
    Command("predict", "pipelines.batch.commands:predict_command",
            "score a CSV / TSV / JSONL / Parquet file of reviews; Parquet / CSV / JSONL out",
            "Streams the input in chunks; a killed run leaves no complete-looking output and --resume continues "
            "after the last finished chunk. Long-text settings: -p long_text_strategy …, as the server's "
            "LONG_TEXT_STRATEGY. Exit status: 0 done, 2 bad flags or input (before any work). See docs/batch.md.",
            takes=("tracking", "registry", "scoring"), flags=(
                *BATCH_FLAGS,
                flag("--input-format", choices=INPUT_FORMATS, help="default: from the input's suffix"),
                flag("--output-format", choices=OUTPUT_FORMATS, help="default: from the output's suffix"),
                flag("--threads", type=int, default=0,
                     help="ONNX Runtime intra-op threads per call (default 0: the cores shared among the "
                          "ONNX_PARALLEL calls side by side, as ONNX_THREADS)"),
                flag("--resume", action="store_true", help="continue the partial run of the same job"),
                flag("--no-progress", action="store_true", help="no progress bar"))),
    Command("spark-predict", "pipelines.batch.commands:spark_predict_command",
            "score a Parquet file or folder on Spark (the [spark] extra and Java 17)",
            "The same Scorer, runtime and bad-row rules as predict, as a Spark pandas UDF; one model and one thread "
            "per Python worker. Output: a folder of Parquet files, renamed into place when the job succeeded. "
            "See docs/batch.md.",
            takes=("tracking", "registry", "scoring"), flags=(
                *BATCH_FLAGS,
                flag("--master", default="local[*]", help="Spark master URL (default local[*])"),
                flag("--partitions", type=int, default=0,
                     help="spread the input over N tasks (default 0: at least 4 per core)"))),
    Command("feedback", "pipelines.data.commands:feedback_command",
            "review the app's feedback before it trains: list, accept, reject; purge old rows",
            "Only accepted feedback trains (include_feedback). accept/reject take ids from `list`; "
            "`accept --rule` accepts texts that feedback_min_senders distinct credentials agree on; "
            "purge deletes feedback and predictions older than feedback_retention_days / "
            "inference_log_retention_days. See docs/security.md.",
            takes=("inference_db", "feedback"), flags=(
                flag("action", choices=("list", "accept", "reject", "purge")),
                flag("ids", nargs="*", type=int, help="feedback ids (accept, reject)"),
                flag("--status", default="pending", help="list: pending (default), accepted, rejected or all"),
                flag("--limit", type=int, default=50, help="list: newest N rows (default 50; 0 = all)"),
                flag("--by", default=os.environ.get("USER") or os.environ.get("LOGNAME") or "",
                     help="accept/reject: the reviewer recorded (default: $USER)"),
                flag("--rule", action="store_true", help="accept: apply the agreement rule instead of ids"))),
    Command("sweep", "pipelines.sweep.command:sweep_command",
            "a parameter sweep of the train step in one Optuna study (docs/sweeps.md)",
            "Each trial runs the train notebook (and evaluate with --evaluate) nested under one sweep run; "
            "workers on any machine that reach the study's storage share its trials. Exit status: 0 done, "
            "1 a worker failed, 2 a bad space, metric or parameter (before any trial).",
            config=False, flags=(  # -p takes a search space here, not one value: checked by pipelines.sweep.space
                flag("--config", "-c", help="YAML file of fixed parameter values"),
                flag("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "SPEC"),
                     help="lo:hi, lo:hi:log, a,b,c or one fixed value (repeatable)"),
                flag("--space", help="YAML mapping of parameter names to specs or lists"),
                flag("--trials", type=int, default=0, help="TPE sampler with N trials; 0 = the full grid"),
                flag("--metric", default="val_accuracy", help="the objective, a validation metric"),
                flag("--study", default="", help="study name (default sweep-<time>)"),
                flag("--resume", default="", metavar="STUDY", help="continue (or join) a study by name"),
                flag("--storage", default="", help="Optuna RDB URL (default $SWEEP_STORAGE, else optuna.db beside "
                                                   "mlflow.db)"),
                flag("--workers", type=int, default=1, help="worker processes on this machine"),
                flag("--evaluate", action="store_true", help="each trial also runs the evaluate step"),
                flag("--register-best", action="store_true", help="evaluate and promote the best trial"),
                flag("--seed", type=int, default=0, help="the TPE sampler's seed"),
                flag("--prune-startup", type=int, default=3, metavar="N",
                     help="stop a trial whose validation metric after an epoch is below the median of the "
                          "trials before it at that epoch, once N trials finished (default 3)"),
                flag("--prune-warmup", type=int, default=0, metavar="E",
                     help="never stop a trial in the first E epochs of a stage (default 0: from the first)"),
                flag("--no-prune", action="store_true", help="run every trial to its end"),
                flag("--output-dir", default="", help="executed notebooks and results (default state dir)"),
                flag("--worker", action="store_true", help=argparse.SUPPRESS))),  # a spawned worker: trials only
    Command("params", "pipelines.flow.entry:params", "print every parameter with its default", config=False),
)}
