# sentiment-mlops serving image: the FastAPI app (python -m app) with the production model baked in.
#
# Build it with `make image` (docker/build-image.sh), which first fills the build context
# build/docker/ with what this file copies (.dockerignore lets nothing else in):
#   wheels/                    the serving requirements as wheels (requirements/serve.lock, CPU torch)
#   requirements-serve.txt     that lock: pyproject's `serve` extra at the dev venv's exact versions
#   dist/                      the project wheel of the serving-safe core and the app (packages scoring +
#                              app; no pipelines), installed --no-deps
#   model/                     models:/sentiment@production exported by `python -m pipelines export`
# No network is needed: pip installs from the wheelhouse only. See docs/docker.md.
ARG PYTHON_IMAGE=python:3.11-slim

# -- build: a venv with the serving set (a layer that stays cached while the list is unchanged) -----
FROM ${PYTHON_IMAGE} AS build
COPY build/docker/wheels/ /wheels/
COPY build/docker/requirements-serve.txt /requirements-serve.txt
# torch's C++ test programs and headers serve no purpose at inference time (about 180 MB)
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /wheels -r /requirements-serve.txt \
    && torch_dir=/opt/venv/lib/python3.11/site-packages/torch \
    && rm -rf "$torch_dir/test" "$torch_dir/include" "$torch_dir"/bin/test_* "$torch_dir"/bin/*Test

# -- runtime ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="sentiment-mlops" \
      org.opencontainers.image.description="Movie-review sentiment API (FastAPI) serving the MLflow production model" \
      org.opencontainers.image.version="1.0.0" \
      org.opencontainers.image.licenses="MIT"

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home --shell /usr/sbin/nologin app \
    && install -d -o app -g app -m 0755 /var/lib/sentiment-mlops

COPY --from=build /opt/venv /opt/venv
# the project itself: the core and the app (packages scoring + app; their requirements are the serving set above)
COPY build/docker/dist/ /tmp/dist/
RUN /opt/venv/bin/pip install --no-cache-dir --no-index --no-deps /tmp/dist/*.whl \
    && rm -rf /tmp/dist \
    && /opt/venv/bin/python -c "import app.main, scoring.runtimes, scoring.onnx_runtime, scoring.identity"
# the model, root-owned and read-only for the server (docker/build-image.sh makes the files
# world-readable: the weights are saved 0600)
COPY build/docker/model/ /opt/model/
RUN unreadable="$(find /opt/model ! -perm -o=r)" \
    && if [ -n "$unreadable" ]; then echo "not readable for the server: $unreadable (chmod -R a+rX build/docker/model)" >&2; exit 1; fi

# MODEL_URI: the baked-in folder; set MODEL_URI=models:/sentiment@production plus
# MLFLOW_TRACKING_URI to serve from a registry instead. SENTIMENT_MLOPS_HOME holds the
# inference log (mount a volume there to keep it).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MODEL_URI=/opt/model \
    HOST=0.0.0.0 \
    PORT=8000 \
    SENTIMENT_MLOPS_HOME=/var/lib/sentiment-mlops \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1

USER 10001:10001
WORKDIR /home/app
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8000') + '/health', timeout=4)"]
CMD ["python", "-m", "app"]
