"""Server processes for tests, benchmarks and screenshots: one harness instead of one per caller.

A :class:`ServerProcess` runs a command in its own process group on a free loopback
port, with a child environment that is offline (no hub downloads, no telemetry) and
free of the MLflow state the calling process may have set (an active run, a registry
URI). ``wait_ready`` polls a path until it answers 200 and fails with the log's tail
if the process dies or time runs out; ``stop`` ends the whole group (SIGTERM, then
SIGKILL). Use it as a context manager::

    with ServerProcess(app_command(port), port, log, env={"MODEL_URI": uri}) as app:
        app.wait_ready()
        urllib.request.urlopen(app.url + "/predict", ...)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# offline and quiet, for anything started here
CHILD_ENV = {
    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
}
# set by mlflow.set_registry_uri / an active run in the calling process: never for the servers we start
INHERITED_MLFLOW_STATE = ("MLFLOW_RUN_ID", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(extra: dict[str, str] | None = None, drop: Sequence[str] = ()) -> dict[str, str]:
    """This process's environment without inherited MLflow state (and ``drop``), plus CHILD_ENV and ``extra``.

    The venv's ``bin`` comes first on PATH (``mlflow models serve`` execs ``uvicorn``).
    """
    # and no outer make's flags: a `make` run by a test under `make test ARGS=…` would inherit ARGS
    skip = set(INHERITED_MLFLOW_STATE) | {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"} | set(drop)
    env = {k: v for k, v in os.environ.items() if k not in skip} | CHILD_ENV | (extra or {})
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def http_status(url: str, timeout: float = 5, headers: dict[str, str] | None = None) -> int:
    """The HTTP status of a GET (error statuses included); OSError when nothing answers."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def wait_for(check: Callable[[], Any], timeout: float = 120, interval: float = 0.5) -> Any:
    """Call ``check`` until it returns something truthy; return it (AssertionError with the last value if not)."""
    deadline, value = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")


class ServerProcess:
    """``cmd`` listening on ``port`` of 127.0.0.1, output to ``log``, in its own process group."""

    def __init__(self, cmd: Sequence[str], port: int, log: Path, env: dict[str, str] | None = None,
                 ready_path: str = "/ready", headers: dict[str, str] | None = None, cwd: Path = ROOT,
                 name: str = "") -> None:
        self.cmd, self.port, self.log, self.cwd = list(cmd), port, Path(log), cwd
        self.env = child_env(env)
        self.ready_path, self.headers = ready_path, headers or {}
        self.name = name or Path(self.cmd[0]).name
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(self.cmd, cwd=self.cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def is_ready(self) -> bool:
        """One GET of ``ready_path``: True on 200 (False while nothing answers or it answers otherwise)."""
        try:
            return http_status(self.url + self.ready_path, headers=self.headers) == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = 300, interval: float = 0.5) -> ServerProcess:
        """Wait until ``ready_path`` answers 200; RuntimeError (with the log's tail) if the process exits first."""
        if self.proc is None:
            self.start()
        deadline = time.monotonic() + timeout
        while not self.is_ready():
            if not self.running():
                code = self.proc.returncode if self.proc else None
                raise RuntimeError(f"{self.name} on :{self.port} exited with {code}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: {self.url}{self.ready_path} not ready after {timeout:.0f}s:\n"
                                   f"{self.log_tail()}")
            time.sleep(interval)
        return self

    def log_tail(self, n: int = 60) -> str:
        if not self.log.is_file():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the server's process group (a replica killed or drained, in a test)."""
        if self.running():
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM the process group, wait ``timeout`` seconds, then SIGKILL; return the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


# -- the servers this project starts -------------------------------------------------------------
def app_server(log: Path, env: dict[str, str] | None = None, port: int | None = None,
               uvicorn_args: Sequence[str] = ()) -> ServerProcess:
    """The serving app, ``uvicorn app.main:app``, ready once a model is loaded (``/ready``)."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port),
           *uvicorn_args]
    return ServerProcess(cmd, port, log, env, "/ready", name="app")


def app_main_server(log: Path, env: dict[str, str] | None = None, port: int | None = None,
                    name: str = "app") -> ServerProcess:
    """The serving app as ``python -m app`` runs it (:mod:`app.server`: drains on SIGTERM), on 127.0.0.1:port."""
    port = port or free_port()
    env = {**(env or {}), "HOST": "127.0.0.1", "PORT": str(port)}
    return ServerProcess([sys.executable, "-m", "app"], port, log, env, "/ready", name=name)


def mlflow_server(tracking_uri: str, artifacts: Path, log: Path, port: int | None = None) -> ServerProcess:
    """``mlflow server`` on a store (UI, REST API), ready on ``/health``."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri,
           "--default-artifact-root", str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    return ServerProcess(cmd, port, log, ready_path="/health", name="mlflow-server")


def jupyter_lab(root: Path, workdir: Path, token: str, port: int | None = None) -> ServerProcess:
    """``jupyter lab`` from the venv (as ``make lab``) on ``root``, token auth, no news or update checks."""
    port = port or free_port()
    cmd = [str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser", f"--notebook-dir={root}",
           "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", "--LabApp.news_url=",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    cmd += ["--allow-root"] if os.geteuid() == 0 else []  # as `make lab` does (CI runs as root)
    settings = workdir / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)  # no "get Jupyter news?" toast, no update check
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
    env = {"JUPYTER_CONFIG_DIR": str(workdir / "jupyter-config"), "JUPYTER_RUNTIME_DIR": str(workdir / "jupyter-run"),
           "JUPYTERLAB_SETTINGS_DIR": str(workdir / "lab-settings")}
    return ServerProcess(cmd, port, workdir / "jupyter.log", env, "/api/status",
                         headers={"Authorization": f"token {token}"}, cwd=workdir, name="jupyter-lab")
