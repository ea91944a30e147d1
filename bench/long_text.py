"""Long reviews: accuracy, ROC-AUC and latency of each long-text strategy on long proxies.

Proxies join the test-split snippets of one movie and label (see
:mod:`pipelines.evaluate.long_texts`).  Prints a table and writes
``bench/results/long_text.json``::

    .venv/bin/python bench/long_text.py                       # models:/sentiment@production, project store
    MLFLOW_TRACKING_URI=sqlite:///path/mlflow.db .venv/bin/python bench/long_text.py --n 150
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-uri", default="models:/sentiment@production")
    parser.add_argument("--tracking-uri", default="", help="default: $MLFLOW_TRACKING_URI or the project store")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--n", type=int, default=150, help="number of long proxies")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--repeats", type=int, default=3, help="batch timings: best of N runs")
    parser.add_argument("--n-single", type=int, default=30, help="one-text calls timed per strategy")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "long_text.json"))
    args = parser.parse_args(argv)

    import torch

    from pipelines.config import build_config
    from pipelines.data.split import load_splits
    from pipelines.evaluate.long_texts import STRATEGIES, build_long_proxies, compare_strategies, token_lengths
    from scoring import tracking
    from scoring.identity import resolve
    from scoring.runtimes import load_scorer

    torch.set_num_threads(args.threads)
    uri = tracking.setup(args.tracking_uri)
    identity = resolve(args.model_uri)
    source = identity.source or args.model_uri
    splits = load_splits(build_config({}).data)
    proxies = build_long_proxies(splits.test, n=args.n)
    scorers = {s: load_scorer(source, args.backend, long_text_strategy=s) for s in STRATEGIES}
    scoring = next(iter(scorers.values())).scoring
    tokens = token_lengths(scorers["truncate"].tokenizer, proxies["text"])
    table = compare_strategies(scorers, proxies, n_single=args.n_single, repeats=args.repeats)

    print(f"model {identity.name or source} v{identity.version or '?'} ({args.backend}, {args.threads} threads), "
          f"max_length {scoring.max_length}, window_stride {scoring.window_stride}, max_windows {scoring.max_windows}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{len(proxies)} long proxies (test split only): {proxies['n_snippets'].median():.0f} snippets, "
          f"{tokens.mean():.0f} tokens on average (median {int(sorted(tokens)[len(tokens) // 2])}, "
          f"max {tokens.max()}); {(tokens > scoring.max_length).mean():.0%} longer than max_length")
    print(table.round(4).to_string())
    result = {
        "model": {"uri": source, "name": identity.name, "version": identity.version, "backend": args.backend},
        "tracking_uri": uri,
        "scoring": {"max_length": scoring.max_length, "window_stride": scoring.window_stride,
                    "max_windows": scoring.max_windows},
        "proxies": {"n": len(proxies), "mean_tokens": float(tokens.mean()), "max_tokens": int(tokens.max()),
                    "share_longer_than_max_length": float((tokens > scoring.max_length).mean()),
                    "median_snippets": float(proxies["n_snippets"].median())},
        "machine": {"threads": args.threads, "cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(), "load_avg_1m": os.getloadavg()[0]},
        "timing": {"batch": f"best of {args.repeats}", "single": f"median of {args.n_single} one-text calls"},
        "strategies": table.round(6).to_dict(orient="index"),
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
