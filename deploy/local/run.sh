#!/usr/bin/env bash
# Brings the whole Portico system up on this machine: PostgreSQL and NATS JetStream
# (reused if they answer, started otherwise), migrations, then the gateway, the
# batch-processor and the webhook-dispatcher. Ctrl-C stops everything gracefully.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/portico}"
export NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"
export PORTICO_DEV_MODE="${PORTICO_DEV_MODE:-true}"
export PORTICO_LOG_FORMAT="${PORTICO_LOG_FORMAT:-pretty}"
export PORTICO_JWT_SECRET="${PORTICO_JWT_SECRET:-portico-dev-jwt-secret}"
export PORTICO_SERVICE_TOKEN="${PORTICO_SERVICE_TOKEN:-portico-dev-service-token}"
export PORTICO_OPERATOR_TOKEN="${PORTICO_OPERATOR_TOKEN:-portico-dev-operator-token}"
bash deploy/local/ensure-deps.sh

cargo build --release --locked -p portico-gateway -p portico-batch-processor -p portico-webhook-dispatcher
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
"$BIN/portico-gateway" migrate

pids=()
stop() { kill -TERM "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true; }
trap stop INT TERM EXIT
PORTICO_HTTP_ADDR="${PORTICO_HTTP_ADDR:-127.0.0.1:8080}" "$BIN/portico-gateway" & pids+=($!)
PORTICO_HTTP_ADDR="${PORTICO_BATCH_PROCESSOR_HTTP_ADDR:-127.0.0.1:8081}" "$BIN/portico-batch-processor" & pids+=($!)
PORTICO_HTTP_ADDR="${PORTICO_WEBHOOK_DISPATCHER_HTTP_ADDR:-127.0.0.1:8082}" "$BIN/portico-webhook-dispatcher" & pids+=($!)
cat >&2 <<TXT

Portico is up (dev mode):
  REST     http://${PORTICO_HTTP_ADDR:-127.0.0.1:8080}/api   (OpenAPI: /api/openapi.yaml)
  gRPC     ${PORTICO_GRPC_ADDR:-127.0.0.1:50051}
  metrics  http://${PORTICO_HTTP_ADDR:-127.0.0.1:8080}/metrics, :8081/metrics, :8082/metrics
  service token: $PORTICO_SERVICE_TOKEN
  operator token: $PORTICO_OPERATOR_TOKEN   (admin API: /api/admin/dead-letters)
Ctrl-C stops everything.
TXT

# A portal login link for a development user, so a newcomer sees the product at once:
# wait until the gateway is ready, then ask for a one-time link with the service token.
HTTP="${PORTICO_HTTP_ADDR:-127.0.0.1:8080}"
DEV_USER="${PORTICO_DEV_USER:-dev-user}"
for _ in $(seq 1 120); do curl -fsS -o /dev/null "http://$HTTP/readyz" && break; sleep 0.5; done
portal_link() {
  curl -fsS -X POST "http://$HTTP/api/portal/sessions" \
    -H "authorization: Bearer $PORTICO_SERVICE_TOKEN" -H "x-portico-user-id: $DEV_USER" \
    | sed -n 's/.*"loginUrl":"\([^"]*\)".*/\1/p'
}
if LINK="$(portal_link)" && [ -n "$LINK" ]; then
  case "$LINK" in http*) ;; *) LINK="http://$HTTP$LINK" ;; esac
  cat >&2 <<TXT
  portal   $LINK
           (user $DEV_USER; the link works once within 5 minutes; a new one:
            curl -X POST http://$HTTP/api/portal/sessions -H "authorization: Bearer $PORTICO_SERVICE_TOKEN" -H "x-portico-user-id: $DEV_USER")
TXT
else
  echo "  portal   no login link: the gateway did not answer POST /api/portal/sessions (see its log above)" >&2
fi
wait -n "${pids[@]}"
