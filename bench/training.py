"""Training speed: dynamic padding of length-grouped batches vs padding everything to ``max_length``.

Two real training runs (``pipelines.train.trainer.train``) on the same training subset, one
epoch each, ``max_length=128``, then each model's test-split accuracy.  A second,
interleaved measurement alternates single optimizer steps of the two paddings on the same
batches, so that the step-time ratio does not depend on load drifting between the runs.

    python -m bench.training        # 2000 training texts; BENCH_QUICK=1: 320
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from bench import common

MAX_LENGTH = 128


def config(padding: str, n_train: int) -> Any:
    from pipelines.config import build_config

    return build_config({"max_train_samples": n_train, "epochs": 1, "max_length": MAX_LENGTH, "padding": padding,
                         "early_stopping_patience": 0, "distill_layers": 0})


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int) -> list[list[int]]:
    """The Trainer's length-grouped order (``train_sampling_strategy="group_by_length"``), cut into batches."""
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    order = get_length_grouped_indices(lengths, batch_size, generator=torch.Generator().manual_seed(seed))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def padded_tokens(lengths: list[int], cfg: Any) -> dict[str, float]:
    """Tokens per batch the model sees, and the share of them that is padding."""
    batches = length_grouped_batches(lengths, cfg.batch_size, cfg.seed)
    width = [MAX_LENGTH if cfg.padding == "max_length" else max(lengths[i] for i in b) for b in batches]
    seen = sum(w * len(b) for w, b in zip(width, batches, strict=True))
    return {"tokens_per_batch": seen / len(batches), "padding_share": 1 - sum(lengths) / seen}


def training_run(padding: str, n_train: int) -> dict[str, Any]:
    from pipelines.data.split import load_splits
    from pipelines.evaluate.testset import evaluate_scorer
    from pipelines.train.trainer import train

    cfg = config(padding, n_train)
    splits = load_splits(cfg.data)
    result = train(cfg.train, cfg.scoring, splits, seed=cfg.seed, metric=cfg.promotion_metric, progress=False)
    epoch = result.history[0]
    test = evaluate_scorer(result.scorer(), splits.test).metrics
    lengths = [len(x) for x in result.tokenizer(splits.train["text"].tolist(), truncation=True,
                                                   max_length=MAX_LENGTH)["input_ids"]]
    return {
        "padding": padding, "train_texts": len(splits.train), "steps": result.steps,
        "seconds_per_step": epoch["seconds_per_step"], "epoch_seconds": epoch["epoch_seconds"],
        "train_seconds_with_validation": result.train_seconds, **padded_tokens(lengths, cfg),
        "val_accuracy": result.validation_metrics["accuracy"], "test_accuracy": test["accuracy"],
        "test_roc_auc": test["roc_auc"], "test_texts": len(splits.test),
    }


def interleaved_steps(pairs: int, n_train: int) -> dict[str, Any]:
    """Median seconds of one optimizer step per padding, the two alternating on the same batches."""
    import torch
    from transformers import DataCollatorWithPadding

    from pipelines.data.split import load_splits
    from pipelines.train.trainer import load_base_model

    cfg = config("dynamic", n_train)
    splits = load_splits(cfg.data)
    model, tokenizer = load_base_model(cfg.model_name)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate)
    ids = tokenizer(splits.train["text"].tolist(), truncation=True, max_length=MAX_LENGTH)["input_ids"]
    labels = splits.train["label"].to_numpy()
    batches = length_grouped_batches([len(x) for x in ids], cfg.batch_size, cfg.seed)
    collators = {p: DataCollatorWithPadding(tokenizer, padding="longest" if p == "dynamic" else "max_length",
                                            max_length=MAX_LENGTH) for p in ("dynamic", "max_length")}
    times: dict[str, list[float]] = {p: [] for p in collators}
    for i, batch in enumerate(batches[: pairs + 1]):
        for padding in (("dynamic", "max_length") if i % 2 == 0 else ("max_length", "dynamic")):
            start = time.perf_counter()
            out = model(**collators[padding]([{"input_ids": ids[j], "labels": int(labels[j])} for j in batch]))
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if i > 0:  # the first pair warms up
                times[padding].append(time.perf_counter() - start)
    med = {p: statistics.median(t) for p, t in times.items()}
    return {"pairs": pairs, "median_seconds_per_step": med, "ratio_dynamic_vs_max_length": med["dynamic"] /
            med["max_length"]}


def main() -> None:
    import torch

    started, load_start = time.perf_counter(), common.loadavg()
    n_train = 320 if common.QUICK else 2000
    pairs = 3 if common.QUICK else 4
    print(f"training {n_train} texts × 1 epoch, batch 32, max_length {MAX_LENGTH}, torch threads "
          f"{torch.get_num_threads()}", flush=True)
    steps = interleaved_steps(pairs, n_train)
    print(f"interleaved steps: {steps}", flush=True)
    runs = []
    for padding in ("dynamic", "max_length"):
        run_start = common.loadavg()
        runs.append({**training_run(padding, n_train), "loadavg_start": run_start, "loadavg_end": common.loadavg()})
        print(f"  {padding}: {runs[-1]['seconds_per_step']:.2f} s/step, test accuracy {runs[-1]['test_accuracy']:.4f}",
              flush=True)
    dyn, full = runs
    acc = (dyn["test_accuracy"] + full["test_accuracy"]) / 2
    se = float(np.sqrt(acc * (1 - acc) / dyn["test_texts"]))  # sampling s.e. of one test accuracy
    summary = {
        "time_ratio_per_step": dyn["seconds_per_step"] / full["seconds_per_step"],
        "time_ratio_per_epoch": dyn["epoch_seconds"] / full["epoch_seconds"],
        "accuracy_difference": dyn["test_accuracy"] - full["test_accuracy"],
        "accuracy_se": se,
    }
    print(common.table(runs, ["padding", "train_texts", "steps", "seconds_per_step", "epoch_seconds",
                              "tokens_per_batch", "padding_share", "val_accuracy", "test_accuracy"], 3))
    print(common.table([summary], digits=3))
    common.write_results("training", {"max_length": MAX_LENGTH, "torch_threads": torch.get_num_threads(),
                                      "runs": runs, "interleaved_steps": steps, "summary": summary},
                         started, load_start)


if __name__ == "__main__":
    main()
