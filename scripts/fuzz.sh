#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets: the Segment and PostHog decoders, the gzip, base64
# and lz64 layers) for a bounded time, starting from the committed seeds in fuzz/seeds/<target>.
#
# Usage: ./scripts/fuzz.sh [SECONDS per target, default $FUZZ_SECONDS or 60] [TARGET...]
#
# cargo-fuzz needs nightly compiler flags; RUSTC_BOOTSTRAP=1 enables them on the stable toolchain
# (its AddressSanitizer runtime ships with rust-std). Inputs found are kept in fuzz/corpus/<target>
# (not committed); a crash leaves its input in fuzz/artifacts/<target>/ and fails this script. Turn a
# crash into a regression test: add the input to fuzz/seeds/<target>/ (replayed by the router's
# `fuzz_seeds_replay` unit test in every `cargo test`) and a named unit test next to the fix.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-${FUZZ_SECONDS:-60}}"
shift || true
export RUSTC_BOOTSTRAP=1

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

cargo fuzz build
for target in "${targets[@]}"; do
    echo "== fuzz ${target} (${seconds}s)"
    mkdir -p "fuzz/corpus/${target}"
    cargo fuzz run "${target}" "fuzz/corpus/${target}" "fuzz/seeds/${target}" -- \
        -max_total_time="${seconds}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done
echo "fuzzing found no crash in ${#targets[@]} targets (${seconds}s each)"
