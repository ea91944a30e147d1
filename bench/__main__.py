"""``python -m bench [NAME ...]``: run the benchmarks (default: all) and refresh BENCHMARKS.md.

Each benchmark runs in its own process against one model store (resolved once here, see
:mod:`bench.common`).  ``BENCH_QUICK=1`` shortens every run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

from bench import common, report

ORDER = ("quality", "serving", "long_reviews", "training", "overhead", "replicas")
# run only when named: batch is about an hour (a file of 1M reviews), `make bench ARGS=batch`; team_stack
# about 15 minutes (the tiny pipeline twice against the team stack and twice against SQLite, docs/team.md)
# train_engine about 8 minutes (the old loop vs transformers.Trainer, one epoch each, twice)
# overload about 8 minutes (8/64/256 clients × 60 s, with PostgreSQL up, then stopped mid-run)
EXTRA = ("batch", "team_stack", "train_engine", "overload")
# safety limits in seconds (full runs take about 2, 5, 5, 8, 4, 9 and 60 minutes on 2 cores; longer on a busy machine)
LIMITS = {"quality": 600, "serving": 900, "long_reviews": 900, "training": 1500, "overhead": 900, "replicas": 1500,
          "batch": 3 * 3600, "team_stack": 3600, "train_engine": 3600,
          "overload": 1500}


def run(name: str, env: dict[str, str]) -> int:
    """Run ``bench.<name>`` in its own process group; past its limit, stop it and the servers it started."""
    proc = subprocess.Popen([sys.executable, "-m", f"bench.{name}"], cwd=common.ROOT, env=env,
                            start_new_session=True)
    try:
        return proc.wait(timeout=LIMITS[name])
    except subprocess.TimeoutExpired:
        print(f"{name} ran past its {LIMITS[name]} s limit: stopping it", flush=True)
        _stop_group(proc)
        return -1
    except KeyboardInterrupt:  # the group does not get the terminal's Ctrl-C
        _stop_group(proc)
        raise


def _stop_group(proc: subprocess.Popen) -> None:
    for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
            return


def main(argv: list[str]) -> int:
    names = argv or list(ORDER)
    unknown = [n for n in names if n not in ORDER + EXTRA]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {', '.join(ORDER + EXTRA)}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    uri = common.tracking_uri()
    print(f"benchmarks {', '.join(names)} on {common.MODEL_URI} in {uri} (quick: {common.QUICK}), "
          f"load average {common.loadavg()}", flush=True)
    env = {**os.environ, **common.CHILD_ENV, "BENCH_TRACKING_URI": uri}
    failed = []
    for name in names:
        t0 = time.perf_counter()
        print(f"\n=== {name} ===", flush=True)
        code = run(name, env)
        print(f"=== {name}: {'ok' if code == 0 else f'FAILED ({code})'} in {time.perf_counter() - t0:.0f}s ===",
              flush=True)
        if code:
            failed.append(name)
    report.main()
    print(f"\nall done in {time.perf_counter() - started:.0f}s" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
