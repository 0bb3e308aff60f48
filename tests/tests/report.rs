//! End-to-end: the reconciliation report matches what the sinks received, compares a shadow sink with
//! its reference, and survives a restart.

use std::time::Duration;

use serde_json::{json, Value};
use switchyard_tests::*;

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
data_dir = "{dir}/data"

[admin]
token = "${ADMIN_TOKEN}"

[consent]
default_granted = true

[sinks.trusted]
type = "file"
path = "{dir}/trusted"
[sinks.trusted.batch]
max_wait_ms = 50

[sinks.candidate]
type = "file"
path = "{dir}/candidate"
compare_with = "trusted"
consent = "analytics"
[sinks.candidate.batch]
max_wait_ms = 50
[sinks.candidate.rollout]
percent = 10
mode = "shadow"
"#;

async fn report(server: &Switchyard) -> Value {
    client()
        .get(server.url("/admin/report?sink=candidate&since=2000-01-01T00%3A00%3A00Z"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn shadow_sink_matches_its_reference_and_counts_persist() {
    let dir = tempfile::tempdir().unwrap();
    let server = Switchyard::start(dir.path(), CONFIG);
    let mut batch: Vec<Value> = (0..2000)
        .map(|i| track(&format!("r-{i}"), &format!("user-{i}")))
        .collect();
    // Ten events deny analytics consent: the candidate drops them, the trusted sink does not care.
    for event in batch.iter_mut().take(10) {
        event["context"]["consent"] = json!({"categoryPreferences": {"analytics": false}});
    }
    for chunk in batch.chunks(400) {
        let response = client()
            .post(server.url("/v1/batch"))
            .json(&json!({"batch": chunk}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    wait_for_events(&dir.path().join("trusted"), 2000, Duration::from_secs(20)).await;
    let candidate_events = eventually(Duration::from_secs(20), || {
        let events = read_ndjson_dir(&dir.path().join("candidate"));
        (events.len() > 100).then_some(events)
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let candidate_events = read_ndjson_dir(&dir.path().join("candidate"))
        .len()
        .max(candidate_events.len());

    let answer = report(&server).await;
    let sink = &answer["sinks"][0];
    assert_eq!(sink["name"], "candidate");
    assert_eq!(sink["reference"], "trusted");
    let totals = &sink["totals"];
    assert_eq!(totals["delivered"], candidate_events as u64, "{answer}");
    let consent_dropped = totals["dropped_consent"].as_u64().unwrap();
    assert_eq!(
        totals["offered"].as_u64().unwrap()
            + totals["dropped_rollout"].as_u64().unwrap()
            + consent_dropped,
        2000,
        "{totals}"
    );
    // Expected = trusted deliveries in the candidate's 10% share (users are sticky).
    let expected = totals["expected"].as_f64().unwrap();
    assert!(
        (expected - (candidate_events as u64 + consent_dropped) as f64).abs() < 0.5,
        "{totals}"
    );
    let share = expected / 2000.0;
    assert!((0.07..0.13).contains(&share), "10% dial gave {share}");

    // Text rendering through the CLI.
    let output = std::process::Command::new(binary())
        .args([
            "report",
            "--sink",
            "candidate",
            "--since",
            "2000-01-01T00:00:00Z",
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
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("candidate (10.0% shadow) vs trusted"),
        "{text}"
    );

    // Counters persist across a restart.
    assert!(server.terminate().success());
    let restarted = Switchyard::start_with_file(dir.path(), &dir.path().join("switchyard.toml"));
    let again = report(&restarted).await;
    assert_eq!(
        again["sinks"][0]["totals"]["delivered"],
        candidate_events as u64
    );
    assert_eq!(
        again["sinks"][0]["totals"]["offered"],
        sink["totals"]["offered"]
    );
}
