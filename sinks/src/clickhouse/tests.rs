//! The ClickHouse sink against a real local `clickhouse-server` (started once for this test binary,
//! each test in its own database), plus the sink-only insert benchmark (ignored; run it with
//! `cargo test --release -p switchyard-sinks clickhouse_insert_benchmark -- --ignored --nocapture`).

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use clickhouse::Client;
use switchyard_schemas::Event;

use super::*;
use crate::settings::ClickhouseSinkConfig;

#[path = "../../../tests/src/clickhouse/local_server.rs"]
#[allow(dead_code)]
mod local_server;

use local_server::{LocalClickhouse, PASSWORD_USER};

/// The server every test of this binary shares; stopped when the process exits.
fn server() -> &'static LocalClickhouse {
    static SERVER: OnceLock<Result<LocalClickhouse, String>> = OnceLock::new();
    match SERVER.get_or_init(LocalClickhouse::start_for_process) {
        Ok(server) => server,
        Err(error) => panic!("cannot start a local ClickHouse server: {error}"),
    }
}

fn config(database: &str) -> ClickhouseSinkConfig {
    ClickhouseSinkConfig {
        url: server().url(),
        database: database.to_string(),
        table: "events".to_string(),
        user: "default".to_string(),
        password: None,
        create_schema: true,
        retention_days: Some(30),
        request_timeout_secs: 30,
    }
}

fn client() -> Client {
    Client::default()
        .with_url(server().url())
        .with_validation(false)
}

