"""N replicas of the API behind HAProxy on this machine: ``make replicas N=3`` / ``make replicas-down``.

Each replica is its own ``python -m app`` process (its own model in memory, its own inference log file
unless ``INFERENCE_DB`` names a shared database, a drain on SIGTERM: :mod:`app.server`), like a pod;
HAProxy (Debian's ``haproxy`` package) balances them, health-checked on ``/ready``
(deploy/haproxy/haproxy.cfg.in).  :class:`Cluster` is what the CLI, the tests and the benchmark start;
``python -m tools.replicas up`` leaves it running and records it in ``RUN_DIR/state.json`` for ``down``.

    python -m tools.replicas up -n 3 --port 8000     # then: curl -i localhost:8000/predict -d '{"text": "..."}'
    python -m tools.replicas down
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

from tools.harness import ROOT, ServerProcess, app_main_server, free_port

TEMPLATE = ROOT / "deploy" / "haproxy" / "haproxy.cfg.in"
RUN_DIR = ROOT / ".replicas"
# what every replica gets unless the caller says otherwise: polling (jittered), a drain longer than the
# balancer's time to take a replica out (2 failed checks 500 ms apart), one thread each on this 2-core machine
# TRUST_FORWARDED_FOR: the balancer appends the caller's address (option forwardfor), the replicas record it
REPLICA_DEFAULTS = {"RELOAD_INTERVAL_S": "5", "DRAIN_S": "2", "GRACEFUL_TIMEOUT_S": "20", "ONNX_THREADS": "1",
                    "ONNX_PARALLEL": "1", "TORCH_THREADS": "1", "TRUST_FORWARDED_FOR": "true"}


def haproxy_binary() -> str | None:
    """The ``haproxy`` executable (Debian puts it in /usr/sbin, which a user's PATH may lack), or None."""
    return shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy")
                                            if os.access(p, os.X_OK)), None)


def render_config(port: int, replica_ports: list[int], run_dir: Path) -> str:
    """HAProxy's configuration: the template with the frontend's port and one ``server`` line per replica."""
    servers = "\n".join(f"    server r{i + 1} 127.0.0.1:{p} check" for i, p in enumerate(replica_ports))
    values = {"{bind}": f"127.0.0.1:{port}", "{servers}": servers, "{run_dir}": str(run_dir)}
    config = TEMPLATE.read_text()
    for placeholder, value in values.items():
        config = config.replace(placeholder, value)
    return config


