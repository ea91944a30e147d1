"""Background processes the stack owns: started detached with a pid file, stopped by process group."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path


class StackError(RuntimeError):
    """A problem the user can fix (a port taken, a binary missing, a service that did not come up)."""


def find_binary(name: str, *extra_dirs: Path, hint: str) -> str:
    """``name`` in the venv's bin, on PATH or in ``extra_dirs``; StackError with ``hint`` when absent."""
    venv_bin = Path(sys.executable).parent
    for folder in (venv_bin, *extra_dirs):
        if (folder / name).is_file() and os.access(folder / name, os.X_OK):
            return str(folder / name)
    found = shutil.which(name)
    if found:
        return found
    raise StackError(f"{name} not found ({hint})")


def port_taken(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def check_ports_free(host: str, ports: dict[str, int]) -> None:
    taken = [f"{port} ({name})" for name, port in ports.items() if port_taken(host, port)]
    if taken:
        raise StackError(
            f"port(s) already in use on {host}: {', '.join(taken)}; stop what listens there or choose other "
            "ports with STACK_*_PORT (python -m tools.stack --help lists them)"
        )


class Daemon:
    """One long-running process of the stack: ``run/<name>.pid``, ``logs/<name>.log``."""

    def __init__(self, name: str, home: Path) -> None:
        self.name = name
        self.pid_file = home / "run" / f"{name}.pid"
        self.log_file = home / "logs" / f"{name}.log"

    def pid(self) -> int | None:
        """The pid when the process is alive, else None (and a stale pid file is removed)."""
        try:
            pid = int(self.pid_file.read_text())
            os.kill(pid, 0)
        except (OSError, ValueError):
            self.pid_file.unlink(missing_ok=True)
            return None
        return pid

    def start(self, command: Sequence[str], env: dict[str, str], cwd: Path) -> int:
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(list(command), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid_file.write_text(str(proc.pid))
        return proc.pid

    def wait_ready(self, probe: Callable[[], bool], timeout: float) -> None:
        """Poll ``probe`` until it is true; StackError with the log's tail if the process dies or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pid() is None:
                raise StackError(f"{self.name} exited while starting; its log ({self.log_file}):\n{self.tail()}")
            try:
                if probe():
                    return
            except Exception:  # not answering yet
                pass
            time.sleep(0.5)
        raise StackError(f"{self.name} not ready after {timeout:.0f} s; its log ({self.log_file}):\n{self.tail()}")

    def stop(self, timeout: float = 20.0) -> bool:
        """SIGTERM to the process group, SIGKILL after ``timeout``; False when it was not running."""
        pid = self.pid()
        if pid is None:
            return False
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.2)
            if not _alive(pid):
                break
        self.pid_file.unlink(missing_ok=True)
        return True

    def tail(self, lines: int = 30) -> str:
        return log_tail(self.log_file, lines)


def log_tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` of a log file, or ``(no log)``."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # reap it when it is our child
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
