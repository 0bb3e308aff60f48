//! End-to-end: the ingest API of the real switchyard process, read back from its file sink.

use std::collections::HashSet;
use std::io::Write;
use std::time::Duration;

use serde_json::{json, Value};
use switchyard_tests::*;

fn config(max_wait_ms: u64) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
data_dir = "{{dir}}/data"
max_body_bytes = 200000
max_event_bytes = 4000

[sources.web]
write_keys = ["wk_web_1"]

[sources.ios]
write_keys = ["wk_ios_1"]

[sinks.local]
type = "file"
path = "{{dir}}/events"

[sinks.local.batch]
max_events = 1000
max_wait_ms = {max_wait_ms}
"#
    )
}

#[tokio::test]
async fn batch_accepts_good_events_and_rejects_bad_ones_by_index() {
    let dir = tempfile::tempdir().unwrap();
    let server = Switchyard::start(dir.path(), &config(100));
    let client = client();
    let mut batch: Vec<Value> = (0..50)
        .map(|i| track(&format!("m-{i}"), &format!("user-{}", i % 7)))
        .collect();
    batch.insert(3, json!({"type": "track", "event": "No Ids"}));
    batch.insert(10, json!({"type": "track", "userId": "u"}));
    batch.insert(
        20,
        json!({"type": "identify", "userId": "u", "traits": "not an object"}),
    );
    batch.insert(30, json!({"type": "track", "event": "Huge", "userId": "u", "properties": {"blob": "x".repeat(5000)}}));
    batch.push(json!({"type": "identify", "userId": "user-1", "traits": {"plan": "pro"}}));
    let response = client
        .post(server.url("/v1/batch"))
        .basic_auth("wk_web_1", Some(""))
        .json(&json!({"batch": batch, "sentAt": "2024-05-01T12:00:05.000Z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-switchyard-server-time"));
    assert!(response.headers().contains_key("x-request-id"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["success"], false);
    assert_eq!(body["accepted"], 51);
    let rejected: Vec<(u64, String)> = body["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap(),
                r["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        rejected.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![3, 10, 20, 30]
    );
    assert!(
        rejected[0].1.contains("userId and anonymousId"),
        "{rejected:?}"
    );
    assert!(rejected[1].1.contains("event is required"), "{rejected:?}");
    assert!(rejected[2].1.starts_with("traits:"), "{rejected:?}");
    assert!(rejected[3].1.contains("over the limit"), "{rejected:?}");

    let events = wait_for_events(&dir.path().join("events"), 51, Duration::from_secs(20)).await;
    assert_eq!(events.len(), 51, "every accepted event exactly once");
    let ids: HashSet<&str> = events
        .iter()
        .map(|e| e["messageId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 51);
    let first = events.iter().find(|e| e["messageId"] == "m-0").unwrap();
    assert_eq!(first["source"], "web");
    assert_eq!(first["ip"], "127.0.0.1");
    assert!(first["receivedAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(first["originalTimestamp"], "2024-05-01T12:00:00.000Z");
    assert!(first["requestId"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(first["properties"]["items"][0]["sku"], "A-1");
    assert_eq!(first["context"]["page"]["path"], "/checkout");
    // timestamp = receivedAt - (sentAt - originalTimestamp): 5 s before receipt.
    let received = first["receivedAt"].as_str().unwrap();
    let timestamp = first["timestamp"].as_str().unwrap();
    assert_ne!(received, timestamp);
    let identify = events.iter().find(|e| e["type"] == "identify").unwrap();
    assert_eq!(
        uuid_version(identify["messageId"].as_str().unwrap()),
        Some('7'),
        "server-generated UUIDv7"
    );
    assert_eq!(identify["traits"]["plan"], "pro");
}

fn uuid_version(id: &str) -> Option<char> {
    (id.len() == 36).then(|| id.chars().nth(14)).flatten()
}

#[tokio::test]
async fn single_call_endpoints_gzip_and_write_key_in_body() {
    let dir = tempfile::tempdir().unwrap();
    let server = Switchyard::start(dir.path(), &config(50));
    let client = client();
    for (path, body) in [
        (
            "/v1/track",
            json!({"event": "Played", "userId": "u1", "writeKey": "wk_ios_1"}),
        ),
        (
            "/v1/identify",
            json!({"userId": "u1", "traits": {"name": "Ada"}, "writeKey": "wk_ios_1"}),
        ),
        (
            "/v1/page",
            json!({"name": "Home", "anonymousId": "a1", "writeKey": "wk_ios_1"}),
        ),
        (
            "/v1/screen",
            json!({"name": "Settings", "anonymousId": "a1", "writeKey": "wk_ios_1"}),
        ),
        (
            "/v1/group",
            json!({"groupId": "g1", "userId": "u1", "writeKey": "wk_ios_1"}),
        ),
        (
            "/v1/alias",
            json!({"previousId": "a1", "userId": "u1", "writeKey": "wk_ios_1"}),
        ),
    ] {
        let response = client
            .post(server.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["accepted"], 1, "{path}: {answer}");
    }
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(
            json!({"batch": [track("gz-1", "u2"), track("gz-2", "u2")]})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
    let response = client
        .post(server.url("/v1/batch/"))
        .basic_auth("wk_web_1", None::<&str>)
        .header("content-encoding", "gzip")
        .header("content-type", "application/json")
        .body(encoder.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let events = wait_for_events(&dir.path().join("events"), 8, Duration::from_secs(20)).await;
    let types: HashSet<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.len(), 6);
    assert!(events.iter().filter(|e| e["source"] == "ios").count() == 6);
    assert!(events
        .iter()
        .any(|e| e["messageId"] == "gz-2" && e["source"] == "web"));
}

#[tokio::test]
async fn whole_request_problems_get_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = Switchyard::start(dir.path(), &config(50));
    let client = client();
    let good = json!({"batch": [track("x", "u")]});
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            client.post(server.url("/v1/batch")).json(&good),
            401,
            "unauthorized",
        ),
        (
            client
                .post(server.url("/v1/batch"))
                .basic_auth("wrong", Some(""))
                .json(&good),
            401,
            "unauthorized",
        ),
        (
            client
                .post(server.url("/v1/batch"))
                .basic_auth("wk_web_1", Some(""))
                .body("{\"batch\": ["),
            400,
            "malformed_json",
        ),
        (
            client
                .post(server.url("/v1/batch"))
                .basic_auth("wk_web_1", Some(""))
                .body("{\"events\": []}"),
            400,
            "invalid_batch",
        ),
        (
            client
                .post(server.url("/v1/batch"))
                .basic_auth("wk_web_1", Some(""))
                .body(vec![b'x'; 300_000]),
            413,
            "body_too_large",
        ),
        (
            client.get(server.url("/v1/batch")),
            405,
            "method_not_allowed",
        ),
        (client.post(server.url("/v2/nothing")), 404, "not_found"),
        (
            client
                .post(server.url("/v1/batch"))
                .basic_auth("wk_web_1", Some(""))
                .header("content-encoding", "gzip")
                .body("{}"),
            400,
            "bad_gzip",
        ),
    ];
    for (index, (request, status, code)) in cases.into_iter().enumerate() {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "case {index}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "case {index}: {body}");
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    // The server is still healthy and nothing was stored.
    let health = client.get(server.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready: Value = client
        .get(server.url("/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["ready"], true, "{ready}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(read_ndjson_dir(&dir.path().join("events")).is_empty());
}

#[tokio::test]
async fn opt_out_headers_drop_events_before_any_sink() {
    let dir = tempfile::tempdir().unwrap();
    let server = Switchyard::start(dir.path(), &config(50));
    let client = client();
    for header in ["X-Analytics-Opt-Out", "DNT", "Sec-GPC"] {
        let response = client
            .post(server.url("/v1/batch"))
            .basic_auth("wk_web_1", Some(""))
            .header(header, "1")
            .json(&json!({"batch": [track("opted-out", "u"), track("opted-out-2", "u")]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["accepted"], 0);
        assert_eq!(body["dropped"]["opt_out"], 2, "{body}");
    }
    client
        .post(server.url("/v1/batch"))
        .basic_auth("wk_web_1", Some(""))
        .json(&json!({"batch": [track("kept", "u")]}))
        .send()
        .await
        .unwrap();
    let events = wait_for_events(&dir.path().join("events"), 1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events_after = read_ndjson_dir(&dir.path().join("events"));
    assert_eq!(events.len(), 1);
    assert_eq!(events_after.len(), 1);
    assert_eq!(events_after[0]["messageId"], "kept");
}

#[tokio::test]
async fn sigterm_flushes_pending_batches_before_exit() {
    let dir = tempfile::tempdir().unwrap();
    // A batch would wait 10 minutes: only the shutdown flush can write it.
    let server = Switchyard::start(dir.path(), &config(600_000));
    let client = client();
    let batch: Vec<Value> = (0..20).map(|i| track(&format!("t-{i}"), "u")).collect();
    let response = client
        .post(server.url("/v1/batch"))
        .basic_auth("wk_web_1", Some(""))
        .json(&json!({"batch": batch}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        read_ndjson_dir(&dir.path().join("events")).is_empty(),
        "not yet flushed"
    );
    let status = server.terminate();
    assert!(status.success(), "clean exit: {status:?}");
    assert_eq!(read_ndjson_dir(&dir.path().join("events")).len(), 20);
}

#[tokio::test]
async fn kill_9_loses_nothing_that_was_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(600_000);
    let server = Switchyard::start(dir.path(), &config);
    let client = client();
    let mut sent = 0;
    for round in 0..10 {
        let batch: Vec<Value> = (0..30)
            .map(|i| track(&format!("k-{round}-{i}"), &format!("u{i}")))
            .collect();
        let response = client
            .post(server.url("/v1/batch"))
            .basic_auth("wk_web_1", Some(""))
            .json(&json!({"batch": batch}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        sent += 30;
    }
    server.kill9();
    assert!(read_ndjson_dir(&dir.path().join("events")).is_empty());
    // Restart with a short batch wait: the sink resumes at its cursor and delivers everything.
    let restarted = Switchyard::start(
        dir.path(),
        &config.replace("max_wait_ms = 600000", "max_wait_ms = 50"),
    );
    let events = wait_for_events(&dir.path().join("events"), sent, Duration::from_secs(20)).await;
    let ids: HashSet<String> = events
        .iter()
        .map(|e| e["messageId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), sent);
    assert_eq!(events.len(), sent, "no duplicates either");
    drop(restarted);
}

#[tokio::test]
async fn run_without_config_uses_the_embedded_default() {
    // The built-in default listens on 127.0.0.1:8080 and writes under ./switchyard-data.
    if std::net::TcpListener::bind("127.0.0.1:8080").is_err() {
        panic!("port 8080 is taken on this machine; the default-config test needs it free");
    }
    let dir = tempfile::tempdir().unwrap();
    /// Kills the child however the test ends, so no orphan keeps port 8080.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = KillOnDrop(
        std::process::Command::new(binary())
            .arg("run")
            .current_dir(dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let first = std::io::BufRead::lines(std::io::BufReader::new(stdout))
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(first, "switchyard listening on http://127.0.0.1:8080");
    let response = client()
        .post("http://127.0.0.1:8080/v1/track")
        .json(&json!({"event": "Default", "userId": "u", "properties": {"contact": "ada@example.com"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let events = wait_for_events(
        &dir.path().join("switchyard-data/events"),
        1,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        events[0]["properties"]["contact"], "[REDACTED:email]",
        "the default chain masks PII"
    );
    drop(child);
}
