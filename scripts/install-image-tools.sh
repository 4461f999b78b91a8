#!/usr/bin/env bash
# Install what `make image` and the image tests need where it is missing: podman (daemonless,
# used where no Docker daemon answers), runc (crun refuses mixed cgroup layouts) and debootstrap
# (the local base image where no container registry is reachable), from Debian with apt-get; and
# binutils, whose ld links compiled trees into a shared library (the image installs it too; the
# tests compile on the host).
#
# Idempotent: exits at once when a Docker daemon answers or the three are on PATH. Without root
# or apt-get it only warns: the image tests then fail and name what is missing.
# Usage: scripts/install-image-tools.sh
set -euo pipefail

log() { printf 'install-image-tools: %s\n' "$*" >&2; }
# fuse-overlayfs, slirp4netns and uidmap are podman's recommends: the storage and network fallbacks
# where native overlay or rootful networking is not available (installed as on the machines it was tested).
PACKAGES=(podman runc debootstrap fuse-overlayfs slirp4netns uidmap binutils)
TOOLS=(podman runc debootstrap ld)

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  log "a Docker daemon answers; podman not needed"
  exit 0
fi
missing=()
for t in "${TOOLS[@]}"; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
if [[ ${#missing[@]} == 0 ]]; then
  log "podman, runc, debootstrap and ld found ($(podman --version))"
  exit 0
fi
if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  log "warning: ${missing[*]} not found and cannot install them here (needs root and apt-get):"
  log "  install ${PACKAGES[*]} (Debian/Ubuntu: sudo apt-get install -y ${PACKAGES[*]}) or start a Docker daemon"
  exit 0
fi
log "installing ${PACKAGES[*]} (apt-get)"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null 2>&1 \
  || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null; }
log "installed: $(podman --version)"
