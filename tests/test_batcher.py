"""Micro-batching of concurrent requests (app.batcher), with a fake model: no server, no weights."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from app.batcher import MicroBatcher


class FakeModel:
    """``score`` like app.model.LoadedModel: P(positive) = len(text) / 100, stats = (len, 0.0)."""

    __hash__ = None  # like LoadedModel (a dataclass holding unhashable fields): grouping must not hash models

    def __init__(self, delay: float = 0.01, fail: bool = False):
        self.calls: list[list[str]] = []
        self.delay, self.fail = delay, fail
        self.lock = threading.Lock()

    def score(self, texts: list[str], with_stats: bool) -> tuple[np.ndarray, list[tuple[int, float]]]:
        with self.lock:
            self.calls.append(list(texts))
            time.sleep(self.delay)
            if self.fail:
                raise RuntimeError("model broke")
            return np.array([len(t) / 100 for t in texts]), [(len(t), 0.0) for t in texts] if with_stats else []


def run(coro):
    return asyncio.run(coro)


def score_concurrently(model: FakeModel, batcher: MicroBatcher, requests: list[list[str]]) -> None:
    """Send ``requests`` at once; each gets its own answers, and every text was scored exactly once."""

    async def main():
        results = await asyncio.gather(*(batcher.score(model, r, True) for r in requests))
        await batcher.aclose()
        return results

    for texts, (probs, stats) in zip(requests, run(main()), strict=True):
        np.testing.assert_allclose(probs, [len(t) / 100 for t in texts])
        assert stats == [(len(t), 0.0) for t in texts]
    assert sorted(t for call in model.calls for t in call) == sorted(t for r in requests for t in r)


def test_concurrent_requests_share_model_calls_and_get_their_own_results() -> None:
    model = FakeModel()
    requests = [[f"text {'x' * i}"] if i % 3 else [f"a{i}", f"bb{i}"] for i in range(16)]
    score_concurrently(model, MicroBatcher(window_ms=5), requests)
    assert len(model.calls) < len(requests)  # batched


def test_a_lone_request_does_not_wait_for_the_window() -> None:
    model, batcher = FakeModel(delay=0), MicroBatcher(window_ms=500)

    async def main():
        started = time.perf_counter()
        for _ in range(3):
            await batcher.score(model, ["one"], False)
        await batcher.aclose()
        return time.perf_counter() - started

    assert run(main()) < 0.5
    assert model.calls == [["one"]] * 3


def test_batches_never_exceed_max_texts_and_keep_versions_apart() -> None:
    old, new, batcher = FakeModel(), FakeModel(), MicroBatcher(window_ms=5, max_texts=4)

    async def main():
        calls = [batcher.score(old if i % 2 else new, [str(i), str(i)], False) for i in range(10)]
        await asyncio.gather(*calls)
        await batcher.aclose()

    run(main())
    assert all(len(call) <= 4 for call in old.calls + new.calls)
    assert {t for c in old.calls for t in c} == {str(i) for i in range(1, 10, 2)}
    assert {t for c in new.calls for t in c} == {str(i) for i in range(0, 10, 2)}


def test_a_failing_model_fails_every_request_of_the_batch_and_the_batcher_goes_on() -> None:
    broken, batcher = FakeModel(fail=True), MicroBatcher(window_ms=5)

    async def main():
        outcomes = await asyncio.gather(*(batcher.score(broken, ["x"], False) for _ in range(4)),
                                        return_exceptions=True)
        assert all(isinstance(o, RuntimeError) for o in outcomes)
        probs, _ = await batcher.score(FakeModel(), ["fine"], False)
        await batcher.aclose()
        return probs

    np.testing.assert_allclose(run(main()), [0.04])


class OverlappingModel(FakeModel):
    """A model whose scoring calls may overlap (``calls_at_once``, like the int8 runtime's); counts how many do."""

    calls_at_once = 2

    def __init__(self, delay: float = 0.05):
        super().__init__(delay)
        self.running = self.most_at_once = 0

    def score(self, texts: list[str], with_stats: bool) -> tuple[np.ndarray, list[tuple[int, float]]]:
        with self.lock:
            self.calls.append(list(texts))
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(self.delay * len(texts))  # a batch takes as long as its texts
        with self.lock:
            self.running -= 1
        return np.array([len(t) / 100 for t in texts]), [(len(t), 0.0) for t in texts] if with_stats else []


def test_a_model_whose_calls_overlap_gets_that_many_batches_in_flight_never_more() -> None:
    """The next batch starts while the last one is scored (no core waits for a straggler), up to calls_at_once."""
    model = OverlappingModel()
    score_concurrently(model, MicroBatcher(window_ms=1, max_texts=2), [[f"t{i}" + "x" * i] for i in range(12)])
    assert model.most_at_once == 2
    assert FakeModel.__dict__.get("calls_at_once") is None  # the other tests' model: one batch at a time


def test_batches_of_an_overlapping_model_still_in_flight_finish_on_close() -> None:
    model, batcher = OverlappingModel(delay=0.1), MicroBatcher(window_ms=0)

    async def main():
        pending = [asyncio.ensure_future(batcher.score(model, [str(i)], False)) for i in range(2)]
        await asyncio.sleep(0.05)  # both batches are being scored
        await batcher.aclose()
        return await asyncio.wait_for(asyncio.gather(*pending), 5)  # a lost batch fails here, not hangs

    results = run(main())
    assert [float(probs[0]) for probs, _ in results] == [0.01, 0.01]


@pytest.mark.parametrize("window_ms", [0, 2])
def test_works_across_event_loops(window_ms: float) -> None:
    """A new event loop (each TestClient has one) gets a fresh worker."""
    model, batcher = FakeModel(delay=0), MicroBatcher(window_ms=window_ms)
    for _ in range(2):
        probs, _ = run(batcher.score(model, ["abc"], False))
        np.testing.assert_allclose(probs, [0.03])


@pytest.mark.parametrize("scoring", [{}, {"window_stride": 0, "max_windows": 8, "aggregation": "logit_confidence",
                                           "long_threshold": 0.45}], ids=["as-saved", "calibrated"])
def test_app_with_micro_batching_answers_concurrent_requests_like_the_batch_endpoint(
        learned_store, tmp_path, rt_frame, scoring) -> None:
    """Short sentences and long reviews (several windows, int8 scored one call per text): a text's answer is the
    same alone, amid concurrent requests (micro-batched) and in a batch request."""
    from concurrent.futures import ThreadPoolExecutor

    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    settings = Settings(model_uri=learned_store.model_uri, tracking_uri=learned_store.tracking_uri,
                        reload_interval_s=0, micro_batch_ms=5, torch_threads=1, inference_db=str(tmp_path / "log.db"),
                        **scoring)
    app = create_app(settings)
    texts = [f"{adjective} film, {n} stars" for n in range(4) for adjective in ("A wonderful", "A dreadful",
                                                                               "An uneven", "A dull, lifeless")]
    texts += [" ".join(rt_frame["text"].iloc[i : i + 4 + i % 9]) for i in range(0, 800, 100)]  # 2 to 6 windows
    with TestClient(app) as client:
        alone = [client.post("/predict", json={"text": t}).json() for t in texts]
        with ThreadPoolExecutor(8) as pool:
            singles = list(pool.map(lambda t: client.post("/predict", json={"text": t}), texts))
        batch = client.post("/predict/batch", json={"texts": texts}).json()["predictions"]
    assert all(r.status_code == 200 for r in singles)
    for one, single, expected in zip(alone, (r.json() for r in singles), batch, strict=True):
        assert single["sentiment"] == expected["sentiment"] == one["sentiment"]
        assert single["confidence"] == expected["confidence"] == one["confidence"]
    assert app.state.batcher.batches < 2 * len(texts) + 2  # some requests shared a model call
