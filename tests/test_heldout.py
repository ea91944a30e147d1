"""The held-out check reads the npm tarball's fixtures, refuses a tampered archive and scores a real model.

The tests write their own small archive in the package's layout; nothing is downloaded.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from conftest import LEARNED_PARAMS, NEGATIVE_REVIEW, POSITIVE_REVIEW

from pipelines import cli
from pipelines.config import build_config
from pipelines.data.split import load_splits
from pipelines.evaluate import heldout
from scoring.runtimes import load_scorer

REVIEWS = [
    {"text": POSITIVE_REVIEW + "  ", "class": 1},
    {"text": "I loved this film, the best thing I have seen all year.", "class": 1},
    {"text": NEGATIVE_REVIEW, "class": 0},
    {"text": "Boring, badly acted and far too long.", "class": 0},
    {"text": "", "class": None},  # the real fixtures end with this row
]


def _archive(path: Path, rows: list[dict]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name in heldout.SETS:
            data = json.dumps(rows).encode()
            info = tarfile.TarInfo(heldout.MEMBER.format(name=name))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_sets_are_read_without_the_empty_row(tmp_path):
    archive = _archive(tmp_path / "s.tgz", REVIEWS)
    frame = heldout.load_set(archive, "imdb")
    assert frame["label"].tolist() == [1, 1, 0, 0] and frame["text"][0] == POSITIVE_REVIEW
    with pytest.raises(heldout.HeldoutError, match="unknown held-out set"):
        heldout.load_set(archive, "netflix")


def test_an_archive_that_is_not_the_published_one_is_refused(tmp_path, capsys):
    archive = _archive(tmp_path / "sentiment-5.0.2.tgz", REVIEWS)
    with pytest.raises(heldout.HeldoutError, match="integrity"):
        heldout.fetch(archive)
    assert cli.main(["heldout", "--archive", str(archive)]) == 2
    assert "is not the published" in capsys.readouterr().err
    assert cli.main(["heldout", "--archive", str(tmp_path / "missing.tgz")]) == 2
    assert "--archive" in capsys.readouterr().err


def test_a_learned_model_and_the_baselines_are_scored_on_each_set(learned_copy, tmp_path):
    archive = _archive(tmp_path / "s.tgz", REVIEWS)
    sets = {name: heldout.load_set(archive, name) for name in heldout.SETS}
    train = load_splits(build_config(LEARNED_PARAMS).data).train
    table = heldout.evaluate(load_scorer(learned_copy.model_uri, "onnx-int8"), train, sets)
    assert set(table["model"]) == {"transformer", "tfidf_logreg", "majority"} and len(table) == 9
    model = table[(table["model"] == "transformer") & (table["set"] == "imdb")].iloc[0]
    assert model["accuracy"] == 1.0 and model["texts"] == 4  # four plain reviews a model that learned gets right
    tags = heldout.tags_for(table, "onnx-int8")
    assert tags["heldout.imdb.accuracy"] == "1.000000" and tags["heldout.backend"] == "onnx-int8"
