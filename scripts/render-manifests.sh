#!/usr/bin/env bash
# Render the Helm chart with its default values into plain manifests for kubectl users.
# Used by `make manifests` (OUT=manifests) and by the staleness test (OUT=<tmp dir>), so both
# produce byte-identical files.
#
# Usage: scripts/render-manifests.sh OUT_DIR [HELM]
set -euo pipefail

OUT=${1:?usage: render-manifests.sh OUT_DIR [HELM]}
HELM=${2:-${HELM:-helm}}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CHART=helm/insurance-serving
RELEASE=insurance-serving
NAMESPACE=insurance-serving
COMMAND="make manifests (scripts/render-manifests.sh: helm template $RELEASE $CHART --namespace $NAMESPACE --skip-tests)"

command -v "$HELM" >/dev/null || { echo "render-manifests: $HELM not found (make tools)" >&2; exit 1; }
mkdir -p "$OUT"
header() {
  printf '# GENERATED FILE, DO NOT EDIT: %s\n' "$COMMAND"
  printf '# Source: the chart in %s with its default values (%s/values.yaml).\n' "$CHART" "$CHART"
  printf '# Edit the chart, then run `make manifests`; tests/k8s fails while this file is stale.\n'
}

{
  header
  cat <<YAML
apiVersion: v1
kind: Namespace
metadata:
  name: $NAMESPACE
  labels:
    app.kubernetes.io/part-of: insurance-serving
YAML
} > "$OUT/00-namespace.yaml"

{
  header
  (cd "$ROOT" && "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --skip-tests)
} > "$OUT/10-insurance-serving.yaml"

# Named `Kustomization` (no extension) on purpose: `kubectl apply -f manifests/` reads only
# .yaml/.yml/.json files and so skips it, while `kubectl apply -k manifests/` finds it.
{
  header
  cat <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
# Every namespaced object already names namespace $NAMESPACE. Patch storageUri, image or
# replicas in an overlay (resources: [path/to/manifests]). Kustomize's own \`namespace:\`
# field would also stamp the cluster-scoped ClusterServingRuntime, which kustomize cannot
# tell from a namespaced kind: to move namespaces, render the chart with helm instead.
resources:
  - 00-namespace.yaml
  - 10-insurance-serving.yaml
YAML
} > "$OUT/Kustomization"
