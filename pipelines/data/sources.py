"""Loading and cleaning labelled texts from any supported source.

Every source ends as a DataFrame with two columns: ``text`` (str) and ``label``
(1 = positive, 0 = negative): the embedded Rotten Tomatoes snippets, a local CSV /
TSV / JSONL / Parquet file, an ``aclImdb``-style folder, or a Hugging Face dataset id.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipelines.config import EMBEDDED_DATASET, ConfigError, DataSection
from pipelines.data.embedded import rotten_tomatoes_csv
from scoring.labels import LABEL_NAMES

POSITIVE_VALUES = {"1", "pos", "positive", "fresh", "true", "good", "yes"}
NEGATIVE_VALUES = {"0", "neg", "negative", "rotten", "false", "bad", "no"}
FILE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet", ".csv.bz2", ".csv.gz", ".jsonl.gz")


def normalize_labels(values: pd.Series, column: str = "label") -> pd.Series:
    """Map binary labels of any common spelling to 1/0; refuse anything else."""
    as_str = values.astype(str).str.strip().str.lower()
    as_str = as_str.str.replace(r"^(\d+)\.0+$", r"\1", regex=True)  # 1.0 -> 1
    distinct = sorted(set(as_str))
    unknown = [v for v in distinct if v not in POSITIVE_VALUES | NEGATIVE_VALUES]
    if unknown and len(distinct) > 2:
        shown = ", ".join(distinct[:6]) + (" …" if len(distinct) > 6 else "")
        raise ConfigError(f"parameter label_column: column {column!r} is not binary ({len(distinct)} values: {shown})")
    if unknown:
        raise ConfigError(
            f"parameter label_column: column {column!r} has values {unknown} that are neither positive "
            f"({sorted(POSITIVE_VALUES)}) nor negative ({sorted(NEGATIVE_VALUES)})"
        )
    return as_str.isin(POSITIVE_VALUES).astype(int)


def clean(df: pd.DataFrame) -> pd.DataFrame:
    """Strip, drop empty texts, drop texts labelled both ways, dedupe."""
    df = df.copy()
    df["text"] = df["text"].astype(str).str.strip()
    df = df[df["text"].str.len() > 0]
    conflicting = df.groupby("text")["label"].nunique()
    df = df[~df["text"].isin(conflicting[conflicting > 1].index)]
    return df.drop_duplicates("text").reset_index(drop=True)[["text", "label"]]


def conflicting_texts(df: pd.DataFrame) -> pd.DataFrame:
    """Texts that appear with both labels (before cleaning), for the EDA."""
    counts = df.groupby("text")["label"].nunique()
    return df[df["text"].isin(counts[counts > 1].index)].sort_values("text")


def _select(df: pd.DataFrame, text_column: str, label_column: str, where: str) -> pd.DataFrame:
    missing = [c for c, p in ((text_column, "text_column"), (label_column, "label_column")) if c not in df.columns]
    if missing:
        param = "text_column" if text_column in missing else "label_column"
        raise ConfigError(
            f"parameter {param}: {where} has no column {missing[0]!r} (columns: {', '.join(map(str, df.columns))})"
        )
    out = pd.DataFrame({"text": df[text_column], "label": df[label_column]}).dropna()
    out["label"] = normalize_labels(out["label"], label_column)
    return out


def load_rotten_tomatoes(path: Path | None = None) -> pd.DataFrame:
    """The embedded critic snippets: ``fresh`` = positive, ``rotten`` = negative, ``plot`` dropped."""
    raw = pd.read_csv(path or rotten_tomatoes_csv())
    raw = raw[raw["category"].isin(["fresh", "rotten"])]
    return pd.DataFrame({"text": raw["text"], "label": (raw["category"] == "fresh").astype(int)})


def _read_file(path: Path) -> pd.DataFrame:
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz")):
        return pd.read_json(path, lines=True)
    if name.endswith(".json"):
        return pd.read_json(path)
    if name.endswith(".parquet"):
        return pd.read_parquet(path)
    if name.endswith(".tsv"):
        return pd.read_csv(path, sep="\t")
    return pd.read_csv(path)


def _read_folder(path: Path) -> pd.DataFrame:
    """aclImdb-style folders: ``pos/`` and ``neg/`` of .txt files, directly or under train/ and test/."""
    roots = [p for p in (path, path / "train", path / "test") if (p / "pos").is_dir() and (p / "neg").is_dir()]
    if not roots:
        raise ConfigError(f"parameter dataset: folder {path} has no pos/ and neg/ sub-folders")
    rows = [
        {"text": f.read_text(encoding="utf-8", errors="replace").replace("<br />", " "), "label": label}
        for root in roots
        for sub, label in (("pos", 1), ("neg", 0))
        for f in sorted((root / sub).glob("*.txt"))
    ]
    return pd.DataFrame(rows, columns=["text", "label"])


def _read_hub(dataset_id: str, text_column: str, label_column: str) -> pd.DataFrame:
    import datasets  # imported lazily: only hub ids need it

    loaded = datasets.load_dataset(dataset_id)
    frames = [split.to_pandas() for split in loaded.values()]
    df = pd.concat(frames, ignore_index=True)
    if label_column in df.columns:
        df = df[df[label_column].astype(str) != "-1"]  # unlabelled rows (e.g. imdb's 'unsupervised')
    return _select(df, text_column, label_column, f"hub dataset {dataset_id}")


def looks_like_path(dataset: str) -> bool:
    return dataset.startswith((".", "/", "~")) or dataset.lower().endswith(FILE_SUFFIXES) or Path(dataset).exists()


def load_dataset(dataset: str, text_column: str = "text", label_column: str = "label") -> pd.DataFrame:
    """Load any supported source into cleaned ``text``/``label`` rows."""
    if dataset == EMBEDDED_DATASET:
        df = load_rotten_tomatoes()
    elif looks_like_path(dataset):
        path = Path(dataset).expanduser()
        if not path.exists():
            raise ConfigError(f"parameter dataset: {path} does not exist")
        if path.is_dir():
            df = _read_folder(path)
        else:
            try:
                df = _read_file(path)
            except (ValueError, OSError, pd.errors.ParserError) as err:
                raise ConfigError(f"parameter dataset: cannot read {path}: {err}") from None
            df = _select(df, text_column, label_column, str(path))
    else:
        df = _read_hub(dataset, text_column, label_column)
    df = clean(df)
    if df.empty:
        raise ConfigError(f"parameter dataset: {dataset} holds no labelled texts")
    if df["label"].nunique() < 2:
        raise ConfigError(f"parameter dataset: {dataset} has only one label ({LABEL_NAMES[int(df['label'].iloc[0])]})")
    return df


def source_uri(dataset: str) -> str:
    """Where the data comes from, as MLflow dataset sources understand it (file path or URL)."""
    if dataset == EMBEDDED_DATASET:
        return str(rotten_tomatoes_csv())
    if looks_like_path(dataset):
        return str(Path(dataset).expanduser().resolve())
    return f"https://huggingface.co/datasets/{dataset}"


def validate(data: DataSection) -> None:
    """Refuse a dataset that cannot be read, before any step runs (ConfigError names the parameter).

    Files, folders and the embedded data are loaded now; a hub id is left to the step (it may download).
    """
    if looks_like_path(data.dataset) or data.dataset.startswith("embedded:"):
        load_dataset(data.dataset, data.text_column, data.label_column)
