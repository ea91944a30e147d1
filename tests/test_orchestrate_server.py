"""``make orchestrate``: Dagster's webserver and daemon on a Dagster home, serving the UI, stopping cleanly."""

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tools.harness import ServerProcess, free_port

pytest.importorskip("dagster")
ROOT = Path(__file__).resolve().parent.parent
VENV = Path(sys.executable).parent.parent

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(shutil.which("make") is None, reason="needs make")]


def test_make_orchestrate_serves_the_ui_and_stops(tmp_path: Path):
    home, port = tmp_path / "dagster-home", free_port()
    cmd = ["make", "-s", "-o", str(VENV / ".installed-stamp"), "orchestrate", f"VENV={VENV}", "ARGS=",
           f"DAGSTER_HOME={home}", f"DAGSTER_PORT={port}"]
    server = ServerProcess(cmd, port, tmp_path / "dagster.log", ready_path="/server_info", name="make orchestrate")
    with server:
        server.wait_ready(timeout=240)
        with urllib.request.urlopen(f"{server.url}/graphql?query=%7Bversion%7D", timeout=10) as reply:
            assert b"1.13.28" in reply.read()  # the GraphQL API the UI talks to
        with urllib.request.urlopen(f"{server.url}/runs", timeout=10) as reply:
            assert reply.status == 200 and b"<html" in reply.read().lower()
        assert (home / "dagster.yaml").read_text() == (ROOT / "deploy" / "dagster" / "dagster.yaml").read_text()
        code = server.stop(timeout=60)
    assert code is not None and server.proc.poll() is not None

    def left() -> list[str]:
        return subprocess.run(["pgrep", "-g", str(server.proc.pid)], capture_output=True, text=True).stdout.split()

    deadline = time.monotonic() + 60  # the webserver and the daemon shut down on their own after make's SIGTERM
    while left() and time.monotonic() < deadline:
        time.sleep(0.5)
    still = left()
    if still:
        os.killpg(server.proc.pid, signal.SIGKILL)
    assert not still, f"processes left in the group after 60 s: {still}\n{server.log_tail()}"
    assert "Shutting down Dagster services" in server.log_tail()
