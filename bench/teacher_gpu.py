"""The stronger teacher measured on a GPU (issue 27): all-mpnet-base-v2 fine-tuned with the train step's recipe,
then students of the embedded MiniLM distilled from its logits, each with its test accuracy.

Everything runs through the train step's own code (:func:`pipelines.train.trainer.train`): the teacher is
``model_name`` = mpnet with ``distill_layers 0`` (one per ``--teacher-lr``, the best on validation kept),
its logits over the training texts are saved as ``teacher/`` exactly as a distilling run logs them, and
each student is ``-p teacher_from`` on those logits (a local MLflow file store holds them for the run).
Test figures here are PyTorch at the tuned threshold; the served (int8) figure comes from the pipeline::

    python -m bench.teacher_gpu --out /tmp/teacher            # on a CUDA machine with `make mpnet` done
    python -m bench.teacher_gpu --log /tmp/teacher            # here: a run holding teacher/; prints its id
    make pipeline ARGS="-p teacher_from <that run id>"        # the student, evaluated and served as usual

``--data DIR`` reads the split from Parquet files (``--write-data DIR`` writes them here) and
``--models DIR`` the two encoders from ``DIR/mpnet`` and ``DIR/minilm``, for a GPU machine that has
neither the dataset package nor the weights installed. Writes bench/results/teacher_gpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import torch

from pipelines.config import EMBEDDED_MODEL, build_config
from pipelines.data.split import Splits, load_splits
from pipelines.evaluate.metrics import classification_metrics
from pipelines.train import distill, teachers, trainer
from pipelines.train.engine import tokenized
from scoring import tracking

RESULTS = Path(__file__).parent / "results" / "teacher_gpu.json"
PARTS = ("train", "validation", "test")
STUDENTS = [{"distill_layers": 4}, {"distill_layers": 4, "distill_alpha": 0.8, "distill_temperature": 4.0},
            {"distill_layers": 6}]


def write_data(folder: Path) -> None:
    """The default split as Parquet files and its identity, for a machine without the dataset package."""
    splits = load_splits(build_config({}).data)
    folder.mkdir(parents=True, exist_ok=True)
    for name in PARTS:
        getattr(splits, name).to_parquet(folder / f"{name}.parquet")
    (folder / "meta.json").write_text(json.dumps({"source": splits.source, "digest": splits.digest}))


def read_data(folder: Path | None) -> Splits:
    if folder is None:
        return load_splits(build_config({}).data)
    meta = json.loads((folder / "meta.json").read_text())
    return Splits(*(pd.read_parquet(folder / f"{n}.parquet") for n in PARTS), meta["source"], meta["digest"])


def test_metrics(result: trainer.TrainResult, splits: Splits) -> dict[str, float]:
    """Test-split figures of a trained model (its threshold is folded into the head: 0.5 decides)."""
    p = result.scorer("auto").predict_proba(splits.test["text"].tolist())
    return classification_metrics(splits.test["label"].to_numpy(), p)


def _train(splits: Splits, **params: Any) -> tuple[trainer.TrainResult, float]:
    cfg = build_config({"calibrate_long_texts": False, "onnx_export": False, **params})
    started = time.time()
    result = trainer.train(cfg.train, cfg.scoring, splits, seed=cfg.seed, metric="accuracy", progress=False)
    return result, time.time() - started


def _row(role: str, result: trainer.TrainResult, splits: Splits, wall: float, **what: Any) -> dict[str, Any]:
    row = {"role": role, **what, "wall_s": round(wall, 1), "train_seconds": round(result.train_seconds, 1),
           "best_epoch": result.best_epoch, "weights": result.weights, "val": result.validation_metrics,
           "test": test_metrics(result, splits)}
    print(json.dumps(row, default=float), flush=True)
    return row


def measure(splits: Splits, mpnet: str, minilm: str, teacher_lrs: list[float], students: list[dict[str, Any]],
            out: Path) -> dict[str, Any]:
    """Teachers, then students from the best one's logits; the report (teacher/ saved under ``out``)."""
    report: dict[str, Any] = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                              "torch": torch.__version__, "sizes": splits.sizes(), "runs": []}
    best: tuple[trainer.TrainResult, float] | None = None
    for lr in teacher_lrs:  # 1. the teacher: the recipe on mpnet itself, the fine-tuned model as the result
        result, wall = _train(splits, model_name=mpnet, distill_layers=0, learning_rate=lr)
        report["runs"].append(_row("teacher", result, splits, wall, model="all-mpnet-base-v2", learning_rate=lr))
        if best is None or result.validation_metrics["accuracy"] > best[0].validation_metrics["accuracy"]:
            best = (result, lr)
    assert best is not None
    teacher, lr = best  # 2. its logits over the training texts, as a distilling train step logs them
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ids = tokenized(teacher.tokenizer, splits.train, teacher.scoring.max_length).ids
    soft = distill.teacher_logits(teacher.model.to(device), teacher.tokenizer, ids, device)
    record = {**teachers.identity(teacher.model, "all-mpnet-base-v2"), **trainer._teacher_record(teacher),
              "texts_sha256": teachers.texts_digest(splits.train), "texts": len(splits.train), "learning_rate": lr}
    teachers.save(out, soft, record)
    report["teacher_learning_rate"] = lr
    del teacher
    # 3. students through teacher_from: a throw-away local file store holds the logits as a run's teacher/
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri((Path(tempfile.mkdtemp(prefix="teacher-gpu-")) / "mlruns").as_uri())
    run_id = mlflow.MlflowClient().create_run("0").info.run_id
    teachers.log(run_id, soft, record)
    for recipe in students:
        result, wall = _train(splits, model_name=minilm, teacher_from=run_id, **recipe)
        report["runs"].append(_row("student", result, splits, wall, recipe=recipe))
    return report


