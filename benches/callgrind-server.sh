#!/usr/bin/env bash
# Instructions per event of the whole server, under callgrind: `switchyard run` (default pii chain,
# disk durability, one file sink) driven by switchyard-loadgen at a low fixed rate, so every event
# goes through ingest, the log and the sink. Instruction counts do not depend on the machine's load,
# unlike the wall-clock figures of run-e2e.sh.
#
# Usage: benches/callgrind-server.sh [SWITCHYARD_BINARY] [OUTPUT_FILE] [PORT]
#   defaults: target/release/switchyard, callgrind.server.out, 18431 (build the release binaries
#   first, as run-e2e.sh does). Needs valgrind (Debian: apt-get install -y valgrind).
#   Per-function costs: callgrind_annotate OUTPUT_FILE (add --inclusive=yes for inclusive).
#   CALLGRIND_EXTRA: more valgrind options, e.g. --separate-threads=yes (one output file per thread).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${1:-$ROOT/target/release/switchyard}"
OUT="${2:-callgrind.server.out}"
PORT="${3:-18431}"
EVENTS_PER_S=2000
SECONDS_OF_LOAD=20
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
cat > "$DIR/switchyard.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"
data_dir = "$DIR/data"
log_format = "text"
[delivery]
durability = "disk"
[[sanitizers]]
type = "pii"
[sinks.local]
type = "file"
path = "$DIR/data/events"
TOML
RUST_LOG=warn valgrind --tool=callgrind ${CALLGRIND_EXTRA:-} --callgrind-out-file="$OUT" "$BIN" run --config "$DIR/switchyard.toml" \
    > "$DIR/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 300); do
    curl -fsS "http://127.0.0.1:$PORT/health" > /dev/null 2>&1 && break
    sleep 0.2
done
"$ROOT/target/release/switchyard-loadgen" --url "http://127.0.0.1:$PORT" --batch 100 \
    --rate "$EVENTS_PER_S" --duration "$SECONDS_OF_LOAD" --concurrency 2 | grep -E "^accepted|delivered"
kill -TERM "$SERVER"
wait "$SERVER" 2> /dev/null || true
TOTAL=$(callgrind_annotate "$OUT" 2> /dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "instructions per event: $((TOTAL / (EVENTS_PER_S * SECONDS_OF_LOAD)))  ($OUT)"
