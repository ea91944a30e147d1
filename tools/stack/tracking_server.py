"""MLflow's tracking server with logins (``--app-name basic-auth``), on PostgreSQL, artifacts proxied to S3.

Schemas are migrated by separate steps before the server starts (``mlflow db upgrade`` and the
auth app's own ``db upgrade``), so that several servers starting at once never migrate together
(mlflow#1948). The server alone holds the S3 keys (``--serve-artifacts``): clients send and fetch
artifacts through it with their MLflow login. Passwords reach it through the environment
(``PGPASSWORD``, ``MLFLOW_AUTH_ADMIN_PASSWORD``), never its command line.
"""

from __future__ import annotations

import os
import subprocess
import sys

import requests

from tools.stack.processes import Daemon, StackError, find_binary
from tools.stack.settings import StackSettings

USERS = {"pipeline": "pipeline_password", "serving": "serving_password"}  # MLflow users the stack creates


class TrackingServer:
    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.root = settings.home / "mlflow"
        self.daemon = Daemon("mlflow", settings.home)
        self.mlflow = find_binary("mlflow", hint="pip install mlflow (the project's dev extra)")

    def _env(self) -> dict[str, str]:
        s = self.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "PG"))}
        return env | {
            "PGPASSWORD": s.secret("mlflow_db_password"),
            "AWS_ACCESS_KEY_ID": s.secret("s3_access_key"), "AWS_SECRET_ACCESS_KEY": s.secret("s3_secret_key"),
            "AWS_DEFAULT_REGION": "us-east-1", "MLFLOW_S3_ENDPOINT_URL": s.s3_endpoint,
            "MLFLOW_AUTH_CONFIG_PATH": str(self.root / "basic_auth.ini"),
            "MLFLOW_AUTH_ADMIN_USERNAME": "admin", "MLFLOW_AUTH_ADMIN_PASSWORD": s.secret("admin_password"),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": s.secret("flask_secret_key"),
            "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
        }

    def migrate(self) -> None:
        """Bring both databases to the installed MLflow's schema (back them up first on an upgrade)."""
        s = self.settings
        self.write_config()  # the auth module reads it on import
        steps = {
            "mlflow db upgrade": [self.mlflow, "db", "upgrade", s.postgres_url("mlflow", "mlflow")],
            "auth db upgrade": [sys.executable, "-m", "mlflow.server.auth", "db", "upgrade",
                                "--url", s.postgres_url("mlflow", "mlflow_auth")],
        }
        for name, command in steps.items():
            proc = subprocess.run(command, env=self._env(), capture_output=True, text=True)
            if proc.returncode != 0:
                raise StackError(f"{name} failed:\n{proc.stderr[-3000:]}")

    def write_config(self) -> None:
        """The auth app's ini file (no password in it)."""
        s = self.settings
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "basic_auth.ini").write_text(
            "[mlflow]\n"
            "# READ: every user can read every experiment and model; writing needs EDIT/MANAGE, which\n"
            "# the creator of an experiment or registered model gets, and an admin can grant\n"
            "default_permission = READ\n"
            f"database_uri = {s.postgres_url('mlflow', 'mlflow_auth')}\n"
            "admin_username = admin\n"
            "# the admin password comes from MLFLOW_AUTH_ADMIN_PASSWORD (the stack's secrets)\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            "# a password check is a PBKDF2 hash (a core busy for every request without it); a changed or\n"
            "# deleted password may still work for up to this long on the workers that did not handle the change\n"
            "auth_cache_ttl_seconds = 30\n"
        )

    def start(self) -> None:
        s = self.settings
        command = [
            self.mlflow, "server", "--backend-store-uri", s.postgres_url("mlflow", "mlflow"),
            "--artifacts-destination", f"s3://{s.bucket}/artifacts", "--serve-artifacts",
            "--app-name", "basic-auth", "--host", s.host, "--port", str(s.mlflow_port),
            "--workers", str(s.mlflow_workers),
        ]
        self.daemon.start(command, self._env(), cwd=self.root)
        self.daemon.wait_ready(self._answers, s.ready_timeout_s)
        self.ensure_users()

    def _answers(self) -> bool:
        auth = ("admin", self.settings.secret("admin_password"))
        url = f"{self.settings.tracking_uri}/api/2.0/mlflow/experiments/search?max_results=1"
        return requests.get(url, auth=auth, timeout=5).status_code == 200

    def ensure_users(self) -> None:
        """Create the stack's MLflow users, or set their passwords to the current secrets."""
        admin = ("admin", self.settings.secret("admin_password"))
        base = f"{self.settings.tracking_uri}/api/2.0/mlflow/users"
        for user, secret in USERS.items():
            password = self.settings.secret(secret)
            r = requests.post(f"{base}/create", json={"username": user, "password": password}, auth=admin, timeout=30)
            if (r.status_code != 200 and "already exists" in r.text.lower()) or r.status_code == 409:
                r = requests.patch(f"{base}/update-password", json={"username": user, "password": password},
                                   auth=admin, timeout=30)
            if r.status_code != 200:
                raise StackError(f"could not create MLflow user {user!r}: HTTP {r.status_code} {r.text[:300]}")
