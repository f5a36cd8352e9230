#!/usr/bin/env bash
# Runs the dev overlay's Portico Deployments with `podman kube play` against the
# PostgreSQL and NATS of this host, and waits until every pod answers /readyz.
#   deploy/images/build.sh && deploy/images/kube-play.sh
# What podman (4.3, Debian 12) cannot take from `kubectl kustomize deploy/k8s/overlays/dev`
# is changed or left out here, each for the reason given below; docs/operations.md
# ("Images") lists it. The pods are removed (`podman kube down`) on exit and the
# database it made is dropped; the stream (prefix PORTICOKUBEPLAY) is reused by the
# next run.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# shellcheck source=env.sh
. "$HERE/env.sh"
# kubectl (kustomize) and PyYAML: from the PATH, else from the manifest validator's
# virtualenv (.ci/validate-manifests.sh installs both there).
tools_venv="${PORTICO_TOOLS_VENV:-$HOME/.cache/portico/venv-k8s}"
KUBECTL="$(command -v kubectl || echo "$tools_venv/bin/kubectl")"
PY=python3
python3 -c 'import yaml' 2>/dev/null || PY="$tools_venv/bin/python"
if [ ! -x "$KUBECTL" ] || ! "$PY" -c 'import yaml' 2>/dev/null; then
  echo "kube-play.sh: SKIPPED: no kubectl/PyYAML (run .ci/validate-manifests.sh once to install them)" >&2
  exit 0
fi
pg_server="${PORTICO_KUBE_PLAY_PG:-postgres://postgres@127.0.0.1:5432}"
nats_url="${NATS_URL:-nats://127.0.0.1:4222}"
id="kp$(date +%s)$$"
db="portico_$id"
work="$(mktemp -d)"
cleanup() {
  podman kube down "$work/play.yaml" >/dev/null 2>&1 || true
  for s in gateway batch-processor webhook-dispatcher; do
    podman pod rm -f "portico-$s-pod-0" >/dev/null 2>&1 || true
  done
  podman secret rm portico-secrets >/dev/null 2>&1 || true
  psql "$pg_server/postgres" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
psql "$pg_server/postgres" -qc "CREATE DATABASE \"$db\"" >/dev/null

"$KUBECTL" kustomize "$ROOT/deploy/k8s/overlays/dev" > "$work/dev.yaml"
# One stream prefix for every run (reused, not one stream per run left behind).
"$PY" - "$work" "$pg_server/$db" "$nats_url" "PORTICOKUBEPLAY" <<'PY'
import base64, json, socket, sys, yaml
work, database_url, nats_url, prefix = sys.argv[1:]
docs = [d for d in yaml.safe_load_all(open(f"{work}/dev.yaml")) if d]
def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
out, ports, secret = [], {}, None
for d in docs:
    kind, name = d["kind"], d["metadata"]["name"]
    if kind == "Secret" and name == "portico-secrets":
        # podman 4.3 reads a secret for secretKeyRef as a flat JSON object of
        # base64 values, not as a Secret document (a Secret in the played file fails:
        # "secret portico-secrets is not valid JSON"). It becomes such a podman
        # secret, with the host's database.
        data = dict(d.get("stringData") or {})
        data.update({k: base64.b64decode(v).decode() for k, v in (d.get("data") or {}).items()})
        data["DATABASE_URL"] = database_url
        secret = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    elif kind == "ConfigMap" and name == "portico-config":
        # Host network, the host's NATS, a stream prefix of our own.
        d["data"]["NATS_URL"] = nats_url
        d["data"]["PORTICO_STREAM_PREFIX"] = prefix
        d["data"]["PORTICO_WEBHOOK_ALLOWLIST"] = "127.0.0.0/8"
        # podman 4.3 lets envFrom override env (Kubernetes does the opposite): the
        # listen addresses, different per pod here, must not be in the ConfigMap.
        d["data"].pop("PORTICO_HTTP_ADDR", None)
        d["data"].pop("PORTICO_GRPC_ADDR", None)
        out.append(d)
    elif kind == "Deployment" and name.startswith("portico-"):
        # One host network for every pod: each listens on ports of its own.
        c = d["spec"]["template"]["spec"]["containers"][0]
        http, grpc = free_port(), free_port()
        ports[name] = http
        c["env"] = c.get("env", []) + [
            {"name": "PORTICO_HTTP_ADDR", "value": f"127.0.0.1:{http}"},
            {"name": "PORTICO_GRPC_ADDR", "value": f"127.0.0.1:{grpc}"},
            {"name": "PORTICO_REPLICA_ID", "value": f"{name}-kube-play"},
        ]
        # Host network: podman refuses port mappings there ("PortMappings can only
        # be used with Bridge or slirp4netns networking").
        c.pop("ports", None)
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            pr = c.get(probe) or {}
            if "httpGet" in pr: pr["httpGet"]["port"] = http
            if "grpc" in pr: pr["grpc"]["port"] = grpc
        out.append(d)
    # Left out: Services, NetworkPolicies, PodDisruptionBudgets, the ServiceAccount
    # (podman has no cluster network, policy or scheduler); the NATS and PostgreSQL
    # StatefulSets (their images cannot be pulled here: the host's servers stand in);
    # the migrate Job (podman 4.3 plays no Jobs: the image's `migrate` runs below).
json.dump(secret, open(f"{work}/secret.json", "w"))
with open(f"{work}/play.yaml", "w") as f:
    yaml.safe_dump_all(out, f)
json.dump(ports, open(f"{work}/ports.json", "w"))
PY

podman secret create portico-secrets "$work/secret.json" >/dev/null
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)"
# The migrate Job, as a container of the same image.
podman run --rm --network host --read-only --cap-drop ALL \
  -e DATABASE_URL="$pg_server/$db" "ghcr.io/portico/portico-gateway:$version" migrate
podman kube play --network host "$work/play.yaml" >/dev/null
echo "kube-play.sh: pods:" >&2
podman pod ps --format '{{.Name}} {{.Status}}' >&2
deadline=$((SECONDS + 60))
for name in $(python3 -c "import json,sys; print(' '.join(json.load(open(sys.argv[1]))))" "$work/ports.json"); do
  port="$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$work/ports.json" "$name")"
  until curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then
      echo "kube-play.sh: $name not ready within 60 s" >&2
      podman pod ps >&2
      podman logs --tail 20 "$name-pod-0-$name" >&2 || true
      exit 1
    fi
    sleep 0.5
  done
  echo "kube-play.sh: $name ready (127.0.0.1:$port/readyz)" >&2
done
for c in $(podman ps --format '{{.Names}}' | grep -- '-pod-0-portico-'); do
  podman inspect --format '{{.Name}}: user {{.Config.User}}, read-only root {{.HostConfig.ReadonlyRootfs}}' "$c" >&2
done
echo "kube-play.sh: all pods ready" >&2
