"""Notebooks in git carry no outputs or execution counts, and ``make strip-notebooks`` restores that form."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def test_there_are_notebooks() -> None:
    assert {"eda.ipynb", "train.ipynb", "evaluate.ipynb", "promote.ipynb"} <= {p.name for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_clean(path: Path) -> None:
    nbformat.validate(nbformat.read(path, as_version=4))
    nb = _load(path)
    assert "papermill" not in nb["metadata"], "run metadata committed: make strip-notebooks"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    ids = [cell.get("id") for cell in nb["cells"]]
    assert all(ids) and len(set(ids)) == len(ids), "every cell needs its own id"
    for cell in nb["cells"]:
        assert "papermill" not in cell["metadata"] and "execution" not in cell["metadata"], cell["id"]
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], f"{cell['id']} has outputs: make strip-notebooks"
            assert cell["execution_count"] is None, f"{cell['id']} has an execution count: make strip-notebooks"
    tagged = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1 and tagged[0]["cell_type"] == "code", "exactly one code cell tagged `parameters`"


def _dirty(nb: dict[str, Any]) -> dict[str, Any]:
    """What a Papermill run and a JupyterLab save add to a notebook."""
    nb = json.loads(json.dumps(nb))
    nb["metadata"]["papermill"] = {"duration": 1.5, "parameters": {"epochs": 1}}
    nb["metadata"]["language_info"].update(version="3.11.2", mimetype="text/x-python", file_extension=".py",
                                           codemirror_mode={"name": "ipython", "version": 3},
                                           nbconvert_exporter="python", pygments_lexer="ipython3")
    for count, cell in enumerate(nb["cells"], 1):
        cell["metadata"].update(papermill={"status": "completed"}, execution={"iopub.status.idle": "x"},
                                ExecuteTime={"end_time": "x"})
        if cell["cell_type"] == "code":
            cell["execution_count"] = count
            cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["hello\n"]},
                               {"output_type": "execute_result", "execution_count": count, "metadata": {},
                                "data": {"text/plain": ["42"]}}]
    return nb


@pytest.mark.skipif(shutil.which("make") is None or not (ROOT / ".venv" / "bin" / "nbstripout").exists(),
                    reason="needs make and the project's .venv (make install)")
def test_make_strip_notebooks_restores_the_committed_form(tmp_path: Path) -> None:
    for path in NOTEBOOKS:
        (tmp_path / path.name).write_text(json.dumps(_dirty(_load(path)), indent=1), encoding="utf-8")
    # -o: never reinstall the venv from inside a test
    done = subprocess.run(["make", "-s", "-o", ".venv/.installed-stamp", "strip-notebooks",
                           f"NOTEBOOKS={tmp_path}/*.ipynb"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for path in NOTEBOOKS:
        stripped = (tmp_path / path.name).read_text(encoding="utf-8")
        assert stripped == path.read_text(encoding="utf-8"), f"{path.name}: make strip-notebooks changes it"
        assert any("parameters" in c["metadata"].get("tags", []) for c in json.loads(stripped)["cells"])
