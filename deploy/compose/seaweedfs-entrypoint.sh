#!/usr/bin/env bash
# weed mini with one S3 identity (the tracking server's keys) and JWT-signed internal HTTP ports,
# from the secret files; telemetry off. Same settings as tools/stack/objectstore.py.
set -euo pipefail
secret() { cat "/run/secrets/$1"; }
umask 077
printf '{"identities":[{"name":"mlflow-server","actions":["Admin","Read","Write","List","Tagging"],"credentials":[{"accessKey":"%s","secretKey":"%s"}]}]}\n' \
    "$(secret s3_access_key)" "$(secret s3_secret_key)" > s3.json
for pair in "jwt.signing:weed_jwt_write" "jwt.signing.read:weed_jwt_read" \
            "jwt.filer_signing:weed_filer_jwt_write" "jwt.filer_signing.read:weed_filer_jwt_read"; do
    printf '[%s]\nkey = "%s"\nexpires_after_seconds = 10\n' "${pair%%:*}" "$(secret "${pair#*:}")"
done > security.toml
exec weed mini -dir=/data -ip=objectstore -ip.bind=0.0.0.0 -master.telemetry=false -webdav=false \
    -admin.ui=false -s3.config=s3.json -s3.port=8333 -s3.port.iceberg=0 -s3.port.lance=0 -bucket=mlflow