class Cluster:
    """``n`` replicas (``python -m app``) on free ports behind HAProxy on ``port``; logs and config in ``run_dir``."""

    def __init__(self, n: int, env: dict[str, str], run_dir: Path, port: int | None = None) -> None:
        if n < 1:
            raise ValueError("at least one replica")
        binary = haproxy_binary()
        if binary is None:
            raise FileNotFoundError("haproxy is not installed (Debian: apt-get install haproxy)")
        self.run_dir = run_dir
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.env = {**REPLICA_DEFAULTS, **env}
        self.replicas = [self._replica(i, free_port()) for i in range(n)]
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = run_dir / "haproxy.cfg"
        config.write_text(render_config(self.port, [r.port for r in self.replicas], run_dir))
        self.balancer = ServerProcess([binary, "-f", str(config), "-db"], self.port, run_dir / "haproxy.log",
                                      ready_path="/ready", name="haproxy")

    def _replica(self, i: int, port: int) -> ServerProcess:
        # INFERENCE_DB given (a shared database, docs/team.md): every replica logs there; else a file each
        shared = self.env.get("INFERENCE_DB") or os.environ.get("INFERENCE_DB")
        env = {"INFERENCE_DB": shared or str(self.run_dir / f"r{i + 1}-inference.db"), **self.env}
        return app_main_server(self.run_dir / f"r{i + 1}.log", env, port, name=f"r{i + 1}")

    def start(self, timeout: float = 600) -> Cluster:
        """Start the replicas and the balancer; return once every replica and the balancer answer ``/ready``."""
        for replica in self.replicas:
            replica.start()
        deadline = time.monotonic() + timeout
        for replica in self.replicas:
            replica.wait_ready(max(deadline - time.monotonic(), 1))
        self.balancer.start().wait_ready(60)
        self.wait_in_rotation(len(self.replicas))
        return self

    def admin(self, command: str) -> str:
        """One command on HAProxy's runtime API (its stats socket), e.g. ``disable server replicas/r3``."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.run_dir / "haproxy.sock"))
            sock.sendall(command.encode() + b"\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return data.decode()

    def use(self, n: int) -> None:
        """Route to the first ``n`` replicas only (the others stay up, idle: MAINT in HAProxy)."""
        for i, replica in enumerate(self.replicas):
            self.admin(f"{'enable' if i < n else 'disable'} server replicas/{replica.name}")
        self.wait_in_rotation(n)

    def servers_up(self) -> dict[str, str]:
        """``{replica: HAProxy's status}`` (UP, DOWN, MAINT…) from the stats socket."""
        lines = self.admin("show stat").lstrip("# ").splitlines()
        header = lines[0].split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
        return {r["svname"]: r["status"] for r in rows if r.get("pxname") == "replicas" and r["svname"].startswith("r")}

    def wait_in_rotation(self, n: int, timeout: float = 30) -> None:
        """Wait until ``n`` replicas are UP in HAProxy."""
        deadline = time.monotonic() + timeout
        while sum(s == "UP" for s in self.servers_up().values()) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"HAProxy: {self.servers_up()} after {timeout}s")
            time.sleep(0.2)

    def restart(self, i: int, timeout: float = 300) -> float:
        """Rolling-restart step: SIGTERM replica ``i`` (it drains), wait for its exit, start it again on the same
        port and wait until it is ready and back in rotation; the seconds its exit took."""
        old = self.replicas[i]
        start = time.monotonic()
        old.signal(signal.SIGTERM)
        old.proc.wait(timeout)
        exited = time.monotonic() - start
        self.replicas[i] = self._replica(i, old.port)
        self.replicas[i].log = self.run_dir / f"r{i + 1}-restart-{int(time.time())}.log"
        self.replicas[i].start().wait_ready(timeout)
        self.wait_in_rotation(len(self.replicas))
        return exited

    def stop(self) -> None:
        """SIGTERM every replica (they drain together), then the balancer."""
        for replica in self.replicas:
            replica.signal(signal.SIGTERM)
        for replica in self.replicas:
            replica.stop(timeout=60)
        self.balancer.stop()

    def state(self) -> dict[str, object]:
        return {"url": self.url, "balancer": self.balancer.proc.pid if self.balancer.proc else None,
                "replicas": {r.name: {"pid": r.proc.pid if r.proc else None, "port": r.port, "log": str(r.log)}
                             for r in self.replicas}}

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _down(run_dir: Path, timeout: float = 60) -> int:
    """Stop what ``up`` started (SIGTERM to each process group; SIGKILL after ``timeout``)."""
    state_file = run_dir / "state.json"
    if not state_file.is_file():
        print(f"nothing to stop: no {state_file}")
        return 0
    state = json.loads(state_file.read_text())
    pids = [r["pid"] for r in state["replicas"].values()] + [state["balancer"]]
    for pid in pids:
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in pids:
        if _alive(pid):
            _signal_group(pid, signal.SIGKILL)
    state_file.unlink()
    print(f"stopped {len(pids) - 1} replica(s) and haproxy")
    return 0


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by init) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.replicas", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("up", "down"))
    parser.add_argument("-n", type=int, default=3, help="replicas (default 3)")
    parser.add_argument("--port", type=int, default=8000, help="the balancer's port (default 8000)")
    parser.add_argument("--run-dir", type=Path, default=RUN_DIR, help=f"logs, config, state (default {RUN_DIR})")
    args = parser.parse_args(argv)
    if args.command == "down":
        return _down(args.run_dir)
    if (args.run_dir / "state.json").is_file():
        print(f"already running ({args.run_dir / 'state.json'}): make replicas-down first", file=sys.stderr)
        return 1
    env = {k: os.environ[k] for k in ("MODEL_URI", "MLFLOW_TRACKING_URI", "BACKEND", "ADMIN_TOKEN", "FEEDBACK_TOKENS",
                                      "FEEDBACK_TOKENS_FILE") if k in os.environ}
    cluster = Cluster(args.n, env, args.run_dir, args.port)
    print(f"starting {args.n} replica(s) behind haproxy on :{args.port} (logs in {args.run_dir})", flush=True)
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    (args.run_dir / "state.json").write_text(json.dumps(cluster.state(), indent=2))
    print(json.dumps(cluster.state(), indent=2))
    print(f"ready: {cluster.url} (stop with `make replicas-down`)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
