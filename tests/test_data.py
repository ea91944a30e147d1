"""Data loading for every source kind, cleaning and the deterministic split."""

import json

import pandas as pd
import pytest

from pipelines.config import ConfigError, build_config
from pipelines.data.sources import clean, load_dataset, load_rotten_tomatoes, normalize_labels
from pipelines.data.split import digest, load_splits, split


def _frame(n=40):
    return pd.DataFrame({"review": [f"text number {i}" for i in range(n)], "sentiment": ["pos", "neg"] * (n // 2)})


def test_embedded_rotten_tomatoes_is_clean_and_balanced_as_documented():
    raw = load_rotten_tomatoes()
    df = load_dataset("embedded:rotten_tomatoes")
    assert 12_500 < len(df) <= len(raw) <= 12_808
    assert df["text"].is_unique
    assert 0.57 < df["label"].mean() < 0.59  # 57.8 % fresh


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_local_files(tmp_path, suffix):
    df = _frame()
    path = tmp_path / f"d{suffix}"
    if suffix == ".csv":
        df.to_csv(path, index=False)
    elif suffix == ".tsv":
        df.to_csv(path, sep="\t", index=False)
    elif suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(r) for r in df.to_dict("records")))
    else:
        df.to_parquet(path)
    out = load_dataset(str(path), text_column="review", label_column="sentiment")
    assert len(out) == 40 and set(out["label"]) == {0, 1}
    assert out.loc[out["text"] == "text number 0", "label"].item() == 1


def test_acl_imdb_folder(tmp_path):
    for sub, n in (("train/pos", 3), ("train/neg", 3), ("test/pos", 2), ("test/neg", 2)):
        folder = tmp_path / "aclImdb" / sub
        folder.mkdir(parents=True)
        for i in range(n):
            (folder / f"{i}_7.txt").write_text(f"{sub} review {i}<br />more")
    out = load_dataset(str(tmp_path / "aclImdb"))
    assert len(out) == 10 and out["label"].sum() == 5
    assert "<br />" not in out["text"].iloc[0]


def test_bad_sources_are_refused_with_the_parameter_named(tmp_path):
    with pytest.raises(ConfigError, match=r"parameter dataset: .* does not exist"):
        load_dataset(str(tmp_path / "missing.csv"))
    _frame().to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(ConfigError, match=r"parameter text_column"):
        load_dataset(str(tmp_path / "d.csv"))
    pd.DataFrame({"text": ["a", "b", "c"], "label": [0, 1, 2]}).to_csv(tmp_path / "three.csv", index=False)
    with pytest.raises(ConfigError, match=r"parameter label_column: .* not binary"):
        load_dataset(str(tmp_path / "three.csv"))
    pd.DataFrame({"text": [], "label": []}).to_csv(tmp_path / "empty.csv", index=False)
    with pytest.raises(ConfigError, match=r"parameter dataset: .* no labelled texts"):
        load_dataset(str(tmp_path / "empty.csv"))


def test_label_spellings():
    values = pd.Series(["Positive", "neg", "1", "0", "fresh", "ROTTEN", 1.0, 0])
    assert normalize_labels(values).tolist() == [1, 0, 1, 0, 1, 0, 1, 0]


def test_clean_drops_duplicates_and_conflicts():
    df = pd.DataFrame({"text": ["a", "a ", "b", "b", "c", ""], "label": [1, 1, 1, 0, 0, 1]})
    assert clean(df).to_dict("records") == [{"text": "a", "label": 1}, {"text": "c", "label": 0}]


def test_split_is_deterministic_stratified_and_disjoint():
    df = load_dataset("embedded:rotten_tomatoes")
    a, b = split(df, seed=7), split(df, seed=7)
    for x, y in zip(a, b, strict=True):
        pd.testing.assert_frame_equal(x, y)
    train, val, test = a
    assert len(set(train["text"]) & set(test["text"])) == 0 and len(set(val["text"]) & set(test["text"])) == 0
    for part in a:
        assert abs(part["label"].mean() - df["label"].mean()) < 0.01
    assert digest(df) == digest(df.sample(frac=1, random_state=1))


def test_max_train_samples_shrinks_train_only():
    full = load_splits(build_config({}).data)
    small = load_splits(build_config({"max_train_samples": 500}).data)
    assert len(small.train) == 500
    pd.testing.assert_frame_equal(full.test, small.test)
    assert full.digest == small.digest
