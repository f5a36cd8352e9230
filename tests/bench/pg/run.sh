#!/usr/bin/env bash
# PostgreSQL's CPU per delivery for the dispatcher's two statements per chunk (events,
# then deliveries + attempts), measured with pgbench on a scratch database migrated
# from shared/storage/migrations. Used to weigh schema changes (migration 0007).
#
#   tests/bench/pg/run.sh [extra.sql]    # extra.sql is applied after the migrations
#
# Env: PGHOST (127.0.0.1), PGUSER (postgres), T (transactions per client, 60).
# Prints pgbench's tps (chunks of 256 deliveries, 4 clients) and PostgreSQL CPU per
# delivery (all postgres processes, including exited backends, from /proc).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MIGRATIONS="$HERE/../../../shared/storage/migrations"
export PGHOST="${PGHOST:-127.0.0.1}" PGUSER="${PGUSER:-postgres}" PGOPTIONS="-c client_min_messages=warning"
T="${T:-60}"
DB="portico_pgbench_$$"
psql -q -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
trap 'psql -q -d postgres -c "DROP DATABASE IF EXISTS $DB"' EXIT
for f in "$MIGRATIONS"/*.sql; do psql -q -d "$DB" -v ON_ERROR_STOP=1 -f "$f" >/dev/null; done
if [ -n "${1:-}" ]; then psql -q -d "$DB" -v ON_ERROR_STOP=1 -f "$1"; fi
psql -q -d "$DB" -c "CREATE SEQUENCE mb_seq" -c "INSERT INTO webhooks (id, user_id, url, events, max_retries, base_delay_ms, max_delay_ms) VALUES ('00000000-0000-0000-0000-000000000001', 'u1', 'http://127.0.0.1/x', '{*}', 5, 1000, 60000)"
# utime + stime + cutime + cstime of every postgres process (exited backends are
# counted in the postmaster's children times).
cpu() { local s=0 p; for p in $(pgrep -x postgres); do s=$((s + $(awk '{print $14+$15+$16+$17}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo "$s"; }
c0=$(cpu)
pgbench -n -c 4 -j 2 -t "$T" -f "$HERE/delivery_chunk.sql" "$DB" | grep -E "tps|failed"
c1=$(cpu)
hz=$(getconf CLK_TCK)
echo "postgres CPU per delivery: $(echo "($c1 - $c0) * 1000000 / $hz / ($T * 4 * 256)" | bc -l | cut -c1-6) us"
