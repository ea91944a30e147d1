"""Fine-tuning a transformer encoder with a fresh two-label head.

A plain PyTorch loop (clearer than ``Trainer`` for what we need): length-grouped
batches with dynamic padding, AdamW with linear warm-up/decay, gradient
clipping, early stopping on the validation split, a decision threshold
chosen on validation and folded into the classifier bias, and how long texts'
windows are aggregated chosen on validation long texts (:mod:`pipelines.evaluate.aggregation`).
"""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

from pipelines.config import TrainSection
from pipelines.data.embedded import resolve_model_name
from pipelines.data.split import Splits
from pipelines.evaluate import aggregation, long_texts
from pipelines.evaluate.metrics import best_threshold, classification_metrics
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

    def scorer(self) -> Scorer:
        return Scorer(self.model, self.tokenizer, self.scoring)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def length_grouped_batches(lengths: list[int], batch_size: int, rng: random.Random, mega: int = 50) -> list[list[int]]:
    """Shuffle, sort by length inside mega-batches of ``mega`` batches, shuffle the batches.

    Batches then hold texts of similar length, so dynamic padding pads little,
    while the order stays random enough for SGD.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    for start in range(0, len(order), batch_size * mega):
        chunk = sorted(order[start : start + batch_size * mega], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def load_base_model(model_name: str) -> tuple[Any, Any]:
    """Tokenizer and a sequence classifier with a fresh 2-label head."""
    source = resolve_model_name(model_name)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForSequenceClassification.from_pretrained(
        source,
        num_labels=2,
        id2label=dict(LABEL_NAMES),
        label2id={v: k for k, v in LABEL_NAMES.items()},
    )
    return model, tokenizer


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


class _Collator:
    def __init__(self, tokenizer: Any, padding: str, max_length: int):
        self.tokenizer, self.padding, self.max_length = tokenizer, padding, max_length

    def __call__(self, ids: list[list[int]], labels: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        padding = "max_length" if self.padding == "max_length" else "longest"
        batch = self.tokenizer.pad({"input_ids": ids}, padding=padding, max_length=self.max_length, return_tensors="pt")
        if labels is not None:
            batch["labels"] = torch.as_tensor(labels, dtype=torch.long)
        return batch


def _log(metrics: dict[str, float], step: int) -> None:
    if mlflow.active_run() is not None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


def train(args: TrainSection, scoring: ScoringConfig, splits: Splits, *, seed: int, metric: str = "accuracy",
          progress: bool = True) -> TrainResult:
    """Fine-tune ``args.model_name`` on ``splits.train``; early-stop on ``splits.validation``.

    ``scoring`` gives the window length (training truncates there) and is saved with the model;
    ``metric`` is what early stopping, the weight average and the threshold optimise (the gate's metric).
    """
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    seed_everything(seed)
    model, tokenizer = load_base_model(args.model_name)
    train_ids = tokenizer(splits.train["text"].tolist(), truncation=True, max_length=scoring.max_length)["input_ids"]
    labels = splits.train["label"].to_numpy()
    collate = _Collator(tokenizer, args.padding, scoring.max_length)
    rng = random.Random(seed)
    steps_per_epoch = math.ceil(len(train_ids) / args.batch_size)
    total_steps = steps_per_epoch * args.epochs

    no_decay = ("bias", "LayerNorm.weight", "layer_norm", "norm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)],
         "weight_decay": args.weight_decay},
        {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=args.learning_rate)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(args.warmup_ratio * total_steps), total_steps)

    history: list[dict[str, float]] = []
    best_score, best_state, best_epoch, stale, step = -1.0, None, 0, 0, 0
    weight_sum, averaged_epochs = None, 0
    started = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        epoch_start, losses = time.perf_counter(), []
        batches = length_grouped_batches([len(x) for x in train_ids], args.batch_size, rng)
        if args.padding == "max_length":
            rng.shuffle(batches)
        bar = tqdm(batches, desc=f"epoch {epoch}/{args.epochs}", disable=not progress, mininterval=5, unit="batch")
        for batch in bar:
            out = model(**collate([train_ids[i] for i in batch], labels[batch]))
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(out.loss.item())
            step += 1
            if step % 20 == 0:
                recent = float(np.mean(losses[-20:]))
                _log({"train_loss_step": recent, "learning_rate": scheduler.get_last_lr()[0]}, step)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", refresh=False)
        epoch_seconds = time.perf_counter() - epoch_start
        val_probs = Scorer(model, tokenizer, scoring).predict_proba(splits.validation["text"].tolist())
        val = classification_metrics(splits.validation["label"].to_numpy(), val_probs)
        record = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)),
            "epoch_seconds": epoch_seconds,
            "seconds_per_step": epoch_seconds / max(1, len(batches)),
            **{f"val_{k}": v for k, v in val.items()},
        }
        history.append(record)
        _log({k: v for k, v in record.items() if k != "epoch"}, epoch)
        print(
            f"epoch {epoch}: train_loss {record['train_loss']:.4f} val_accuracy {val['accuracy']:.4f} "
            f"val_roc_auc {val['roc_auc']:.4f} ({epoch_seconds:.0f}s)",
            flush=True,
        )
        if args.average_checkpoints and epoch >= AVERAGE_FROM_EPOCH:
            weight_sum = _accumulate(weight_sum, model.state_dict())
            averaged_epochs += 1
        score = _score(val, metric)
        if score > best_score:
            best_score, best_epoch, stale = score, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if args.early_stopping_patience and stale >= args.early_stopping_patience:
                print(f"early stopping: no validation gain for {stale} epoch(s); best epoch {best_epoch}")
                break
    model.load_state_dict(best_state)
    model.eval()
    weights = f"epoch {best_epoch}"
    if averaged_epochs >= 2 and _average_wins(
        model, tokenizer, scoring, splits, weight_sum, averaged_epochs, best_score, metric
    ):
        weights = f"mean of epochs {AVERAGE_FROM_EPOCH}-{AVERAGE_FROM_EPOCH + averaged_epochs - 1}"

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
        train_seconds=time.perf_counter() - started,
        steps=step,
        long_calibration=long_calibration,
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


def _accumulate(total: dict[str, torch.Tensor] | None, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if total is None:
        return {k: v.detach().clone().float() if v.is_floating_point() else v.clone() for k, v in state.items()}
    for k, v in state.items():
        if v.is_floating_point():
            total[k] += v.detach().float()
    return total


def _average_wins(model, tokenizer, scoring, splits, weight_sum, n, best_score, metric) -> bool:
    """Swap in the mean of the epoch-end weights (AVERAGE_FROM_EPOCH on) if it beats the best epoch on validation."""
    best_state = copy.deepcopy(model.state_dict())
    averaged = {k: (v / n).to(best_state[k].dtype) if v.is_floating_point() else v for k, v in weight_sum.items()}
    model.load_state_dict(averaged)
    probs = Scorer(model, tokenizer, scoring).predict_proba(splits.validation["text"].tolist())
    val = classification_metrics(splits.validation["label"].to_numpy(), probs)
    _log({f"val_averaged_{k}": v for k, v in val.items()}, 0)
    if _score(val, metric) > best_score:
        print(f"weight average of {n} epochs wins on validation: {metric} {val[metric]:.4f}")
        return True
    print(f"weight average of {n} epochs does not beat the best epoch on validation; keeping the best epoch")
    model.load_state_dict(best_state)
    return False


def history_frame(result: TrainResult) -> pd.DataFrame:
    return pd.DataFrame(result.history).set_index("epoch")
