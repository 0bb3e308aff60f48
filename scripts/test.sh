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

echo "== format"
cargo fmt --all -- --check

echo "== lint"
cargo clippy --workspace --all-targets -- -D warnings

echo "== tests"
cargo test --workspace 2>&1 | tee target/test-output.log
