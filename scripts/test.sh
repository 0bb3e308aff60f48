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

# Fuzzing: in CI (CI=true) every cargo-fuzz target runs for 15 s after the tests, from the committed
# seeds; elsewhere it is off unless asked for: FUZZ_SECONDS=60 ./scripts/test.sh.
if [ -z "${FUZZ_SECONDS:-}" ] && [ -n "${CI:-}" ]; then
    FUZZ_SECONDS=15
fi
if [ -n "${FUZZ_SECONDS:-}" ]; then
    echo "== fuzz (${FUZZ_SECONDS}s per target)"
    ./scripts/fuzz.sh "$FUZZ_SECONDS"
fi
