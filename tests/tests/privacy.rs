//! End-to-end: PII never reaches a sink, per-sink consent categories, and the sanitize dry run.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use switchyard_tests::*;

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
data_dir = "{dir}/data"

[[sanitizers]]
type = "pii"

[sinks.owned]
type = "file"
path = "{dir}/owned"
[sinks.owned.batch]
max_wait_ms = 50

[sinks.ads]
type = "file"
path = "{dir}/ads"
consent = "marketing"
[sinks.ads.batch]
max_wait_ms = 50
[[sinks.ads.sanitizers]]
type = "hash_ids"
fields = ["userId", "anonymousId"]
salt_env = "PATH"
"#;

fn event(id: &str, consent: Option<bool>) -> Value {
    let mut event = json!({
        "type": "track", "event": "Checkout", "userId": format!("user-{id}"), "messageId": id,
        "properties": {
            "email": "jane.doe@example.com",
            "card": "4111-1111-1111-1111",
            "note": "SSN 123-45-6789, call +1 (415) 555-0100",
            "order_id": "1700000000000",
            "version": "10.15.7",
            "nested": [{"token": "sk_live_51HxYzAbCdEfGhIjKlMnOpQr"}]
        }
    });
    if let Some(granted) = consent {
        event["context"] =
            json!({"consent": {"categoryPreferences": {"marketing": granted, "analytics": true}}});
    }
    event
}

#[tokio::test]
async fn pii_is_masked_and_consent_limits_each_sink() {
    let dir = tempfile::tempdir().unwrap();
    let server = Switchyard::start(dir.path(), CONFIG);
    let batch = vec![
        event("granted", Some(true)),
        event("denied", Some(false)),
        event("silent", None),
    ];
    let response = client()
        .post(server.url("/v1/batch"))
        .json(&json!({"batch": batch}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let owned = wait_for_events(&dir.path().join("owned"), 3, Duration::from_secs(10)).await;
    let ads = wait_for_events(&dir.path().join("ads"), 1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        read_ndjson_dir(&dir.path().join("ads")).len(),
        1,
        "only the granted event reaches the marketing sink"
    );
    assert_eq!(ads[0]["messageId"], "granted");
    assert_ne!(
        ads[0]["userId"], "user-granted",
        "ids are pseudonymised for the marketing sink"
    );
    assert_eq!(ads[0]["userId"].as_str().unwrap().len(), 32);
    assert_eq!(owned.len(), 3);
    for stored in owned.iter().chain(ads.iter()) {
        let text = stored.to_string();
        for secret in [
            "jane.doe@example.com",
            "4111-1111-1111-1111",
            "123-45-6789",
            "555-0100",
            "sk_live_51HxYzAbCdEfGhIjKlMnOpQr",
        ] {
            assert!(!text.contains(secret), "`{secret}` leaked: {text}");
        }
        assert_eq!(
            stored["properties"]["order_id"], "1700000000000",
            "look-alikes stay"
        );
        assert_eq!(stored["properties"]["version"], "10.15.7");
        assert_eq!(stored["properties"]["email"], "[REDACTED:email]");
    }
    assert!(
        owned.iter().any(|e| e["userId"] == "user-silent"),
        "owned storage keeps real ids"
    );
    let status: Value = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(Value::String)
        .unwrap();
    assert!(status
        .as_str()
        .unwrap()
        .contains("switchyard_sink_events_total{sink=\"ads\",outcome=\"dropped_consent\"} 2"));
}

#[test]
fn sanitize_dry_run_prints_what_the_sink_would_receive() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchyard.toml");
    std::fs::write(
        &config,
        CONFIG.replace("{dir}", &dir.path().display().to_string()),
    )
    .unwrap();
    let mut child = Command::new(binary())
        .args(["sanitize", "--sink", "ads", "--config"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for line in [
            event("granted", Some(true)),
            event("denied", Some(false)),
            json!({"type": "track"}),
        ] {
            writeln!(stdin, "{line}").unwrap();
        }
    }
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["properties"]["email"], "[REDACTED:email]");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("read 3 events: 1 written, 1 invalid, 1 dropped for consent"),
        "{stderr}"
    );
    assert!(stderr.contains("pii.email"), "{stderr}");
}
