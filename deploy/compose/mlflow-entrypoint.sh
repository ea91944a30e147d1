#!/usr/bin/env bash
# migrate: bring the tracking and auth databases to this MLflow's schema (one-shot, before any server)
# serve:   mlflow server --app-name basic-auth, artifacts proxied to S3; secrets read from /run/secrets
set -euo pipefail
secret() { cat "/run/secrets/$1"; }
export PGPASSWORD="$(secret mlflow_db_password)"
cat > "$HOME/basic_auth.ini" <<INI
[mlflow]
default_permission = READ
database_uri = ${MLFLOW_AUTH_DATABASE_URI}
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
# PBKDF2 per request is costly: cache checks for 30 s (a changed password may work that long on other workers)
auth_cache_ttl_seconds = 30
INI
export MLFLOW_AUTH_CONFIG_PATH="$HOME/basic_auth.ini"
case "${1:-serve}" in
    migrate)
        mlflow db upgrade "$MLFLOW_BACKEND_STORE_URI"
        python -m mlflow.server.auth db upgrade --url "$MLFLOW_AUTH_DATABASE_URI"
        ;;
    serve)
        export AWS_ACCESS_KEY_ID="$(secret s3_access_key)" AWS_SECRET_ACCESS_KEY="$(secret s3_secret_key)"
        export MLFLOW_AUTH_ADMIN_PASSWORD="$(secret admin_password)"
        export MLFLOW_FLASK_SERVER_SECRET_KEY="$(secret flask_secret_key)" AWS_DEFAULT_REGION=us-east-1
        exec mlflow server --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
            --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" --serve-artifacts \
            --app-name basic-auth --host 0.0.0.0 --port 5000 --workers "${MLFLOW_WORKERS:-4}" \
            --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:-mlflow:5000,localhost:5000,127.0.0.1:5000}"
        ;;
    *) echo "usage: mlflow-entrypoint migrate|serve" >&2; exit 2 ;;
esac
