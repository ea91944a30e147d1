"""environment.yml and the venv describe the same environment: pyproject.toml at the dev lock's versions."""

import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    python = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert python == ["python=3.11"] and project["requires-python"].startswith(">=3.11")
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip == ["-r requirements/dev.lock", "-e .[dev]"]  # the lock first: -e then changes nothing


def test_torch_and_transformers_are_pinned_as_required():
    deps = {Requirement(s).name: Requirement(s) for s in tomllib.loads((ROOT / "pyproject.toml").read_text())
            ["project"]["dependencies"]}
    assert str(deps["torch"].specifier) == "==2.13.0"
    assert deps["transformers"].specifier.contains("5.20.2") and not deps["transformers"].specifier.contains("5.21.0")
