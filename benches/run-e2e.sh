#!/usr/bin/env bash
# End-to-end load test of Switchyard on this machine (loopback only): builds the release binaries,
# starts `switchyard run` with a bench config (file sink, default pii chain, batches of 100 per
# request), drives it with switchyard-loadgen, and prints the results.
#
# Usage: benches/run-e2e.sh [--quick] [--no-build] [--duration S] [--soak S] [--concurrency N]
#                           [--batch N] [--rate EVENTS_PER_S] [CASE...]
#   cases: disk (the headline: durability disk, flat out), memory (durability memory, flat out),
#          latency (fixed rate at half the disk case's max, or --rate), soak (RSS over --soak S),
#          clickhouse (a local ClickHouse server + PostHog and Statsig sinks against
#          switchyard-acceptor; needs clickhouse-server), slow (disk flat out, plus a webhook sink
#          whose endpoint answers after 250 ms: it lags ever further, memory must stay flat), all
#   default cases: disk memory latency
#   --quick: 10 s runs (soak 60 s) for a smoke check; the headline figure is 60 s (the default).
#   --rate: the latency case's rate (default half the disk case's max); also caps the soak's and
#   the clickhouse case's (flat out without it).
#   --no-build: use the binaries in target/release; SWITCHYARD_BIN=path runs another switchyard build.
#   Environment: EXTRA (TOML appended after the file sink's section), TMPDIR (where data goes),
#   CACHE_MB (delivery.cache_mb of the file sink cases, default 128 as the server's),
#   RETENTION_HOURS (delivery.retention_hours of the file sink cases, default 168 as the server's;
#   0 deletes delivered log segments at once, so a long soak needs disk for the file sink's output
#   only),
#   CH_BATCH_EVENTS (ClickHouse batch, default 50000), CH_BATCH_BYTES (its max_bytes, default
#   16777216 as the sink's), CH_CACHE_MB (delivery.cache_mb of the
#   clickhouse case, default 512): tuned for throughput; the sink's and server's defaults are 10000
#   and 128 (see BENCHMARKS.md, fifth pass, for both). CH_SQL_AFTER_START: SQL statements
#   (';'-separated) run on the ClickHouse server once Switchyard has created its tables, for
#   experiments (e.g. dropping a rollup's materialized view to measure what it costs the server).
# Every figure printed is from switchyard-loadgen; the load average is printed before each case.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DURATION=60
SOAK=600
CONCURRENCY=8
BATCH=100
RATE=""
BUILD=1
CASES=()
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) DURATION=10; SOAK=60 ;;
        --no-build) BUILD=0 ;;
        --duration) DURATION="$2"; shift ;;
        --soak) SOAK="$2"; shift ;;
        --concurrency) CONCURRENCY="$2"; shift ;;
        --batch) BATCH="$2"; shift ;;
        --rate) RATE="$2"; shift ;;
        -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
        all) CASES+=(disk memory latency soak clickhouse slow) ;;
        disk|memory|latency|soak|clickhouse|slow) CASES+=("$1") ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
