//! End-to-end: delivery guarantees with the file sink: de-duplication of client retries, replay from
//! the log, metrics, memory durability, and a full log answering 503.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};
use switchyard_tests::*;

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
data_dir = "{dir}/data"

[admin]
token = "${ADMIN_TOKEN}"

[sinks.local]
type = "file"
path = "{dir}/events"
[sinks.local.batch]
max_wait_ms = 50
"#;

async fn post(server: &Switchyard, batch: &[Value]) -> Value {
    let response = client()
        .post(server.url("/v1/batch"))
        .json(&json!({"batch": batch}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_retried_batch_is_accepted_but_routed_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Switchyard::start(dir.path(), CONFIG);
    let batch: Vec<Value> = (0..25).map(|i| track(&format!("dup-{i}"), "u")).collect();
    let first = post(&server, &batch).await;
    assert_eq!(first["accepted"], 25);
    let second = post(&server, &batch).await;
    assert_eq!(second["accepted"], 25, "{second}");
    assert_eq!(second["dropped"]["duplicate"], 25, "{second}");
    // Events without a client messageId are never treated as duplicates.
    let anonymous = vec![json!({"type": "track", "event": "No Id", "userId": "u"}); 3];
    post(&server, &anonymous).await;
    post(&server, &anonymous).await;
    wait_for_events(&dir.path().join("events"), 31, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = read_ndjson_dir(&dir.path().join("events"));
    assert_eq!(events.len(), 31);
}

#[tokio::test]
async fn replay_redelivers_retained_records_to_one_sink() {
    let dir = tempfile::tempdir().unwrap();
    let server = Switchyard::start(dir.path(), CONFIG);
    post(
        &server,
        &(0..10)
            .map(|i| track(&format!("old-{i}"), "u"))
            .collect::<Vec<_>>(),
    )
    .await;
    wait_for_events(&dir.path().join("events"), 10, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let since = chrono_like_now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    post(
        &server,
        &(0..5)
            .map(|i| track(&format!("new-{i}"), "u"))
            .collect::<Vec<_>>(),
    )
    .await;
    wait_for_events(&dir.path().join("events"), 15, Duration::from_secs(10)).await;

    let output = std::process::Command::new(binary())
        .args([
            "replay",
            "--sink",
            "local",
            "--since",
            &since,
            "--url",
            &server.base_url,
            "--token",
            ADMIN_TOKEN,
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["from_seq"], 1, "{answer}");
    let events = wait_for_events(&dir.path().join("events"), 20, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for event in read_ndjson_dir(&dir.path().join("events")) {
        *counts
            .entry(event["messageId"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(events.len(), 20);
    assert!(
        (0..5).all(|i| counts[&format!("new-{i}")] == 2),
        "{counts:?}"
    );
    assert!(
        (0..10).all(|i| counts[&format!("old-{i}")] == 1),
        "{counts:?}"
    );
    let audit = std::fs::read_to_string(dir.path().join("data/audit.ndjson")).unwrap();
    assert!(audit.contains("\"action\":\"replay\""));
}

fn chrono_like_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let output = std::process::Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{}.{:03}", now.as_secs(), now.subsec_millis()),
            "+%Y-%m-%dT%H:%M:%S.%3NZ",
        ])
        .output()
        .unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn metrics_expose_ingest_and_sink_counters() {
    let dir = tempfile::tempdir().unwrap();
    let server = Switchyard::start(dir.path(), CONFIG);
    let mut batch: Vec<Value> = (0..7).map(|i| track(&format!("metric-{i}"), "u")).collect();
    batch.push(json!({"type": "track", "event": "x"}));
    post(&server, &batch).await;
    wait_for_events(&dir.path().join("events"), 7, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(200)).await; // the delivered counter follows the write
    let metrics = client().get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let body = metrics.text().await.unwrap();
    for expected in [
        "switchyard_ingest_events_accepted_total{source=\"default\"} 7",
        "switchyard_ingest_events_rejected_total{source=\"default\",reason=\"missing_identity\"} 1",
        "switchyard_sink_events_total{sink=\"local\",outcome=\"delivered\"} 7",
        "switchyard_sink_breaker_state{sink=\"local\",type=\"file\"} 0",
        "switchyard_sink_rollout_percent{sink=\"local\",type=\"file\"} 100",
        "switchyard_sink_send_seconds_count{sink=\"local\"}",
    ] {
        assert!(body.contains(expected), "missing `{expected}` in:\n{body}");
    }
}

/// The binary's jemalloc settings (`switchyard_allocator!`, router/src/allocator.rs) are in force:
/// freed pages go back to the OS on jemalloc's background threads. A misspelt symbol is silently
/// ignored by jemalloc, which would bring back the RSS growth of a lagging sink.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_allocator_returns_freed_memory_on_its_own_thread() {
    let dir = tempfile::tempdir().unwrap();
    let server = Switchyard::start(dir.path(), CONFIG);
    post(&server, &[track("alloc-0", "u")]).await;
    let threads = || -> Vec<String> {
        let tasks = format!("/proc/{}/task", server.child.id());
        std::fs::read_dir(tasks)
            .map(|entries| {
                entries
                    .filter_map(|entry| entry.ok())
                    .filter_map(|entry| std::fs::read_to_string(entry.path().join("comm")).ok())
                    .map(|name| name.trim().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !threads().iter().any(|name| name == "jemalloc_bg_thd") {
        assert!(
            std::time::Instant::now() < deadline,
            "no jemalloc background thread among {:?}",
            threads()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(server.terminate().success());
}

#[tokio::test]
async fn memory_durability_delivers_and_drains_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let config = CONFIG.replace("max_wait_ms = 50", "max_wait_ms = 600000")
        + "\n[delivery]\ndurability = \"memory\"\n";
    let server = Switchyard::start(dir.path(), &config);
    post(
        &server,
        &(0..40)
            .map(|i| track(&format!("mem-{i}"), "u"))
            .collect::<Vec<_>>(),
    )
    .await;
    assert!(server.terminate().success());
    assert_eq!(read_ndjson_dir(&dir.path().join("events")).len(), 40);
    assert!(
        !dir.path().join("data/log").exists(),
        "memory mode writes no log"
    );
}

#[tokio::test]
async fn a_full_log_answers_503_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    // The only sink waits 3 s to fill a batch, so nothing is delivered while we fill the log; then it
    // delivers, its cursor moves, and the log has room again.
    let config = CONFIG.replace(
        "max_wait_ms = 50",
        "max_wait_ms = 3000\nmax_events = 100000",
    ) + "\n[delivery]\ndurability = \"memory\"\nmax_disk_bytes = 1048576\n";
    let server = Switchyard::start(dir.path(), &config);
    let batch: Vec<Value> = (0..100).map(|i| track(&format!("full-{i}"), "u")).collect();
    let client = client();
    let mut refused = None;
    for round in 0..200 {
        let batch: Vec<Value> = batch
            .iter()
            .map(|e| {
                let mut e = e.clone();
                e["messageId"] = json!(format!("{}-{round}", e["messageId"].as_str().unwrap()));
                e
            })
            .collect();
        let response = client
            .post(server.url("/v1/batch"))
            .json(&json!({"batch": batch}))
            .send()
            .await
            .unwrap();
        if response.status() == 503 {
            assert!(response.headers().contains_key("retry-after"));
            refused = Some(response.json::<Value>().await.unwrap());
            break;
        }
        assert_eq!(response.status(), 200);
    }
    let refused = refused.expect("the log filled up");
    assert_eq!(refused["error"]["code"], "log_full");
    let mut accepted_again = false;
    for _ in 0..100 {
        let retry = json!({"batch": [track("after-full", "u")]});
        let response = client
            .post(server.url("/v1/batch"))
            .json(&retry)
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            accepted_again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(accepted_again, "ingest resumes once the sink catches up");
    let health = client.get(server.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn a_torn_log_tail_loses_only_the_torn_record() {
    let dir = tempfile::tempdir().unwrap();
    // The sink never gets to deliver before the crash: everything is still in the log.
    let slow = CONFIG.replace("max_wait_ms = 50", "max_wait_ms = 600000");
    let server = Switchyard::start(dir.path(), &slow);
    for round in 0..5 {
        let batch: Vec<Value> = (0..10)
            .map(|i| track(&format!("torn-{round}-{i}"), "u"))
            .collect();
        post(&server, &batch).await;
    }
    server.kill9();
    // Cut the last record in half, as a crash in the middle of a write would.
    let log_dir = dir.path().join("data/log");
    let segment = std::fs::read_dir(&log_dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .max()
        .unwrap();
    let length = std::fs::metadata(&segment).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(length - 100)
        .unwrap();

    let restarted = Switchyard::start(dir.path(), CONFIG);
    let events = wait_for_events(&dir.path().join("events"), 40, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ids: Vec<String> = read_ndjson_dir(&dir.path().join("events"))
        .iter()
        .map(|e| e["messageId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(events.len(), 40);
    assert_eq!(ids.len(), 40, "the four whole requests, once each");
    assert!(
        ids.iter().all(|id| !id.starts_with("torn-4-")),
        "the torn request is the one lost"
    );
    let logs = restarted.logs();
    assert!(
        logs.contains("cut a torn or corrupt record from the tail"),
        "{logs}"
    );
    // Ingest continues cleanly after the cut.
    post(&restarted, &[track("after-torn", "u")]).await;
    wait_for_events(&dir.path().join("events"), 41, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_full_log_drops_a_stalled_shadow_sinks_oldest_records_instead_of_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let config = CONFIG.to_string()
        + r#"
[sinks.trial]
type = "file"
path = "{dir}/trial"
[sinks.trial.batch]
max_wait_ms = 600000
max_events = 1000000
[sinks.trial.rollout]
mode = "shadow"

[delivery]
durability = "memory"
max_disk_bytes = 1048576
"#;
    let server = Switchyard::start(dir.path(), &config);
    let client = client();
    for round in 0..60 {
        let batch: Vec<Value> = (0..100)
            .map(|i| track(&format!("s-{round}-{i}"), "u"))
            .collect();
        let response = client
            .post(server.url("/v1/batch"))
            .json(&json!({"batch": batch}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            200,
            "round {round}: a stalled shadow sink must not block ingest"
        );
        // Let the live sink keep up.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_for_events(&dir.path().join("events"), 6000, Duration::from_secs(20)).await;
    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let dropped = metrics
        .lines()
        .find(|l| l.starts_with("switchyard_sink_log_dropped_records_total{sink=\"trial\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(dropped > 0, "{metrics}");
    assert!(metrics
        .contains("switchyard_sink_log_dropped_records_total{sink=\"local\",type=\"file\"} 0"));
}