def log_teacher(folder: Path) -> str:
    """A run in the project's store whose ``teacher/`` is ``folder``/teacher (checked against today's split)."""
    soft, record = teachers.load(folder)
    splits = load_splits(build_config({}).data)
    if record["texts_sha256"] != teachers.texts_digest(splits.train):
        raise SystemExit(f"{folder}/teacher scored other training texts than the default split")
    cfg = build_config({})
    tracking.setup(cfg.tracking_uri, cfg.experiment_name)
    with mlflow.start_run(run_name="teacher all-mpnet-base-v2 (GPU)",
                          tags={"step": "teacher", "launched_by": "bench.teacher_gpu"}) as run:
        mlflow.log_metrics({f"teacher_val_{k}": v for k, v in record["validation_metrics"].items()})
        teachers.log(run.info.run_id, soft, record)
    return run.info.run_id


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.teacher_gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "teacher-gpu",
                        help="where teacher/ (logits + record) goes")
    parser.add_argument("--teacher-lr", default="2e-5,5e-5", help="the teacher's learning rates to try")
    parser.add_argument("--students", default=json.dumps(STUDENTS), help="JSON list of student parameters")
    parser.add_argument("--data", type=Path, help="the split as Parquet files (from --write-data)")
    parser.add_argument("--models", type=Path, help="a folder with mpnet/ and minilm/ (default: the installed)")
    parser.add_argument("--write-data", type=Path, help="write the default split as Parquet here, then stop")
    parser.add_argument("--log", type=Path, help="log <DIR>/teacher as a run's teacher/ here, print its id")
    args = parser.parse_args(argv)
    if args.write_data:
        write_data(args.write_data)
        return
    if args.log:
        print(log_teacher(args.log))
        return
    mpnet, minilm = (str(args.models / "mpnet"), str(args.models / "minilm")) if args.models \
        else ("all-mpnet-base-v2", EMBEDDED_MODEL)
    report = measure(read_data(args.data), mpnet, minilm, [float(x) for x in args.teacher_lr.split(",")],
                     json.loads(args.students), args.out)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
