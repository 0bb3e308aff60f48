#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the suite needs, then runs format, lint and
# every unit and end-to-end test. Usage: ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== toolchain"
cargo --version
rustc --version

echo "== ClickHouse (the ClickHouse sink's tests start their own local servers)"
if ! command -v clickhouse-server >/dev/null 2>&1 && [ ! -x /usr/sbin/clickhouse-server ] \
    && ! command -v clickhouse >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y clickhouse-server clickhouse-client
fi
dpkg-query -W clickhouse-server 2>/dev/null || command -v clickhouse || true

echo "== SDK test dependencies (tests/sdk: the real Segment, RudderStack and PostHog SDKs, pinned)"
node --version
if [ ! -d tests/sdk/node_modules ]; then (cd tests/sdk && npm ci --no-audit --no-fund); fi

echo "== format"
cargo fmt --all -- --check

echo "== lint"
cargo clippy --workspace --all-targets -- -D warnings

echo "== tests"
cargo test --workspace 2>&1 | tee target/test-output.log

# Fuzzing is off by default (CI time is limited): FUZZ_SECONDS=60 ./scripts/test.sh runs every
# cargo-fuzz target for that many seconds after the tests.
if [ -n "${FUZZ_SECONDS:-}" ]; then
    echo "== fuzz (${FUZZ_SECONDS}s per target)"
    ./scripts/fuzz.sh "$FUZZ_SECONDS"
fi
