"""deploy/compose: the team stack for real deployments, checked offline (no image registry is reachable here).

``docker compose config -q`` (or Debian's ``docker-compose``) validates the file against the Compose
specification with throw-away secret files; the rest asserts what the file must keep true: only the
tracking server and the API are published, schemas are migrated by a one-shot step the server
waits for, every password comes from a secret file, and the scripts it runs parse.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

COMPOSE = Path(__file__).resolve().parent.parent / "deploy" / "compose"


@pytest.fixture(scope="module")
def spec() -> dict:
    return yaml.safe_load((COMPOSE / "compose.yaml").read_text())


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_the_compose_file_is_valid(tmp_path, spec):
    command = _compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor docker-compose is installed (CI installs Debian's docker-compose)")
    work = tmp_path / "compose"
    shutil.copytree(COMPOSE, work, ignore=shutil.ignore_patterns("secrets"))
    (work / "secrets").mkdir()
    for secret in spec["secrets"].values():
        (work / secret["file"]).write_text("not-a-real-secret\n")
    (work / "secrets" / "serving.env").write_text("MLFLOW_TRACKING_USERNAME=serving\nMLFLOW_TRACKING_PASSWORD=x\n")
    proc = subprocess.run([*command, "-f", str(work / "compose.yaml"), "config", "-q"], capture_output=True,
                          text=True, cwd=work)
    assert proc.returncode == 0, proc.stderr
    broken = work / "broken.yaml"
    broken.write_text((work / "compose.yaml").read_text().replace("    healthcheck:", "    healthcheckz:", 1))
    assert subprocess.run([*command, "-f", str(broken), "config", "-q"], capture_output=True,
                          cwd=work).returncode != 0, "the validation must catch an unknown key"


def test_only_the_tracking_server_and_the_api_are_published(spec):
    published = {name for name, service in spec["services"].items() if service.get("ports")}
    assert published == {"mlflow", "api"}


def test_schemas_are_migrated_once_before_the_server_starts(spec):
    services = spec["services"]
    assert services["mlflow-migrate"]["command"] == ["migrate"] and services["mlflow-migrate"]["restart"] == "no"
    condition = services["mlflow"]["depends_on"]["mlflow-migrate"]["condition"]
    assert condition == "service_completed_successfully"
    entrypoint = (COMPOSE / "mlflow-entrypoint.sh").read_text()
    assert 'mlflow db upgrade "$MLFLOW_BACKEND_STORE_URI"' in entrypoint
    assert "--app-name basic-auth" in entrypoint and "--serve-artifacts" in entrypoint


def test_no_secret_is_written_into_the_file(spec):
    text = (COMPOSE / "compose.yaml").read_text().lower()
    for service in spec["services"].values():
        for key, value in (service.get("environment") or {}).items():
            if any(word in key.lower() for word in ("password", "secret", "key")):
                assert key.endswith("_FILE") and str(value).startswith("/run/secrets/"), key
    assert "aws_secret_access_key" not in text and "password=" not in text
    assert "secrets/" in (COMPOSE / ".gitignore").read_text()


@pytest.mark.parametrize("script", sorted(p.name for p in COMPOSE.glob("*.sh")))
def test_the_scripts_parse(script):
    assert subprocess.run(["bash", "-n", str(COMPOSE / script)], capture_output=True).returncode == 0