[ ${#CASES[@]} -eq 0 ] && CASES=(disk memory latency)

cd "$ROOT"
. scripts/clickhouse-local.sh
if [ "$BUILD" = 1 ]; then
    echo "== building release binaries"
    cargo build --release -p switchyard-router --bin switchyard
    cargo build --release -p switchyard-benches --bin switchyard-loadgen --bin switchyard-acceptor
fi
SWITCHYARD="${SWITCHYARD_BIN:-$ROOT/target/release/switchyard}"
LOADGEN="$ROOT/target/release/switchyard-loadgen"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/switchyard-e2e.XXXXXX")"
SERVER_PID=""
FAKES_PID=""
cleanup() {
    [ -n "$SERVER_PID" ] && kill -TERM "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
    [ -n "$FAKES_PID" ] && kill -TERM "$FAKES_PID" 2>/dev/null && wait "$FAKES_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

machine() {
    echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
}

load_note() {
    echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); rustc processes: $(pgrep -c rustc || true)"
}

# write_config NAME DURABILITY [EXTRA_TOML]
write_config() {
    local dir="$WORK/$1" port
    port="$(free_port)"
    mkdir -p "$dir"
    cat >"$dir/switchyard.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
data_dir = "$dir/data"
log_format = "text"

[delivery]
durability = "$2"
cache_mb = ${CACHE_MB:-128}
retention_hours = ${RETENTION_HOURS:-168}

[[sanitizers]]
type = "pii"

[sinks.local]
type = "file"
path = "$dir/data/events"
${3:-}
EOF
    echo "$port"
}

# start_server NAME: starts switchyard on the case's config, waits for /health.
start_server() {
    local dir="$WORK/$1" port="$2"
    RUST_LOG=warn "$SWITCHYARD" run --config "$dir/switchyard.toml" >"$dir/stdout.log" 2>"$dir/stderr.log" &
    SERVER_PID=$!
    for _ in $(seq 1 100); do
        if curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    echo "switchyard did not start:" >&2
    cat "$dir/stderr.log" >&2
    exit 1
}

stop_server() {
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 300); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

# run_case NAME DURABILITY LOADGEN_ARGS... (the extra TOML comes from $EXTRA)
run_case() {
    local name="$1" durability="$2" port
    shift 2
    port="$(write_config "$name" "$durability" "${EXTRA:-}")"
    start_server "$name" "$port"
    echo
    echo "== case $name: durability $durability, $*"
    load_note
    "$LOADGEN" --url "http://127.0.0.1:$port" --pid "$SERVER_PID" --batch "$BATCH" \
        --json "$WORK/$name.json" "$@"
    stop_server
    if grep -q -E "ERROR|panicked" "$WORK/$name/stderr.log"; then
        echo "server errors:"; grep -E "ERROR|panicked" "$WORK/$name/stderr.log" | head -5
    fi
    du -sh "$WORK/$name/data/events" 2>/dev/null | sed 's/^/file sink wrote /'
    rm -rf "$WORK/$name/data"
}

# The ClickHouse case: a local clickhouse-server (its own data dir under $WORK), PostHog and Statsig
# sinks pointed at switchyard-acceptor (accepts everything, counts; the strict fakes of the tests
# check wire formats but keep every event in memory), no file sink. Delivered counts come from the
# three sinks' counters.
# CPU seconds (user + system) a process has used so far; 0 when it is gone. With children: the
# ClickHouse server runs as a child of its watchdog on some versions.
cpu_seconds() {
    local pid="$1" total=0 p
    for p in "$pid" $(pgrep -P "$pid" 2>/dev/null || true); do
        [ -r "/proc/$p/stat" ] || continue
        total=$(( total + $(awk '{print $14 + $15}' "/proc/$p/stat") ))
    done
    python3 -c "print($total / $(getconf CLK_TCK))"
}

run_clickhouse_case() {
    local ch="$WORK/clickhouse" dir="$WORK/clickhouse-case" http_port tcp_port accept_url port ch_pid
    http_port="$(free_port)"; tcp_port="$(free_port)"
    mkdir -p "$dir"
    start_local_clickhouse "$ch" "$http_port" "$tcp_port" || return 1
    ch_pid="$CLICKHOUSE_PID"
    start_acceptor
    accept_url="$ACCEPT_URL"
    port="$(free_port)"
    cat >"$dir/switchyard.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
data_dir = "$dir/data"

[delivery]
durability = "disk"
# Tuned for throughput: larger inserts cost the ClickHouse server less CPU per row than the sink's
# default 10,000 events (max_events 50,000; the default max_bytes of 16 MiB ends a batch at about
# 20,000 of these events), and the cache has room for a couple of such batches of decoded events
# (~5 KB each), so the warehouse sink reads from memory while an insert is in flight.
cache_mb = ${CH_CACHE_MB:-512}

[[sanitizers]]
type = "pii"

[sinks.warehouse]
type = "clickhouse"
url = "http://127.0.0.1:$http_port"
database = "bench"
table = "events"
[sinks.warehouse.batch]
max_events = ${CH_BATCH_EVENTS:-50000}
max_bytes = ${CH_BATCH_BYTES:-16777216}
max_wait_ms = 1000

[sinks.posthog]
type = "posthog"
url = "$accept_url"
api_key = "phc_benchmark"

[sinks.statsig]
type = "statsig"
url = "$accept_url"
api_key = "secret-benchmark"
TOML
    start_server clickhouse-case "$port"
    if [ -n "${CH_SQL_AFTER_START:-}" ]; then
        # An experiment's statements (';'-separated), run once the sink has created its tables.
        local statement statements
        IFS=';' read -r -d '' -a statements <<<"$CH_SQL_AFTER_START" || true
        for statement in "${statements[@]}"; do
            [ -z "${statement//[[:space:]]/}" ] && continue
            curl -sf "http://127.0.0.1:$http_port/" --data-binary "$statement" || echo "CH_SQL_AFTER_START failed: $statement" >&2
        done
    fi
    local ch_cpu_before fakes_cpu_before
    ch_cpu_before="$(cpu_seconds "$ch_pid")"; fakes_cpu_before="$(cpu_seconds "$FAKES_PID")"
    echo
    echo "== case clickhouse: ClickHouse $(curl -s "http://127.0.0.1:$http_port/?query=SELECT%20version()") + PostHog + Statsig (switchyard-acceptor), durability disk, --duration $DURATION --concurrency $CONCURRENCY"
    load_note
    "$LOADGEN" --url "http://127.0.0.1:$port" --pid "$SERVER_PID" --batch "$BATCH" \
        --json "$WORK/clickhouse.json" --duration "$DURATION" --concurrency "$CONCURRENCY" \
        ${RATE:+--rate "$RATE"}
    echo "CPU of the other processes during the run (same two cores): ClickHouse server $(python3 -c "print(round($(cpu_seconds "$ch_pid") - $ch_cpu_before, 1))") CPU-s, switchyard-acceptor $(python3 -c "print(round($(cpu_seconds "$FAKES_PID") - $fakes_cpu_before, 1))") CPU-s"
    stop_server
    if grep -q -E "ERROR|panicked" "$dir/stderr.log"; then
        echo "server errors:"; grep -E "ERROR|panicked" "$dir/stderr.log" | head -5
    fi
    echo "rows in ClickHouse: $(curl -s "http://127.0.0.1:$http_port/" --data-binary 'SELECT count() FROM bench.events')"
    stop_acceptor
    kill -TERM "$ch_pid" 2>/dev/null; wait "$ch_pid" 2>/dev/null || true
    rm -rf "$dir/data" "$ch"
}

# start_acceptor [ARGS...]: switchyard-acceptor in the background; sets FAKES_PID and ACCEPT_URL.
start_acceptor() {
    local log="$WORK/acceptor.log"
    "$ROOT/target/release/switchyard-acceptor" --listen 127.0.0.1:0 "$@" >"$log" 2>&1 &
    FAKES_PID=$!
    for _ in $(seq 1 50); do grep -q "listening on" "$log" && break; sleep 0.1; done
    ACCEPT_URL="http://$(sed -n 's/^listening on //p' "$log")"
}

stop_acceptor() {
    kill -TERM "$FAKES_PID" 2>/dev/null && wait "$FAKES_PID" 2>/dev/null || true
    FAKES_PID=""
    tail -1 "$WORK/acceptor.log" | sed 's/^/acceptor: /'
}

machine
MAX_RATE=""
for case in "${CASES[@]}"; do
    case "$case" in
        disk)
            run_case disk disk --duration "$DURATION" --concurrency "$CONCURRENCY"
            MAX_RATE="$(python3 -c "import json; print(json.load(open('$WORK/disk.json'))['events_per_second'])")"
            ;;
        memory)
            run_case memory memory --duration "$DURATION" --concurrency "$CONCURRENCY"
            ;;
        latency)
            rate="$RATE"
            if [ -z "$rate" ]; then
                if [ -z "$MAX_RATE" ]; then
                    echo "latency: measuring the max first (disk, 10 s)"
                    run_case disk-max disk --duration 10 --concurrency "$CONCURRENCY"
                    MAX_RATE="$(python3 -c "import json; print(json.load(open('$WORK/disk-max.json'))['events_per_second'])")"
                fi
                rate="$(python3 -c "print(int(float('$MAX_RATE') / 2))")"
            fi
            run_case latency disk --duration "$DURATION" --concurrency "$CONCURRENCY" --rate "$rate"
            ;;
        soak)
            run_case soak disk --duration "$SOAK" --concurrency "$CONCURRENCY" --report-every 30 \
                ${RATE:+--rate "$RATE"}
            ;;
        clickhouse)
            if ! command -v clickhouse-server >/dev/null 2>&1 && [ ! -x /usr/sbin/clickhouse-server ]; then
                echo "== case clickhouse: skipped (no clickhouse-server; install the Debian package)"
                continue
            fi
            run_clickhouse_case
            ;;
        slow)
            start_acceptor --delay-ms 250
            EXTRA="${EXTRA:-}"$'\n[sinks.slow]\ntype = "webhook"\n'"url = \"$ACCEPT_URL/collect\""$'\nsecret = "0123456789abcdef0123"\n' \
                run_case slow disk --duration "$DURATION" --concurrency "$CONCURRENCY"
            stop_acceptor
            ;;
    esac
done
