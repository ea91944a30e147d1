"""Full-length reviews under load: the scoring before issue 25 and the subjectivity-weighted scoring, side by side.

The pool: the test split's full reviews (:mod:`pipelines.evaluate.full_reviews`: an opening, a retold plot,
opinions, some against the verdict, a verdict last; median ≈ 1,100 characters, like IMDb user reviews). One app
server per variant (``BACKEND=onnx-int8``, micro-batching on, the runtime's defaults), all running at once and
driven in turn (rounds alternating) by 1 and 8 closed-loop clients, each client sending the pool in its own
order (the same for every server):

* ``today``: :data:`TODAY_MODEL_URI` as served before issue 25: its int8 graph without the subjectivity output
  and the aggregation it was saved with (a version without a subjectivity head is served exactly so; one with a
  head gets its graphs exported again without it, and the aggregation the rule of issue 16 chooses on validation
  long texts without it);
* ``now``: the production version as this code serves it (its graph gives P(subjective) beside the logits).

Next to the speed, each variant's accuracy in-process with the same int8 runtime on the test split's long texts,
by review length (:data:`pipelines.evaluate.full_reviews.BUCKETS`).

    python -m bench.long_reviews       # BENCH_QUICK=1: one short round
    BENCH_TODAY_MODEL_URI=models:/sentiment/1 BENCH_TODAY_TRACKING_URI=sqlite:///before/mlflow.db \
        python -m bench.long_reviews

``today`` serves ``BENCH_TODAY_MODEL_URI`` when it is set (from ``BENCH_TODAY_TRACKING_URI``, the store that holds
it, if another): the production version of a run before issue 25, so the ratios include the model's own change;
otherwise the production version with its head left out.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench import common, serving

CONCURRENCY = (1, 8)
TODAY_MODEL_URI = os.environ.get("BENCH_TODAY_MODEL_URI", "").strip() or common.MODEL_URI
TODAY_TRACKING_URI = os.environ.get("BENCH_TODAY_TRACKING_URI", "").strip()


def exported_folders(root: Path) -> dict[str, Path]:
    """Two model folders the app serves: ``today``, :data:`TODAY_MODEL_URI` with its subjectivity head (if any)
    removed and its ONNX graphs exported again without it, and ``now``, the production version as exported."""
    from pipelines.registry.model_folder import export_model
    from scoring.config import CONFIG_KEY
    from scoring.model_files import load_components
    from scoring.onnx_convert import FILES, ONNX_DIR, export_onnx, quantize_int8
    from scoring.subjectivity import HEAD_KEY

    export_today(root / "today")
    config_path = root / "today" / "model" / "config.json"
    config = json.loads(config_path.read_text())
    if config.get(CONFIG_KEY, {}).pop(HEAD_KEY, None) is not None:
        config_path.write_text(json.dumps(config, indent=2))
        model, tokenizer = load_components(str(root / "today"))
        onnx = root / "today" / ONNX_DIR
        quantize_int8(export_onnx(model, tokenizer, onnx / FILES[False]), onnx / FILES[True])
    export_model(common.MODEL_URI, root / "now")
    return {"today": root / "today", "now": root / "now"}


def export_today(folder: Path) -> None:
    """:data:`TODAY_MODEL_URI` into ``folder``, from :data:`TODAY_TRACKING_URI` if set."""
    import mlflow

    from pipelines.registry.model_folder import export_model

    current = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(TODAY_TRACKING_URI or current)
    try:
        export_model(TODAY_MODEL_URI, folder)
    finally:
        mlflow.set_tracking_uri(current)


def model_layers(folder: Path) -> int:
    """How many transformer layers the model in ``folder`` has."""
    from scoring.model_files import model_file

    return int(json.loads(model_file(str(folder), "model/config.json").read_text())["num_hidden_layers"])


def variant_scorers(folders: dict[str, Path], validation: pd.DataFrame) -> dict[str, Any]:
    """The int8 scorer of each variant in-process, with the settings its server applies (``today``'s aggregation
    chosen again by the rule of issue 16 where the one it was saved with needs the head it no longer has)."""
    from pipelines.evaluate.aggregation import calibrate
    from scoring.config import needs_subjectivity
    from scoring.model_files import load_tokenizer_and_scoring
    from scoring.runtimes import load_scorer

    scorers = {"now": load_scorer(str(folders["now"]), "onnx-int8", parallel=1)}
    today = load_scorer(str(folders["today"]), "onnx-int8", parallel=1, aggregation="prob_length")
    saved = load_tokenizer_and_scoring(str(folders["today"]))[1]
    if needs_subjectivity(saved.aggregation):
        saved = calibrate(today, validation["text"].tolist(), validation["label"].to_numpy())[0]
    scorers["today"] = today.with_scoring(saved)
    return {name: scorers[name] for name in ("today", "now")}


def accuracy_table(scorers: dict[str, Any], test: dict[str, pd.DataFrame]) -> list[dict[str, Any]]:
    """Per variant, set and length bucket: accuracy, precision, recall, answered and truly Positive."""
    from pipelines.evaluate.full_reviews import by_length

    rows = []
    for name, scorer in scorers.items():
        for set_name, frame in test.items():
            table = by_length(frame["text"], frame["label"].to_numpy(), scorer.predict_proba(frame["text"].tolist()))
            rows += [{"variant": name, "aggregation": scorer.scoring.aggregation,
                      "long_threshold": scorer.scoring.long_threshold, "set": set_name, "length": bucket,
                      **row.to_dict()} for bucket, row in table.iterrows()]
    return rows


def long_texts_of(frame: pd.DataFrame, part: str) -> pd.DataFrame:
    """A split's long texts (:func:`pipelines.evaluate.long_texts.long_sets`), all of them."""
    from pipelines.evaluate.long_texts import long_sets

    return pd.concat(long_sets(frame, n=len(frame), part=part).values(), ignore_index=True)


