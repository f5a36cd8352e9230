#!/usr/bin/env bash
# Regenerates the compile-time query cache (.sqlx/) of portico-storage: applies every
# migration to a scratch database, then builds the storage crate with the query macros
# online, which describe each statement against that database and write one
# query-<hash>.json per statement. Run it after changing a query or the schema, and
# commit .sqlx/. `--check` regenerates into a temporary directory and fails when the
# committed cache differs (a query added, changed or removed without regenerating).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
SERVER="${PORTICO_SQLX_SERVER_URL:-postgres://postgres@127.0.0.1:5432}"
DB="portico_sqlx_prepare_$$"
URL="$SERVER/$DB"
psql -q -X -v ON_ERROR_STOP=1 "$SERVER/postgres" -c "CREATE DATABASE $DB" >/dev/null
trap 'psql -q -X "$SERVER/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true' EXIT
for migration in shared/storage/migrations/*.sql; do
    psql -q -X -v ON_ERROR_STOP=1 "$URL" -f "$migration" >/dev/null 2>&1 \
        || { echo "sqlx-prepare: $migration failed" >&2; psql -X -v ON_ERROR_STOP=1 "$URL" -f "$migration"; exit 1; }
done

OUT="$ROOT/.sqlx"
if [[ "${1:-}" == "--check" ]]; then
    OUT="$(mktemp -d)"
fi
rm -f "$OUT"/query-*.json
# A target directory of its own: switching the macros online must not invalidate the
# main build, and the touch makes every query macro of the crate expand again.
find shared/storage/src -name '*.rs' -exec touch {} +
SQLX_OFFLINE=false DATABASE_URL="$URL" SQLX_OFFLINE_DIR="$OUT" \
    cargo check -q -p portico-storage --all-targets --target-dir "${CARGO_TARGET_DIR:-$ROOT/target}/sqlx-prepare"
count="$(find "$OUT" -name 'query-*.json' | wc -l)"
if [[ "${1:-}" == "--check" ]]; then
    if ! diff -rq "$ROOT/.sqlx" "$OUT" >/dev/null; then
        diff -rq "$ROOT/.sqlx" "$OUT" >&2 || true
        echo "sqlx-prepare: .sqlx/ is stale; run deploy/local/sqlx-prepare.sh and commit .sqlx/" >&2
        exit 1
    fi
    echo "sqlx-prepare: .sqlx/ is current ($count statements)" >&2
else
    echo "sqlx-prepare: wrote $count statements to .sqlx/" >&2
fi
