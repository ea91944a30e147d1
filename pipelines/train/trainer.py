"""Fine-tuning a transformer encoder with a fresh two-label head, on ``transformers.Trainer``.

The recipe, in order (as ``run_glue.py``): seed, load the base model with a new head, tokenize
(truncated at the window length, padded per batch), train with the Trainer — length-grouped
batches, AdamW with linear warm-up/decay, clipping, bf16/fp16 where the device has it, DDP under
``torchrun``, an evaluation and a checkpoint per epoch, early stopping, the best epoch loaded at
the end — then what is ours: the mean of the epoch weights if it wins on validation, the decision
threshold chosen on validation and folded into the classifier bias, and how long texts' windows
are aggregated, chosen on validation long texts (:mod:`pipelines.evaluate.aggregation`).
:mod:`pipelines.train.launch` runs this in-process or as ``num_processes`` ranks.
"""

from __future__ import annotations

import copy
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
import transformers
from torch.utils.data import DataLoader
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    EvalPrediction,
    PrinterCallback,
    Trainer,
    TrainingArguments,
)

from pipelines.config import TrainSection
from pipelines.data.embedded import resolve_model_name
from pipelines.data.split import Splits
from pipelines.evaluate import aggregation, long_texts
from pipelines.evaluate.metrics import best_threshold, classification_metrics
from pipelines.train import devices, distill
from pipelines.train.callbacks import EpochRecords, MlflowMetrics, ProgressLines
from pipelines.train.sampling import LengthGroupedBatches
from scoring.config import ScoringConfig, save_scoring_config
from scoring.labels import LABEL_NAMES, POSITIVE
from scoring.scorer import Scorer

