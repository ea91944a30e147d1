"""Pieces of serving without a server: settings, the backend seam, the export folder, long-text proxies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import NEGATIVE_REVIEW, POSITIVE_REVIEW
from pydantic import ValidationError

from app.model import ModelManager
from app.settings import Settings
from pipelines import cli
from pipelines.config import build_config
from pipelines.data.split import load_splits
from pipelines.evaluate.long_texts import build_long_proxies, movie_names
from scoring.config import BACKEND_NAMES, DEFAULT_BACKEND
from scoring.identity import MANIFEST, parse_registry_uri, read_manifest
from scoring.runtimes import BACKENDS, load_scorer
from scoring.scorer import Scorer


def test_settings_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///x.db")
    monkeypatch.setenv("MAX_BATCH", "8")
    monkeypatch.setenv("ADMIN_TOKEN", " ")
    monkeypatch.setenv("LONG_TEXT_STRATEGY", "head_tail")
    s = Settings()
    assert (s.tracking_uri, s.max_batch, s.admin_token, s.model_uri) == (
        "sqlite:///x.db", 8, None, "models:/sentiment@production")
    assert s.scoring_overrides()["long_text_strategy"] == "head_tail" and s.scoring_overrides()["max_windows"] is None
    assert 1 <= s.torch_threads <= 2 and s.reload_interval_s == 30 and not s.log_raw_text
    monkeypatch.setenv("BACKEND", "tensorflow")
    with pytest.raises(ValidationError, match="unknown backend"):
        Settings()


def test_backend_names_are_listed_once_in_config():
    assert set(BACKENDS) == set(BACKEND_NAMES) and Settings().backend == DEFAULT_BACKEND in BACKENDS


def test_unknown_backend_or_override_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown backend 'nope'; available: .*torch"):
        load_scorer("models:/sentiment@production", backend="nope")
    with pytest.raises(ValueError, match="unknown scoring override"):
        load_scorer("models:/sentiment@production", windows=3)


@pytest.mark.parametrize(
    ("uri", "parsed"),
    [
        ("models:/sentiment@production", ("sentiment", "production", "")),
        ("models:/sentiment/3", ("sentiment", "", "3")),
        ("runs:/abc/model", None),
        ("/srv/model", None),
    ],
)
def test_parse_registry_uri(uri, parsed):
    assert parse_registry_uri(uri) == parsed


def test_long_proxies_join_test_snippets_of_one_movie_and_label():
    splits = load_splits(build_config({}).data)
    proxies = build_long_proxies(splits.test, n=150)
    assert len(proxies) == 150 and set(proxies["label"]) == {0, 1}
    assert proxies["n_snippets"].min() >= 3
    test_texts, train_texts = set(splits.test["text"]), set(splits.train["text"]) | set(splits.validation["text"])
    movies = movie_names().set_index("text")["movie_name"]
    for row in proxies.itertuples():
        used = [t for t in test_texts if t in row.text and movies.get(t) == row.movie_name]
        assert sum(len(t) for t in used) + len(used) - 1 == len(row.text)  # only test snippets, space-joined
        assert not any(len(t) > 40 and t in row.text for t in train_texts)
    assert build_long_proxies(splits.test.assign(text="not a critic snippet")).empty


def test_export_folder_is_served_with_its_identity(learned_copy, tmp_path):
    out = tmp_path / "export"
    assert cli.main(["export", "--output", str(out)]) == 0
    manifest = read_manifest(out)
    assert (out / "MLmodel").is_file() and (out / MANIFEST).is_file()
    assert (manifest["name"], manifest["version"], manifest["alias"]) == ("sentiment", learned_copy.version,
                                                                            "production")
    assert manifest["run_id"] and 0.7 < manifest["metrics"]["accuracy"] <= 1
    assert cli.main(["export", "--output", str(out)]) == 2  # not over an existing export without --overwrite

    assert sorted(manifest["onnx_files"]) == ["onnx/model.int8.onnx", "onnx/model.onnx"]
    assert all((out / f).is_file() for f in manifest["onnx_files"])

    manager = ModelManager(Settings(model_uri=str(out), tracking_uri="sqlite:////nonexistent/never-used.db"))
    result = manager.reload("startup")
    assert result.status == "loaded", manager.last_error
    model = manager.current
    assert (model.identity.name, model.identity.version) == ("sentiment", learned_copy.version)
    assert model.identity.metrics == manifest["metrics"]
    assert manager.settings.backend == "onnx-int8"
    assert Path(model.scorer.session._model_path).resolve() == (out / "onnx" / "model.int8.onnx").resolve()
    probs, stats = model.score([POSITIVE_REVIEW, NEGATIVE_REVIEW], with_stats=True)
    assert probs[0] > 0.5 > probs[1] and all(n > 10 and unk == 0 for n, unk in stats)
    assert manager.reload("poll").status == "unchanged"

    torch_scorer = load_scorer(str(out), "torch")
    head_tail = Scorer(torch_scorer.model, torch_scorer.tokenizer,
                       torch_scorer.scoring.model_copy(update={"long_text_strategy": "head_tail"}))
    tok = torch_scorer.tokenizer
    long_review = " ".join([POSITIVE_REVIEW] * 30)
    (ids,), _ = head_tail.windows([long_review])
    assert len(ids) == head_tail.scoring.max_length and (ids[0], ids[-1]) == (tok.cls_token_id, tok.sep_token_id)
    assert head_tail.predict_proba([long_review, NEGATIVE_REVIEW]).round().tolist() == [1.0, 0.0]
    (out / MANIFEST).write_text(json.dumps({**manifest, "version": "99"}))
    assert manager.reload("poll").status == "loaded" and manager.current.identity.version == "99"
