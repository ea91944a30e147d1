"""The in-process floor: bare model forwards and full scoring calls, no HTTP.

Variants are timed round-robin (one call each, order alternating) so that load on a
shared machine hits them alike.  Also here: thread settings and batched tokenization.

    python -m bench.inprocess            # BENCH_QUICK=1 for fewer repetitions
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench import common

SHORT_TEXT = "A warm, funny and beautifully acted film that I would happily watch again."


def long_review(n_snippets: int = 12) -> str:
    """A full review: consecutive test-split snippets joined (several windows at max_length 64)."""
    from pipelines.config import PipelineConfig
    from pipelines.data.sources import load_dataset
    from pipelines.data.split import split

    cfg = PipelineConfig()
    _, _, test = split(load_dataset(cfg.dataset), cfg.val_size, cfg.test_size, cfg.seed)
    return " ".join(test["text"].iloc[:n_snippets])


def time_round_robin(fns: dict[str, Callable[[], Any]], rounds: int, block: int = 3) -> dict[str, list[float]]:
    """Seconds per call of each function: ``rounds`` rounds in alternating order, ``block`` calls per function
    and round, the first of each block untimed (it absorbs switching threads and caches between functions)."""
    for fn in fns.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _, name in common.interleaved(list(fns), rounds):
        fns[name]()
        for _ in range(block - 1):
            start = time.perf_counter()
            fns[name]()
            samples[name].append(time.perf_counter() - start)
    return samples


class Models:
    """The production model in PyTorch and in ONNX Runtime (fp32, int8) at a given thread count."""

    def __init__(self, model_uri: str = common.MODEL_URI):
        import mlflow
        import torch

        from scoring import onnx_runtime
        from scoring.model_files import load_components
        from scoring.version_tags import ONNX_PATHS, ONNX_RUN_ID

        self.torch = torch
        self.tags = common.ensure_onnx_logged(model_uri)
        self.model, self.tokenizer = load_components(model_uri)
        self.paths = {}
        for key, quantized in (("onnx", False), ("onnx-int8", True)):
            uri = f"runs:/{self.tags[ONNX_RUN_ID]}/{self.tags[ONNX_PATHS[quantized]]}"
            self.paths[key] = mlflow.artifacts.download_artifacts(artifact_uri=uri)
        self.onnx_runtime = onnx_runtime
        self._sessions: dict[tuple[str, int], Any] = {}

    def session(self, kind: str, threads: int) -> Any:
        if (kind, threads) not in self._sessions:
            self._sessions[kind, threads] = self.onnx_runtime.make_session(self.paths[kind], threads)
        return self._sessions[kind, threads]

    def scorer(self, kind: str, threads: int) -> Any:
        from scoring.scorer import Scorer

        if kind == "torch":
            return Scorer(self.model, self.tokenizer)
        scoring = Scorer(self.model, self.tokenizer).scoring
        return self.onnx_runtime.OnnxScorer(self.session(kind, threads), self.tokenizer, scoring)

    def forward_fns(self, windows: list[list[int]], threads: int) -> dict[str, Callable[[], Any]]:
        """Bare forwards (inputs already tokenized and padded) of torch fp32, ORT fp32 and ORT int8."""
        torch = self.torch
        enc = self.tokenizer.pad({"input_ids": windows}, return_tensors="pt")
        feeds = self.scorer("onnx", threads).feeds(windows)

        def torch_forward() -> Any:
            torch.set_num_threads(threads)
            with torch.inference_mode():
                return self.model(**enc).logits

        fns: dict[str, Callable[[], Any]] = {f"torch fp32 t{threads}": torch_forward}
        for kind, label in (("onnx", "ort fp32"), ("onnx-int8", "ort int8")):
            session = self.session(kind, threads)
            fns[f"{label} t{threads}"] = lambda s=session: s.run(["logits"], feeds)
        return fns


def thread_options() -> list[int]:
    nproc = common.machine()["nproc"] or 1
    return sorted({1, min(2, nproc), nproc})


def measure_floor(models: Models, texts: dict[str, str], rounds: int) -> dict[str, Any]:
    """Bare forwards and full ``predict_proba`` calls for each text, at each thread count."""
    scorer = models.scorer("torch", 1)
    out: dict[str, Any] = {"forward": {}, "predict_proba": {}, "windows": {}}
    for name, text in texts.items():
        windows, _ = scorer.windows([text])
        out["windows"][name] = {"windows": len(windows), "tokens": int(sum(len(w) for w in windows))}
        fns: dict[str, Callable[[], Any]] = {}
        for threads in thread_options():
            fns.update(models.forward_fns(windows, threads))
        out["forward"][name] = {k: common.latency_stats(v) for k, v in time_round_robin(fns, rounds).items()}
        full: dict[str, Callable[[], Any]] = {}
        for threads in thread_options():
            for kind, label in (("torch", "torch fp32"), ("onnx", "ort fp32"), ("onnx-int8", "ort int8")):
                s = models.scorer(kind, threads)

                def call(s: Any = s, t: int = threads, text: str = text) -> Any:
                    models.torch.set_num_threads(t)
                    return s.predict_proba([text])

                full[f"{label} t{threads}"] = call
        out["predict_proba"][name] = {k: common.latency_stats(v) for k, v in time_round_robin(full, rounds).items()}
    models.torch.set_num_threads(max(thread_options()))
    return out


def measure_tokenization(models: Models, texts: list[str], rounds: int) -> dict[str, Any]:
    """One tokenizer call per text vs one call for all; ``tokenizer.pad`` (torch tensors) vs numpy feeds."""
    tok = models.tokenizer
    scorer = models.scorer("onnx", 1)
    windows, _ = scorer.windows(texts)
    fns = {
        f"tokenize {len(texts)} texts one by one": lambda: [scorer.windows([t]) for t in texts],
        f"tokenize {len(texts)} texts in one call": lambda: scorer.windows(texts),
        "pad: tokenizer.pad → torch": lambda: tok.pad({"input_ids": windows}, return_tensors="pt"),
        "pad: numpy feeds (OnnxScorer)": lambda: scorer.feeds(windows),
    }
    return {k: common.latency_stats(v) for k, v in time_round_robin(fns, rounds).items()}


def floor_rows(floor: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for what in ("forward", "predict_proba"):
        for text, variants in floor[what].items():
            for variant, stats in variants.items():
                rows.append({"call": what, "text": text, "variant": variant, **floor["windows"][text],
                             "p50_ms": stats["p50_ms"], "p95_ms": stats["p95_ms"], "n": stats["n"]})
    return rows


def fastest(floor: dict[str, Any], what: str, text: str) -> tuple[str, float]:
    name, stats = min(floor[what][text].items(), key=lambda kv: kv[1]["p50_ms"])
    return name, stats["p50_ms"]


def main() -> None:
    started, load_start = time.perf_counter(), common.loadavg()
    common.use_store(common.tracking_uri())
    models = Models()
    rounds = 5 if common.QUICK else 15
    texts = {"short": SHORT_TEXT, "long": long_review()}
    floor = measure_floor(models, texts, rounds)
    batch = [SHORT_TEXT] * 4 + [long_review(3)] * 4
    tokenization = measure_tokenization(models, batch, rounds)
    print(common.table(floor_rows(floor)))
    print(common.table([{"step": k, **v} for k, v in tokenization.items()], ["step", "p50_ms", "p95_ms", "n"]))
    common.write_results("inprocess", {"model": common.production_info()["version"], "floor": floor,
                                       "tokenization": tokenization}, started, load_start)


if __name__ == "__main__":
    main()
