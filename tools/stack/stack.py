"""Start, stop and describe the whole stack, in dependency order; the env files clients source."""

from __future__ import annotations

import time
from pathlib import Path

from tools.stack.objectstore import ObjectStore
from tools.stack.postgres import Postgres
from tools.stack.processes import StackError, check_ports_free
from tools.stack.settings import StackSettings, write_private
from tools.stack.tracking_server import TrackingServer


class Stack:
    """PostgreSQL → the object store → the tracking server; ``down`` in the reverse order."""

    def __init__(self, settings: StackSettings | None = None) -> None:
        self.settings = settings or StackSettings()
        self.postgres = Postgres(self.settings)
        self.objectstore = ObjectStore(self.settings)
        self.server = TrackingServer(self.settings)

    def status(self) -> dict[str, bool]:
        return {"postgres": self.postgres.running(), "seaweedfs": self.objectstore.daemon.pid() is not None,
                "mlflow": self.server.daemon.pid() is not None}

    def up(self, log=print) -> float:
        """Start what is not running, wait until each part answers; seconds taken."""
        started = time.monotonic()
        s = self.settings
        s.home.mkdir(parents=True, exist_ok=True)
        running = self.status()
        owner = {"postgres": "postgres", "mlflow": "mlflow"}  # the other ports are SeaweedFS'
        needed = {name: port for name, port in s.ports().items() if not running[owner.get(name, "seaweedfs")]}
        check_ports_free(s.host, needed)
        if not running["postgres"]:
            log(f"postgres    starting on {s.host}:{s.postgres_port}")
            self.postgres.start()
        self.postgres.ensure_databases()
        if not running["seaweedfs"]:
            log(f"seaweedfs   starting, S3 on {s.s3_endpoint} (bucket {s.bucket})")
            self.objectstore.start()
        if not running["mlflow"]:
            log("mlflow      migrating the schemas (mlflow db upgrade, auth db upgrade)")
            self.server.migrate()
            log(f"mlflow      starting on {s.tracking_uri} (basic-auth, artifacts proxied to s3://{s.bucket})")
            self.server.start()
        else:
            self.server.ensure_users()
        for role in ("pipeline", "serving"):
            write_env_file(self.env_file(role), self.client_env(role))
        return time.monotonic() - started

    def down(self, log=print) -> None:
        for name, stop in (("mlflow", self.server.daemon.stop), ("seaweedfs", self.objectstore.daemon.stop),
                           ("postgres", self.postgres.stop)):
            log(f"{name:<11} {'stopped' if stop() else 'was not running'}")

    def env_file(self, role: str) -> Path:
        return self.settings.home / f"{role}.env"

    def client_env(self, role: str) -> dict[str, str]:
        """What a client of the stack holds: its MLflow login, for the API and monitor the log's database, and
        for the pipeline the sweeps' study database.

        No S3 keys: artifacts go through the tracking server.
        """
        if role not in ("pipeline", "serving"):
            raise StackError(f"unknown role {role!r}: pipeline or serving")
        s = self.settings
        return {
            "MLFLOW_TRACKING_URI": s.tracking_uri,
            "MLFLOW_TRACKING_USERNAME": role,
            "MLFLOW_TRACKING_PASSWORD": s.secret(f"{role}_password"),
            "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD": "true",
            "INFERENCE_DB": s.postgres_url("inference", "inference"),
            "INFERENCE_DB_PASSWORD": s.secret("inference_db_password"),
            **({"SWEEP_STORAGE": s.postgres_url("sweep", "optuna"),  # sweeps share their studies here
                "SWEEP_STORAGE_PASSWORD": s.secret("sweep_db_password")} if role == "pipeline" else {}),
        }


def write_env_file(path: Path, env: dict[str, str]) -> None:
    """``KEY=value`` lines (mode 0600), for ``set -a; . file; set +a`` or docker's ``--env-file``."""
    write_private(path, "".join(f"{key}={value}\n" for key, value in env.items()))
