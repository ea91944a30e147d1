"""HAProxy retries only requests that are safe to repeat (deploy/haproxy/haproxy.cfg.in).

The rendered config is checked by ``haproxy -c``; then a real HAProxy runs it in front of two real HTTP
backends that answer ``/ready`` and close the connection without an answer to anything else (what a replica
SIGKILLed mid-request does). Scoring requests are sent again (1 + ``retries`` attempts, to both backends);
``/feedback`` and ``/admin/*`` reach a backend exactly once.
"""

from __future__ import annotations

import re
import socket
import socketserver
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tools.harness import ServerProcess, free_port, wait_for
from tools.replicas import TEMPLATE, haproxy_binary, render_config

pytestmark = pytest.mark.skipif(haproxy_binary() is None, reason="haproxy is not installed (apt-get install haproxy)")
RETRIES = int(re.search(r"^\s*retries (\d+)", TEMPLATE.read_text(), re.MULTILINE).group(1))
SCORING = ["/predict", "/predict/batch", "/invocations", "/v2/models/sentiment/infer",
           "/v2/models/sentiment/versions/3/infer"]
NOT_REPEATABLE = ["/feedback", "/admin/reload", "/admin/reload?force=true"]


class DroppingBackend(socketserver.ThreadingTCPServer):
    """Answers ``GET /ready`` with 200; reads any other request whole, records it and closes without an answer."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), DroppingHandler)
        self.attempts: Counter[str] = Counter()
        self.lock = threading.Lock()


class DroppingHandler(socketserver.StreamRequestHandler):
    server: DroppingBackend

    def handle(self) -> None:
        while True:
            request_line = self.rfile.readline().decode("latin-1").strip()
            if not request_line:
                return
            headers = {}
            while (line := self.rfile.readline().decode("latin-1").strip()):
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            self.rfile.read(int(headers.get("content-length", 0)))
            method, target, _ = request_line.split(" ", 2)
            if target == "/ready":
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                self.wfile.flush()
                continue
            with self.server.lock:
                self.server.attempts[f"{method} {target}"] += 1
            return  # closed without a byte of answer: HAProxy sees an empty response


@pytest.fixture(scope="module")
def balancer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[DroppingBackend]]]:
    run_dir = tmp_path_factory.mktemp("haproxy")
    backends = [DroppingBackend(), DroppingBackend()]
    for backend in backends:
        threading.Thread(target=backend.serve_forever, daemon=True).start()
    port = free_port()
    config = run_dir / "haproxy.cfg"
    config.write_text(render_config(port, [b.server_address[1] for b in backends], run_dir))
    haproxy = ServerProcess([haproxy_binary(), "-f", str(config), "-db"], port, run_dir / "haproxy.log",
                            ready_path="/ready", name="haproxy")
    try:
        haproxy.wait_ready(60)
        wait_for(lambda: "r1" in _up(run_dir) and "r2" in _up(run_dir), timeout=30)
        yield haproxy.url, backends
    finally:
        haproxy.stop()
        for backend in backends:
            backend.shutdown()
            backend.server_close()


def _up(run_dir: Path) -> str:
    """The servers HAProxy has in rotation (its runtime API: show servers state; operational state 2 = up)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(run_dir / "haproxy.sock"))
        sock.sendall(b"show servers state replicas\n")
        text = b"".join(iter(lambda: sock.recv(65536), b"")).decode()
    rows = [line.split() for line in text.splitlines()[2:]]
    return " ".join(row[3] for row in rows if len(row) > 5 and row[5] == "2")


def test_the_rendered_config_is_valid(tmp_path):
    config = tmp_path / "haproxy.cfg"
    config.write_text(render_config(free_port(), [free_port(), free_port()], tmp_path))
    check = subprocess.run([haproxy_binary(), "-c", "-f", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "http-request disable-l7-retry unless METH_POST scoring" in config.read_text()


def attempts(backends: list[DroppingBackend], key: str) -> int:
    return sum(b.attempts[key] for b in backends)


@pytest.mark.parametrize("path", SCORING)
def test_a_dropped_scoring_request_is_sent_again(balancer, path):
    url, backends = balancer
    answer = httpx.post(url + path, json={"text": "fine"}, timeout=30)
    assert answer.status_code == 502
    assert attempts(backends, f"POST {path}") == 1 + RETRIES
    assert all(b.attempts[f"POST {path}"] for b in backends)  # redispatched to the other replica


@pytest.mark.parametrize("path", NOT_REPEATABLE)
def test_feedback_and_admin_requests_are_never_sent_twice(balancer, path):
    url, backends = balancer
    answer = httpx.post(url + path, json={"text": "fine", "label": "positive"}, timeout=30)
    assert answer.status_code == 502
    assert attempts(backends, f"POST {path}") == 1


def test_a_scoring_path_with_another_method_is_not_repeated(balancer):
    url, backends = balancer
    assert httpx.get(url + "/predict", timeout=30).status_code == 502
    assert attempts(backends, "GET /predict") == 1
