#!/usr/bin/env bash
# Build a local stand-in for the official `python:3.11-slim` image, without any registry.
#
# Where no image registry can be reached (CI, the developers' machines), this makes an
# image that behaves like python:3.11-slim for our Dockerfile: Debian bookworm (minbase,
# bootstrapped from the Debian mirror apt already uses) + Debian's python3 (3.11) with
# `python`, `python3` and `pip` in /usr/local/bin (a venv at /usr/local), PATH and LANG as
# in the official image, and this machine's CA certificates.
#
# Cached: when `python:3.11-slim` already exists (the real one, or this stand-in at the
# current STAND_IN_VERSION) nothing is rebuilt. FORCE=1 rebuilds the stand-in.
#
# Needs root, a running Docker engine and debootstrap (installed with apt-get if missing).
set -euo pipefail

BASE_IMAGE="${BASE_IMAGE:-python:3.11-slim}"
ROOTFS_IMAGE="sentiment-mlops/bookworm-minbase:python3"
STAND_IN_LABEL="org.sentiment-mlops.stand-in"
STAND_IN_VERSION="1"  # bump when this recipe changes, so cached stand-ins get rebuilt
SUITE="bookworm"      # bookworm's python3 is 3.11
DOCKER="${DOCKER:-docker}"

log() { printf '[python-base %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '[python-base] error: %s\n' "$*" >&2; exit 1; }

# -- cached? ---------------------------------------------------------------------------------
if "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    have=$("$DOCKER" image inspect --format "{{ index .Config.Labels \"$STAND_IN_LABEL\" }}" "$BASE_IMAGE" 2>/dev/null || true)
    if [[ -z "$have" || "$have" == "<no value>" ]]; then
        log "$BASE_IMAGE exists and is not our stand-in (the official image?): using it"
        exit 0
    fi
    if [[ "$have" == "$STAND_IN_VERSION" && "${FORCE:-0}" != 1 ]]; then
        log "$BASE_IMAGE: cached stand-in v$have, nothing to do"
        exit 0
    fi
    log "$BASE_IMAGE: stand-in v$have is outdated (want v$STAND_IN_VERSION) or FORCE=1: rebuilding"
fi

[[ $(id -u) == 0 ]] || die "debootstrap needs root"

# -- the Debian mirror apt uses here -----------------------------------------------------------
apt_mirror() {
    local uri
    # deb822 sources: the stanza whose Suites list the plain suite name
    uri=$(awk -v suite="$SUITE" 'BEGIN { RS = ""; FS = "\n" }
        { uri = ""; ok = 0
          for (i = 1; i <= NF; i++) {
              if ($i ~ /^URIs:/) { split($i, a, /[ \t]+/); uri = a[2] }
              if ($i ~ /^Suites:/) { n = split($i, s, /[ \t]+/); for (j = 2; j <= n; j++) if (s[j] == suite) ok = 1 }
          }
          if (ok && uri != "") { print uri; exit } }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    if [[ -z "$uri" ]]; then  # one-line sources: deb [options] URI SUITE COMPONENTS
        uri=$(grep -hsE "^[[:space:]]*deb[[:space:]]" /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
              | sed -E 's/\[[^]]*\]//' | awk -v suite="$SUITE" '$3 == suite { print $2; exit }' || true)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}
MIRROR="${DEBIAN_MIRROR:-$(apt_mirror)}"

if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 \
        --no-install-recommends debootstrap >/dev/null
fi

# -- 1. a minimal bookworm rootfs with python3 -------------------------------------------------
work=$(mktemp -d /var/tmp/python-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
log "debootstrap --variant=minbase $SUITE from $MIRROR (log: $work/debootstrap.log)"
if ! debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        "$SUITE" "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1; then
    tail -n 30 "$work/debootstrap.log" >&2
    [[ -f "$rootfs/debootstrap/debootstrap.log" ]] && tail -n 30 "$rootfs/debootstrap/debootstrap.log" >&2
    die "debootstrap failed"
fi
# this machine's extra CA certificates (update-ca-certificates runs in the image below)
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
fi
# what the official slim image leaves out too: package caches, docs, man pages
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
       "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*

log "docker import → $ROOTFS_IMAGE"
tar --numeric-owner -C "$rootfs" -c . | "$DOCKER" import - "$ROOTFS_IMAGE" >/dev/null

# -- 2. python / python3 / pip like the official image ---------------------------------------
log "building $BASE_IMAGE on top of it"
DOCKER_BUILDKIT=0 "$DOCKER" build --quiet -t "$BASE_IMAGE" - >/dev/null <<DOCKERFILE
FROM $ROOTFS_IMAGE
# A venv at /usr/local gives /usr/local/bin/{python,python3,pip,pip3} and a site-packages
# that pip may write to (Debian's own python3 refuses that: PEP 668).
RUN update-ca-certificates --fresh >/dev/null \\
    && python3 -m venv /usr/local \\
    && python --version && pip --version
ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \\
    LANG=C.UTF-8
LABEL $STAND_IN_LABEL="$STAND_IN_VERSION" \\
      org.opencontainers.image.description="stand-in for python:3.11-slim: debootstrap $SUITE minbase + Debian python3"
CMD ["python3"]
DOCKERFILE

"$DOCKER" run --rm "$BASE_IMAGE" python -c 'import ssl, sys, venv; print("python", sys.version.split()[0], sys.executable)'
log "$BASE_IMAGE ready: $("$DOCKER" image inspect --format '{{.Size}}' "$BASE_IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}')"
