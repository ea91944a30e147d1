"""PostgreSQL for the stack: a cluster in ``<home>/postgres`` run by ``pg_ctl``, password logins only.

It holds four databases: ``mlflow`` (the tracking server's backend store) and ``mlflow_auth``
(its users and permissions), both owned by the role ``mlflow``; ``inference`` (the API replicas'
prediction log and feedback), owned by the role ``inference``; ``optuna`` (the sweeps' studies, which
workers on several machines share), owned by the role ``sweep``. As root, the cluster runs as the
``postgres`` system user (PostgreSQL refuses root).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from tools.stack.processes import StackError, find_binary, log_tail
from tools.stack.settings import StackSettings, write_private

DATABASES = {"mlflow": "mlflow", "mlflow_auth": "mlflow", "inference": "inference",  # database → owner role
             "optuna": "sweep"}
ROLES = {"mlflow": "mlflow_db_password", "inference": "inference_db_password",  # role → its secret
         "sweep": "sweep_db_password"}


def _bin_dirs() -> list[Path]:
    """Debian keeps the server binaries in /usr/lib/postgresql/<major>/bin, off PATH: newest first."""
    root = Path("/usr/lib/postgresql")
    found = [p / "bin" for p in root.glob("*") if (p / "bin" / "pg_ctl").is_file()] if root.is_dir() else []
    return sorted(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)


class Postgres:
    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.root = settings.home / "postgres"
        self.data = self.root / "data"
        self.socket_dir = self.root / "run"
        self.log_file = self.root / "postgres.log"
        hint = "install PostgreSQL: apt-get install postgresql"
        self.pg_ctl = find_binary("pg_ctl", *_bin_dirs(), hint=hint)
        self.initdb = find_binary("initdb", *_bin_dirs(), hint=hint)
        self.as_user = "postgres" if os.geteuid() == 0 else None
        if self.as_user:
            try:
                pwd.getpwnam(self.as_user)
            except KeyError as exc:
                message = "running as root needs the 'postgres' system user (apt-get install postgresql)"
                raise StackError(message) from exc

    def _run(self, *command: str) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", self.as_user, "--"] if self.as_user else []
        return subprocess.run([*prefix, *command], capture_output=True, text=True)

    def running(self) -> bool:
        return self.data.is_dir() and self._run(self.pg_ctl, "status", "-D", str(self.data)).returncode == 0

    def start(self) -> None:
        """initdb on first use (superuser password from the secrets), then start and wait until it accepts."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if self.as_user:
            shutil.chown(self.root, self.as_user, self.as_user)
            shutil.chown(self.socket_dir, self.as_user, self.as_user)
        if not (self.data / "PG_VERSION").is_file():
            self._initdb()
        options = (f"-c listen_addresses={self.settings.host} -p {self.settings.postgres_port} "
                   f"-c unix_socket_directories={self.socket_dir}")
        proc = self._run(self.pg_ctl, "start", "-D", str(self.data), "-l", str(self.log_file), "-w", "-t", "60",
                         "-o", options)
        if proc.returncode != 0:
            raise StackError(f"PostgreSQL did not start: {proc.stderr.strip() or proc.stdout.strip()}\n{self.tail()}")

    def _initdb(self) -> None:
        pwfile = self.root / ".initdb-password"
        write_private(pwfile, self.settings.secret("postgres_password"))
        if self.as_user:
            shutil.chown(pwfile, self.as_user, self.as_user)
        try:
            proc = self._run(self.initdb, "-D", str(self.data), "-U", "postgres", "--auth=scram-sha-256",
                             f"--pwfile={pwfile}", "--encoding=UTF8", "--locale=C")
        finally:
            pwfile.unlink(missing_ok=True)
        if proc.returncode != 0:
            raise StackError(f"initdb failed: {proc.stderr.strip()}")

    def ensure_databases(self) -> None:
        """Create the roles and databases that are missing; keep the roles' passwords in step with the secrets."""
        import psycopg
        from psycopg import sql

        conn = psycopg.connect(host=self.settings.host, port=self.settings.postgres_port, user="postgres",
                               password=self.settings.secret("postgres_password"), dbname="postgres",
                               autocommit=True)
        try:
            with conn.cursor() as cur:
                for role, secret in ROLES.items():
                    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
                    verb = "ALTER" if cur.fetchone() else "CREATE"
                    cur.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(role), sql.Literal(self.settings.secret(secret))))
                for database, owner in DATABASES.items():
                    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
                    if not cur.fetchone():
                        cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                            sql.Identifier(database), sql.Identifier(owner)))
                    # nobody else may connect: each role sees its own databases only
                    cur.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(sql.Identifier(database)))
        finally:
            conn.close()

    def stop(self) -> bool:
        if not self.running():
            return False
        self._run(self.pg_ctl, "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "60")
        return True

    def tail(self, lines: int = 20) -> str:
        return log_tail(self.log_file, lines)
