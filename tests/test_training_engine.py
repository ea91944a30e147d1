"""Training on transformers' Trainer: device choice, torchrun data parallel, resume after a real kill."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from pipelines.config import ConfigError, build_config
from pipelines.flow.runner import run_pipeline
from pipelines.train import checkpoints, devices
from pipelines.train.callbacks import RECORDS_FILE

ROOT = Path(__file__).resolve().parent.parent
# small enough for CI, long enough (16 steps an epoch) that the kill lands between epochs
TINY = {"max_train_samples": 256, "epochs": 3, "max_length": 32, "batch_size": 16, "onnx_export": False,
        "calibrate_long_texts": False, "early_stopping_patience": 0, "distill_layers": 0}


def test_auto_picks_the_cpu_here_in_fp32() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: auto picks it")
    assert devices.resolve() == devices.Placement("cpu", "fp32", 1)
    assert devices.inference_device("auto").type == "cpu"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"device": "cuda"}, "parameter device: cuda asked for"),
        ({"device": "cpu", "precision": "fp16"}, "parameter precision: fp16 needs a GPU"),
        ({"device": "cpu", "num_processes": 4096}, "parameter num_processes: 4096 processes asked for"),
        ({"device": "gpu"}, "parameter device: must be one of"),
    ],
)
def test_what_the_machine_cannot_serve_is_refused(kwargs, message) -> None:
    if kwargs.get("device") == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match=message):
        devices.resolve(**kwargs)


def test_the_effective_batch_must_divide_among_processes_and_accumulation() -> None:
    placement = devices.Placement("cpu", "fp32", 2)
    assert devices.per_device_batch(32, 4, placement) == 4
    with pytest.raises(ConfigError, match="parameter batch_size: 30 is the effective batch"):
        devices.per_device_batch(30, 4, placement)


def test_the_recipe_batches_split_across_ranks_and_steps_into_one_optimizer_step_each() -> None:
    """2 ranks x 2 accumulation steps: accelerate's shards of the micro-batches make up each batch of one process,
    epoch by epoch, the same in a new sampler (a resumed run); every micro-batch is scored by some rank."""
    import random

    from accelerate.data_loader import BatchSamplerShard

    from pipelines.train.sampling import LengthGroupedBatches

    lengths = [random.Random(3).randint(3, 60) for _ in range(103)]  # 6 batches of 16 and one of 7
    alone, split = LengthGroupedBatches(lengths, 16, seed=7), LengthGroupedBatches(lengths, 16, seed=7, parts=4)
    assert alone.steps_per_epoch == split.steps_per_epoch == 7 and len(split) == 28
    seen = []
    for epoch in (0, 1):
        alone.set_epoch(epoch)
        split.set_epoch(epoch)
        ranks = [list(BatchSamplerShard(split, num_processes=2, process_index=r)) for r in (0, 1)]
        assert [len(r) for r in ranks] == [14, 14]
        batches = list(alone)
        for step, batch in enumerate(batches):
            parts = [ranks[r][2 * step + a] for r in (0, 1) for a in (0, 1)]
            assert sorted(i for part in parts for i in part) == sorted(batch) and all(parts)
        assert batches == LengthGroupedBatches(lengths, 16, seed=7).epoch_batches(epoch)
        seen.append(batches)
    assert seen[0] != seen[1] and sorted(i for b in seen[1] for i in b) == list(range(103))


def test_resume_from_what_is_not_a_checkpoint_is_refused(mlflow_uri, tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"parameter resume_from: .* holds no complete checkpoint"):
        checkpoints.resolve(str(tmp_path))
    with pytest.raises(ConfigError, match="neither a checkpoint folder nor an MLflow run id"):
        checkpoints.resolve("0123456789abcdef0123456789abcdef")


@pytest.mark.e2e
@pytest.mark.timeout(1200)
def test_two_process_gloo_ddp_registers_one_version_and_logs_once(mlflow_uri, tmp_path) -> None:
    """``-p num_processes 2``: two ranks train (gloo); rank 0 alone logs, registers and writes the result."""
    cfg = build_config({**TINY, "epochs": 2, "num_processes": 2})
    result = run_pipeline(cfg, steps=("train",), output_dir=tmp_path / "out", progress=False)
    client = MlflowClient()
    assert [str(v.version) for v in client.search_model_versions("name = 'sentiment'")] == ["1"]
    train_run = client.get_run(result.steps["train"]["run_id"])
    assert train_run.data.tags["placement"] == "cpu fp32, 2 processes (gloo)"
    experiment = train_run.info.experiment_id
    assert len(client.search_runs([experiment])) == 2, "the parent and the train step, no run from a rank"
    steps = [m.step for m in client.get_metric_history(train_run.info.run_id, "train_loss_step")]
    assert steps and len(steps) == len(set(steps)), f"one logger: each step logged once ({steps})"
    epochs = [m.step for m in client.get_metric_history(train_run.info.run_id, "val_accuracy")]
    assert sorted(epochs) == [0, 1, 2], "epochs 1 and 2, and the final model's (step 0)"
    assert len(client.search_logged_models([experiment])) == 1
    assert not (tmp_path / "out" / "checkpoints").exists(), "checkpoints go once training succeeded"


@pytest.mark.e2e
@pytest.mark.timeout(1800)
def test_a_run_killed_after_epoch_one_resumes_and_matches_an_uninterrupted_run(mlflow_uri, tmp_path) -> None:
    """SIGKILL to the pipeline's process group after epoch 1's checkpoint; ``resume_from <run id>`` finishes it.

    The killed run logged its checkpoints (``log_checkpoints``) and its folder is gone, as on another
    machine: the resume downloads the checkpoint from the run.
    """
    args = [a for k, v in {**TINY, "log_checkpoints": True}.items() for a in ("-p", k, str(v))]
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "pipelines", "run", "--steps", "train", "--output-dir", str(out),
                             *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    client = MlflowClient()
    deadline = time.monotonic() + 900
    try:
        # the local checkpoint first (the store exists by then), then its upload to the run
        while checkpoints.last_checkpoint(out / "checkpoints") is None or not _logged(client,
                                                                                     "checkpoints/checkpoint-16"):
            assert proc.poll() is None, f"the run ended before its first checkpoint (exit {proc.returncode})"
            assert time.monotonic() < deadline, "no checkpoint after 15 minutes"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    left = checkpoints.last_checkpoint(out / "checkpoints")
    assert left is not None and left.name == "checkpoint-16", left
    assert checkpoints.resolve(str(out / "checkpoints")) == left, "a folder resolves to its last checkpoint"
    killed = _train_runs(client)
    assert len(killed) == 1 and killed[0].info.status == "RUNNING"
    assert client.search_model_versions("name = 'sentiment'") == []
    shutil.rmtree(out / "checkpoints")

    resumed = run_pipeline(build_config({**TINY, "resume_from": killed[0].info.run_id}), steps=("train",),
                           output_dir=tmp_path / "resumed", progress=False)
    whole = run_pipeline(build_config(TINY), steps=("train",), output_dir=tmp_path / "whole", progress=False)
    resumed_run = client.get_run(resumed.steps["train"]["run_id"])
    resumed_from = Path(resumed_run.data.tags["resumed_from"])
    assert resumed_from.name == "checkpoint-16" and (tmp_path / "resumed").resolve() in resumed_from.parents
    assert not resumed_from.exists(), "the downloaded checkpoint went with the run's own checkpoints"
    epochs = [m.step for m in client.get_metric_history(resumed_run.info.run_id, "val_accuracy")]
    assert sorted(epochs) == [0, 2, 3], "the epochs it trained, and the final model's (step 0)"
    for key in ("val_accuracy", "threshold"):
        assert abs(resumed.steps["train"][key] - whole.steps["train"][key]) <= 0.002, (key, resumed.steps, whole.steps)
    assert resumed.steps["train"]["best_epoch"] == whole.steps["train"]["best_epoch"]
    assert sorted(str(v.version) for v in client.search_model_versions("name = 'sentiment'")) == ["1", "2"]


def _train_runs(client: MlflowClient) -> list:
    experiments = [e.experiment_id for e in client.search_experiments()]
    return [r for r in client.search_runs(experiments) if r.data.tags.get("step") == "train"] if experiments else []


def _logged(client: MlflowClient, path: str) -> bool:
    """The train run has logged the whole checkpoint at ``path`` (its epoch records come last)."""
    runs = _train_runs(client)
    return bool(runs) and any(Path(a.path).name == RECORDS_FILE for a in client.list_artifacts(runs[0].info.run_id,
                                                                                              path))


def test_gpu_check_prints_skipped_without_cuda() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: make gpu-check trains")
    proc = subprocess.run([sys.executable, "-m", "tools.gpu_check"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.startswith("SKIPPED: no CUDA device"), proc.stdout + proc.stderr


def test_the_trainer_runs_the_recipe_written_out_bit_for_bit() -> None:
    """``trainer.train`` = the recipe as a hand-written loop, with dropout on, over two evaluated epochs.

    Seed, a new head, the length-grouped batches of each epoch, AdamW (decay groups), linear warm-up/decay,
    clipping; dropout draws continue from the head's initialisation and evaluation takes none of them. So
    the Trainer's model is the recipe's (the hand-written loop the Trainer replaced trained the same way).
    """
    import copy

    from transformers import DataCollatorWithPadding, get_linear_schedule_with_warmup

    from pipelines.data.split import load_splits
    from pipelines.train import sampling, trainer

    cfg = build_config({"batch_size": 16, "max_length": 32, "max_train_samples": 120, "epochs": 2,
                        "early_stopping_patience": 0, "average_checkpoints": False, "tune_threshold": False,
                        "calibrate_long_texts": False, "distill_layers": 0})
    splits = load_splits(cfg.data)
    trainer.seed_everything(cfg.seed)
    model, tokenizer = trainer.load_base_model(cfg.model_name)
    texts = trainer.tokenized(tokenizer, splits.train, cfg.max_length)
    batches = sampling.LengthGroupedBatches([len(x) for x in texts.ids], cfg.batch_size, cfg.seed)
    collate = DataCollatorWithPadding(tokenizer, padding="longest")
    total = batches.steps_per_epoch * cfg.epochs
    no_decay = ("bias", "LayerNorm.weight")
    optimizer = torch.optim.AdamW([
        {"params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)],
         "weight_decay": cfg.weight_decay},
        {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ], lr=cfg.learning_rate)
    schedule = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total), total)
    model.train()
    epochs = []
    for epoch in range(cfg.epochs):
        for batch in batches.epoch_batches(epoch):
            model(**collate([texts[i] for i in batch])).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
        epochs.append(copy.deepcopy(model.state_dict()))

    result = trainer.train(cfg.train, cfg.scoring, splits, seed=cfg.seed, progress=False)
    assert result.steps == total == 16
    ours, theirs = epochs[result.best_epoch - 1], result.model.state_dict()
    assert {k: (ours[k] - theirs[k]).abs().max().item() for k in ours} == dict.fromkeys(ours, 0.0)
    assert not torch.equal(epochs[0]["classifier.weight"], epochs[1]["classifier.weight"])
