"""The recipe's ``transformers.Trainer``: its data, its random streams, a student's loss, one fit.

:class:`Fit` is one ``Trainer.train`` of the recipe (:mod:`pipelines.train.trainer` runs one, or two when
it distils): the length-grouped batches, the TrainingArguments, our callbacks, early stopping, checkpoints
in a folder and resume from one. :class:`StudentTrainer` swaps the loss for the distillation loss.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from transformers import (
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    EvalPrediction,
    PrinterCallback,
    Trainer,
    TrainingArguments,
)

from pipelines.config import TrainSection
from pipelines.evaluate.metrics import classification_metrics
from pipelines.train import devices, distill
from pipelines.train.callbacks import ARTIFACT_PATH, EpochRecords, MlflowMetrics, ProgressLines
from pipelines.train.sampling import LengthGroupedBatches
from scoring.config import ScoringConfig
from scoring.labels import POSITIVE

AVERAGE_FROM_EPOCH = 2  # the weight average leaves out the epochs before this one (still early in fine-tuning)


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
        return {**val, "score": selection_score(val, metric)}
    return compute


def selection_score(val: dict[str, float], metric: str) -> float:
    """``metric``, what early stopping, the weight average and the threshold optimise; ROC-AUC breaks ties."""
    return val[metric] + 1e-3 * val["roc_auc"]  # roc_auc breaks ties


class Fit:
    """One ``Trainer.train`` of the recipe: the whole model, or a student that learns from the teacher's logits."""

    def __init__(self, args: TrainSection, placement: devices.Placement, tokenizer: Any, train_set: TokenizedTexts,
                 val_set: TokenizedTexts, scoring: ScoringConfig, *, seed: int, metric: str, progress: bool,
                 run_id: str):
        self.args, self.placement, self.tokenizer, self.scoring = args, placement, tokenizer, scoring
        self.train_set, self.val_set = train_set, val_set
        self.seed, self.metric, self.progress, self.run_id = seed, metric, progress, run_id

    def device(self, output_dir: Path) -> str:
        """The device this rank trains on (``cuda:<local rank>`` under torchrun)."""
        return str(training_arguments(self.args, self.placement, output_dir, seed=self.seed, steps_per_epoch=1).device)

    def __call__(self, model_init: Any, output_dir: Path, resume: Path | None, *,
                 stage: str) -> tuple[Trainer, EpochRecords, float]:
        """Train from ``model_init`` (``stage``: "" alone, "teacher", "base" (a student's start) or "student");
        the engine, records, seconds."""
        args = self.args
        if stage == "student":
            args = args.model_copy(update={"learning_rate": args.distill_learning_rate})
        batches = LengthGroupedBatches([len(x) for x in self.train_set.ids], args.batch_size, self.seed,
                                       parts=self.placement.num_processes * args.gradient_accumulation_steps)
        records = EpochRecords(AVERAGE_FROM_EPOCH if args.average_checkpoints else None)
        callbacks: list[Any] = [records]
        if self.run_id:
            callbacks.append(MlflowMetrics(
                self.run_id, records, args.log_checkpoints, prefix=f"{stage}_" if stage in ("teacher", "base") else "",
                artifact_path=f"{ARTIFACT_PATH}/{distill.STUDENT_DIR}" if stage == "student" else ARTIFACT_PATH))
        if self.progress:
            title = {"teacher": "training the teacher", "base": "fine-tuning the student's start",
                     "student": f"distilling a {args.distill_layers}-layer student"}
            callbacks.append(ProgressLines(args.batch_size, title=title.get(stage, "training")))
        if os.environ.get("SWEEP_TRIAL"):  # a sweep's trial: its pruner sees each epoch (pipelines.sweep.pruning)
            from pipelines.sweep.pruning import callback_from_env

            if (pruning := callback_from_env(stage)) is not None:
                callbacks.append(pruning)
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
