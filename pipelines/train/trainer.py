"""Fine-tuning a transformer encoder with a fresh two-label head, on ``transformers.Trainer``.

The recipe, in order (as ``run_glue.py``): seed, load the base model with a new head, tokenize
(truncated at the window length, padded per batch), train with the Trainer — length-grouped
batches, AdamW with linear warm-up/decay, clipping, bf16/fp16 where the device has it, DDP under
``torchrun``, an evaluation and a checkpoint per epoch, early stopping, the best epoch loaded at
the end — then what is ours: the mean of the epoch weights if it wins on validation, the decision
threshold chosen on validation and folded into the classifier bias, and how long texts' windows
are aggregated, chosen on validation long texts (:mod:`pipelines.evaluate.aggregation`). With
``distill_layers`` the result then teaches a smaller student (:mod:`pipelines.train.distill`), which is
finished the same way and kept. The Trainer's set-up is :mod:`pipelines.train.engine`;
:mod:`pipelines.train.launch` runs this in-process or as ``num_processes`` ranks.
"""

from __future__ import annotations

import copy
import os
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
import transformers
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from pipelines.config import TrainSection
from pipelines.data.embedded import resolve_model_name
from pipelines.data.split import Splits
from pipelines.evaluate import aggregation, long_texts
from pipelines.evaluate.metrics import best_threshold, classification_metrics
from pipelines.train import devices, distill, subjectivity, teachers
from pipelines.train.callbacks import ARTIFACT_PATH, EpochRecords
from pipelines.train.engine import AVERAGE_FROM_EPOCH, Fit, TokenizedTexts, selection_score, tokenized
from scoring.config import ScoringConfig, save_scoring_config
from scoring.labels import LABEL_NAMES, POSITIVE
from scoring.scorer import Scorer
from scoring.subjectivity import HEAD_KEY


@dataclass
class TrainResult:
    """What training produced: the fine-tuned model and how it got there."""

    model: Any
    tokenizer: Any
    scoring: ScoringConfig
    threshold: float
    best_epoch: int
    weights: str = ""  # which weights were kept: "epoch N" or "mean of epochs A-B"
    history: list[dict[str, float]] = field(default_factory=list)
    validation_metrics: dict[str, float] = field(default_factory=dict)
    train_seconds: float = 0.0
    steps: int = 0
    long_calibration: pd.DataFrame = field(default_factory=pd.DataFrame)  # the aggregations tried on validation
    subjectivity: dict[str, float] = field(default_factory=dict)  # the subjectivity head's validation figures
    placement: str = "cpu fp32"  # where it trained (devices.Placement.describe)
    teacher: dict[str, Any] = field(default_factory=dict)  # a distilled student's teacher: layers, metrics, history

    def scorer(self, device: str = "cpu") -> Scorer:
        """A scorer of the trained model on ``device`` (``auto`` as the ``device`` parameter)."""
        return Scorer(self.model.to(devices.inference_device(device)), self.tokenizer, self.scoring)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_classifier(model_name: str, **overrides: Any) -> Any:
    """``model_name``'s encoder with a fresh 2-label head (drawn from torch's random state); ``overrides`` of its
    config (``num_hidden_layers``: its first layers only)."""
    return AutoModelForSequenceClassification.from_pretrained(
        resolve_model_name(model_name),
        num_labels=2,
        id2label=dict(LABEL_NAMES),
        label2id={v: k for k, v in LABEL_NAMES.items()},
        **overrides,
    )


def load_base_model(model_name: str) -> tuple[Any, Any]:
    """Tokenizer and a sequence classifier with a fresh 2-label head."""
    return load_classifier(model_name), AutoTokenizer.from_pretrained(resolve_model_name(model_name))


def fold_threshold(model: Any, threshold: float) -> None:
    """Shift the classifier bias so that argmax == (P(positive) >= threshold).

    For two classes softmax gives p1 >= t  <=>  z1 - z0 >= logit(t); subtracting
    logit(t) from the positive bias moves the decision point to 0.5, so every consumer
    of the logged model (the server, MLflow's pyfunc, ONNX) applies the threshold.
    """
    shift = float(np.log(threshold / (1.0 - threshold)))
    head = model.classifier if hasattr(model, "classifier") else model.get_output_embeddings()
    last = head.out_proj if hasattr(head, "out_proj") else head
    with torch.no_grad():
        last.bias[POSITIVE] -= shift


