"""deploy/compose: the team stack for real deployments, checked offline (no image registry is reachable here).

``docker compose config -q`` (or Debian's ``docker-compose``) validates the file against the Compose
specification with throw-away secret files; the rest asserts what the file must keep true: only the
tracking server and the API are published (on 127.0.0.1 unless ``BIND_ADDRESS`` says otherwise), every
PostgreSQL URL names its ``sslmode``, schemas are migrated by a one-shot step the server
waits for, every password comes from a secret file, and the scripts it runs parse.
"""

from __future__ import annotations

import re
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


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR:-default}`` / ``${VAR}`` interpolation of ``value`` with ``env``."""
    def one(match: re.Match) -> str:
        name, default = match.group(1), match.group(3) or ""
        return env.get(name) or default
    return re.sub(r"\$\{(\w+)(:-([^}]*))?\}", one, value)


def _environments(spec: dict) -> list[tuple[str, str, str]]:
    """(service, variable, value) of every environment entry, the shared ``x-`` blocks included."""
    blocks = {**{k: v for k, v in spec.items() if k.startswith("x-")}, **spec["services"]}
    return [(name, key, str(value)) for name, block in blocks.items()
            for key, value in (block.get("environment") or {}).items()]


def test_published_ports_bind_to_localhost_unless_told_otherwise(spec):
    published = [(name, str(port)) for name, service in spec["services"].items() for port in service.get("ports", [])]
    assert published
    for name, port in published:
        assert interpolate(port, {}).startswith("127.0.0.1:"), (name, port)
        assert interpolate(port, {"BIND_ADDRESS": "0.0.0.0"}).startswith("0.0.0.0:"), (name, port)


def test_every_postgresql_url_names_its_sslmode(spec):
    urls = [(name, key, value) for name, key, value in _environments(spec) if value.startswith("postgresql")]
    assert {key for _, key, _ in urls} == {"MLFLOW_BACKEND_STORE_URI", "MLFLOW_AUTH_DATABASE_URI", "INFERENCE_DB"}
    for name, key, value in urls:
        assert "sslmode=prefer" in interpolate(value, {}), (name, key)
        assert "sslmode=verify-full" in interpolate(value, {"PG_SSLMODE": "verify-full"}), (name, key)
