"""The lock files (``make lock``) agree with pyproject.toml, with each other and with the venv the tests run in.

The dev venv and CI install ``requirements/dev.lock``, the Docker image ``requirements/serve.lock``:
so the image runs the versions the tests ran.
"""

from __future__ import annotations

import importlib.metadata as md
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tools.lock import DEV_LOCK, SERVE_LOCK, read_lock

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
DEV, SERVE = read_lock(DEV_LOCK), read_lock(SERVE_LOCK)


@pytest.mark.parametrize(
    ("lock", "requirements"),
    [
        (DEV, PROJECT["dependencies"] + PROJECT["optional-dependencies"]["dev"]),
        (SERVE, PROJECT["optional-dependencies"]["serve"]),
        (DEV, PROJECT["optional-dependencies"]["spark"]),  # CI runs the Spark tests from the dev lock
    ],
    ids=["dev", "serve", "spark-in-dev"],
)
def test_each_requirement_of_pyproject_is_locked_within_its_range(lock, requirements):
    for spec in requirements:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in lock, f"{req.name} is not in the lock: run make lock"
        assert req.specifier.contains(lock[name], prereleases=True), f"{spec} vs locked {lock[name]}: run make lock"


def test_the_image_runs_the_dev_venv_versions():
    assert SERVE, "empty serve lock"
    assert {name: DEV.get(name) for name in SERVE} == SERVE
    assert "pyspark" not in SERVE, "the image never runs Spark"


def test_this_venv_is_the_dev_lock():
    installed = {canonicalize_name(d.metadata["Name"]): Version(d.version).public for d in md.distributions()}
    differ = {name: (version, installed.get(name)) for name, version in DEV.items() if installed.get(name) != version}
    assert not differ, f"installed versions differ from requirements/dev.lock (make install): {differ}"
