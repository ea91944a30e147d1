#!/usr/bin/env bash
# `make image`: build the serving image with the production model baked in.
#
#   1. export the model (default models:/sentiment@production of $MLFLOW_TRACKING_URI, else
#      the project's store) into build/docker/model with `python -m pipelines export`
#   2. the serving requirements at the dev venv's versions (requirements/serve.lock: pyproject's
#      `serve` extra, resolved by `make lock`) as a wheelhouse in build/docker/wheels (reused while
#      the lock is unchanged); the CPU torch wheel comes from pip's find-links (/opt/wheels here)
#   3. the project wheel of the serving-safe core and the app (scoring + app, no pipelines) in
#      build/docker/dist
#   4. docker build -t $IMAGE .   (no network inside: pip installs from the wheelhouse)
#
# Environment: IMAGE (sentiment-mlops:1.0), BAKE_MODEL_URI (default: the production alias),
# MLFLOW_TRACKING_URI, PYTHON (.venv/bin/python), DOCKER (docker), DOCKER_BUILDKIT (0: the
# classic builder, which needs no buildx plugin), SKIP_EXPORT=1 (keep build/docker/model as is).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE="${IMAGE:-sentiment-mlops:1.0}"
PYTHON="${PYTHON:-.venv/bin/python}"
DOCKER="${DOCKER:-docker}"
CTX="build/docker"

log() { printf '[build-image %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '[build-image] error: %s\n' "$*" >&2; exit 1; }
elapsed() { echo "$(( SECONDS - $1 ))s"; }

[[ -x "$PYTHON" ]] || die "$PYTHON not found: run 'make install' first (or set PYTHON=…)"
"$DOCKER" info >/dev/null 2>&1 || die "no Docker engine answers '$DOCKER info'"
mkdir -p "$CTX"

# -- 1. the model ------------------------------------------------------------------------------
t=$SECONDS
if [[ "${SKIP_EXPORT:-0}" == 1 ]]; then
    [[ -f "$CTX/model/MLmodel" ]] || die "SKIP_EXPORT=1 but $CTX/model holds no MLmodel"
    chmod -R a+rX,go-w "$CTX/model"
    log "model: keeping $CTX/model (SKIP_EXPORT=1)"
else
    log "model: exporting ${BAKE_MODEL_URI:-the production alias} from ${MLFLOW_TRACKING_URI:-the project store} into $CTX/model"
    export_args=(--output "$CTX/model" --overwrite)
    [[ -n "${BAKE_MODEL_URI:-}" ]] && export_args+=(--model-uri "$BAKE_MODEL_URI")
    "$PYTHON" -m pipelines export "${export_args[@]}"
    chmod -R a+rX,go-w "$CTX/model"  # the weights are saved 0600; the server in the image is not root
    log "model: $(du -sh "$CTX/model" | cut -f1) in $(elapsed "$t")"
fi

# -- 2. the serving requirements as wheels --------------------------------------------------------
t=$SECONDS
cp requirements/serve.lock "$CTX/requirements-serve.txt"  # the dev venv's versions (make lock)
want=$(sha256sum "$CTX/requirements-serve.txt" | cut -d' ' -f1)
if [[ -f "$CTX/wheels/.requirements.sha256" && "$(cat "$CTX/wheels/.requirements.sha256")" == "$want" ]]; then
    log "wheelhouse: up to date ($(find "$CTX/wheels" -name '*.whl' | wc -l) wheels, $(du -sh "$CTX/wheels" | cut -f1))"
else
    log "wheelhouse: pip wheel -r $CTX/requirements-serve.txt"
    rm -rf "$CTX/wheels"
    "$PYTHON" -m pip wheel --quiet --no-deps --prefer-binary --wheel-dir "$CTX/wheels" -r "$CTX/requirements-serve.txt"
    compgen -G "$CTX/wheels/torch-*+cpu-*.whl" >/dev/null \
        || die "the wheelhouse has no CPU torch wheel (expected torch-…+cpu-… from pip's find-links): refusing a CUDA build"
    echo "$want" > "$CTX/wheels/.requirements.sha256"
    log "wheelhouse: $(find "$CTX/wheels" -name '*.whl' | wc -l) wheels, $(du -sh "$CTX/wheels" | cut -f1) in $(elapsed "$t")"
fi

# -- 3. the project wheel, built from a clean copy of what serving needs (the core and the app) ----------
t=$SECONDS
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
tar --exclude=__pycache__ -cf - pyproject.toml README.md scoring app | tar -xf - -C "$src"
rm -rf "$CTX/dist"
"$PYTHON" -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$CTX/dist" "$src"
log "project wheel: $(basename "$CTX"/dist/*.whl) in $(elapsed "$t")"

# -- 4. the image ----------------------------------------------------------------------------
t=$SECONDS
"$DOCKER" image inspect python:3.11-slim >/dev/null 2>&1 \
    || log "note: python:3.11-slim is not here yet; docker will pull it (no registry? run 'make base-image')"
log "docker build -t $IMAGE ."
DOCKER_BUILDKIT="${DOCKER_BUILDKIT:-0}" "$DOCKER" build -t "$IMAGE" .
size=$("$DOCKER" image inspect --format '{{.Size}}' "$IMAGE")
log "built $IMAGE: $(( size / 1000000 )) MB in $(elapsed "$t")"
