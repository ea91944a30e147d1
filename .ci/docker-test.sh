#!/usr/bin/env bash
# `make docker-test`: build the serving image for real and ask it for a prediction.
#
#   1. a Docker engine: the running one, or Debian's docker.io installed with apt-get and
#      `dockerd` started by hand (no systemd). If no engine can start here, this prints
#      `SKIPPED: <why>` and exits 0. Once the engine runs, every later step must pass.
#   2. python:3.11-slim: the local image if there is one, else a stand-in built without any
#      registry (docker/python-base-image.sh: debootstrap + Debian's python3), kept as a cache
#   3. a model to bake: the production alias of the first store that has one among
#      $MLFLOW_TRACKING_URI, the project store, the test suite's kept store
#      ($SENTIMENT_MLOPS_TEST_CACHE, as CI sets it) and build/docker-test/store, where a small
#      real model is trained first (python -m pipelines run … --steps train,evaluate,promote)
#   4. the image (docker/build-image.sh, as `make image`: export, wheelhouse, project wheel,
#      `docker build` with the classic builder and no network inside)
#   5. `docker run -p` on the image alone: wait for /ready, check /health, /docs, /model,
#      POST /predict (.ci/docker_check.py), the HEALTHCHECK, the non-root user, and that no
#      source tree or notebook package is in the image
#   6. registry mode: the same image with MODEL_URI=models:/sentiment@production and
#      MLFLOW_TRACKING_URI=sqlite:///… (a copy of the store mounted in), POST /predict again
#   7. clean up: the containers (and the engine if this script started it); images are kept
#
# Logs: build/docker-test/*.log. Environment: IMAGE (sentiment-mlops:1.0), READY_TIMEOUT (s).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

IMAGE="${IMAGE:-sentiment-mlops:1.0}"
CONTAINER="sentiment-mlops-docker-test-$$"
OUT="$ROOT/build/docker-test"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
READY_TIMEOUT="${READY_TIMEOUT:-180}"
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"

