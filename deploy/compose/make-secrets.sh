#!/usr/bin/env bash
# Random secrets for compose.yaml in ./secrets (mode 0600; kept out of git). Existing files are kept,
# so running it again changes nothing. serving.env is what the API container logs in to MLflow with:
# create the `serving` user with that password once the server runs (docs/team.md).
set -euo pipefail
cd "$(dirname "$0")"
umask 077
mkdir -p secrets
for name in postgres_password mlflow_db_password inference_db_password s3_secret_key admin_password \
            flask_secret_key weed_jwt_write weed_jwt_read weed_filer_jwt_write weed_filer_jwt_read serving_password; do
    [ -s "secrets/$name" ] || python3 -c 'import secrets; print(secrets.token_urlsafe(24))' > "secrets/$name"
done
[ -s secrets/s3_access_key ] || python3 -c 'import secrets; print(secrets.token_hex(10))' > secrets/s3_access_key
[ -s secrets/serving.env ] || printf 'MLFLOW_TRACKING_USERNAME=serving\nMLFLOW_TRACKING_PASSWORD=%s\n' \
    "$(cat secrets/serving_password)" > secrets/serving.env
echo "secrets in $(pwd)/secrets"
