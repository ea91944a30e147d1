"""``distill_layers``: a student of the base model's first layers learns from the fine-tuned model; it is registered."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from mlflow import MlflowClient

from pipelines.config import ConfigError, build_config
from pipelines.flow.runner import run_pipeline
from pipelines.flow.steps import STEPS
from pipelines.train import checkpoints, distill

# two evaluated epochs per stage, checkpoints logged to the run (16 steps an epoch)
TINY = {"max_train_samples": 256, "epochs": 2, "max_length": 32, "batch_size": 16, "onnx_export": False,
        "calibrate_long_texts": False, "early_stopping_patience": 0, "distill_layers": 2, "log_checkpoints": True}


def test_the_loss_is_the_labels_at_alpha_zero_and_the_teacher_at_alpha_one() -> None:
    torch.manual_seed(0)
    student, teacher = torch.randn(8, 2, requires_grad=True), torch.randn(8, 2)
    labels = torch.randint(0, 2, (8,))
    ce = F.cross_entropy(student, labels)
    assert torch.allclose(distill.loss(student, teacher, labels, temperature=2.0, alpha=0.0), ce)
    assert distill.loss(teacher, teacher, labels, temperature=2.0, alpha=1.0).abs() < 1e-6, "no gap, no loss"
    # T² keeps the soft term's gradient on the scale of the labels' as T grows (Hinton et al.)
    grads = []
    for t in (1.0, 4.0):
        s = student.detach().clone().requires_grad_(True)
        distill.loss(s, teacher, labels, temperature=t, alpha=1.0).backward()
        grads.append(s.grad.norm())
    assert 0.1 < float(grads[1] / grads[0]) < 10
    # pulled towards the teacher: one gradient step lowers the gap
    s = student.detach().clone().requires_grad_(True)
    distill.loss(s, teacher, labels, temperature=2.0, alpha=1.0).backward()
    before = F.kl_div(F.log_softmax(s, -1), F.log_softmax(teacher, -1), reduction="batchmean", log_target=True)
    stepped = s.detach() - 0.5 * s.grad
    after = F.kl_div(F.log_softmax(stepped, -1), F.log_softmax(teacher, -1), reduction="batchmean", log_target=True)
    assert after < before


@pytest.mark.parametrize("layers", [6, 12])
def test_a_student_no_smaller_than_its_teacher_is_refused_naming_the_parameter(layers) -> None:
    cfg = build_config({"distill_layers": layers})
    with pytest.raises(ConfigError, match=rf"parameter distill_layers: {layers} is not fewer than .* 6 layers"):
        STEPS["train"].check(cfg)


def test_the_student_starts_as_the_teacher_cut_to_its_first_layers(tmp_path) -> None:
    from transformers import AutoTokenizer

    from pipelines.data.embedded import resolve_model_name
    from pipelines.train.trainer import load_classifier

    teacher = load_classifier("embedded:all-MiniLM-L6-v2")
    distill.save_teacher(teacher, AutoTokenizer.from_pretrained(resolve_model_name("embedded:all-MiniLM-L6-v2")),
                         tmp_path, {"layers": 6})
    student = distill.load_student(tmp_path, 2, "base")
    assert student.name_or_path == "base", "its origin, not the teacher's folder that goes with the checkpoints"
    assert student.config.num_hidden_layers == 2 and len(student.bert.encoder.layer) == 2
    kept = {k: v for k, v in teacher.state_dict().items() if not k.startswith("bert.encoder.layer.")
            or int(k.split(".")[3]) < 2}
    assert kept.keys() == student.state_dict().keys()
    for name, value in student.state_dict().items():
        assert torch.equal(value, kept[name]), name  # embeddings, layers 0-1, pooler and the fine-tuned head


@pytest.mark.e2e
@pytest.mark.timeout(1800)
def test_the_train_step_registers_the_student_and_a_killed_student_resumes_beside_its_teacher(mlflow_uri,
                                                                                              tmp_path) -> None:
    """The registered version has 2 layers and records its 6-layer teacher; the student's epoch-1 checkpoint and the
    teacher, downloaded from the run, resume the student alone and end where the uninterrupted run ended."""
    whole = run_pipeline(build_config(TINY), steps=("train",), output_dir=tmp_path / "whole", progress=False)
    client = MlflowClient()
    run_id = whole.steps["train"]["run_id"]
    run = client.get_run(run_id)
    version = client.get_model_version("sentiment", "1")
    assert version.tags["layers"] == "2" and version.tags["teacher_layers"] == "6"
    metrics = run.data.metrics
    assert {"teacher_val_accuracy", "teacher_val_roc_auc", "val_accuracy"} <= set(metrics)
    assert sorted(m.step for m in client.get_metric_history(run_id, "teacher_val_accuracy")) == [0, 1, 2]
    assert sorted(m.step for m in client.get_metric_history(run_id, "val_accuracy")) == [0, 1, 2]
    assert metrics["train_steps"] == 64, "16 steps an epoch, two epochs, two stages"
    assert not (tmp_path / "whole" / "checkpoints").exists(), "checkpoints go once training succeeded"

    # what a run killed during the student's second epoch leaves in its run: the teacher, the student's epoch 1
    killed = tmp_path / "killed" / "checkpoints"
    (killed / distill.STUDENT_DIR).mkdir(parents=True)
    client.download_artifacts(run_id, f"checkpoints/{distill.TEACHER_DIR}", str(killed))
    client.download_artifacts(run_id, f"checkpoints/{distill.STUDENT_DIR}/checkpoint-16",
                              str(killed / distill.STUDENT_DIR))
    assert checkpoints.resolve(str(killed)) == killed / distill.STUDENT_DIR / "checkpoint-16", \
        "the student's checkpoint once the teacher is complete"
    # by run id (another machine): the student's newest logged checkpoint, downloaded beside its teacher
    downloaded = checkpoints.resolve(run_id, download_dir=tmp_path / "download")
    assert downloaded == tmp_path / "download" / distill.STUDENT_DIR / "checkpoint-32"
    assert distill.teacher_complete(downloaded.parent.parent)
    resumed = run_pipeline(build_config({**TINY, "resume_from": str(killed)}), steps=("train",),
                           output_dir=tmp_path / "resumed", progress=False)
    resumed_run = client.get_run(resumed.steps["train"]["run_id"])
    assert Path(resumed_run.data.tags["resumed_from"]).parent.name == distill.STUDENT_DIR
    assert [m.step for m in client.get_metric_history(resumed_run.info.run_id, "teacher_val_accuracy")
            if m.step > 0] == [], "no teacher epoch in the resumed run"
    for key in ("val_accuracy", "threshold"):
        assert abs(resumed.steps["train"][key] - whole.steps["train"][key]) <= 0.002, (key, resumed.steps, whole.steps)
    final = [[m.value for m in client.get_metric_history(r, "teacher_val_accuracy") if m.step == 0]
             for r in (run_id, resumed_run.info.run_id)]
    assert final[0] == final[1] and len(final[0]) == 1, "the same teacher, recorded once as the final model's"


def test_a_student_checkpoint_resumes_only_as_the_same_student_beside_its_teacher(tmp_path) -> None:
    checkpoint = tmp_path / distill.STUDENT_DIR / "checkpoint-16"
    checkpoint.mkdir(parents=True)
    (checkpoint / "config.json").write_text('{"num_hidden_layers": 4}')
    with pytest.raises(ConfigError, match=r"parameter resume_from: .* without its teacher"):
        distill.check_resume(checkpoint, 4)
    (tmp_path / distill.TEACHER_DIR).mkdir()
    (tmp_path / distill.TEACHER_DIR / distill.TEACHER_RECORD).write_text("{}")
    distill.check_resume(checkpoint, 4)
    for layers in (0, 2):
        with pytest.raises(ConfigError, match=rf"4-layer student's checkpoint; resume it with distill_layers 4 "
                                              rf"\(not {layers}\)"):
            distill.check_resume(checkpoint, layers)
    distill.check_resume(tmp_path / "checkpoint-16", 0)  # the fine-tuning stage's: any setting


def test_a_teacher_folder_without_its_record_is_not_complete(tmp_path) -> None:
    (tmp_path / distill.TEACHER_DIR).mkdir()
    (tmp_path / distill.STUDENT_DIR / "checkpoint-16").mkdir(parents=True)
    assert not distill.teacher_complete(tmp_path)
    assert checkpoints.last_checkpoint(tmp_path) is None


@pytest.mark.e2e
@pytest.mark.timeout(1200)
def test_two_ranks_distil_from_the_teacher_rank_zero_saved(mlflow_uri, tmp_path) -> None:
    """``num_processes 2``: rank 0 finishes and saves the teacher, both ranks read it back and train the student."""
    cfg = build_config({**TINY, "epochs": 1, "num_processes": 2, "log_checkpoints": False})
    result = run_pipeline(cfg, steps=("train",), output_dir=tmp_path / "out", progress=False)
    client = MlflowClient()
    assert [str(v.version) for v in client.search_model_versions("name = 'sentiment'")] == ["1"]
    version = client.get_model_version("sentiment", "1")
    assert (version.tags["layers"], version.tags["teacher_layers"]) == ("2", "6")
    run = client.get_run(result.steps["train"]["run_id"])
    assert run.data.tags["placement"] == "cpu fp32, 2 processes (gloo)"
    assert run.data.metrics["train_steps"] == 32, "16 steps an epoch of the global batch, one epoch, two stages"
