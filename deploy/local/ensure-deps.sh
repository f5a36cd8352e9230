#!/usr/bin/env bash
# Makes sure PostgreSQL and NATS JetStream answer on the configured addresses.
# Uses whatever already answers; otherwise installs the Debian packages (postgresql,
# nats-server) if missing and starts private instances with their data under .run/.
# Sourced by run.sh and test.sh; safe to run on its own.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RUN_DIR="${PORTICO_RUN_DIR:-$ROOT/.run}"
DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/portico}"
NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"

# host and port out of a URL like scheme://user@host:port/db
url_host() { local h="${1#*://}"; h="${h#*@}"; h="${h%%/*}"; echo "${h%:*}"; }
url_port() { local h="${1#*://}"; h="${h#*@}"; h="${h%%/*}"; [[ "$h" == *:* ]] && echo "${h##*:}" || echo "$2"; }
answers() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
wait_answers() {
  for _ in $(seq 1 100); do answers "$1" "$2" && return 0; sleep 0.1; done
  echo "ensure-deps: $3 did not come up on $1:$2" >&2; return 1
}
need_packages() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if ((${#missing[@]})); then
    echo "ensure-deps: installing ${missing[*]}" >&2
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

PG_HOST="$(url_host "$DATABASE_URL")"; PG_PORT="$(url_port "$DATABASE_URL" 5432)"
if answers "$PG_HOST" "$PG_PORT"; then
  echo "ensure-deps: PostgreSQL answers on $PG_HOST:$PG_PORT; using it" >&2
else
  need_packages postgresql
  PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
  PG_DATA="$RUN_DIR/postgres"
  mkdir -p "$RUN_DIR"
  if [ ! -s "$PG_DATA/PG_VERSION" ]; then
    mkdir -p "$PG_DATA"
    if [ "$(id -u)" -eq 0 ]; then chown postgres "$PG_DATA" "$RUN_DIR"; fi
    as_pg() { if [ "$(id -u)" -eq 0 ]; then su postgres -s /bin/bash -c "$*"; else bash -c "$*"; fi; }
    as_pg "'$PG_BIN/initdb' -D '$PG_DATA' -A trust -U postgres" >/dev/null
  fi
  as_pg() { if [ "$(id -u)" -eq 0 ]; then su postgres -s /bin/bash -c "$*"; else bash -c "$*"; fi; }
  as_pg "'$PG_BIN/pg_ctl' -D '$PG_DATA' -l '$PG_DATA/server.log' -o \"-p $PG_PORT -k /tmp -c listen_addresses=$PG_HOST\" start" >/dev/null
  wait_answers "$PG_HOST" "$PG_PORT" PostgreSQL
  echo "ensure-deps: started PostgreSQL on $PG_HOST:$PG_PORT (data in $PG_DATA)" >&2
fi

NATS_HOST="$(url_host "$NATS_URL")"; NATS_PORT="$(url_port "$NATS_URL" 4222)"
if answers "$NATS_HOST" "$NATS_PORT"; then
  echo "ensure-deps: NATS answers on $NATS_HOST:$NATS_PORT; using it" >&2
else
  command -v nats-server >/dev/null 2>&1 || need_packages nats-server
  mkdir -p "$RUN_DIR/nats"
  nohup nats-server -js -a "$NATS_HOST" -p "$NATS_PORT" -sd "$RUN_DIR/nats" >"$RUN_DIR/nats.log" 2>&1 &
  wait_answers "$NATS_HOST" "$NATS_PORT" NATS
  echo "ensure-deps: started NATS with JetStream on $NATS_HOST:$NATS_PORT (data in $RUN_DIR/nats)" >&2
fi
