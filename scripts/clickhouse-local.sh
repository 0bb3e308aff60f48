#!/usr/bin/env bash
# Shell helpers, sourced by scripts/demo.sh and benches/run-e2e.sh: install Debian's
# clickhouse-server when missing and run a private server on loopback with its data under a folder
# of its own (the Rust tests have the same in tests/src/clickhouse/local_server.rs).

# ensure_clickhouse_server: installs the Debian package when no server binary is found.
ensure_clickhouse_server() {
    if ! command -v clickhouse-server >/dev/null 2>&1 && [ ! -x /usr/sbin/clickhouse-server ]; then
        local sudo=""
        if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
        $sudo apt-get update
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends clickhouse-server
    fi
}

# start_local_clickhouse ROOT HTTP_PORT TCP_PORT: writes a config under ROOT, starts the server in
# the background, waits for /ping (20 s at most). Sets CLICKHOUSE_PID; returns 1 if it did not start.
start_local_clickhouse() {
    local root="$1" http_port="$2" tcp_port="$3"
    mkdir -p "$root"/{log,data,tmp,user_files,format_schemas}
    cat >"$root/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><log>$root/log/server.log</log><errorlog>$root/log/error.log</errorlog><size>10M</size><count>1</count></logger>
    <listen_host>127.0.0.1</listen_host><http_port>$http_port</http_port><tcp_port>$tcp_port</tcp_port>
    <path>$root/data/</path><tmp_path>$root/tmp/</tmp_path><user_files_path>$root/user_files/</user_files_path>
    <format_schema_path>$root/format_schemas/</format_schema_path><users_config>$root/users.xml</users_config>
    <default_profile>default</default_profile><default_database>default</default_database><timezone>UTC</timezone>
    <mark_cache_size>268435456</mark_cache_size>
</yandex>
XML
    cat >"$root/users.xml" <<'XML'
<?xml version="1.0"?>
<yandex>
    <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
    <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default></users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
XML
    "$(command -v clickhouse-server || echo /usr/sbin/clickhouse-server)" \
        --config-file="$root/config.xml" >"$root/log/stdout.log" 2>&1 &
    CLICKHOUSE_PID=$!
    for _ in $(seq 1 100); do
        if curl -sf "http://127.0.0.1:$http_port/ping" >/dev/null; then return 0; fi
        sleep 0.2
    done
    echo "ClickHouse did not start; see $root/log" >&2
    return 1
}