async fn count(sql: &str) -> u64 {
    client()
        .query(sql)
        .fetch_one::<u64>()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn run(sql: &str) {
    client()
        .query(sql)
        .execute()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// `count` events with realistic content, spread over two months (two partitions).
fn events(count: usize, prefix: &str) -> Vec<Arc<Event>> {
    (0..count)
        .map(|i| {
            let day = 28 + (i % 6);
            let (month, day) = if day > 30 { (5, day - 30) } else { (4, day) };
            let time = format!("2024-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z", i % 24, i % 60, (i / 60) % 60, i % 1000);
            Arc::new(
                serde_json::from_value(serde_json::json!({
                    "type": "track", "event": format!("Event {}", i % 7), "messageId": format!("{prefix}-{i}"),
                    "userId": format!("user-{}", i % 97),
                    "timestamp": time, "receivedAt": time,
                    "properties": {"total": i as f64 * 1.5, "currency": "EUR", "items": [{"sku": format!("A-{i}"), "qty": 2}], "note": "tab\there \"quoted\" ünïcode ✓"},
                    "context": {"library": {"name": "analytics-node", "version": "2.1.0"}, "page": {"path": "/checkout", "url": "https://shop.test/checkout"},
                                "locale": "en-GB", "sessionId": format!("s-{}", i % 300)},
                    "source": "web", "requestId": format!("req-{}", i / 100), "ip": "203.0.113.9", "userAgent": "Mozilla/5.0 (test)"
                }))
                .expect("valid event"),
            )
        })
        .collect()
}

#[tokio::test]
async fn start_twice_and_concurrently_applies_each_migration_once() {
    let first = ClickhouseSink::new("warehouse", config("sink_migrations")).unwrap();
    first.start().await.unwrap();
    // One record per migration; background merges cannot lower that (the keys differ).
    let raw = "SELECT count() FROM sink_migrations.switchyard_migrations";
    assert_eq!(count(raw).await, 3);
    let again = ClickhouseSink::new("warehouse", config("sink_migrations")).unwrap();
    again.start().await.unwrap();
    first.start().await.unwrap();
    assert_eq!(count(raw).await, 3, "later starts apply and record nothing");

    // Two instances starting at once both succeed; what both recorded collapses under FINAL.
    let a = ClickhouseSink::new("warehouse", config("sink_migrations_race")).unwrap();
    let b = ClickhouseSink::new("warehouse", config("sink_migrations_race")).unwrap();
    let (started_a, started_b) = tokio::join!(a.start(), b.start());
    started_a.unwrap();
    started_b.unwrap();
    assert_eq!(
        count("SELECT count() FROM sink_migrations_race.switchyard_migrations FINAL WHERE table_name = 'events'").await,
        3
    );
    let tables = count(
        "SELECT count() FROM system.tables WHERE database = 'sink_migrations' AND name IN \
         ('events', 'events_daily', 'events_daily_mv', 'events_by_person', 'events_by_person_mv', 'switchyard_migrations')",
    )
    .await;
    assert_eq!(tables, 6);
    let prepared = first.prepared().unwrap();
    assert_eq!(
        prepared.layout,
        Layout::for_features(&prepared.features),
        "server {} got the layout its features call for",
        prepared.version
    );
}

#[tokio::test]
async fn a_batch_sent_twice_is_one_row_under_final_and_rollups_count_it() {
    let sink = ClickhouseSink::new("warehouse", config("sink_resend")).unwrap();
    sink.start().await.unwrap();
    // No background merge may collapse the copies before they are counted.
    run("SYSTEM STOP MERGES sink_resend.events").await;
    let batch = events(500, "resend");
    sink.send(&batch).await.unwrap();
    sink.send(&batch).await.unwrap();
    assert_eq!(
        count("SELECT count() FROM sink_resend.events FINAL").await,
        500
    );
    let raw = count("SELECT count() FROM sink_resend.events").await;
    let prepared = sink.prepared().unwrap();
    if prepared.features.insert_dedup_token {
        assert_eq!(raw, 500, "the server dropped the repeated insert");
    } else {
        assert_eq!(raw, 1000, "both inserts landed; FINAL collapses them");
    }
    assert_eq!(
        count("SELECT count(DISTINCT message_id) FROM sink_resend.events").await,
        500
    );
    assert_eq!(
        count("SELECT uniqMerge(users) FROM sink_resend.events_daily").await,
        97
    );
    assert_eq!(
        count("SELECT count() FROM sink_resend.events_by_person FINAL").await,
        500
    );
    assert_eq!(
        count("SELECT count() FROM sink_resend.events FINAL WHERE page_path = '/checkout' AND library_name = 'analytics-node' AND locale = 'en-GB' AND session_id = 's-7' AND person_id = 'user-7'").await,
        1
    );
    let properties = client()
        .query("SELECT properties FROM sink_resend.events WHERE message_id = 'resend-3'")
        .fetch_one::<String>()
        .await
        .unwrap();
    let properties: serde_json::Value = serde_json::from_str(&properties).unwrap();
    assert_eq!(
        properties,
        serde_json::Value::Object(batch[3].properties.clone())
    );
    assert_eq!(properties["note"], "tab\there \"quoted\" ünïcode ✓");
}

#[tokio::test]
async fn schema_errors_are_permanent_and_name_the_server_message() {
    let sink = ClickhouseSink::new("warehouse", config("sink_poison")).unwrap();
    sink.start().await.unwrap();
    run("DROP TABLE sink_poison.events").await;
    match sink.send(&events(10, "poison")).await {
        Err(SendError::Permanent(message)) => {
            assert!(message.contains("Code: 60"), "{message}");
            assert!(message.contains("sink_poison"), "{message}");
        }
        other => panic!("expected a permanent error, got {other:?}"),
    }
    let mut existing = config("sink_poison");
    existing.create_schema = false;
    let error = ClickhouseSink::new("warehouse", existing)
        .unwrap()
        .start()
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("does not exist"), "{error}");
}

#[tokio::test]
async fn start_names_the_url_when_the_server_is_unreachable_or_refuses_the_user() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut unreachable = config("sink_health");
    unreachable.url = format!("http://127.0.0.1:{closed}");
    let sink = ClickhouseSink::new("warehouse", unreachable.clone()).unwrap();
    let error = sink.start().await.unwrap_err().to_string();
    assert!(
        error.contains(&format!(
            "ClickHouse at http://127.0.0.1:{closed} is unreachable"
        )),
        "{error}"
    );
    assert!(sink.health().await.is_err());
    match sink.send(&events(1, "down")).await {
        Err(SendError::Retryable(message)) => assert!(message.contains("unreachable")),
        other => panic!("expected a retryable error, got {other:?}"),
    }

    let (user, password) = PASSWORD_USER;
    let mut wrong = config("sink_health");
    wrong.user = user.to_string();
    wrong.password = Some("not-the-password".to_string());
    let error = ClickhouseSink::new("warehouse", wrong.clone())
        .unwrap()
        .start()
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains(&server().url()), "{error}");
    assert!(error.contains("refused user 'switchyard'"), "{error}");
    assert!(!error.contains("not-the-password"), "{error}");
    assert!(!format!("{wrong:?}").contains("not-the-password"));

    wrong.password = Some(password.to_string());
    let sink = ClickhouseSink::new("warehouse", wrong).unwrap();
    sink.start().await.unwrap();
    sink.health().await.unwrap();
}

