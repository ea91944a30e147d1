"""The stack's ports, folders and secrets: from ``STACK_*`` environment variables, else defaults.

Secrets (passwords, S3 keys, signing keys) come from ``STACK_<NAME>``, or a file named by
``STACK_<NAME>_FILE``, or are generated once into ``<home>/secrets/<name>`` (mode 0600).
They are never written to the repository, to a log or to a command line.
"""

from __future__ import annotations

import os
import random
import secrets
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from scoring.tracking import state_dir
from tools.stack.processes import port_taken

# every secret the stack holds; the MLflow users' passwords are what people and services log in with
SECRETS = (
    "postgres_password",       # the PostgreSQL superuser (only the stack's own set-up uses it)
    "mlflow_db_password",      # role `mlflow`: the tracking server's backend and auth databases
    "inference_db_password",   # role `inference`: the API replicas' log and the monitor
    "sweep_db_password",       # role `sweep`: the sweeps' Optuna studies (python -m pipelines sweep)
    "s3_access_key", "s3_secret_key",  # the object store's one identity, held by the tracking server only
    "admin_password",          # MLflow user `admin`
    "pipeline_password",       # MLflow user `pipeline`: training, evaluation, promotion, monitor
    "serving_password",        # MLflow user `serving`: the API (reads the registry and the model)
    "flask_secret_key", "weed_jwt_write", "weed_jwt_read", "weed_filer_jwt_write", "weed_filer_jwt_read",
)


class StackSettings(BaseSettings):
    """Where the stack lives and listens (environment variable = ``STACK_`` + field name upper-cased)."""

    model_config = SettingsConfigDict(env_prefix="STACK_", case_sensitive=False, extra="ignore")

    home: Path = Field(default_factory=lambda: state_dir() / ".stack", description="state: data, logs, secrets")
    host: str = Field("127.0.0.1", description="every part binds here (loopback by default)")
    postgres_port: int = Field(5433, ge=1, le=65535)
    mlflow_port: int = Field(5050, ge=1, le=65535)
    mlflow_workers: int = Field(2, ge=1, description="uvicorn workers of the tracking server")
    s3_port: int = Field(8333, ge=1, le=65535)
    # SeaweedFS' internal servers (each also listens on port + 10000 for gRPC)
    weed_master_port: int = Field(9333, ge=1, le=55535)
    weed_volume_port: int = Field(9340, ge=1, le=55535)
    weed_filer_port: int = Field(8888, ge=1, le=55535)
    weed_admin_port: int = Field(23646, ge=1, le=55535)
    bucket: str = Field("mlflow", pattern=r"^[a-z0-9][a-z0-9.-]{2,62}$")
    ready_timeout_s: float = Field(120.0, gt=0)

    @property
    def tracking_uri(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://{self.host}:{self.s3_port}"

    def postgres_url(self, user: str, database: str) -> str:
        """A SQLAlchemy URL without its password (that goes in ``PGPASSWORD`` or the env file)."""
        return f"postgresql://{user}@{self.host}:{self.postgres_port}/{database}"

    def ports(self) -> dict[str, int]:
        """Every port the stack listens on, by what listens there."""
        weed = {"seaweedfs master": self.weed_master_port, "seaweedfs volume": self.weed_volume_port,
                "seaweedfs filer": self.weed_filer_port, "seaweedfs admin": self.weed_admin_port,
                "s3": self.s3_port}
        grpc = {f"{name} (gRPC)": port + 10000 for name, port in weed.items()}
        return {"postgres": self.postgres_port, "mlflow": self.mlflow_port, **weed, **grpc}

    def secret(self, name: str) -> str:
        """``STACK_<NAME>`` > the file ``STACK_<NAME>_FILE`` names > ``<home>/secrets/<name>`` (made once)."""
        if name not in SECRETS:
            raise KeyError(name)
        env = f"STACK_{name.upper()}"
        if os.environ.get(env):
            return os.environ[env]
        if os.environ.get(f"{env}_FILE"):
            return Path(os.environ[f"{env}_FILE"]).read_text().strip()
        path = self.home / "secrets" / name
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            value = secrets.token_hex(10) if name == "s3_access_key" else secrets.token_urlsafe(24)
            write_private(path, value, exclusive=True)  # never replace a secret another `up` just made
        return path.read_text().strip()


def write_private(path: Path, text: str, exclusive: bool = False) -> None:
    """Write ``text`` to ``path``, readable by its owner only (0600 from the start); ``exclusive``: a new file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC), 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def free_port_settings(home: Path, host: str = "127.0.0.1") -> StackSettings:
    """Settings for a throw-away stack in ``home`` on ports free right now (tests, benchmarks).

    SeaweedFS' ports are picked so that port + 10000 (its gRPC port) is free too.
    """
    chosen: set[int] = set()
    rng = random.Random()

    def pick(grpc: bool = False) -> int:
        while True:
            port = rng.randrange(20000, 45000)
            pair = {port, port + 10000} if grpc else {port}
            if not pair & chosen and not any(port_taken(host, p) for p in pair):
                chosen.update(pair)
                return port

    return StackSettings(
        home=home, host=host, postgres_port=pick(), mlflow_port=pick(), s3_port=pick(grpc=True),
        weed_master_port=pick(grpc=True), weed_volume_port=pick(grpc=True), weed_filer_port=pick(grpc=True),
        weed_admin_port=pick(grpc=True), mlflow_workers=1,
    )
