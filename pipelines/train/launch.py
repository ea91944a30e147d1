"""Running the train recipe: in this process, or as ``num_processes`` ranks under ``torchrun``.

:func:`run` is what the train notebook calls. It refuses a device, precision or process count the
machine cannot serve before anything loads, finds the checkpoint ``resume_from`` means, tags the
step's run with its checkpoint folder, then trains here (one process) or starts
``torchrun --standalone --nproc-per-node N -m pipelines.train.launch SPEC`` and streams its output,
so the notebook and the terminal that papermill runs it from both show progress. Every rank trains
(DDP: NCCL on GPUs, gloo on the CPU); rank 0 alone logs metrics to the step's run and writes the
result, which this process loads, registers and exports: the other ranks never touch MLflow.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import transformers
from mlflow import MlflowClient
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from pipelines.config import TrainSection
from pipelines.data.split import Splits
from pipelines.train import checkpoints, devices, distill, trainer
from pipelines.train.trainer import TrainResult
from scoring.config import ScoringConfig

_RESULT_FIELDS = ("threshold", "best_epoch", "weights", "history", "validation_metrics", "train_seconds", "steps",
                  "placement", "teacher")


def run(args: TrainSection, scoring: ScoringConfig, splits: Splits, *, seed: int, metric: str, output_dir: Path,
        progress: bool = True) -> TrainResult:
    """Train as ``args`` asks (device, precision, processes, resume); checkpoints in ``output_dir``/checkpoints.

    The checkpoints are removed once training succeeded (the model is in the result); a killed run
    leaves them for ``resume_from``.
    """
    placement = devices.resolve(args.device, args.precision, args.num_processes)
    devices.per_device_batch(args.batch_size, args.gradient_accumulation_steps, placement)
    folder = Path(output_dir).resolve() / "checkpoints"
    # a checkpoint downloaded from the killed run goes with this run's own once training succeeded
    resume = checkpoints.resolve(args.resume_from, download_dir=folder / "resumed") if args.resume_from else None
    if resume is not None:
        distill.check_resume(resume, args.distill_layers)
    folder.mkdir(parents=True, exist_ok=True)
    run_id = mlflow.active_run().info.run_id if mlflow.active_run() else ""
    if run_id:
        MlflowClient().set_tag(run_id, checkpoints.FOLDER_TAG, str(folder))
        if resume is not None:
            MlflowClient().set_tag(run_id, "resumed_from", str(resume))
    print(f"training on {placement.describe()}; checkpoints in {folder}", flush=True)
    if placement.num_processes == 1:
        result = trainer.train(args, scoring, splits, seed=seed, metric=metric, progress=progress,
                               output_dir=folder, run_id=run_id, resume=resume)
    else:
        result = _torchrun(args, scoring, splits, seed=seed, metric=metric, folder=folder, run_id=run_id,
                           resume=resume, progress=progress, placement=placement)
    assert result is not None
    shutil.rmtree(folder, ignore_errors=True)
    return result


def _torchrun(args: TrainSection, scoring: ScoringConfig, splits: Splits, *, seed: int, metric: str, folder: Path,
              run_id: str, resume: Path | None, progress: bool, placement: devices.Placement) -> TrainResult:
    work = folder / "ranks"
    work.mkdir(parents=True, exist_ok=True)
    splits.train.to_parquet(work / "train.parquet")
    splits.validation.to_parquet(work / "validation.parquet")
    spec = {"train": args.model_dump(), "scoring": scoring.model_dump(), "seed": seed, "metric": metric,
            "checkpoints": str(folder), "run_id": run_id, "resume": str(resume or ""), "progress": progress,
            "tracking_uri": mlflow.get_tracking_uri() if run_id else "", "result": str(work / "result")}
    (work / "spec.json").write_text(json.dumps(spec))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={placement.num_processes}", "-m", "pipelines.train.launch", str(work / "spec.json")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if placement.device == "cpu" and "OMP_NUM_THREADS" not in os.environ:  # else torchrun gives each rank one
        env["OMP_NUM_THREADS"] = str(max(1, devices.device_count("cpu") // placement.num_processes))
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                          env=env) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
        code = proc.wait()
    if code != 0:
        raise RuntimeError(f"torchrun ({placement.num_processes} processes) exited with {code}: see its output above")
    return load_result(work / "result")


def save_result(result: TrainResult, folder: Path) -> None:
    """The trained model, tokenizer and what training recorded, as files (rank 0 to the launching process)."""
    folder.mkdir(parents=True, exist_ok=True)
    result.model.save_pretrained(folder / "model")
    result.tokenizer.save_pretrained(folder / "model")
    meta = {name: getattr(result, name) for name in _RESULT_FIELDS}
    (folder / "result.json").write_text(json.dumps({**meta, "scoring": result.scoring.model_dump()}))
    if not result.long_calibration.empty:
        result.long_calibration.to_parquet(folder / "long_calibration.parquet")


def load_result(folder: Path) -> TrainResult:
    transformers.logging.disable_progress_bar()
    meta = json.loads((folder / "result.json").read_text())
    calibration = folder / "long_calibration.parquet"
    return TrainResult(
        model=AutoModelForSequenceClassification.from_pretrained(folder / "model").eval(),
        tokenizer=AutoTokenizer.from_pretrained(folder / "model"),
        scoring=ScoringConfig(**meta.pop("scoring")),
        long_calibration=pd.read_parquet(calibration) if calibration.is_file() else pd.DataFrame(),
        **meta,
    )


def main(spec_path: str) -> None:
    """One rank of a torchrun launch (``python -m pipelines.train.launch SPEC``)."""
    transformers.logging.set_verbosity_error()  # one load report per rank says nothing new
    spec = json.loads(Path(spec_path).read_text())
    work = Path(spec_path).parent
    if spec["tracking_uri"]:
        mlflow.set_tracking_uri(spec["tracking_uri"])
    splits = Splits(train=pd.read_parquet(work / "train.parquet"),
                    validation=pd.read_parquet(work / "validation.parquet"),
                    test=pd.DataFrame(columns=["text", "label"]), source="", digest="")
    rank_zero = int(os.environ.get("RANK", "0")) == 0
    result = trainer.train(TrainSection(**spec["train"]), ScoringConfig(**spec["scoring"]), splits,
                           seed=spec["seed"], metric=spec["metric"], progress=spec["progress"],
                           output_dir=Path(spec["checkpoints"]), run_id=spec["run_id"] if rank_zero else "",
                           resume=Path(spec["resume"]) if spec["resume"] else None)
    if result is not None:
        save_result(result, Path(spec["result"]))


if __name__ == "__main__":
    main(sys.argv[1])
