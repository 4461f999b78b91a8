#!/usr/bin/env bash
# Install PostgreSQL and nginx from Debian where missing: the MLOps-loop tests start a real
# PostgreSQL server (training from a table) and a real nginx as the weighted canary gateway
# (tests/lifecycle/test_autorollout.py). Neither service is started by the package: the tests
# start their own on loopback ports in temporary folders and stop them by PID.
#
#   root:      apt-get install --no-install-recommends postgresql nginx-light, with a temporary
#              policy-rc.d so that the packages' services do not start.
#   not root:  prints the apt-get command to run (both need their shared libraries installed).
#
# Idempotent: exits at once when initdb/pg_ctl (/usr/lib/postgresql/<ver>/bin) and nginx exist
# (FORCE=1 installs anyway).
# Usage: scripts/install-mlops-tools.sh
set -euo pipefail

FORCE=${FORCE:-0}
log() { printf 'install-mlops-tools: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
have_pg() { compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null; }
have_nginx() { command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]]; }

missing=()
have_pg || missing+=(postgresql)
have_nginx || missing+=(nginx-light)
if [[ $FORCE == 1 ]]; then missing=(postgresql nginx-light); fi
if [[ ${#missing[@]} == 0 ]]; then
  log "postgresql ($(ls /usr/lib/postgresql | tr '\n' ' ')) and nginx found; FORCE=1 to reinstall"
  exit 0
fi
command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install ${missing[*]} yourself"
[[ $(id -u) == 0 ]] || die "not root: run 'sudo apt-get install --no-install-recommends ${missing[*]}'"

policy=/usr/sbin/policy-rc.d
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"   # Debian's way to keep maintainer scripts from starting services
  chmod 0755 "$policy"
  trap 'rm -f "$policy"' EXIT
fi
log "apt-get install ${missing[*]} (services are not started)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
have_pg && have_nginx || die "postgresql or nginx still missing after the install"
log "installed: $(ls /usr/lib/postgresql | tr '\n' ' ')postgresql, $(/usr/sbin/nginx -v 2>&1)"
