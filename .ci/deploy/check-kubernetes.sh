#!/usr/bin/env bash
# Builds deploy/kubernetes (the base, the production overlay, and production-with-operators) with `kubectl kustomize`, and validates the built manifests with
# kubernetes-validate (strict: no unknown fields) for the oldest and newest Kubernetes
# versions kitsync supports. $1: the bin directory holding kubernetes-validate.
set -euo pipefail
tools=$1
cd "$(dirname "$0")/../.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
kubectl kustomize deploy/kubernetes/base >"$out/base.yaml"
kubectl kustomize deploy/kubernetes/overlays/production >"$out/production.yaml"
# The optional components build too (their CRDs are not in the schemas: KEDA, Prometheus
# Operator).
kubectl kustomize deploy/kubernetes/overlays/production-with-operators >"$out/with-components.yaml"
grep -q '^kind: ScaledObject' "$out/with-components.yaml"
grep -q '^kind: ServiceMonitor' "$out/with-components.yaml"
for version in 1.30.0 1.37.0; do
  "$tools/kubernetes-validate" --strict --quiet -k "$version" "$out/base.yaml" "$out/production.yaml"
done
echo "kubernetes: base $(grep -c '^kind:' "$out/base.yaml") objects, production $(grep -c '^kind:' "$out/production.yaml"), valid for Kubernetes 1.30 and 1.37"
