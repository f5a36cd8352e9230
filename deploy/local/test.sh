#!/usr/bin/env bash
# Runs Portico's whole test suite: formatting, lints, unit tests, end-to-end tests of
# the real binaries against real PostgreSQL and NATS JetStream, the bench smoke run,
# and the Kubernetes manifest validation. Starts PostgreSQL and NATS if nothing answers.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/portico}"
export NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"
bash deploy/local/ensure-deps.sh

# Tests create one database per test on this server and one stream prefix per test.
export PORTICO_TEST_DATABASE_URL="${PORTICO_TEST_DATABASE_URL:-${DATABASE_URL%/*}/postgres}"
export PORTICO_TEST_NATS_URL="${PORTICO_TEST_NATS_URL:-$NATS_URL}"

echo "== fmt" >&2
cargo fmt --all -- --check
echo "== clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== build" >&2
cargo build --workspace --all-targets --locked
echo "== tests" >&2
cargo test --workspace --locked -- --test-threads="${PORTICO_TEST_THREADS:-2}"
echo "== manifests" >&2
bash .ci/validate-manifests.sh
echo "test.sh: all green" >&2
