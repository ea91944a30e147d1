"""What the team stack costs: the tiny pipeline against the stack vs against a local SQLite store.

``make bench ARGS=team_stack``. One throw-away stack (PostgreSQL + SeaweedFS + ``mlflow server
--app-name basic-auth``, ``tools.stack`` on free ports) and one throw-away SQLite store; the CLI runs
the same tiny pipeline (300 snippets, 1 epoch, max_length 32) against each, alternating (SQLite,
stack, stack, SQLite…), each run in a fresh state folder with its own experiment and registered model.
Reported: each step's seconds and the total, median per store, and the ratio stack / SQLite.
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import common
from pipelines.data.sources import clean, load_rotten_tomatoes
from tools.harness import child_env
from tools.stack import Stack
from tools.stack.settings import free_port_settings

TINY = {"epochs": "1", "max_length": "32", "min_metric": "0.0", "batch_size": "16"}
STEP_TIME = re.compile(r"^\[(\w+)\] done in (\d+)s", re.MULTILINE)


def run_pipeline(env: dict[str, str], data: Path, home: Path, experiment: str) -> dict[str, float]:
    """The CLI's tiny pipeline; seconds per step (as the runner prints them) and in all."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines", "run", "--output-dir", str(home / "out"),
         *[a for k, v in {**TINY, "dataset": str(data), "experiment_name": experiment,
                                 "registered_model_name": experiment}.items() for a in ("-p", k, v)]],
        cwd=common.ROOT, capture_output=True, text=True, env=child_env({**env, "SENTIMENT_MLOPS_HOME": str(home)}),
    )
    total = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"the pipeline failed:\n{proc.stderr[-3000:]}")
    return {**{step: float(s) for step, s in STEP_TIME.findall(proc.stdout + proc.stderr)}, "total": round(total, 1)}


def main() -> int:
    started, load = time.perf_counter(), common.loadavg()
    rounds = 1 if common.QUICK else 2
    work = Path(tempfile.mkdtemp(prefix="bench-team-stack-"))
    work.chmod(0o755)  # PostgreSQL runs as the postgres user under root
    data = work / "tiny.csv"
    clean(load_rotten_tomatoes()).sample(300, random_state=0).to_csv(data, index=False)
    stack = Stack(free_port_settings(work / "stack"))
    up_seconds = stack.up(log=lambda line: print(line, flush=True))
    stores = {"sqlite": {"MLFLOW_TRACKING_URI": f"sqlite:///{work / 'sqlite' / 'mlflow.db'}"},
              "stack": stack.client_env("pipeline")}
    (work / "sqlite").mkdir()
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in stores}
    try:
        for r, name in common.interleaved(list(stores), rounds):
            home = work / f"{name}-{r}"
            home.mkdir()
            timing = run_pipeline(stores[name], data, home, experiment=f"bench-{r}")
            runs[name].append(timing)
            print(f"round {r} {name:<6} " + "  ".join(f"{k} {v:.0f}s" for k, v in timing.items()), flush=True)
    finally:
        stack.down(log=lambda line: None)
        shutil.rmtree(work, ignore_errors=True)

    columns = ["eda", "train", "evaluate", "promote", "total"]
    median = {name: {c: statistics.median(t[c] for t in timings) for c in columns} for name, timings in runs.items()}
    rows = [{"store": name, **median[name]} for name in stores]
    rows.append({"store": "stack / sqlite", **{c: median["stack"][c] / median["sqlite"][c] for c in columns}})
    print(common.table(rows, ["store", *columns]))
    print(f"stack up (cold, first start) in {up_seconds:.0f} s")
    common.write_results("team_stack", {"rounds": rounds, "stack_up_seconds": round(up_seconds, 1),
                                        "median_seconds": median, "runs": runs,
                                        "ratio_total": round(median["stack"]["total"] / median["sqlite"]["total"], 3)},
                         started, load)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
