"""Full-length reviews under load: today's long-text scoring vs the levers of issue 16, side by side.

The pool: the test split's review proxies (a critic's snippets of one movie and label with the
movie's plot summary; median ≈ 220 tokens, like real full-length reviews). One app server per
variant (the production version exported twice: today's int8 graph and this code's, see
:func:`exported_folders`; ``BACKEND=onnx-int8``, micro-batching on), all running at once and
driven in turn (rounds alternating) by 1 and 8 closed-loop clients, each client sending the pool in
its own order (the same for every server). Next to the speed, each variant's long-text accuracy
in-process with the same int8 runtime: on the validation long texts, where its aggregation and
long-text threshold are chosen by the train step's rule, and on the test long texts.

    python -m bench.long_reviews       # BENCH_QUICK=1: one short round
    BENCH_TODAY_MODEL_URI=models:/sentiment/1 python -m bench.long_reviews

``today`` serves ``BENCH_TODAY_MODEL_URI`` when it is set: the model of before the change, e.g. a 6-layer
version trained with ``-p distill_layers 0`` beside a distilled production version, so the ratios include
the model's own change (``BENCH_TODAY_TRACKING_URI``: the store that holds it, if another); otherwise every
variant serves the production version.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench import common, serving

# today = the scorer before issue 16: int8 one window per call, windows overlapping by 16, up to 16 of them,
# mean probability, threshold 0.5 (explicit, so the variant does not depend on what the model saved), one ONNX
# Runtime call at a time on all cores, on the graph of then (see exported_folders)
TODAY = {"INT8_CALLS": "window", "WINDOW_STRIDE": "16", "MAX_WINDOWS": "16", "AGGREGATION": "prob_length",
         "LONG_THRESHOLD": "0.5", "ONNX_PARALLEL": "1"}
VARIANTS: dict[str, dict[str, str]] = {
    "today": TODAY,
    "per-text": {"INT8_CALLS": "text", "WINDOW_STRIDE": "16", "MAX_WINDOWS": "16", "ONNX_PARALLEL": "1"},
    "no-overlap": {"INT8_CALLS": "text", "WINDOW_STRIDE": "0", "MAX_WINDOWS": "16", "ONNX_PARALLEL": "1"},
    "in-turn": {"INT8_CALLS": "text", "WINDOW_STRIDE": "0", "MAX_WINDOWS": "8", "ONNX_PARALLEL": "1"},
    # calls side by side, one per core on one thread each (ONNX_PARALLEL's default), micro-batches overlapping
    "side-by-side": {"INT8_CALLS": "text", "WINDOW_STRIDE": "0", "MAX_WINDOWS": "8"},
    # the same on this code's graph: scoring.config's and the runtime's defaults
    "defaults": {"INT8_CALLS": "text", "WINDOW_STRIDE": "0", "MAX_WINDOWS": "8"},
    "max4": {"INT8_CALLS": "text", "WINDOW_STRIDE": "0", "MAX_WINDOWS": "4"},
    "truncate": {"LONG_TEXT_STRATEGY": "truncate", "INT8_CALLS": "text"},  # one window: the floor, not a candidate
}
# the variants served on the int8 graph of before issue 16 (graph "today"); the others on this code's ("now")
ON_TODAYS_GRAPH = ("today", "per-text", "no-overlap", "in-turn", "side-by-side")
CONCURRENCY = (1, 8)
TODAY_MODEL_URI = os.environ.get("BENCH_TODAY_MODEL_URI", "").strip() or common.MODEL_URI
TODAY_TRACKING_URI = os.environ.get("BENCH_TODAY_TRACKING_URI", "").strip()
SCORING_ENV = {"WINDOW_STRIDE": ("window_stride", int), "MAX_WINDOWS": ("max_windows", int),
               "LONG_TEXT_STRATEGY": ("long_text_strategy", str), "AGGREGATION": ("aggregation", str),
               "LONG_THRESHOLD": ("long_threshold", float)}


def variant_scorer(base: Any, env: dict[str, str]) -> Any:
    """The int8 scorer ``base`` (shared session) as the variant's server scores: calls and windows."""
    update = {field: kind(value) for key, (field, kind) in SCORING_ENV.items() if (value := env.get(key)) is not None}
    scorer = base.with_scoring(base.scoring.model_copy(update=update))
    scorer.per_text = env.get("INT8_CALLS", "text") == "text"
    scorer.batch_size = 64 if scorer.per_text else 1
    return scorer