AVERAGE_FROM_EPOCH = 2  # the weight average leaves out the epochs before this one (still early in fine-tuning)


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
    placement: str = "cpu fp32"  # where it trained (devices.Placement.describe)
    teacher: dict[str, Any] = field(default_factory=dict)  # a distilled student's teacher: layers, metrics, history

    def scorer(self, device: str = "cpu") -> Scorer:
        """A scorer of the trained model on ``device`` (``auto`` as the ``device`` parameter)."""
        return Scorer(self.model.to(devices.inference_device(device)), self.tokenizer, self.scoring)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_classifier(model_name: str) -> Any:
    """``model_name``'s encoder with a fresh 2-label head (drawn from torch's random state)."""
    return AutoModelForSequenceClassification.from_pretrained(
        resolve_model_name(model_name),
        num_labels=2,
        id2label=dict(LABEL_NAMES),
        label2id={v: k for k, v in LABEL_NAMES.items()},
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


class TokenizedTexts(torch.utils.data.Dataset):
    """Token ids and labels as the Trainer's collator takes them (padding happens per batch)."""

    def __init__(self, ids: list[list[int]], labels: np.ndarray, teacher_logits: np.ndarray | None = None):
        self.ids, self.labels, self.teacher_logits = ids, labels, teacher_logits

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {"input_ids": self.ids[i], "labels": int(self.labels[i])}
        if self.teacher_logits is not None:
            item["teacher_logits"] = self.teacher_logits[i].tolist()
        return item


def tokenized(tokenizer: Any, frame: pd.DataFrame, max_length: int, by_length: bool = False) -> TokenizedTexts:
    """``frame``'s texts truncated at ``max_length`` (sorted by length if ``by_length``: evaluation pads less)."""
    ids = tokenizer(frame["text"].tolist(), truncation=True, max_length=max_length)["input_ids"]
    labels = frame["label"].to_numpy()
    if by_length:
        order = np.argsort([len(x) for x in ids], kind="stable")
        ids, labels = [ids[i] for i in order], labels[order]
    return TokenizedTexts(ids, labels)


class RecipeTrainer(Trainer):
    """The Trainer on the recipe's random streams: its batches, and dropout that evaluation leaves alone.

    The batches are :class:`~pipelines.train.sampling.LengthGroupedBatches`; the DataLoader gets a
    generator of its own (it would otherwise take a seed from torch's global state, which dropout
    draws from), and evaluation runs on a fork of that state. With ``model_init`` (the Trainer seeds,
    then builds the model) dropout's draws continue from the new head's initialisation. So the run is
    a function of the seed and the recipe alone: not of how often it is evaluated, and the same as the
    hand-written loop that trained before the Trainer.
    """

    def __init__(self, *args: Any, batches: LengthGroupedBatches, **kwargs: Any):
        self.batches = batches
        super().__init__(*args, **kwargs)

    def get_train_dataloader(self) -> DataLoader:
        collate = self._get_collator_with_removed_columns(self.data_collator, description="Training")
        loader = DataLoader(self.train_dataset, batch_sampler=self.batches, collate_fn=collate,
                            num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory,
                            generator=torch.Generator().manual_seed(self.args.seed))
        return self.accelerator.prepare(loader)  # several processes: micro-batch i goes to rank i % N

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        with torch.random.fork_rng(devices=[]):
            return super().evaluate(*args, **kwargs)


class StudentTrainer(RecipeTrainer):
    """The recipe's Trainer on the distillation loss: the teacher's soft targets beside the labels."""

    def __init__(self, *args: Any, temperature: float, alpha: float, **kwargs: Any):
        self.temperature, self.alpha = temperature, alpha
        super().__init__(*args, **kwargs)

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        teacher = inputs.pop("teacher_logits", None)  # training batches have them, evaluation's do not
        if teacher is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        value = distill.loss(outputs.logits, teacher, labels, temperature=self.temperature, alpha=self.alpha)
        return (value, outputs) if return_outputs else value


def training_arguments(args: TrainSection, placement: devices.Placement, output_dir: Path, *, seed: int,
                       steps_per_epoch: int) -> TrainingArguments:
    """The recipe as TrainingArguments: AdamW, linear warm-up/decay, clipping, epochs evaluated and saved.

    ``steps_per_epoch`` counts optimizer steps (one per batch of ``batch_size``).
    """
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=args.epochs,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        warmup_steps=int(args.warmup_ratio * steps_per_epoch * args.epochs),
        lr_scheduler_type="linear",
        optim="adamw_torch",
        max_grad_norm=1.0,
        per_device_train_batch_size=devices.per_device_batch(args.batch_size, args.gradient_accumulation_steps,
                                                             placement),
        per_device_eval_batch_size=64,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=2,  # the last and the best; load_best_model_at_end keeps the best
        load_best_model_at_end=True,
        metric_for_best_model="score",
        greater_is_better=True,
        logging_strategy="steps",
        logging_steps=max(1, min(20, steps_per_epoch // 2)),
        report_to="none",  # MLflow gets ours: MlflowMetrics logs into the step's run
        disable_tqdm=True,  # ProgressLines prints lines that a terminal and a notebook both show
        seed=seed,
        data_seed=seed,
        use_cpu=placement.device == "cpu",
        bf16=placement.precision == "bf16",
        fp16=placement.precision == "fp16",
        ddp_backend=placement.backend if placement.num_processes > 1 else None,
        # each rank's loss is its batch's mean, DDP averages the gradients: the one-process recipe, N ways
        # (True would scale by the processes, for models that sum over the items of the global batch)
        average_tokens_across_devices=False,
        dataloader_num_workers=0,
        remove_unused_columns=False,  # the collated batch is the model's inputs (and a student's teacher_logits)
        save_only_model=False,  # optimizer, scheduler and RNG states too: resume continues the same run
    )


def _compute_metrics(metric: str):
    def compute(prediction: EvalPrediction) -> dict[str, float]:
        logits = torch.as_tensor(prediction.predictions).float()
        probs = torch.softmax(logits, dim=-1)[:, POSITIVE].numpy()
        val = classification_metrics(np.asarray(prediction.label_ids), probs)
        return {**val, "score": _score(val, metric)}
    return compute


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
    fit = _Fit(args, placement, tokenizer, train_set, val_set, scoring, seed=seed, metric=metric, progress=progress,
               run_id=run_id)
    student_resume = resume if resume is not None and resume.parent.name == distill.STUDENT_DIR else None
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
    if student_resume is None:
        print(f"teacher: {teacher_record['weights']}, validation accuracy "
              f"{teacher_record['validation_metrics']['accuracy']:.4f}; distilling into {args.distill_layers} "
              f"of its layers", flush=True)
    device = str(training_arguments(args, placement, output_dir, seed=seed, steps_per_epoch=1).device)
    soft = distill.teacher_logits(teacher_model, train_set.ids, device)
    del teacher_model
    fit.train_set = TokenizedTexts(train_set.ids, train_set.labels, soft)
    engine, records, seconds = fit(lambda: distill.load_student(teacher_folder, args.distill_layers),
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


class _Fit:
    """One ``Trainer.train`` of the recipe: the whole model, or a student that learns from the teacher's logits."""

    def __init__(self, args: TrainSection, placement: devices.Placement, tokenizer: Any, train_set: TokenizedTexts,
                 val_set: TokenizedTexts, scoring: ScoringConfig, *, seed: int, metric: str, progress: bool,
                 run_id: str):
        self.args, self.placement, self.tokenizer, self.scoring = args, placement, tokenizer, scoring
        self.train_set, self.val_set = train_set, val_set
        self.seed, self.metric, self.progress, self.run_id = seed, metric, progress, run_id

    def __call__(self, model_init: Any, output_dir: Path, resume: Path | None, *,
                 stage: str) -> tuple[Trainer, EpochRecords, float]:
        """Train from ``model_init`` (``stage``: "" alone, "teacher" or "student"); the engine, records, seconds."""
        args = self.args
        if stage == "student":
            args = args.model_copy(update={"learning_rate": args.distill_learning_rate})
        batches = LengthGroupedBatches([len(x) for x in self.train_set.ids], args.batch_size, self.seed,
                                       parts=self.placement.num_processes * args.gradient_accumulation_steps)
        records = EpochRecords(AVERAGE_FROM_EPOCH if args.average_checkpoints else None)
        callbacks: list[Any] = [records]
        if self.run_id:
            callbacks.append(MlflowMetrics(
                self.run_id, records, args.log_checkpoints, prefix="teacher_" if stage == "teacher" else "",
                artifact_path=f"checkpoints/{distill.STUDENT_DIR}" if stage == "student" else "checkpoints"))
        if self.progress:
            title = {"teacher": "training the teacher", "student": f"distilling a {args.distill_layers}-layer student"}
            callbacks.append(ProgressLines(args.batch_size, title=title.get(stage, "training")))
        if args.early_stopping_patience:
            callbacks.append(EarlyStoppingCallback(early_stopping_patience=args.early_stopping_patience))
        padding = "max_length" if args.padding == "max_length" else "longest"
        kind = StudentTrainer if stage == "student" else RecipeTrainer
        extra = {"temperature": args.distill_temperature, "alpha": args.distill_alpha} if stage == "student" else {}
        engine = kind(
            model_init=model_init,  # after the Trainer seeds: the recipe's order
            batches=batches,
            args=training_arguments(args, self.placement, output_dir, seed=self.seed,
                                    steps_per_epoch=batches.steps_per_epoch),
            train_dataset=self.train_set,
            eval_dataset=self.val_set,
            data_collator=DataCollatorWithPadding(self.tokenizer, padding=padding, max_length=self.scoring.max_length),
            processing_class=self.tokenizer,
            compute_metrics=_compute_metrics(self.metric),
            callbacks=callbacks,
            **extra,
        )
        engine.remove_callback(PrinterCallback)  # its raw log dicts; ProgressLines prints for people
        if resume is not None:
            records.restore(resume)
            print(f"resuming from {resume} (epoch {len(records.history)} done)", flush=True)
        started = time.perf_counter()
        engine.train(resume_from_checkpoint=str(resume) if resume is not None else None)
        return engine, records, time.perf_counter() - started


def _save_teacher(teacher: TrainResult, output_dir: Path, run_id: str) -> None:
    """The finished teacher and its record beside the checkpoints (and in run ``run_id``'s, if given)."""
    record = {"layers": int(teacher.model.config.num_hidden_layers), "weights": teacher.weights,
              "best_epoch": teacher.best_epoch, "threshold": teacher.threshold, "history": teacher.history,
              "validation_metrics": teacher.validation_metrics, "train_seconds": teacher.train_seconds,
              "steps": teacher.steps}
    folder = distill.save_teacher(teacher.model, teacher.tokenizer, output_dir, record)
    if run_id:
        files = sorted((p for p in folder.iterdir() if p.is_file()), key=lambda p: p.name == distill.TEACHER_RECORD)
        for path in files:  # the record last: complete
            mlflow.MlflowClient().log_artifact(run_id, str(path), f"checkpoints/{distill.TEACHER_DIR}")


def _finish(args: TrainSection, model: Any, tokenizer: Any, scoring: ScoringConfig, splits: Splits,
            records: EpochRecords, *, metric: str, run_id: str, train_seconds: float, steps: int,
            placement: devices.Placement) -> TrainResult:
    """After the epochs: the weight average if it wins, the threshold folded in, long texts calibrated."""
    history = records.history
    best = max(history, key=lambda row: _score({k.removeprefix("val_"): v for k, v in row.items()}, metric))
    best_epoch, weights = int(best["epoch"]), f"epoch {int(best['epoch'])}"
    # the best epoch scored as the average will be (Scorer: every window of a long text), not as the Trainer's
    # evaluation saw it (truncated at max_length): the comparison is like for like
    labels, texts = splits.validation["label"].to_numpy(), splits.validation["text"].tolist()
    best_score = _score(classification_metrics(labels, Scorer(model, tokenizer, scoring).predict_proba(texts)), metric)
    if records.averaged >= 2 and _average_wins(
        model, tokenizer, scoring, splits, records.weight_sum, records.averaged, best_score, metric, run_id
    ):
        weights = f"mean of epochs {AVERAGE_FROM_EPOCH}-{AVERAGE_FROM_EPOCH + records.averaged - 1}"
    threshold = 0.5
    val_probs = Scorer(model, tokenizer, scoring).predict_proba(splits.validation["text"].tolist())
    if args.tune_threshold:
        threshold = best_threshold(splits.validation["label"].to_numpy(), val_probs, metric)
        fold_threshold(model, threshold)
    long_calibration = pd.DataFrame()
    if args.calibrate_long_texts:
        scoring, long_calibration = calibrate_long_texts(Scorer(model, tokenizer, scoring), splits.validation)
    save_scoring_config(model, scoring, threshold=threshold, base_model=args.model_name)
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
        placement=placement.describe(),
    )


def calibrate_long_texts(scorer: Scorer, validation: pd.DataFrame) -> tuple[ScoringConfig, pd.DataFrame]:
    """The aggregation and long-text threshold chosen on the validation split's long texts (proxies and reviews).

    Returns the scorer's settings unchanged (and an empty table) when the validation texts make no long texts.
    """
    sets = long_texts.long_sets(validation, n=len(validation))
    if not sets:
        print("no validation long texts (not Rotten Tomatoes snippets): long texts keep the default aggregation")
        return scorer.scoring, pd.DataFrame()
    texts = pd.concat(sets.values(), ignore_index=True)
    scoring, table = aggregation.calibrate(scorer, texts["text"].tolist(), texts["label"].to_numpy())
    if not table.empty:
        print(f"long texts: aggregation {scoring.aggregation}, threshold {scoring.long_threshold:.2f} "
              f"(chosen on {int(table['texts'].iloc[0])} validation long texts)")
    return scoring, table


def _score(val: dict[str, float], metric: str) -> float:
    return val[metric] + 1e-3 * val["roc_auc"]  # roc_auc breaks ties


def _average_wins(model, tokenizer, scoring, splits, weight_sum, n, best_score, metric, run_id) -> bool:
    """Swap in the mean of the epoch-end weights (AVERAGE_FROM_EPOCH on) if it beats the best epoch on validation."""
    best_state = copy.deepcopy(model.state_dict())
    averaged = {**best_state, **{k: (v / n).to(best_state[k].dtype) for k, v in weight_sum.items()}}
    model.load_state_dict(averaged)
    probs = Scorer(model, tokenizer, scoring).predict_proba(splits.validation["text"].tolist())
    val = classification_metrics(splits.validation["label"].to_numpy(), probs)
    for name, value in val.items() if run_id else ():
        mlflow.MlflowClient().log_metric(run_id, f"val_averaged_{name}", value, step=0)
    if _score(val, metric) > best_score:
        print(f"weight average of {n} epochs wins on validation: {metric} {val[metric]:.4f} "
              f"(score {_score(val, metric):.4f} vs the best epoch's {best_score:.4f})")
        return True
    print(f"weight average of {n} epochs does not beat the best epoch on validation (score "
          f"{_score(val, metric):.4f} vs {best_score:.4f}); keeping the best epoch")
    model.load_state_dict(best_state)
    return False


def history_frame(result: TrainResult) -> pd.DataFrame:
    return pd.DataFrame(result.history).set_index("epoch")


def teacher_history(result: TrainResult) -> pd.DataFrame | None:
    """A distilled student's teacher's epochs (as :func:`history_frame`), None for a model trained alone."""
    return pd.DataFrame(result.teacher["history"]).set_index("epoch") if result.teacher else None
