//! End-to-end: privacy erasure and export against a real ClickHouse, and the suppression list.

use std::time::Duration;

use serde_json::{json, Value};
use switchyard_tests::clickhouse::{number, shared, sink_section, wait_for_number};
use switchyard_tests::*;

#[tokio::test]
async fn erase_suppresses_future_events_and_deletes_stored_ones() {
    let clickhouse = shared();
    let url = clickhouse.url();
    let database = "privacy_erase";
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"
data_dir = "{{dir}}/data"

[admin]
token = "${{ADMIN_TOKEN}}"

[sinks.local]
type = "file"
path = "{{dir}}/events"
[sinks.local.batch]
max_wait_ms = 50
{}"#,
        sink_section("warehouse", &url, database)
    );
    let server = Switchyard::start(dir.path(), &config);
    let client = client();
    let batch: Vec<Value> = (0..15)
        .map(|i| track(&format!("p-{i}"), if i < 10 { "alice" } else { "bob" }))
        .collect();
    let response = client
        .post(server.url("/v1/batch"))
        .json(&json!({"batch": batch}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let table = format!("{database}.events");
    wait_for_number(
        &url,
        &format!("SELECT count() FROM {table}"),
        15,
        Duration::from_secs(30),
    )
    .await;

    let export = client
        .get(server.url("/admin/privacy/export?userId=alice"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(export.status(), 200);
    assert_eq!(export.headers()["content-type"], "application/x-ndjson");
    let lines: Vec<Value> = export
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 10);
    assert!(lines
        .iter()
        .all(|l| l["sink"] == "warehouse" && l["event"]["user_id"] == "alice"));

    let erase = client
        .post(server.url("/admin/privacy/erase"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"userId": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(erase.status(), 200);
    let answer: Value = erase.json().await.unwrap();
    let outcomes: Vec<(String, String)> = answer["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["sink"].as_str().unwrap().to_string(),
                s["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        outcomes.contains(&("warehouse".into(), "erased".into())),
        "{answer}"
    );
    assert!(
        outcomes.contains(&("local".into(), "not_stored".into())),
        "{answer}"
    );
    wait_for_number(
        &url,
        &format!("SELECT count() FROM {table} WHERE user_id = 'alice'"),
        0,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        number(
            &url,
            &format!("SELECT count() FROM {table} WHERE user_id = 'bob'")
        )
        .await,
        5
    );

    // Alice's future events are dropped before any sink.
    let again = client
        .post(server.url("/v1/batch"))
        .json(&json!({"batch": [track("p-late", "alice"), track("p-bob", "bob")]}))
        .send()
        .await
        .unwrap();
    let answer: Value = again.json().await.unwrap();
    assert_eq!(answer["dropped"]["suppressed"], 1, "{answer}");
    wait_for_number(
        &url,
        &format!("SELECT count() FROM {table} WHERE user_id = 'bob'"),
        6,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        number(
            &url,
            &format!("SELECT count() FROM {table} WHERE user_id = 'alice'")
        )
        .await,
        0
    );
    let audit = std::fs::read_to_string(dir.path().join("data/audit.ndjson")).unwrap();
    assert!(audit.contains("privacy_erase"));
    assert!(!audit.contains("alice"), "the audit log keeps no raw id");

    // The suppression list survives a restart.
    assert!(server.terminate().success());
    let restarted = Switchyard::start_with_file(dir.path(), &dir.path().join("switchyard.toml"));
    let late = client
        .post(restarted.url("/v1/batch"))
        .json(&json!({"batch": [track("p-later", "alice")]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        late.json::<Value>().await.unwrap()["dropped"]["suppressed"],
        1
    );
    let unauthorized = client
        .post(restarted.url("/admin/privacy/erase"))
        .json(&json!({"userId": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
}
