#!/usr/bin/env bash
# Build the image (`make image`): IMAGE (the runtime KServe mounts a bundle into) and
# IMAGE-models (BAKE_MODELS=true: the shipped models/ inside, for a start without KServe).
#
# Engine: docker where its daemon answers, else podman (daemonless; with scripts/containers.conf
# in CONTAINERS_CONF unless that is set). ENGINE=docker|podman chooses.
# Base: PYTHON_IMAGE (python:3.11-slim-bookworm) when present or pullable; otherwise a local
# stand-in built by scripts/image-base.sh (no registry reachable; cached after the first time).
# Prints `image: <ref> <build seconds>` lines on stdout; the engine's output goes to stderr.
# Usage: scripts/image-build.sh [IMAGE]   (default insurance-serving:<pyproject version>)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'image-build: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n 1)
IMAGE=${1:-${IMAGE:-insurance-serving:$VERSION}}
PYTHON_IMAGE=${PYTHON_IMAGE:-python:3.11-slim-bookworm}
STANDIN=${STANDIN_IMAGE:-localhost/python-standin:3.11-slim-bookworm}

if [[ -z ${ENGINE:-} ]]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then ENGINE=docker
  elif command -v podman >/dev/null 2>&1; then ENGINE=podman
  else die "no container engine: neither a Docker daemon nor podman (make tools installs podman on Debian)"
  fi
fi
if [[ $ENGINE == podman && -z ${CONTAINERS_CONF:-} ]]; then
  export CONTAINERS_CONF=$PWD/scripts/containers.conf
fi
export ENGINE

base=$PYTHON_IMAGE
if ! "$ENGINE" image inspect "$base" >/dev/null 2>&1 && ! "$ENGINE" pull --quiet "$base" >/dev/null 2>&1; then
  log "$PYTHON_IMAGE is not available (no registry reachable?): using the local stand-in $STANDIN"
  bash scripts/image-base.sh "$STANDIN"
  base=$STANDIN
fi

build() {  # build TAG [extra args...]
  local tag=$1 start end
  shift
  start=$(date +%s%N)
  # docker needs BuildKit for RUN --mount; podman/buildah supports it natively.
  DOCKER_BUILDKIT=1 "$ENGINE" build --build-arg PYTHON_IMAGE="$base" "$@" -t "$tag" . >&2
  end=$(date +%s%N)
  printf 'image: %s %d.%d\n' "$tag" $(((end - start) / 1000000000)) $(((end - start) / 100000000 % 10))
}
log "building $IMAGE and $IMAGE-models with $ENGINE from $base"
build "$IMAGE"
build "$IMAGE-models" --build-arg BAKE_MODELS=true