async def load_tests(servers: list[serving.Server], pool: list[str], rounds: int, seconds: float) -> list[dict]:
    for server in servers:
        await serving.load(server, pool, 2, serving.WARMUP_SECONDS)
    raw: dict[tuple[str, int], dict[str, Any]] = {}
    for conc in CONCURRENCY:
        for rnd, name in common.interleaved([s.name for s in servers], rounds):
            server = next(s for s in servers if s.name == name)
            got = await serving.load(server, pool, conc, seconds)
            cell = raw.setdefault((name, conc), {"latencies": [], "errors": 0, "seconds": 0.0})
            for key in cell:
                cell[key] += got[key]
            print(f"  round {rnd + 1} {name:12s} c={conc}: {len(got['latencies'])} ok, {got['errors']} errors, "
                  f"load {common.loadavg()[0]}", flush=True)
    return [{"server": name, "clients": conc, "rps": len(c["latencies"]) / c["seconds"],
             **common.latency_stats(c["latencies"]), "errors": c["errors"]} for (name, conc), c in raw.items()]



def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per variant at 8 clients: req/s and p99 relative to ``today`` (goal: within 10 %)."""
    at8 = {r["server"]: r for r in rows if r["clients"] == 8}
    today = at8["today"]
    return [{"server": name, "rps_x_today": r["rps"] / today["rps"], "p50_x_today": r["p50_ms"] / today["p50_ms"],
             "p99_x_today": r["p99_ms"] / today["p99_ms"]} for name, r in at8.items()]


def main() -> None:
    from pipelines.config import build_config
    from pipelines.data.split import load_splits
    from pipelines.evaluate.long_texts import long_sets, token_lengths

    started, load_start, uri, info = common.start_serving_benchmark()
    splits = load_splits(build_config({}).data)
    validation = long_texts_of(splits.validation, "validation")
    test = long_sets(splits.test, n=len(splits.test))
    log_dir = Path(tempfile.mkdtemp(prefix="bench-long-"))
    folders = exported_folders(log_dir)
    scorers = variant_scorers(folders, validation)
    accuracy = accuracy_table(scorers, test)
    envs = {name: {"MODEL_URI": str(folders[name]), "AGGREGATION": scorer.scoring.aggregation,
                   "LONG_THRESHOLD": str(scorer.scoring.long_threshold)} for name, scorer in scorers.items()}
    pool = test["full reviews"]["text"].tolist()
    tokens = token_lengths(scorers["now"].tokenizer, pool)
    layers = {name: model_layers(folder) for name, folder in folders.items()}
    rounds, seconds = (1, 3.0) if common.QUICK else (3, 8.0)
    servers = serving.make_servers(list(envs), uri, log_dir, envs)
    print(f"starting {', '.join(envs)} (logs in {log_dir}); pool of {len(pool)} full reviews, median "
          f"{np.median(tokens):.0f} tokens, {np.median([len(t) for t in pool]):.0f} characters", flush=True)
    signal.signal(signal.SIGTERM, serving._exit_on_sigterm)
    try:
        for server in servers:
            server.start()
        serving.wait_ready(servers)
        rows = asyncio.run(load_tests(servers, pool, rounds, seconds))
    finally:
        for server in servers:
            server.stop()
        for folder in folders.values():  # the model copies (≈ 200 MB each); the logs stay
            shutil.rmtree(folder, ignore_errors=True)
    print(common.table(rows, ["server", "clients", "rps", "p50_ms", "p95_ms", "p99_ms", "n", "errors"], 1))
    print(common.table(ratios(rows), digits=2))
    print(common.table(accuracy, digits=3))
    print(f"today: {TODAY_MODEL_URI} ({layers['today']} layers); now: {common.MODEL_URI} v{info['version']} "
          f"({layers['now']} layers)", flush=True)
    common.write_results("long_reviews", {
        "model_version": info["version"], "today_model": TODAY_MODEL_URI, "layers": layers, "variants": envs,
        "rounds": rounds, "seconds_per_round": seconds,
        "pool": {"texts": len(pool), "median_tokens": float(np.median(tokens)),
                 "p95_tokens": float(np.percentile(tokens, 95)), "max_tokens": int(tokens.max())},
        "rows": rows, "ratios": ratios(rows), "accuracy": accuracy,
    }, started, load_start)


if __name__ == "__main__":
    main()
