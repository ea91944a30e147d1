#!/usr/bin/env bash
# First start of the postgres container: the roles and databases of the stack, passwords from the
# secret files (the same layout as tools/stack/postgres.py creates on one machine).
set -euo pipefail
mlflow_pw="$(cat /run/secrets/mlflow_db_password)"
inference_pw="$(cat /run/secrets/inference_db_password)"
psql -v ON_ERROR_STOP=1 -U postgres -v mlflow_pw="$mlflow_pw" -v inference_pw="$inference_pw" <<'SQL'
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_pw';
CREATE ROLE inference LOGIN PASSWORD :'inference_pw';
CREATE DATABASE mlflow OWNER mlflow;
CREATE DATABASE mlflow_auth OWNER mlflow;
CREATE DATABASE inference OWNER inference;
REVOKE CONNECT ON DATABASE mlflow, mlflow_auth, inference FROM PUBLIC;
SQL