T0=$SECONDS
TIMINGS=()
PHASE=""
PHASE_T=0
log() { printf '[docker-test %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
phase() {  # phase NAME: ends the previous phase (recording its time) and starts NAME
    if [[ -n "$PHASE" ]]; then
        TIMINGS+=("$(printf '%-34s %4ds' "$PHASE" $(( SECONDS - PHASE_T )))")
    fi
    PHASE="$1"
    PHASE_T=$SECONDS
    [[ -n "$PHASE" ]] && log "== $PHASE"
    return 0
}
timings() {
    phase ""
    log "timings:"
    printf '    %s\n' "${TIMINGS[@]}"
    printf '    %-34s %4ds\n' "total" $(( SECONDS - T0 ))
}
REPORTED=""
fail() {
    printf '[docker-test] FAILED (%s): %s\n' "${PHASE:-setup}" "$*" >&2
    echo "docker-test: 0 passed, 1 failed"
    REPORTED=1
    exit 1
}
skip() {
    echo "SKIPPED: $*"
    exit 0
}

# -- 1. a Docker engine ----------------------------------------------------------------------
phase "engine"
# Debian's docker.io client matches its daemon and still has the classic builder built in
DOCKER=docker
[[ -x /usr/bin/docker ]] && DOCKER=/usr/bin/docker
export DOCKER
STARTED_DOCKERD=""
CONTAINERS=()

cleanup() {
    local rc=$?
    if [[ $rc != 0 && -z "$REPORTED" ]]; then
        printf '[docker-test] FAILED (%s): a command exited with status %s\n' "${PHASE:-setup}" "$rc" >&2
        echo "docker-test: 0 passed, 1 failed"
    fi
    for c in "${CONTAINERS[@]}"; do
        "$DOCKER" rm -f "$c" >/dev/null 2>&1 || true
    done
    if [[ -n "$STARTED_DOCKERD" ]]; then
        log "stopping the dockerd this script started (pid $STARTED_DOCKERD)"
        kill -TERM "$STARTED_DOCKERD" 2>/dev/null || true
        for _ in $(seq 1 30); do kill -0 "$STARTED_DOCKERD" 2>/dev/null || break; sleep 1; done
    fi
    exit "$rc"
}
trap cleanup EXIT

if "$DOCKER" info >/dev/null 2>&1; then
    log "using the Docker engine that is already running"
else
    if ! command -v dockerd >/dev/null; then
        [[ $(id -u) == 0 ]] || skip "no Docker engine here, and installing one needs root"
        log "installing Debian's docker.io (log: $OUT/apt.log)"
        if ! { apt-get update -qq -o DPkg::Lock::Timeout=600 \
               && apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends \
                      docker.io iptables debootstrap ca-certificates; } >"$OUT/apt.log" 2>&1; then
            tail -n 20 "$OUT/apt.log"
            skip "could not install docker.io with apt-get (see $OUT/apt.log)"
        fi
        DOCKER=docker
        [[ -x /usr/bin/docker ]] && DOCKER=/usr/bin/docker
    fi
    log "starting dockerd by hand (log: $OUT/dockerd.log)"
    dockerd >"$OUT/dockerd.log" 2>&1 &
    STARTED_DOCKERD=$!
    for _ in $(seq 1 60); do
        "$DOCKER" info >/dev/null 2>&1 && break
        kill -0 "$STARTED_DOCKERD" 2>/dev/null || break
        sleep 1
    done
    if ! "$DOCKER" info >/dev/null 2>&1; then
        tail -n 15 "$OUT/dockerd.log"
        kill -TERM "$STARTED_DOCKERD" 2>/dev/null || true
        STARTED_DOCKERD=""
        skip "dockerd does not start on this machine (last lines of $OUT/dockerd.log above)"
    fi
fi
log "engine: $("$DOCKER" version --format 'server {{.Server.Version}}, client {{.Client.Version}}'), storage driver $("$DOCKER" info --format '{{.Driver}}')"
[[ -x "$PYTHON" ]] || fail "$PYTHON not found: run 'make install' first"

# -- 2. the base image ---------------------------------------------------------------------------
phase "base image python:3.11-slim"
bash docker/python-base-image.sh || fail "could not make python:3.11-slim"

# -- 3. a model to bake ----------------------------------------------------------------------
phase "model to bake"
# prints "VERSION ACCURACY" of sentiment@production in the store $1, nothing if there is none
production_of() {
    MLFLOW_TRACKING_URI="$1" "$PYTHON" - <<'PY' 2>/dev/null || true
from mlflow import MlflowClient

try:
    mv = MlflowClient().get_model_version_by_alias("sentiment", "production")
except Exception:
    raise SystemExit(0)
print(mv.version, mv.tags.get("eval.accuracy", "?"))
PY
}
store_uri=""
candidates=()
[[ -n "${MLFLOW_TRACKING_URI:-}" ]] && candidates+=("$MLFLOW_TRACKING_URI")
[[ -f "$ROOT/mlflow.db" ]] && candidates+=("sqlite:///$ROOT/mlflow.db")
# the test suite's store of a model that learned (tests/conftest.py), when kept (CI does)
learned_cache=$(sed -n 's/^LEARNED_CACHE = "\([^"]*\)".*/\1/p' tests/conftest.py)  # the folder name conftest uses
test_cache="${SENTIMENT_MLOPS_TEST_CACHE:-}/$learned_cache"
[[ -n "${SENTIMENT_MLOPS_TEST_CACHE:-}" && -f "$test_cache/READY" ]] && candidates+=("sqlite:///$test_cache/mlflow.db")
own_store="$OUT/store"
candidates+=("sqlite:///$own_store/mlflow.db")
for uri in "${candidates[@]}"; do
    if [[ "$uri" == sqlite:///* && ! -f "${uri#sqlite:///}" ]]; then continue; fi
    found=$(production_of "$uri")
    if [[ -n "$found" ]]; then
        store_uri="$uri"
        log "baking sentiment@production v${found% *} (test accuracy ${found#* }) of $uri"
        break
    fi
done
if [[ -z "$store_uri" ]]; then
    store_uri="sqlite:///$own_store/mlflow.db"
    log "no production model in ${candidates[*]}: training a small real one into $own_store (log: $OUT/train.log)"
    rm -rf "$own_store"
    mkdir -p "$own_store"
    if ! MLFLOW_TRACKING_URI="$store_uri" SENTIMENT_MLOPS_HOME="$own_store" "$PYTHON" -m pipelines run \
            -p max_train_samples 3000 -p epochs 2 -p max_length 48 -p learning_rate 1e-4 \
            -p early_stopping_patience 0 -p min_metric 0 \
            --steps train,evaluate,promote --output-dir "$own_store/run" >"$OUT/train.log" 2>&1; then
        tail -n 30 "$OUT/train.log"
        fail "training the model to bake failed (see $OUT/train.log)"
    fi
    found=$(production_of "$store_uri")
    [[ -n "$found" ]] || fail "training finished but $store_uri has no sentiment@production"
    log "trained sentiment v${found% *} (test accuracy ${found#* })"
fi

# -- 4. the image, as `make image` builds it ---------------------------------------------------------
phase "image build (make image)"
log "docker/build-image.sh (log: $OUT/build.log)"
if ! MLFLOW_TRACKING_URI="$store_uri" IMAGE="$IMAGE" PYTHON="$PYTHON" bash docker/build-image.sh >"$OUT/build.log" 2>&1; then
    tail -n 40 "$OUT/build.log"
    fail "the image build failed (see $OUT/build.log)"
fi
grep '^\[build-image' "$OUT/build.log" | sed 's/^/    /'
size_mb=$(( $("$DOCKER" image inspect --format '{{.Size}}' "$IMAGE") / 1000000 ))
log "$IMAGE: $size_mb MB"

# -- 5. run it and ask --------------------------------------------------------------------------
free_port() { "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
show_logs() {
    echo "---- docker logs $1 (last 60 lines)"
    "$DOCKER" logs --tail 60 "$1" 2>&1 || true
}

phase "run the image on its own"
port=$(free_port)
# no MLflow server, no mounts, no source tree: the image alone; health checked every 5 s here
"$DOCKER" run -d --name "$CONTAINER" -p "127.0.0.1:$port:8000" --health-interval 5s "$IMAGE" >/dev/null \
    || fail "docker run failed"
CONTAINERS+=("$CONTAINER")
log "docker run -p 127.0.0.1:$port:8000 $IMAGE  (container $CONTAINER)"
if ! "$PYTHON" .ci/docker_check.py --port "$port" --container "$CONTAINER" --docker "$DOCKER" \
        --timeout "$READY_TIMEOUT" --manifest build/docker/model/registered_model.json --health; then
    show_logs "$CONTAINER"
    fail "the image did not serve as expected"
fi
uid=$("$DOCKER" exec "$CONTAINER" id -u)
[[ "$uid" != 0 ]] || fail "the server runs as root"
"$DOCKER" exec -i "$CONTAINER" python - <<'PY' || fail "the image holds what it should not"
import importlib.util
import pathlib

import app
import scoring

for pkg in (app, scoring):
    assert "/site-packages/" in pkg.__file__, f"{pkg.__name__} is not installed from the wheel: {pkg.__file__}"
present = [m for m in ("pipelines", "jupyterlab", "papermill", "nbconvert", "scattertext", "matplotlib", "sklearn",
                       "pytest", "ruff", "pyarrow") if importlib.util.find_spec(m)]
assert not present, f"packages that serving does not need are installed: {present}"
sources = [p for p in ("/pyproject.toml", "/app/pyproject.toml", "/home/app/pyproject.toml", "/notebooks")
           if pathlib.Path(p).exists()]
assert not sources, f"source tree files in the image: {sources}"
print("    app + scoring from site-packages; no pipelines, notebook or dev packages; no source tree")
PY
log "the server runs as uid $uid"
"$DOCKER" rm -f "$CONTAINER" >/dev/null

# -- 6. registry mode: MODEL_URI + MLFLOW_TRACKING_URI instead of the baked model ----------------------
phase "run in registry mode"
if [[ "$store_uri" == sqlite:///* ]]; then
    # A copy of the SQLite store (database + mlartifacts/), mounted where its artifact paths
    # point. Writable: MLflow writes registered_model_meta into a local artifact folder it loads.
    store_dir=$(dirname "${store_uri#sqlite:///}")
    copy="$OUT/registry-store"
    rm -rf "$copy"
    mkdir -p "$copy"
    cp -a "$store_dir/mlflow.db" "$copy/"
    [[ -d "$store_dir/mlartifacts" ]] && cp -a "$store_dir/mlartifacts" "$copy/"
    chmod -R a+rwX "$copy"
    port=$(free_port)
    "$DOCKER" run -d --name "$CONTAINER-registry" -p "127.0.0.1:$port:8000" \
        -e MODEL_URI=models:/sentiment@production -e MLFLOW_TRACKING_URI="$store_uri" \
        -v "$copy:$store_dir" "$IMAGE" >/dev/null || fail "docker run (registry mode) failed"
    CONTAINERS+=("$CONTAINER-registry")
    log "docker run -e MODEL_URI=models:/sentiment@production -e MLFLOW_TRACKING_URI=$store_uri -v …:$store_dir"
    if ! "$PYTHON" .ci/docker_check.py --port "$port" --container "$CONTAINER-registry" --docker "$DOCKER" \
            --timeout "$READY_TIMEOUT" --manifest build/docker/model/registered_model.json; then
        show_logs "$CONTAINER-registry"
        fail "the image did not serve from the registry"
    fi
    "$DOCKER" rm -f "$CONTAINER-registry" >/dev/null
    rm -rf "$copy"
else
    log "the store $store_uri is not SQLite: registry mode not tried"
fi
# images of earlier runs that this build untagged (the base image and the build cache stay)
"$DOCKER" image prune -f --filter label=org.opencontainers.image.title=sentiment-mlops >/dev/null || true

timings
log "PASSED: $IMAGE ($size_mb MB) serves /predict and /docs on its own, and from a registry"
echo "docker-test: 1 passed, 0 failed"
