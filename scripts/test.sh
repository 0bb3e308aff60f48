#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the suite needs, then runs format, lint and
# every unit and end-to-end test. Usage: ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== toolchain"
cargo --version
rustc --version

echo "== Debian packages: ClickHouse (the sink's tests start local servers), Chromium (console tests)"
missing=()
if ! command -v clickhouse-server >/dev/null 2>&1 && [ ! -x /usr/sbin/clickhouse-server ] \
    && ! command -v clickhouse >/dev/null 2>&1; then
    missing+=(clickhouse-server clickhouse-client)
fi
if [ -z "${CHROMIUM_PATH:-}" ] && [ ! -x /usr/bin/chromium ]; then
    missing+=(chromium)
fi
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi
dpkg-query -W clickhouse-server chromium 2>/dev/null || true

echo "== SDK test dependencies (tests/sdk: the real Segment, RudderStack and PostHog SDKs, pinned)"
node --version
if [ ! -d tests/sdk/node_modules ]; then (cd tests/sdk && npm ci --no-audit --no-fund); fi
echo "== console test dependencies (tests/console: playwright-core, pinned)"
if [ ! -d tests/console/node_modules ]; then (cd tests/console && npm ci --no-audit --no-fund); fi

echo "== format"
cargo fmt --all -- --check

echo "== lint"
cargo clippy --workspace --all-targets -- -D warnings

echo "== tests"
cargo test --workspace 2>&1 | tee target/test-output.log

# Fuzzing is opt-in (FUZZ_SECONDS=60 ./scripts/test.sh, or ./scripts/fuzz.sh 60): building every
# target with sanitizers costs minutes on two cores, which the per-change suite cannot afford.
if [ -n "${FUZZ_SECONDS:-}" ]; then
    echo "== fuzz (${FUZZ_SECONDS}s per target)"
    ./scripts/fuzz.sh "$FUZZ_SECONDS"
fi
