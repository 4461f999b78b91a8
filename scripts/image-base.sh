#!/usr/bin/env bash
# Build a local stand-in for python:3.11-slim-bookworm where no container registry is
# reachable, the way Debian-based images are made: `debootstrap --variant=minbase bookworm`
# plus python3 (3.11 on bookworm), python3-venv, python-is-python3 and ca-certificates,
# imported with `podman import` (or `docker import`) under a local name. The Dockerfile is
# unchanged: `make image` passes the name as --build-arg PYTHON_IMAGE.
#
# What comes from the host, read at run time (nothing host-specific is in the repository):
#   - the Debian mirror: the first bookworm entry of /etc/apt/sources.list{,.d/*}, written into
#     the image's own sources so that `apt-get install` in the Dockerfile works; the host's
#     Acquire:: settings of /etc/apt/apt.conf.d come along (e.g. snapshot mirrors' Valid-Until);
#   - the CA bundle (downloads may pass TLS interception) and pip's configuration
#     (/etc/pip.conf, /etc/xdg/pip, ~/.config/pip and the PIP_* environment), so that
#     `pip install` inside the build reaches the same package index as the host.
# The stand-in is for building and testing on such machines only; never push it.
#
# Cached: exits at once when the image exists (FORCE=1 rebuilds). Needs root (debootstrap).
# Usage: scripts/image-base.sh [IMAGE]   (default localhost/python-standin:3.11-slim-bookworm)
set -euo pipefail

IMAGE=${1:-${BASE_IMAGE:-localhost/python-standin:3.11-slim-bookworm}}
ENGINE=${ENGINE:-podman}
FORCE=${FORCE:-0}
SUITE=bookworm
PACKAGES=python3,python3-venv,python-is-python3,ca-certificates

log() { printf 'image-base: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [[ $FORCE != 1 ]] && "$ENGINE" image inspect "$IMAGE" >/dev/null 2>&1; then
  log "$IMAGE exists; FORCE=1 to rebuild"
  exit 0
fi
[[ $(id -u) == 0 ]] || die "debootstrap needs root; run as root or provide python:3.11-slim-bookworm"
command -v debootstrap >/dev/null || die "debootstrap not found (apt-get install debootstrap; make tools does it)"

# ---- the host's Debian mirror ---------------------------------------------------------------
# One-line format: `deb [opts] URI SUITE COMPONENTS...`; deb822: `URIs:` + `Suites:` stanzas.
apt_uris() {  # prints "URI SUITE" pairs for every deb source of the host
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] || continue
    awk '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } print $i, $(i+1) }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    awk 'BEGIN { RS = ""; FS = "\n" }
      { types = ""; uris = ""; suites = "";
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^Types:/) types = substr($i, 7);
          if ($i ~ /^URIs:/) uris = substr($i, 6);
          if ($i ~ /^Suites:/) suites = substr($i, 8);
          if ($i ~ /^Enabled: *no/) types = "";
        }
        if (types !~ /(^| )deb( |$)/) next;
        nu = split(uris, u, " "); ns = split(suites, s, " ");
        for (a = 1; a <= nu; a++) for (b = 1; b <= ns; b++) print u[a], s[b] }' "$f"
  done
}
mapfile -t SOURCES < <(apt_uris | awk 'NF == 2')
MIRROR=${DEBIAN_MIRROR:-}
SECURITY=""
for pair in "${SOURCES[@]}"; do
  read -r uri suite <<<"$pair"
  [[ -z $MIRROR && $suite == "$SUITE" ]] && MIRROR=$uri
  [[ -z $SECURITY && $suite == "$SUITE-security" ]] && SECURITY=$uri
done
[[ -n $MIRROR ]] || die "no '$SUITE' entry in /etc/apt/sources.list{,.d/*}; set DEBIAN_MIRROR=<Debian mirror URL>"
log "Debian mirror from the host's apt sources: $MIRROR${SECURITY:+ (security: $SECURITY)}"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/image-base.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/rootfs
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
  || { tail -n 30 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }

# The image's own apt sources and the host's Acquire:: settings.
{
  echo "deb $MIRROR $SUITE main"
  echo "deb $MIRROR $SUITE-updates main"
  [[ -n $SECURITY ]] && echo "deb $SECURITY $SUITE-security main"
} >"$ROOT/etc/apt/sources.list"
for f in /etc/apt/apt.conf.d/*; do
  [[ -f $f ]] && grep -q '^ *Acquire::' "$f" && grep '^ *Acquire::' "$f" >"$ROOT/etc/apt/apt.conf.d/$(basename "$f")"
done

# The host's CA bundle (and its local CAs, which survive an update-ca-certificates in a build).
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
if compgen -G '/usr/local/share/ca-certificates/*' >/dev/null; then
  cp -R /usr/local/share/ca-certificates/. "$ROOT/usr/local/share/ca-certificates/"
fi

# pip's configuration: files as they are; PIP_* variables become the image's ENV.
[[ -f /etc/pip.conf ]] && cp /etc/pip.conf "$ROOT/etc/pip.conf"
if [[ -d /etc/xdg/pip ]]; then mkdir -p "$ROOT/etc/xdg" && cp -R /etc/xdg/pip "$ROOT/etc/xdg/pip"; fi
if [[ -d $HOME/.config/pip ]]; then mkdir -p "$ROOT/root/.config" && cp -R "$HOME/.config/pip" "$ROOT/root/.config/pip"; fi
CHANGES=(--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
         --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]')
# A variable naming a host path that the image lacks (e.g. PIP_CONSTRAINT of a CI run) stays out.
while IFS='=' read -r name value; do
  [[ $name == PIP_* ]] || continue
  [[ $value == /* && ! -e $ROOT$value ]] && continue
  CHANGES+=(--change "ENV $name=$value")
done < <(env)

# Slim like the official image: no apt lists, caches, docs or man pages.
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/apt/archives/*.deb \
       "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* "$ROOT"/var/log/*.log
tar -C "$ROOT" --numeric-owner -cf "$WORK/rootfs.tar" .
"$ENGINE" import "${CHANGES[@]}" "$WORK/rootfs.tar" "$IMAGE" >/dev/null
log "imported $IMAGE ($("$ENGINE" run --rm "$IMAGE" python --version 2>&1))"
