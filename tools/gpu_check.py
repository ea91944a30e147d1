"""GPU check (``make gpu-check``): one epoch of the default model in bf16 on CUDA, samples/s and test accuracy.

Prints ``SKIPPED`` and exits 0 where torch sees no CUDA device (this project's CI, a laptop), so it can
run anywhere; on a GPU machine it is the quick proof that ``device``/``precision`` place training there.
"""

from __future__ import annotations

import sys
import time

import torch

from pipelines.config import ConfigError, build_config
from pipelines.data.split import load_splits
from pipelines.evaluate.testset import evaluate_scorer
from pipelines.train import devices, trainer


def main() -> int:
    try:
        devices.resolve_device("cuda")  # the train step's own check and its reason
    except ConfigError as exc:
        print(f"SKIPPED: no CUDA device ({exc})")
        return 0
    precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    cfg = build_config({"epochs": 1, "device": "cuda", "precision": precision, "early_stopping_patience": 0,
                        "distill_layers": 0})
    splits = load_splits(cfg.data)
    started = time.perf_counter()
    result = trainer.train(cfg.train, cfg.scoring, splits, seed=cfg.seed, metric=cfg.promotion_metric)
    assert result is not None
    epoch = result.history[0]
    test = evaluate_scorer(result.scorer("cuda"), splits.test).metrics
    print(f"GPU check: {torch.cuda.get_device_name()}, {precision}, {len(splits.train)} texts x 1 epoch: "
          f"{len(splits.train) / epoch['epoch_seconds']:.0f} training samples/s ({epoch['epoch_seconds']:.1f} s), "
          f"test accuracy {test['accuracy']:.4f} (whole run {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
