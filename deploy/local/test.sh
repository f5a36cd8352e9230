#!/usr/bin/env bash
# Runs Portico's whole test suite: formatting, lints, unit tests, end-to-end tests of
# the real binaries against real PostgreSQL and NATS JetStream (the contract test runs
# Schemathesis, installed here into ~/.cache/portico/venv), the bench smoke run, and
# the Kubernetes manifest validation. Starts PostgreSQL and NATS if nothing answers.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/portico}"
export NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"
bash deploy/local/ensure-deps.sh

# The chaos and readiness tests start, kill and restart private PostgreSQL and NATS
# servers of their own (never the shared ones), and the query-cache check uses psql:
# the server binaries must be installed even when the shared servers run elsewhere.
missing=()
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing+=(postgresql)
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
command -v nats-server >/dev/null 2>&1 || missing+=(nats-server)
if ((${#missing[@]})); then
  echo "test.sh: installing ${missing[*]}" >&2
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Tests create one database per test on this server and one stream prefix per test.
export PORTICO_TEST_DATABASE_URL="${PORTICO_TEST_DATABASE_URL:-${DATABASE_URL%/*}/postgres}"
export PORTICO_TEST_NATS_URL="${PORTICO_TEST_NATS_URL:-$NATS_URL}"

echo "== fmt" >&2
cargo fmt --all -- --check
echo "== clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== sqlx query cache" >&2
PORTICO_SQLX_SERVER_URL="${DATABASE_URL%/*}" bash deploy/local/sqlx-prepare.sh --check
echo "== build" >&2
cargo build --workspace --all-targets --locked
# Schemathesis, for the contract test (tests/e2e/contract.rs): a pinned version in a
# virtualenv outside the clone, installed once and reused by later runs.
SCHEMATHESIS_VERSION=4.32.5
if [ -z "${PORTICO_SCHEMATHESIS:-}" ]; then
  ST_VENV="${PORTICO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/portico}/venv"
  if ! "$ST_VENV/bin/schemathesis" --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION"; then
    echo "== schemathesis $SCHEMATHESIS_VERSION into $ST_VENV" >&2
    rm -rf "$ST_VENV"
    if ! python3 -m venv "$ST_VENV" 2>/dev/null; then
      if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
      $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
      rm -rf "$ST_VENV"
      python3 -m venv "$ST_VENV"
    fi
    "$ST_VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
  fi
  export PORTICO_SCHEMATHESIS="$ST_VENV/bin/schemathesis"
fi
# The buf CLI, for the gRPC contract test (tests/e2e/proto_contract.rs: `buf lint` and
# `buf breaking` against the previous release): a pinned version from npm under the
# same cache, installed once and reused by later runs. Keep BUF_VERSION in step with
# the test's constant.
BUF_VERSION=1.75.0
if [ -z "${PORTICO_BUF:-}" ]; then
  BUF_PREFIX="${PORTICO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/portico}/npm"
  if ! "$BUF_PREFIX/node_modules/.bin/buf" --version 2>/dev/null | grep -qxF "$BUF_VERSION"; then
    echo "== buf $BUF_VERSION into $BUF_PREFIX" >&2
    if ! command -v npm >/dev/null 2>&1; then
      if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
      $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
    fi
    mkdir -p "$BUF_PREFIX"
    npm install --prefix "$BUF_PREFIX" --no-audit --no-fund --loglevel=error "@bufbuild/buf@$BUF_VERSION" >&2
  fi
  export PORTICO_BUF="$BUF_PREFIX/node_modules/.bin/buf"
fi
# The previous release: the upgrade test runs its binaries, the contract test compares
# its protos. Bump it at each release.
export PORTICO_UPGRADE_FROM="${PORTICO_UPGRADE_FROM:-c18712b}"

# --- images and previous release (OPS; deploy/images/) ------------------------------
# The three service images, built with podman from the binaries just built (the Debian
# base is debootstrapped once per recipe and cached under PORTICO_CACHE_DIR), for
# tests/e2e/images.rs; the previous release's binaries, built once per commit into the
# same cache, for tests/e2e/upgrade.rs. build.sh installs podman, buildah, debootstrap
# and runc when missing. PORTICO_SKIP_IMAGES=1 / PORTICO_SKIP_UPGRADE=1 leave them out
# (those tests then pass, saying so). PORTICO_UPGRADE_FROM is set above.
if [ -z "${PORTICO_SKIP_IMAGES:-}" ]; then
  echo "== images" >&2
  bash deploy/images/build.sh >&2
  # shellcheck source=../images/env.sh
  . deploy/images/env.sh
  PORTICO_TEST_IMAGES="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
  export PORTICO_TEST_IMAGES
  # The dev overlay's Deployments under `podman kube play`, until every pod is ready.
  echo "== kube play (dev overlay)" >&2
  PORTICO_KUBE_PLAY_PG="${DATABASE_URL%/*}" bash deploy/images/kube-play.sh 2> >(grep -v 'systemd connection' >&2)
fi
if [ -z "${PORTICO_SKIP_UPGRADE:-}" ]; then
  echo "== previous release $PORTICO_UPGRADE_FROM" >&2
  PORTICO_UPGRADE_FROM_BIN="$(bash deploy/images/build-release.sh "$PORTICO_UPGRADE_FROM")"
  export PORTICO_UPGRADE_FROM_BIN
fi
# --- end images and previous release ----------------------------------------------

# --- portal browser test (PORTAL; tests/e2e/portal_browser.rs) ---------------------
# Debian's chromium and chromedriver drive the portal in a real browser. Installed when
# missing; when they cannot be installed, the browser test says so loudly and skips.
if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then
  echo "test.sh: installing chromium chromium-driver (portal browser test)" >&2
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
      --no-install-recommends chromium chromium-driver >/dev/null; } ||
    echo "test.sh: WARNING: chromium could not be installed; the portal browser test will skip" >&2
fi
# --- end portal browser test -------------------------------------------------------

echo "== tests" >&2
cargo test --workspace --locked -- --test-threads="${PORTICO_TEST_THREADS:-2}"
echo "== manifests" >&2
bash .ci/validate-manifests.sh
echo "test.sh: all green" >&2
