"""Closed-loop load through a balancer, recording who answered what: the replica tests' and benchmark's client.

Each of ``clients`` sends ``POST /predict`` and the next as soon as the answer comes, for ``seconds``; every
request becomes a :class:`Record` (start/end on one clock, status, ``X-Model-Version``, ``X-Replica``).  While
the load runs, ``events`` (coroutines: move the alias, kill or restart a replica) run beside it.  The analysis
functions turn records into the figures the issue asks for: failures and per-replica version switches.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

TEXTS = ("The movie was amazing: a warm, funny and beautifully acted film.",
         "A dull, lifeless mess. A complete waste of time.")


@dataclass(frozen=True)
class Record:
    start: float
    end: float
    status: int  # 0: no HTTP answer (connection error)
    version: str | None
    replica: str | None
    error: str = ""


async def closed_loop(url: str, clients: int, seconds: float,
                      events: Sequence[Callable[[float], Awaitable[Any]]] = (),
                      texts: Sequence[str] = TEXTS) -> tuple[list[Record], float, list[Any]]:
    """``clients`` closed-loop clients on ``url``/predict for ``seconds`` (and until every event has finished);
    the records, the start time (``time.monotonic``) and what each event returned (each gets the start time)."""
    records: list[Record] = []
    stop = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        started = time.monotonic()

        async def client(c: int) -> None:
            n = c
            while not stop.is_set():
                begin = time.monotonic()
                try:
                    async with session.post("/predict", json={"text": texts[n % len(texts)]}) as response:
                        await response.read()
                        records.append(Record(begin, time.monotonic(), response.status,
                                              response.headers.get("X-Model-Version"),
                                              response.headers.get("X-Replica")))
                except (TimeoutError, aiohttp.ClientError) as err:
                    records.append(Record(begin, time.monotonic(), 0, None, None, f"{type(err).__name__}: {err}"))
                n += 1

        async def timer() -> list[Any]:
            try:
                done = await asyncio.gather(asyncio.sleep(seconds), *(event(started) for event in events))
            finally:
                stop.set()
            return done[1:]

        *_, results = await asyncio.gather(*(client(c) for c in range(clients)), timer())
    return records, started, results


def failures(records: Sequence[Record]) -> list[Record]:
    return [r for r in records if r.status != 200]


def switches(records: Sequence[Record]) -> dict[str, dict[str, Any]]:
    """Per replica: the versions it answered (in order of first answer), changes in request-start order, flaps.

    ``changes`` can exceed the number of swaps by a request or two around a swap (requests sent together reach
    the replica in either order); a *flap* is what must never happen: an answer from an older version to a
    request that started after an answer from a newer version had come back from that replica (so it reached
    the replica after its swap).
    """
    out: dict[str, dict[str, Any]] = {}
    for replica in sorted({r.replica for r in records if r.replica}):
        mine = sorted((r for r in records if r.replica == replica and r.status == 200), key=lambda r: r.start)
        changes, first_seen, flaps = 0, {}, 0
        first_end: dict[str, float] = {}
        for prev, cur in itertools.pairwise(mine):
            changes += prev.version != cur.version
        for r in mine:
            first_seen.setdefault(r.version, r.start)
            first_end[r.version] = min(first_end.get(r.version, r.end), r.end)
        order = sorted(first_seen, key=first_seen.get)
        for r in mine:  # an answer from an older version after a newer one had been answered and returned
            newer = order[order.index(r.version) + 1:]
            flaps += any(r.start > first_end[v] for v in newer)
        out[replica] = {"versions": order, "changes": changes, "flaps": flaps, "first_seen": first_seen,
                        "answers": len(mine)}
    return out

