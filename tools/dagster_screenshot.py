"""screenshots/09-dagster-run.png: the training job's run in Dagster's UI, its steps and their metadata.

``python -m tools.dagster_screenshot`` (the ``[orchestrate]`` extra and Debian Chromium): in a throw-away
folder it runs the training job of :mod:`pipelines.orchestrate` on tiny parameters (real Rotten Tomatoes
snippets, the notebooks through the pipeline's runner, a SQLite MLflow store) into a Dagster home, starts
Dagster's webserver on that home on a free loopback port, and captures the run's page with headless Chromium
(:func:`tools.screenshots.browser`). Prints the run's id and the file written.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

from tools import harness
from tools.harness import ROOT, ServerProcess
from tools.screenshots import browser, tiny_dataset

SHOT = "09-dagster-run"


def run_training_job(home: Path, state: Path) -> str:
    """The training job in this process, recorded in the Dagster home's instance; its run id."""
    from dagster import DagsterInstance

    from pipelines.orchestrate.definitions import JOBS

    parameters = {"epochs": "1", "max_length": "32", "batch_size": "16", "min_metric": "0.0",
                  "dataset": str(tiny_dataset(state / "tiny.csv"))}
    with DagsterInstance.get() as instance:
        result = JOBS["training"].execute_in_process(
            run_config={"ops": {"start": {"config": {"parameters": parameters, "output_dir": str(state / "out")}}}},
            instance=instance)
    if not result.success:
        raise RuntimeError("the training job failed")
    return result.run_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.dagster_screenshot", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots", help="folder of the PNG")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dagster-shot-") as tmp:
        home, state = Path(tmp) / "dagster-home", Path(tmp) / "state"
        home.mkdir()
        state.mkdir()
        shutil.copy(ROOT / "deploy" / "dagster" / "dagster.yaml", home / "dagster.yaml")
        os.environ.update({"DAGSTER_HOME": str(home), "SENTIMENT_MLOPS_HOME": str(state)})
        run_id = run_training_job(home, state)
        port = harness.free_port()
        webserver = [str(Path(sys.executable).parent / "dagster-webserver"), "-m", "pipelines.orchestrate.definitions",
                     "--host", "127.0.0.1", "--port", str(port)]
        with ServerProcess(webserver, port, Path(tmp) / "webserver.log", {"DAGSTER_HOME": str(home)},
                           "/server_info", name="dagster-webserver") as server:
            server.wait_ready(timeout=240)
            with browser({"width": 1600, "height": 1000}) as context:
                page = context.new_page()
                page.goto(f"{server.url}/runs/{run_id}")
                page.get_by_text("RUN_SUCCESS").first.wait_for()  # the event log, down to the run's end
                page.get_by_text("executed notebook").first.wait_for(timeout=30_000)  # the ops' metadata
                skip = page.get_by_role("button", name="Skip")  # the UI's first-visit community dialog
                with contextlib.suppress(Exception):  # no dialog this time
                    skip.click(timeout=10_000)
                page.get_by_text("STEP_OUTPUT").first.scroll_into_view_if_needed()
                args.out.mkdir(parents=True, exist_ok=True)
                target = args.out / f"{SHOT}.png"
                page.screenshot(path=str(target))
    print(f"run {run_id}: {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