def exported_folders(root: Path) -> dict[str, Path]:
    """Two model folders the app serves: ``today``, :data:`TODAY_MODEL_URI` with the int8 graph as it was run before
    issue 16 (SDPA attention; every ONNX Runtime rewrite, applied here and saved, so that the server's
    :data:`~scoring.onnx_runtime.DISABLED_OPTIMIZERS` leave it unchanged), and ``now``, the production version with
    this code's export."""
    import onnxruntime as ort

    from pipelines.registry.model_folder import export_model
    from scoring.model_files import load_components
    from scoring.onnx_convert import EXPORT_ATTENTION, FILES, ONNX_DIR, export_onnx, quantize_int8

    folders = {}
    for graph, attention in (("today", "sdpa"), ("now", EXPORT_ATTENTION)):
        folder = root / graph
        if graph == "today":
            export_today(folder)
        else:
            export_model(common.MODEL_URI, folder)
        model, tokenizer = load_components(str(folder))
        onnx = folder / ONNX_DIR
        onnx.mkdir(exist_ok=True)
        fp32 = export_onnx(model, tokenizer, onnx / FILES[False], attention=attention)
        if graph == "today":
            int8 = quantize_int8(fp32, root / "today-int8.onnx")
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED  # portable rewrites
            options.optimized_model_filepath = str(onnx / FILES[True])
            ort.InferenceSession(str(int8), options, providers=["CPUExecutionProvider"])
            int8.unlink()
        else:
            quantize_int8(fp32, onnx / FILES[True])
        folders[graph] = folder
    return folders


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
    import json

    from scoring.model_files import model_file

    return int(json.loads(model_file(str(folder), "model/config.json").read_text())["num_hidden_layers"])


def graph_of(variant: str) -> str:
    return "today" if variant in ON_TODAYS_GRAPH else "now"


def base_scorers(folders: dict[str, Path]) -> dict[str, Any]:
    """The int8 scorer of each graph in-process."""
    from scoring.runtimes import load_scorer

    return {graph: load_scorer(str(folder), "onnx-int8", parallel=1) for graph, folder in folders.items()}


def accuracy_table(bases: dict[str, Any], validation: pd.DataFrame, test: pd.DataFrame) -> tuple[
        list[dict[str, Any]], dict[str, dict[str, str]]]:
    """Per variant: aggregation and threshold chosen on validation (today's kept as they were), long-text
    metrics on validation and test, windows per text; and the server settings that apply the choice."""
    from pipelines.evaluate.aggregation import calibrate
    from pipelines.evaluate.metrics import classification_metrics

    rows, envs = [], {}
    for name, env in VARIANTS.items():
        scorer = variant_scorer(bases[graph_of(name)], env)
        if name != "today" and scorer.scoring.long_text_strategy == "sliding_window":
            # what the train step would save (it chooses with PyTorch; here with the served runtime)
            scorer.scoring, _ = calibrate(scorer, validation["text"].tolist(), validation["label"].to_numpy())
        envs[name] = {**env, "AGGREGATION": scorer.scoring.aggregation,
                      "LONG_THRESHOLD": str(scorer.scoring.long_threshold)}
        row: dict[str, Any] = {"variant": name, "aggregation": scorer.scoring.aggregation,
                               "long_threshold": scorer.scoring.long_threshold}
        for split, frame in (("val", validation), ("test", test)):
            texts = frame["text"].tolist()
            metrics = classification_metrics(frame["label"].to_numpy(), scorer.predict_proba(texts))
            row.update({f"{split}_{k}": metrics[k] for k in ("accuracy", "precision", "recall", "roc_auc")})
            row[f"{split}_windows_per_text"] = len(scorer.windows(texts)[0]) / len(texts)
        rows.append(row)
    return rows, envs


def long_texts_of(frame: pd.DataFrame) -> pd.DataFrame:
    """A split's long proxies and review proxies, all of them."""
    from pipelines.evaluate.long_texts import long_sets

    return pd.concat(long_sets(frame, n=len(frame)).values(), ignore_index=True)


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
    """Per variant at 8 clients: req/s and p99 relative to ``today`` (goals: ≥ 3× and ≤ 1/3)."""
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
    validation, test = long_texts_of(splits.validation), long_texts_of(splits.test)
    log_dir = Path(tempfile.mkdtemp(prefix="bench-long-"))
    folders = exported_folders(log_dir)
    bases = base_scorers(folders)
    accuracy, envs = accuracy_table(bases, validation, test)
    envs = {name: {**env, "MODEL_URI": str(folders[graph_of(name)])} for name, env in envs.items()}
    pool = long_sets(splits.test, n=len(splits.test))["reviews"]["text"].tolist()
    tokens = token_lengths(bases["now"].tokenizer, pool)
    layers = {graph: model_layers(folder) for graph, folder in folders.items()}
    rounds, seconds = (1, 3.0) if common.QUICK else (2, 8.0)
    servers = serving.make_servers(list(envs), uri, log_dir, envs)
    print(f"starting {', '.join(envs)} (logs in {log_dir}); pool of {len(pool)} reviews, median "
          f"{np.median(tokens):.0f} tokens", flush=True)
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
    print(f"today: {TODAY_MODEL_URI} ({layers['today']} layers); the others: {common.MODEL_URI} v{info['version']} "
          f"({layers['now']} layers)", flush=True)
    common.write_results("long_reviews", {
        "model_version": info["version"], "today_model": TODAY_MODEL_URI, "layers": layers,
        "variants": {name: {"graph": graph_of(name), **{k: v for k, v in env.items() if k != "MODEL_URI"}}
                     for name, env in envs.items()}, "rounds": rounds, "seconds_per_round": seconds,
        "pool": {"texts": len(pool), "median_tokens": float(np.median(tokens)),
                 "p95_tokens": float(np.percentile(tokens, 95)), "max_tokens": int(tokens.max())},
        "long_texts": {"validation": len(validation), "test": len(test)},
        "rows": rows, "ratios": ratios(rows), "accuracy": accuracy,
    }, started, load_start)


if __name__ == "__main__":
    main()
