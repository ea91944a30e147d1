"""The interactive path: a notebook executed through a running JupyterLab, as a person would in ``make lab``.

``jupyter lab`` from the venv (the command ``make lab`` runs, started by
:func:`tools.harness.jupyter_lab`) serves a temporary root holding a copy of
notebooks/eda.ipynb, on loopback with token auth.  Through its REST
API the test opens a session (which starts the notebook's ``python3`` kernel), then
sends each cell as an ``execute_request`` over the kernel's websocket, with the
parameters cell edited to a tiny dataset, the way a user edits it before running all.
"""

from __future__ import annotations

import json
import secrets
import shutil
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import websocket
from mlflow import MlflowClient

from tools.harness import jupyter_lab

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@dataclass
class Lab:
    """A running ``jupyter lab`` and how to talk to it."""

    url: str
    token: str
    root: Path

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            f"{self.url}{path}", method=method, data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                raw = response.read()
                status = response.status
        except urllib.error.HTTPError as err:
            raw, status = err.read(), err.code
        kind = "json" if raw[:1] in (b"{", b"[") else "text"
        return status, json.loads(raw) if kind == "json" else raw.decode(errors="replace")


@pytest.fixture
def lab(tmp_path: Path, mlflow_uri: str) -> Iterator[Lab]:
    """``jupyter lab`` on a free loopback port, root = a temp folder with eda.ipynb, MLflow = a temp store."""
    root = tmp_path / "lab"
    root.mkdir()
    shutil.copy(ROOT / "notebooks" / "eda.ipynb", root / "eda.ipynb")
    token = secrets.token_hex(16)
    server = jupyter_lab(root, tmp_path, token)  # MLflow = $MLFLOW_TRACKING_URI, set by mlflow_uri
    try:
        server.start().wait_ready(timeout=180, interval=1)
        yield Lab(server.url, token, root)
    finally:
        server.stop(timeout=30)


class Kernel:
    """A kernel's websocket channels: ``execute`` runs code like a notebook cell and returns its outputs."""

    def __init__(self, lab: Lab, kernel_id: str) -> None:
        self.session = uuid.uuid4().hex
        url = f"{lab.url.replace('http', 'ws', 1)}/api/kernels/{kernel_id}/channels?session_id={self.session}"
        self.ws = websocket.create_connection(url, header=[f"Authorization: token {lab.token}"], timeout=600)

    def execute(self, code: str) -> list[dict[str, Any]]:
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "session": self.session, "username": "test",
                       "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True},
        }))
        outputs: list[dict[str, Any]] = []
        reply: dict[str, Any] | None = None
        idle = False
        while reply is None or not idle:
            msg = json.loads(self.ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["header"]["msg_type"]
            if kind == "execute_reply":
                reply = msg["content"]
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                idle = True
            elif kind in ("stream", "execute_result", "display_data", "error"):
                outputs.append({"type": kind, **msg["content"]})
        if reply["status"] != "ok":
            raise AssertionError(f"cell failed: {reply.get('ename')}: {reply.get('evalue')}\n{code[:500]}\n"
                                 + "\n".join(reply.get("traceback", [])))
        return outputs

    def close(self) -> None:
        self.ws.close()


def _text(outputs: list[dict[str, Any]]) -> str:
    return "\n".join(o.get("text") or o.get("data", {}).get("text/plain", "") for o in outputs)


def test_eda_notebook_runs_through_jupyterlab(lab: Lab, tiny_csv: Path, mlflow_uri: str) -> None:
    assert lab.api("GET", "/lab")[0] == 200  # the JupyterLab UI itself is served
    status, spec = lab.api("GET", "/api/kernelspecs")
    assert status == 200 and spec["default"] == "python3"
    status, model = lab.api("GET", "/api/contents/eda.ipynb?content=1")
    assert status == 200
    notebook = model["content"]
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    status, session = lab.api("POST", "/api/sessions", {"path": "eda.ipynb", "name": "eda.ipynb", "type": "notebook",
                                                        "kernel": {"name": "python3"}})
    assert status == 201, session
    kernel = Kernel(lab, session["kernel"]["id"])
    try:
        # the kernel `python3` is the venv's own interpreter, with the project importable
        where = _text(kernel.execute("import sys, pipelines; print(sys.prefix); print(pipelines.__file__)"))
        assert where.splitlines()[0] == sys.prefix
        assert Path(where.splitlines()[1]).is_relative_to(ROOT)
        outputs: dict[str, list[dict[str, Any]]] = {}
        for cell in notebook["cells"]:
            if cell["cell_type"] != "code":
                continue
            source = cell["source"]
            if "parameters" in cell["metadata"].get("tags", []):
                source += f"\ndataset = {str(tiny_csv)!r}\nmax_length = 32\n"  # what a user edits before Run All
            outputs[cell["id"]] = kernel.execute(source)
    finally:
        kernel.close()
        lab.api("DELETE", f"/api/sessions/{session['id']}")
    shown = "\n".join(_text(o) for o in outputs.values())
    assert "'clean_texts': 300" in shown  # the data-quality cell's result
    assert not any(o["type"] == "error" for out in outputs.values() for o in out)
    client = MlflowClient(mlflow_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("sentiment").experiment_id], "tags.step = 'eda'")
    assert run.info.status == "FINISHED"
    assert run.data.tags["launched_by"] == "notebook"  # standalone, not the Papermill runner
    assert run.data.metrics["data_clean_texts"] == 300
    assert "plots/class_balance.png" in {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