def train(args: TrainSection, scoring: ScoringConfig, splits: Splits, *, seed: int, metric: str = "accuracy",
          progress: bool = True, output_dir: Path | None = None, run_id: str = "",
          resume: Path | None = None) -> TrainResult | None:
    """Fine-tune ``args.model_name`` on ``splits.train`` in this process (one rank of torchrun, or alone).

    Early-stops on ``splits.validation``; ``scoring`` gives the window length (training truncates there)
    and is saved with the model; ``metric`` is what early stopping, the weight average and the threshold
    optimise (the gate's metric). Checkpoints go to ``output_dir`` each epoch; ``resume`` is one to
    continue from; metrics go to MLflow run ``run_id`` from rank 0. With ``args.distill_layers`` the
    fine-tuned model then teaches a student of that many layers (:mod:`pipelines.train.distill`), whose
    checkpoints go to ``output_dir``/student, and the student is the result. Returns None on the other ranks.
    """
    placement = devices.resolve(args.device, args.precision, args.num_processes)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    elif placement.num_processes > 1 and placement.device == "cpu":  # torchrun sets 1 thread; share the cores
        torch.set_num_threads(max(1, devices.device_count("cpu") // placement.num_processes))
    owned = output_dir is None  # checkpoints nobody asked to keep go once training ends
    output_dir = Path(output_dir or tempfile.mkdtemp(prefix="train-"))
    transformers.logging.disable_progress_bar()  # checkpoint-writing bars; ProgressLines reports the run
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_name(args.model_name))
    train_set = tokenized(tokenizer, splits.train, scoring.max_length)
    val_set = tokenized(tokenizer, splits.validation, scoring.max_length, by_length=True)
    fit = Fit(args, placement, tokenizer, train_set, val_set, scoring, seed=seed, metric=metric, progress=progress,
               run_id=run_id)
    student_resume = resume if resume is not None and distill.is_student_checkpoint(resume) else None
    if args.teacher_model or args.teacher_from:  # another encoder teaches, through its logits
        return _distil_from_other(args, scoring, splits, fit, placement, output_dir, owned, resume,
                                  seed=seed, metric=metric, progress=progress, run_id=run_id)
    if student_resume is None:  # the recipe: fine-tune the whole model
        stage = "teacher" if args.distill_layers else ""
        engine, records, seconds = fit(lambda: load_classifier(args.model_name), output_dir, resume, stage=stage)
        model = engine.model.to("cpu").float().eval() if engine.is_world_process_zero() else None
        if not args.distill_layers:
            if owned:
                shutil.rmtree(output_dir, ignore_errors=True)
            if model is None:
                return None
            return _finish(args, model, tokenizer, scoring, splits, records, metric=metric, run_id=run_id,
                           train_seconds=seconds, steps=engine.state.global_step, placement=placement)
        if model is not None:  # rank 0 finishes the teacher (weights kept, threshold) and saves it for every rank
            teacher = _finish(args.model_copy(update={"calibrate_long_texts": False}), model, tokenizer, scoring,
                              splits, records, metric=metric, run_id="", train_seconds=seconds,
                              steps=engine.state.global_step, placement=placement)
            _save_teacher(teacher, output_dir, run_id if args.log_checkpoints else "")
        engine.accelerator.wait_for_everyone()
    teacher_folder = output_dir if student_resume is None else student_resume.parent.parent
    teacher_model, teacher_record = distill.load_teacher(teacher_folder)
    if student_resume is None and model is not None:
        print(f"teacher: {teacher_record['weights']}, validation accuracy "
              f"{teacher_record['validation_metrics']['accuracy']:.4f}; distilling into {args.distill_layers} "
              f"of its layers", flush=True)
    soft = distill.teacher_logits(teacher_model, tokenizer, train_set.ids, fit.device(output_dir))
    if run_id and _rank_zero():  # every distilling run logs its teacher's logits (teacher_from reuses them)
        teachers.log(run_id, soft, {**teachers.identity(teacher_model, args.model_name), **teacher_record,
                                    "texts_sha256": teachers.texts_digest(splits.train), "texts": len(splits.train)})
    del teacher_model
    fit.train_set = TokenizedTexts(train_set.ids, train_set.labels, soft)
    engine, records, seconds = fit(lambda: distill.load_student(teacher_folder, args.distill_layers,
                                                                    resolve_model_name(args.model_name)),
                                   output_dir / distill.STUDENT_DIR, student_resume, stage="student")
    if owned:
        shutil.rmtree(output_dir, ignore_errors=True)
    if not engine.is_world_process_zero():
        return None
    model = engine.model.to("cpu").float().eval()
    result = _finish(args, model, tokenizer, scoring, splits, records, metric=metric, run_id=run_id,
                     train_seconds=teacher_record["train_seconds"] + seconds,
                     steps=teacher_record["steps"] + engine.state.global_step, placement=placement)
    result.teacher = teacher_record
    return result


def _rank_zero() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _teacher_record(teacher: TrainResult) -> dict[str, Any]:
    return {"layers": int(teacher.model.config.num_hidden_layers), "weights": teacher.weights,
            "best_epoch": teacher.best_epoch, "threshold": teacher.threshold, "history": teacher.history,
            "validation_metrics": teacher.validation_metrics, "train_seconds": teacher.train_seconds,
            "steps": teacher.steps}


def _distil_from_other(args: TrainSection, scoring: ScoringConfig, splits: Splits, fit: Fit,
                       placement: devices.Placement, output_dir: Path, owned: bool, resume: Path | None, *,
                       seed: int, metric: str, progress: bool, run_id: str) -> TrainResult | None:
    """``teacher_model`` (fine-tuned here with its own tokenizer) or ``teacher_from`` (a logged teacher's logits)
    teaches a student of ``model_name``'s first ``distill_layers`` layers; the student is the result."""
    student_resume = resume if resume is not None and distill.is_student_checkpoint(resume) else None
    folder = output_dir if student_resume is None else student_resume.parent.parent
    if student_resume is not None:  # the teacher's logits were saved beside the student's checkpoints
        soft, record = teachers.load(folder)
    elif args.teacher_from:
        soft, record = teachers.fetch(args.teacher_from, splits.train)
        record = {**record, "from_run": args.teacher_from, "train_seconds": 0.0, "steps": 0}
        print(f"teacher: {record['teacher_model']} from run {args.teacher_from} (its logits; no fine-tuning), "
              f"validation accuracy {record['validation_metrics']['accuracy']:.4f}", flush=True)
    else:
        tokenizer = AutoTokenizer.from_pretrained(resolve_model_name(args.teacher_model))
        train_set = tokenized(tokenizer, splits.train, scoring.max_length)
        teacher_fit = Fit(args, placement, tokenizer, train_set,
                          tokenized(tokenizer, splits.validation, scoring.max_length, by_length=True), scoring,
                          seed=seed, metric=metric, progress=progress, run_id=run_id)
        engine, records, seconds = teacher_fit(lambda: load_classifier(args.teacher_model), output_dir, resume,
                                               stage="teacher")
        if engine.is_world_process_zero():
            teacher = _finish(args.model_copy(update={"calibrate_long_texts": False}), engine.model.to("cpu").float()
                              .eval(), tokenizer, scoring, splits, records, metric=metric, run_id="",
                              train_seconds=seconds, steps=engine.state.global_step, placement=placement)
            soft = distill.teacher_logits(teacher.model, tokenizer, train_set.ids, fit.device(output_dir))
            record = {**teachers.identity(teacher.model, args.teacher_model), **_teacher_record(teacher),
                      "texts_sha256": teachers.texts_digest(splits.train), "texts": len(splits.train)}
            teachers.save(folder, soft, record)
            print(f"teacher: {args.teacher_model} ({record['architecture']}, {record['layers']} layers), "
                  f"validation accuracy {record['validation_metrics']['accuracy']:.4f}; distilling into "
                  f"{args.distill_layers} layers of {args.model_name}", flush=True)
        engine.accelerator.wait_for_everyone()
        soft, record = teachers.load(folder)
    if _rank_zero() and student_resume is None:
        if args.teacher_from:
            teachers.save(folder, soft, record)  # a killed student resumes beside it
        if run_id:
            teachers.log(run_id, soft, record)
            if args.log_checkpoints:  # resume_from <run id> downloads checkpoints/teacher before the student's
                for name in (teachers.LOGITS, distill.TEACHER_RECORD):
                    mlflow.MlflowClient().log_artifact(run_id, str(folder / distill.TEACHER_DIR / name),
                                                       f"{ARTIFACT_PATH}/{distill.TEACHER_DIR}")
    if args.student_init == "fine-tuned":  # before the soft targets: the start learns from the labels
        base = folder / distill.BASE_DIR  # a resumed student finds its finished start there
        record = {**record, "student_init": _fine_tune_base(args, scoring, splits, fit, placement, base,
                                                            metric=metric)}

        def student() -> Any:  # (on resume the checkpoint's weights replace these)
            return distill.load_student(base, args.distill_layers, resolve_model_name(args.model_name))
    else:
        def student() -> Any:
            return load_classifier(args.model_name, num_hidden_layers=args.distill_layers)
    fit.train_set = TokenizedTexts(fit.train_set.ids, fit.train_set.labels, soft)
    engine, records, seconds = fit(student, output_dir / distill.STUDENT_DIR, student_resume, stage="student")
    if owned:
        shutil.rmtree(output_dir, ignore_errors=True)
    if not engine.is_world_process_zero():
        return None
    start = record.get("student_init", {"train_seconds": 0.0, "steps": 0})
    result = _finish(args, engine.model.to("cpu").float().eval(), fit.tokenizer, scoring, splits, records,
                     metric=metric, run_id=run_id, train_seconds=record["train_seconds"] + start["train_seconds"] +
                     seconds, steps=record["steps"] + start["steps"] + engine.state.global_step, placement=placement)
    result.teacher = record
    return result


def _fine_tune_base(args: TrainSection, scoring: ScoringConfig, splits: Splits, fit: Fit,
                    placement: devices.Placement, base: Path, *, metric: str) -> dict[str, Any]:
    """``student_init`` fine-tuned: ``model_name`` fine-tuned by the recipe on the labels (metrics ``base_*``),
    saved in ``base`` for every rank; the student is then cut from it. Its record (figures, seconds)."""
    if not distill.teacher_complete(base):
        engine, records, seconds = fit(lambda: load_classifier(args.model_name), base, None, stage="base")
        if engine.is_world_process_zero():
            model = engine.model.to("cpu").float().eval()
            done = _finish(args.model_copy(update={"calibrate_long_texts": False}), model, fit.tokenizer, scoring,
                           splits, records, metric=metric, run_id="", train_seconds=seconds,
                           steps=engine.state.global_step, placement=placement)
            distill.save_teacher(done.model, done.tokenizer, base, _teacher_record(done))
        engine.accelerator.wait_for_everyone()
    record = distill.teacher_record(base)
    print(f"student's start: {args.model_name} fine-tuned, validation accuracy "
          f"{record['validation_metrics']['accuracy']:.4f}; cut to {args.distill_layers} layers", flush=True)
    return {"model": args.model_name, "validation_metrics": record["validation_metrics"],
            "best_epoch": record["best_epoch"], "train_seconds": record["train_seconds"], "steps": record["steps"]}


def _save_teacher(teacher: TrainResult, output_dir: Path, run_id: str) -> None:
    """The finished teacher and its record beside the checkpoints (and in run ``run_id``'s, if given)."""
    folder = distill.save_teacher(teacher.model, teacher.tokenizer, output_dir, _teacher_record(teacher))
    if run_id:
        files = sorted((p for p in folder.iterdir() if p.is_file()), key=lambda p: p.name == distill.TEACHER_RECORD)
        for path in files:  # the record last: complete
            mlflow.MlflowClient().log_artifact(run_id, str(path), f"{ARTIFACT_PATH}/{distill.TEACHER_DIR}")


def _finish(args: TrainSection, model: Any, tokenizer: Any, scoring: ScoringConfig, splits: Splits,
            records: EpochRecords, *, metric: str, run_id: str, train_seconds: float, steps: int,
            placement: devices.Placement) -> TrainResult:
    """After the epochs: the weight average if it wins, the threshold folded in, long texts calibrated."""
    history = records.history
    best = max(history, key=lambda row: selection_score({k.removeprefix("val_"): v for k, v in row.items()}, metric))
    best_epoch, weights = int(best["epoch"]), f"epoch {int(best['epoch'])}"
    # the best epoch scored as the average will be (Scorer: every window of a long text), not as the Trainer's
    # evaluation saw it (truncated at max_length): the comparison is like for like
    labels, texts = splits.validation["label"].to_numpy(), splits.validation["text"].tolist()
    best_score = selection_score(classification_metrics(labels, Scorer(model, tokenizer, scoring).predict_proba(texts)),
                                 metric)
    if records.averaged >= 2 and _average_wins(
        model, tokenizer, scoring, splits, records.weight_sum, records.averaged, best_score, metric, run_id
    ):
        weights = f"mean of epochs {AVERAGE_FROM_EPOCH}-{AVERAGE_FROM_EPOCH + records.averaged - 1}"
    threshold = 0.5
    val_probs = Scorer(model, tokenizer, scoring).predict_proba(splits.validation["text"].tolist())
    if args.tune_threshold:
        threshold = best_threshold(splits.validation["label"].to_numpy(), val_probs, metric)
        fold_threshold(model, threshold)
    long_calibration, saved, head_figures = pd.DataFrame(), {"threshold": threshold, "base_model": args.model_name}, {}
    if args.calibrate_long_texts:
        # a window's P(subjective) from the same forward pass, then the aggregation that may weigh windows by it
        head, head_figures = subjectivity.fit(Scorer(model, tokenizer, scoring), splits.train, splits.validation)
        print(f"subjectivity head: ROC-AUC {head_figures['subjectivity_val_auc']:.3f} on validation plot vs opinion "
              f"windows (mean P(subjective) {head_figures['subjectivity_val_plot_mean']:.2f} vs "
              f"{head_figures['subjectivity_val_opinion_mean']:.2f})", flush=True)
        saved[HEAD_KEY] = head.to_config()
        save_scoring_config(model, scoring, **saved)
        scoring, long_calibration = calibrate_long_texts(Scorer(model, tokenizer, scoring), splits.validation)
    save_scoring_config(model, scoring, **saved)
    final_val_probs = Scorer(model, tokenizer, scoring).predict_proba(splits.validation["text"].tolist())
    val_metrics = classification_metrics(splits.validation["label"].to_numpy(), final_val_probs)
    return TrainResult(
        model=model,
        tokenizer=tokenizer,
        scoring=scoring,
        threshold=threshold,
        best_epoch=best_epoch,
        weights=weights,
        history=history,
        validation_metrics=val_metrics,
        train_seconds=train_seconds,
        steps=steps,
        long_calibration=long_calibration,
        subjectivity=head_figures,
        placement=placement.describe(),
    )


def calibrate_long_texts(scorer: Scorer, validation: pd.DataFrame) -> tuple[ScoringConfig, pd.DataFrame]:
    """The aggregation and long-text threshold chosen on the validation split's long texts (proxies, review proxies
    and full reviews, with plot summaries of the validation part: :mod:`pipelines.evaluate.full_reviews`).

    Returns the scorer's settings unchanged (and an empty table) when the validation texts make no long texts.
    """
    sets = long_texts.long_sets(validation, n=len(validation), part="validation")
    if not sets:
        print("no validation long texts (not Rotten Tomatoes snippets): long texts keep the default aggregation")
        return scorer.scoring, pd.DataFrame()
    texts = pd.concat(sets.values(), ignore_index=True)
    scoring, table = aggregation.calibrate(scorer, texts["text"].tolist(), texts["label"].to_numpy())
    if not table.empty:
        print(f"long texts: aggregation {scoring.aggregation}, threshold {scoring.long_threshold:.2f} "
              f"(chosen on {int(table['texts'].iloc[0])} validation long texts)")
    return scoring, table


def _average_wins(model, tokenizer, scoring, splits, weight_sum, n, best_score, metric, run_id) -> bool:
    """Swap in the mean of the epoch-end weights (AVERAGE_FROM_EPOCH on) if it beats the best epoch on validation."""
    best_state = copy.deepcopy(model.state_dict())
    averaged = {**best_state, **{k: (v / n).to(best_state[k].dtype) for k, v in weight_sum.items()}}
    model.load_state_dict(averaged)
    probs = Scorer(model, tokenizer, scoring).predict_proba(splits.validation["text"].tolist())
    val = classification_metrics(splits.validation["label"].to_numpy(), probs)
    for name, value in val.items() if run_id else ():
        mlflow.MlflowClient().log_metric(run_id, f"val_averaged_{name}", value, step=0)
    if selection_score(val, metric) > best_score:
        print(f"weight average of {n} epochs wins on validation: {metric} {val[metric]:.4f} "
              f"(score {selection_score(val, metric):.4f} vs the best epoch's {best_score:.4f})")
        return True
    print(f"weight average of {n} epochs does not beat the best epoch on validation (score "
          f"{selection_score(val, metric):.4f} vs {best_score:.4f}); keeping the best epoch")
    model.load_state_dict(best_state)
    return False


def history_frame(result: TrainResult) -> pd.DataFrame:
    return pd.DataFrame(result.history).set_index("epoch")


def teacher_history(result: TrainResult) -> pd.DataFrame | None:
    """A distilled student's teacher's epochs (as :func:`history_frame`), None for a model trained alone."""
    return pd.DataFrame(result.teacher["history"]).set_index("epoch") if result.teacher else None
