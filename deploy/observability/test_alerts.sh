#!/usr/bin/env bash
# Checks and unit-tests the alert and recording rules of
# deploy/observability/prometheus-rules.yaml with promtool (Debian package `prometheus`):
#   1. the PrometheusRule's spec becomes a plain rules file (promtool_rules.py);
#   2. `promtool check rules` on it (PromQL syntax, templates, duplicate rules);
#   3. `promtool test rules` on deploy/observability/tests/*_test.yaml;
#   4. negative controls: a rule with broken PromQL must fail the check, and every alert
#      must fail its unit tests when its expr is made to never fire and to always fire.
# (check_observability.py checks that each alert has a firing and a quiet test case.)
# Installs the `prometheus` package with apt-get when promtool is missing.
# Needs a python3 with PyYAML: ${PORTICO_PYTHON:-python3}.
#
#   bash deploy/observability/test_alerts.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
PYTHON="${PORTICO_PYTHON:-python3}"

log() { printf '==> %s\n' "$*"; }
die() { printf 'test_alerts: FAILED: %s\n' "$*" >&2; exit 1; }

started=$SECONDS
if ! command -v promtool >/dev/null 2>&1; then
  log "installing promtool (Debian package prometheus)"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
command -v promtool >/dev/null 2>&1 || die "promtool not found after installing prometheus"
"$PYTHON" -c 'import yaml' 2>/dev/null || die "$PYTHON cannot import yaml (PyYAML); set PORTICO_PYTHON"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
tests=(tests/*_test.yaml)
[[ -f "${tests[0]}" ]] || die "no unit tests in deploy/observability/tests/"
cp "${tests[@]}" "$work/"
names=()
for t in "${tests[@]}"; do names+=("$(basename "$t")"); done

# --- 1 + 2. plain rules file, promtool check rules -----------------------------------
"$PYTHON" promtool_rules.py extract prometheus-rules.yaml "$work/rules.yaml" || die "extracting the rules"
log "promtool check rules ($(promtool --version 2>/dev/null | head -n 1 | awk '{print $3}'))"
promtool check rules "$work/rules.yaml" || die "promtool check rules"

# --- 3. unit tests ---------------------------------------------------------------------
log "promtool test rules ${names[*]}"
(cd "$work" && promtool test rules "${names[@]}") || die "alert unit tests"

# --- 4. negative controls -------------------------------------------------------------
log "negative controls"
cp "$work/rules.yaml" "$work/rules.good.yaml"
cat >> "$work/rules.yaml" <<'EOF'
  - name: broken
    rules:
      - alert: Broken
        expr: sum(rate(portico_deliveries_total[5m]) > 1
EOF
if promtool check rules "$work/rules.yaml" > "$work/broken.out" 2>&1; then
  die "promtool check rules accepted an alert whose PromQL does not parse"
fi
echo "promtool check rules rejects broken PromQL: ok"

mapfile -t alerts < <("$PYTHON" promtool_rules.py alerts prometheus-rules.yaml)
((${#alerts[@]})) || die "no alerts found"
for mutation in never always; do
  "$PYTHON" promtool_rules.py extract prometheus-rules.yaml "$work/rules.yaml" --mutate "$mutation"
  if (cd "$work" && promtool test rules "${names[@]}") > "$work/$mutation.out" 2>&1; then
    die "unit tests passed although every alert was made to fire $mutation"
  fi
  undetected=()
  for a in "${alerts[@]}"; do
    grep -q "alertname: $a," "$work/$mutation.out" || undetected+=("$a")
  done
  ((${#undetected[@]} == 0)) || die "no unit test notices when these alerts fire $mutation: ${undetected[*]}"
  echo "each of ${#alerts[@]} alerts fails its unit tests when made to fire $mutation: ok"
done

echo "test_alerts: OK (${#alerts[@]} alerts, $(grep -c '^  - name:' "${tests[@]}" | awk -F: '{s+=$NF} END {print s}') test groups, $((SECONDS - started)) s)"
