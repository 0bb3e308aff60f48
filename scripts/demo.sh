#!/usr/bin/env bash
# The console and KPI demo on a fresh machine: installs Debian's clickhouse-server if missing, starts
# it on loopback (data under ./switchyard-demo/clickhouse), runs Switchyard with
# config/examples/demo.toml, loads the seeded demo events (`switchyard demo`), and prints the
# console's address and admin token. Ctrl-C stops both servers. Usage: ./scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT="$PWD/switchyard-demo"
CH_HTTP_PORT="${CH_HTTP_PORT:-18123}"
CH_TCP_PORT="${CH_TCP_PORT:-19000}"
export SWITCHYARD_ADMIN_TOKEN="${SWITCHYARD_ADMIN_TOKEN:-demo-admin-token-$(date +%s)}"
export CLICKHOUSE_URL="http://127.0.0.1:${CH_HTTP_PORT}"

. scripts/clickhouse-local.sh
ensure_clickhouse_server

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

echo "== starting ClickHouse on $CLICKHOUSE_URL"
start_local_clickhouse "$ROOT/clickhouse" "$CH_HTTP_PORT" "$CH_TCP_PORT"
pids+=("$CLICKHOUSE_PID")

echo "== building and starting Switchyard"
cargo build --release -p switchyard-router
./target/release/switchyard run --config config/examples/demo.toml &
pids+=($!)
for _ in $(seq 1 100); do
    if curl -sf http://127.0.0.1:8080/ready >/dev/null; then break; fi
    sleep 0.2
done

echo "== loading the demo events"
./target/release/switchyard demo --url http://127.0.0.1:8080 --users "${DEMO_USERS:-300}" --days "${DEMO_DAYS:-56}"

cat <<TEXT

Console:     http://127.0.0.1:8080/console
Admin token: $SWITCHYARD_ADMIN_TOKEN
KPIs:        curl -H "Authorization: Bearer \$SWITCHYARD_ADMIN_TOKEN" http://127.0.0.1:8080/api/kpis/active-users
(the events reach ClickHouse within a second or two; Ctrl-C stops everything)
TEXT
wait
