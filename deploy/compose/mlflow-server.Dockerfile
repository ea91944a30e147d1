# MLflow's tracking server with logins for compose.yaml, at the dev lock's exact versions
# (requirements/dev.lock as constraints: the server runs what the project's venv and CI run).
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}
COPY requirements/dev.lock /tmp/dev.lock
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -c /tmp/dev.lock "mlflow[auth]" "psycopg[binary]" boto3 \
    && rm /tmp/dev.lock \
    && groupadd --system --gid 10001 mlflow \
    && useradd --system --uid 10001 --gid mlflow --create-home --shell /usr/sbin/nologin mlflow
COPY deploy/compose/mlflow-entrypoint.sh /usr/local/bin/mlflow-entrypoint
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /home/mlflow
EXPOSE 5000
ENTRYPOINT ["mlflow-entrypoint"]
CMD ["serve"]
