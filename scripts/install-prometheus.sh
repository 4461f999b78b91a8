#!/usr/bin/env bash
# Install promtool and prometheus from Debian's `prometheus` package (2.42 on bookworm)
# where they are missing. promtool checks and unit-tests the alert rules
# (helm/insurance-serving/files/rules/); the prometheus binary runs the observability
# integration test. Neither needs the Prometheus service: it is never started.
#
#   root:      apt-get install --no-install-recommends prometheus, with a temporary
#              policy-rc.d so that the package's service does not start, and the unit
#              disabled again on hosts that run systemd.
#   not root:  apt-get download the .deb and unpack usr/bin/{promtool,prometheus} into
#              TOOLS_DIR/bin (the binaries only need libc).
#
# Idempotent: exits at once when promtool and prometheus are on PATH or in TOOLS_DIR/bin
# (FORCE=1 installs anyway).
# Usage: scripts/install-prometheus.sh [TOOLS_DIR]
set -euo pipefail

TOOLS_DIR=${1:-${TOOLS_DIR:-.tools}}
BIN="$TOOLS_DIR/bin"
FORCE=${FORCE:-0}

log() { printf 'install-prometheus: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
have() { command -v "$1" >/dev/null 2>&1 || [[ -x $BIN/$1 ]]; }
version() { { command -v promtool >/dev/null 2>&1 && promtool --version || "$BIN/promtool" --version; } 2>&1 | head -n 1; }

if [[ $FORCE != 1 ]] && have promtool && have prometheus; then
  log "promtool and prometheus found ($(version)); FORCE=1 to reinstall"
  exit 0
fi

command -v apt-get >/dev/null 2>&1 \
  || die "apt-get not found: install Prometheus 2.x yourself and put promtool and prometheus on PATH or in $BIN"

if [[ $(id -u) == 0 ]]; then
  policy=/usr/sbin/policy-rc.d
  if [[ ! -e $policy ]]; then
    # Debian's way to keep maintainer scripts from starting services (exit 101 = denied).
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  log "apt-get install prometheus (for promtool and prometheus; the service is not started)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  fi
else
  log "not root: unpacking Debian's prometheus package into $BIN"
  command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb not found"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && apt-get download prometheus >/dev/null) \
    || die "apt-get download prometheus failed (stale package lists? run 'sudo apt-get update', or run this script as root)"
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root"
  mkdir -p "$BIN"
  install -m 0755 "$tmp/root/usr/bin/promtool" "$tmp/root/usr/bin/prometheus" "$BIN/"
fi

have promtool && have prometheus || die "promtool or prometheus still missing after the install"
log "installed: $(version)"
