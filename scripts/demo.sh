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

if ! command -v clickhouse-server >/dev/null 2>&1 && [ ! -x /usr/sbin/clickhouse-server ]; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends clickhouse-server
fi
CH_BIN="$(command -v clickhouse-server || echo /usr/sbin/clickhouse-server)"

mkdir -p "$ROOT"/clickhouse/{log,data,tmp,user_files,format_schemas}
cat > "$ROOT/clickhouse/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><log>$ROOT/clickhouse/log/server.log</log><errorlog>$ROOT/clickhouse/log/error.log</errorlog><size>10M</size><count>1</count></logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>$CH_HTTP_PORT</http_port>
    <tcp_port>$CH_TCP_PORT</tcp_port>
    <path>$ROOT/clickhouse/data/</path>
    <tmp_path>$ROOT/clickhouse/tmp/</tmp_path>
    <user_files_path>$ROOT/clickhouse/user_files/</user_files_path>
    <format_schema_path>$ROOT/clickhouse/format_schemas/</format_schema_path>
    <users_config>$ROOT/clickhouse/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mark_cache_size>268435456</mark_cache_size>
</yandex>
XML
cat > "$ROOT/clickhouse/users.xml" <<'XML'
<?xml version="1.0"?>
<yandex>
    <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
    <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default></users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
XML

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

echo "== starting ClickHouse on $CLICKHOUSE_URL"
"$CH_BIN" --config-file="$ROOT/clickhouse/config.xml" >"$ROOT/clickhouse/log/stdout.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
    if curl -sf "$CLICKHOUSE_URL/ping" >/dev/null; then break; fi
    sleep 0.2
done
curl -sf "$CLICKHOUSE_URL/ping" >/dev/null || { echo "ClickHouse did not start; see $ROOT/clickhouse/log"; exit 1; }

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