/// Rows per second of the sink alone, against the same rows as TSV posted over HTTP at the same
/// batch sizes into an identical table (same rollups), and `clickhouse-client` in one stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
async fn clickhouse_insert_benchmark() {
    const TOTAL: usize = 200_000;
    let all = events(TOTAL, "bench");
    let sink = ClickhouseSink::new("bench", config("sink_bench")).unwrap();
    sink.start().await.unwrap();
    let mut copy = config("sink_bench");
    copy.table = "tsv_events".to_string();
    ClickhouseSink::new("bench_tsv", copy)
        .unwrap()
        .start()
        .await
        .unwrap();
    let prepared = sink.prepared().unwrap();
    println!(
        "server {} (layout {}), {TOTAL} rows per run",
        prepared.version,
        prepared.layout.name()
    );

    // The sink's own CPU cost per row: building the rows (JSON text of the maps, lifted fields,
    // timestamps), without RowBinary encoding, compression or the network.
    let started = Instant::now();
    let mut json_bytes = 0usize;
    for event in &all {
        let (row, _) = ModernRow::of(event);
        json_bytes += row.properties.len() + row.context.len();
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "building rows only: {:>9.0} rows/s ({elapsed:.2} s, {} MB of JSON text)",
        TOTAL as f64 / elapsed,
        json_bytes / 1_000_000
    );

    // The rows as TSV, written by the server from what the sink inserted.
    for batch in all.chunks(100_000) {
        sink.send(batch).await.unwrap();
    }
    let columns = client()
        .query("SELECT name FROM system.columns WHERE database = 'sink_bench' AND table = 'events' AND default_kind = ''")
        .fetch_all::<String>()
        .await
        .unwrap()
        .join(", ");
    let tsv = client()
        .query(&format!("SELECT {columns} FROM sink_bench.events"))
        .fetch_bytes("TabSeparated")
        .unwrap()
        .collect()
        .await
        .unwrap();
    let lines: Vec<&[u8]> = tsv.split_inclusive(|b| *b == b'\n').collect();
    assert_eq!(lines.len(), TOTAL);
    let insert_tsv = format!("INSERT INTO sink_bench.tsv_events ({columns}) FORMAT TabSeparated");
    let http = reqwest::Client::new();

    // Sink and TSV batches alternate, so both see the same load on a shared machine.
    for batch_size in [1_000usize, 10_000, 100_000] {
        run("TRUNCATE TABLE sink_bench.events").await;
        run("TRUNCATE TABLE sink_bench.tsv_events").await;
        run("SYSTEM FLUSH LOGS").await;
        let since = count("SELECT toUInt64(now())").await + 1;
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let (mut sink_elapsed, mut tsv_elapsed) = (0f64, 0f64);
        for (batch, lines) in all.chunks(batch_size).zip(lines.chunks(batch_size)) {
            let started = Instant::now();
            sink.send(batch).await.unwrap();
            sink_elapsed += started.elapsed().as_secs_f64();
            let body = lines.concat();
            let started = Instant::now();
            let response = http
                .post(server().url())
                .query(&[("query", insert_tsv.as_str())])
                .body(body)
                .send()
                .await
                .unwrap();
            tsv_elapsed += started.elapsed().as_secs_f64();
            assert!(
                response.status().is_success(),
                "{:?}",
                response.text().await
            );
        }
        for table in ["events", "tsv_events"] {
            assert_eq!(
                count(&format!("SELECT count() FROM sink_bench.{table}")).await,
                TOTAL as u64
            );
        }
        run("SYSTEM FLUSH LOGS").await;
        let server_ms = |table: &str| {
            format!(
                "SELECT toUInt64(sum(query_duration_ms)) FROM system.query_log WHERE type = 2 \
                 AND query LIKE 'INSERT INTO {table}%' AND written_rows > 0 \
                 AND event_time >= toDateTime({since})"
            )
        };
        let sink_server = count(&server_ms("`events`")).await as f64 / 1000.0;
        let tsv_server = count(&server_ms("sink_bench.tsv_events")).await as f64 / 1000.0;
        println!(
            "batch {batch_size:>6}: sink {:>7.0} rows/s ({sink_elapsed:.2} s, server busy {sink_server:.2} s) | \
             TSV over HTTP {:>7.0} rows/s ({tsv_elapsed:.2} s, server busy {tsv_server:.2} s)",
            TOTAL as f64 / sink_elapsed,
            TOTAL as f64 / tsv_elapsed,
        );
    }

    run("TRUNCATE TABLE sink_bench.tsv_events").await;
    let path = std::env::temp_dir().join(format!("switchyard-bench-{}.tsv", std::process::id()));
    std::fs::write(&path, &tsv).unwrap();
    let started = Instant::now();
    let status = std::process::Command::new("clickhouse-client")
        .arg("--port")
        .arg(server().tcp_port().to_string())
        .arg("--query")
        .arg(&insert_tsv)
        .stdin(std::fs::File::open(&path).unwrap())
        .status()
        .expect("clickhouse-client");
    let elapsed = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    assert!(status.success());
    assert_eq!(
        count("SELECT count() FROM sink_bench.tsv_events").await,
        TOTAL as u64
    );
    println!(
        "clickhouse-client TSV, one stream of {TOTAL}: {:>7.0} rows/s ({elapsed:.2} s, {} MB of TSV)",
        TOTAL as f64 / elapsed,
        tsv.len() / 1_000_000
    );
}
