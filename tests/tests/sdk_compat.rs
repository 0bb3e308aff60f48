//! End-to-end: the real SDKs (`@segment/analytics-node`, `@rudderstack/rudder-sdk-node`,
//! `posthog-node`, and posthog-js's wire formats built with the real `lz-string`) pointed at the real
//! switchyard process; every call must land in the file sink with the right ids, names, properties,
//! traits and timestamps, and PostHog events must reach a PostHog fake as posthog-node sent them.
//!
//! The Node project is tests/sdk (versions pinned in its package-lock.json). `./scripts/test.sh` runs
//! `npm ci` there; these tests also run it once when `tests/sdk/node_modules` is missing.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use switchyard_tests::fakes::{Fake, Vendor};
use switchyard_tests::*;

const WRITE_KEY: &str = "wk_sdk_compat";
const TOKEN: &str = "phc_sdk_compat_token";
const FORWARD_KEY: &str = "phc_forwarded_project";

fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk")
}

/// Installs the pinned SDKs once (`npm ci`) when node_modules is missing.
fn ensure_node_modules() -> PathBuf {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _guard = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = sdk_dir();
    if !dir.join("node_modules").join("posthog-node").exists() {
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("npm is required for the SDK tests (Node.js 20 and npm)");
        assert!(status.success(), "npm ci failed in {}", dir.display());
    }
    dir
}

/// Runs `node <script> <url> <key>` and returns its last stdout line as JSON.
async fn run_script(script: &str, url: &str, key: &str) -> Value {
    let dir = ensure_node_modules();
    let child = tokio::process::Command::new("node")
        .arg(script)
        .arg(url)
        .arg(key)
        .current_dir(&dir)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(90), child)
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish in 90 s"))
        .expect("node is required for the SDK tests");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed ({}):\n{stderr}\n{stdout}",
        output.status
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{script} printed {last:?}: {e}"))
}

fn config(extra_sinks: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
data_dir = "{{dir}}/data"

[sources.web]
write_keys = ["{WRITE_KEY}"]
posthog_tokens = ["{TOKEN}"]

[sinks.local]
type = "file"
path = "{{dir}}/events"

[sinks.local.batch]
max_wait_ms = 50
{extra_sinks}
"#
    )
}

fn by_message_id<'a>(events: &'a [Value], id: &str) -> &'a Value {
    let matching: Vec<&Value> = events.iter().filter(|e| e["messageId"] == id).collect();
    assert_eq!(matching.len(), 1, "exactly one event {id} in {events:#?}");
    matching[0]
}

fn time(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .unwrap_or_else(|| panic!("{value} is not a timestamp"))
        .with_timezone(&Utc)
}

/// The client's timestamp survived: kept as `originalTimestamp` and skew-corrected with `sentAt`
/// (`timestamp = receivedAt - (sentAt - originalTimestamp)`), or kept as is without `sentAt`.
fn assert_client_time(event: &Value, client: &str) {
    let client = time(&json!(client));
    if event.get("sentAt").is_some() && event.get("originalTimestamp").is_some() {
        assert_eq!(time(&event["originalTimestamp"]), client, "{event}");
        let expected = time(&event["receivedAt"]) - (time(&event["sentAt"]) - client);
        assert_eq!(time(&event["timestamp"]), expected, "{event}");
    } else {
        assert_eq!(time(&event["timestamp"]), client, "{event}");
    }
}

/// The six Segment-spec calls the Node scripts make, checked field by field.
fn check_segment_calls(events: &[Value], prefix: &str, day_hour: &str, library: &str) {
    let ts = |second: u32| format!("{day_hour}:0{second}.000Z");
    let user = format!("{prefix}-user-1");
    let anon = format!("{prefix}-anon-1");
    for event in events {
        assert_eq!(event["source"], "web");
        assert_eq!(event["ip"], "127.0.0.1");
        assert_eq!(event["context"]["library"]["name"], library, "{event}");
    }

    let track = by_message_id(events, &format!("{prefix}-track-1"));
    assert_eq!(track["type"], "track");
    assert_eq!(track["userId"], user.as_str());
    assert_client_time(track, &ts(1));

    let identify = by_message_id(events, &format!("{prefix}-identify-1"));
    assert_eq!(identify["type"], "identify");
    assert_eq!(identify["userId"], user.as_str());
    assert_eq!(identify["anonymousId"], anon.as_str());
    assert_client_time(identify, &ts(2));

    let page = by_message_id(events, &format!("{prefix}-page-1"));
    assert_eq!(page["type"], "page");
    assert_eq!(page["anonymousId"], anon.as_str());
    assert!(page.get("userId").is_none(), "{page}");
    assert_client_time(page, &ts(3));

    let screen = by_message_id(events, &format!("{prefix}-screen-1"));
    assert_eq!(screen["type"], "screen");
    assert_eq!(screen["userId"], user.as_str());
    assert_client_time(screen, &ts(4));

    let group = by_message_id(events, &format!("{prefix}-group-1"));
    assert_eq!(group["type"], "group");
    assert_eq!(group["userId"], user.as_str());
    assert_client_time(group, &ts(5));

    let alias = by_message_id(events, &format!("{prefix}-alias-1"));
    assert_eq!(alias["type"], "alias");
    assert_eq!(alias["userId"], user.as_str());
    assert_eq!(alias["previousId"], anon.as_str());
    assert_client_time(alias, &ts(6));
}

#[tokio::test]
async fn segment_analytics_node_every_call_type_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let server = Switchyard::start(dir.path(), &config(""));
    let summary = run_script("segment.mjs", &server.base_url, WRITE_KEY).await;
    assert_eq!(summary["sent"], 6);
    let events = wait_for_events(&dir.path().join("events"), 6, Duration::from_secs(20)).await;
    assert_eq!(events.len(), 6, "{events:#?}");
    check_segment_calls(
        &events,
        "seg",
        "2024-05-01T12:00",
        "@segment/analytics-node",
    );

    let track = by_message_id(&events, "seg-track-1");
    assert_eq!(track["event"], "Order Completed");
    assert_eq!(track["properties"]["total"], 42.5);
    assert_eq!(track["properties"]["currency"], "EUR");
    assert_eq!(
        track["properties"]["items"],
        json!([{"sku": "A-1", "qty": 2}])
    );
    assert_eq!(track["context"]["page"]["path"], "/checkout");
    assert_eq!(track["context"]["locale"], "de-DE");
    let identify = by_message_id(&events, "seg-identify-1");
    assert_eq!(
        identify["traits"],
        json!({"plan": "pro", "name": "Ada Lovelace", "logins": 7})
    );
    let page = by_message_id(&events, "seg-page-1");
    assert_eq!(page["name"], "Pricing");
    assert_eq!(page["properties"]["path"], "/pricing");
    assert_eq!(page["properties"]["title"], "Pricing - Shop");
    let screen = by_message_id(&events, "seg-screen-1");
    assert_eq!(screen["name"], "Settings");
    assert_eq!(screen["properties"]["section"], "billing");
    let group = by_message_id(&events, "seg-group-1");
    assert_eq!(group["groupId"], "seg-acme");
    assert_eq!(
        group["traits"],
        json!({"name": "Acme Inc", "employees": 50})
    );
}

#[tokio::test]
async fn rudderstack_node_every_call_type_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let server = Switchyard::start(dir.path(), &config(""));
    let summary = run_script("rudderstack.mjs", &server.base_url, WRITE_KEY).await;
    assert_eq!(summary["sent"], 6);
    let events = wait_for_events(&dir.path().join("events"), 6, Duration::from_secs(20)).await;
    assert_eq!(events.len(), 6, "{events:#?}");
    check_segment_calls(&events, "rs", "2024-05-01T13:00", "analytics-node");

    let track = by_message_id(&events, "rs-track-1");
    assert_eq!(track["event"], "Product Viewed");
    assert_eq!(
        track["properties"],
        json!({"sku": "B-7", "price": 9.99, "tags": ["new", "sale"]})
    );
    let identify = by_message_id(&events, "rs-identify-1");
    assert_eq!(
        identify["traits"],
        json!({"plan": "team", "name": "Grace Hopper"})
    );
    let page = by_message_id(&events, "rs-page-1");
    assert_eq!(page["name"], "Docs");
    assert_eq!(page["properties"]["url"], "https://shop.example/docs");
    let screen = by_message_id(&events, "rs-screen-1");
    assert_eq!(screen["name"], "Cart");
    assert_eq!(screen["properties"]["items"], 3);
    let group = by_message_id(&events, "rs-group-1");
    assert_eq!(group["groupId"], "rs-globex");
    assert_eq!(
        group["traits"],
        json!({"name": "Globex", "industry": "energy"})
    );
}

/// Every event posthog-node put in its `/batch/` requests, with the request's `sent_at`.
fn posthog_node_entries(summary: &Value) -> Vec<(Value, String)> {
    let requests = summary["requests"].as_array().expect("requests");
    assert!(!requests.is_empty(), "posthog-node sent nothing");
    let mut entries = Vec::new();
    for request in requests {
        assert!(
            request["url"].as_str().unwrap().ends_with("/batch/"),
            "{request}"
        );
        assert_eq!(request["status"], 200);
        assert_eq!(request["body"]["api_key"], TOKEN);
        let sent_at = request["body"]["sent_at"].as_str().unwrap().to_string();
        for entry in request["body"]["batch"].as_array().unwrap() {
            entries.push((entry.clone(), sent_at.clone()));
        }
    }
    entries
}

fn canonical_type(posthog_event: &str) -> &'static str {
    match posthog_event {
        "$pageview" => "page",
        "$screen" => "screen",
        "$identify" => "identify",
        "$create_alias" => "alias",
        "$groupidentify" => "group",
        _ => "track",
    }
}

#[tokio::test]
async fn posthog_node_every_call_lands_as_canonical_events() {
    let dir = tempfile::tempdir().unwrap();
    let server = Switchyard::start(dir.path(), &config(""));
    let summary = run_script("posthog.mjs", &server.base_url, TOKEN).await;
    let sent = posthog_node_entries(&summary);
    assert_eq!(sent.len(), 6, "{summary:#}");
    let events = wait_for_events(&dir.path().join("events"), 6, Duration::from_secs(20)).await;
    assert_eq!(events.len(), 6, "{events:#?}");

    for (entry, sent_at) in &sent {
        let uuid = entry["uuid"].as_str().expect("posthog-node sends a uuid");
        let event = by_message_id(&events, uuid);
        let name = entry["event"].as_str().unwrap();
        let properties = entry["properties"].as_object().unwrap();
        assert_eq!(event["type"], canonical_type(name), "{event}");
        assert_eq!(event["source"], "web");
        // Every property posthog-node sent is kept as sent ($set, $groups, $lib, $geoip_disable, ...).
        assert_eq!(
            event["properties"].as_object().unwrap_or(&Map::new()),
            properties,
            "{name}"
        );
        assert_eq!(event["context"]["library"]["name"], "posthog-node");
        assert_eq!(
            event["context"]["library"]["version"],
            properties["$lib_version"]
        );
        // Timestamps: skew-corrected with posthog-node's sent_at, the client's time kept.
        assert_eq!(time(&event["sentAt"]), time(&json!(sent_at)), "{event}");
        assert_client_time(event, entry["timestamp"].as_str().unwrap());
        // Ids by PostHog's rules: server-side distinct ids are identified users, unless personless.
        let distinct = entry["distinct_id"].as_str().unwrap();
        if properties.get("$process_person_profile") == Some(&json!(false)) {
            assert_eq!(event["anonymousId"], distinct);
            assert!(event.get("userId").is_none());
        } else {
            assert_eq!(event["userId"], distinct, "{event}");
        }
        match name {
            "Order Completed" => {
                assert_eq!(event["event"], "Order Completed");
                assert_eq!(event["messageId"], "0190a3c2-7b1e-7cc0-8f00-0123456789ab");
                assert_eq!(
                    event["properties"]["$groups"],
                    json!({"company": "ph-acme"})
                );
                assert_eq!(event["originalTimestamp"], "2024-05-01T14:00:01.000Z");
            }
            "$identify" => {
                assert_eq!(
                    event["traits"],
                    json!({"email": "ada@example.com", "plan": "pro"})
                );
                assert_eq!(
                    event["properties"]["$set_once"],
                    json!({"first_seen": "2024-05-01"})
                );
            }
            "$create_alias" => assert_eq!(event["previousId"], "ph-anon-1"),
            "$groupidentify" => {
                assert_eq!(event["groupId"], "ph-acme");
                assert_eq!(event["traits"], json!({"name": "Acme", "employees": 50}));
                assert_eq!(event["userId"], "$company_ph-acme");
            }
            "$pageview" => {
                assert_eq!(event["name"], "Pricing");
                assert_eq!(
                    event["context"]["page"],
                    json!({"url": "https://shop.example/pricing?ref=ad", "path": "/pricing",
                           "referrer": "https://search.example/", "title": "Pricing"})
                );
                assert_eq!(event["originalTimestamp"], "2024-05-01T14:00:05.000Z");
            }
            "$screen" => assert_eq!(event["name"], "Home"),
            other => panic!("unexpected event {other}"),
        }
    }
}

#[tokio::test]
async fn posthog_node_round_trip_reaches_posthog_as_sent() {
    let fake = Fake::start(Vendor::Posthog {
        api_key: FORWARD_KEY.into(),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let sink = format!(
        "\n[sinks.posthog]\ntype = \"posthog\"\nurl = \"{}\"\napi_key = \"{FORWARD_KEY}\"\n\n[sinks.posthog.batch]\nmax_wait_ms = 50\n",
        fake.url
    );
    let server = Switchyard::start(dir.path(), &config(&sink));
    let summary = run_script("posthog.mjs", &server.base_url, TOKEN).await;
    let sent = posthog_node_entries(&summary);
    let forwarded = fake
        .wait_for_events(sent.len(), Duration::from_secs(20))
        .await;
    fake.assert_no_violations();
    assert_eq!(forwarded.len(), sent.len());

    for (entry, _) in &sent {
        let uuid = entry["uuid"].as_str().unwrap();
        let out = forwarded
            .iter()
            .find(|f| f["uuid"] == uuid)
            .unwrap_or_else(|| panic!("{uuid} was not forwarded: {forwarded:#?}"));
        let name = entry["event"].as_str().unwrap();
        assert_eq!(out["event"], entry["event"]);
        assert_eq!(out["distinct_id"], entry["distinct_id"], "{name}");
        // The time the SDK stamped, corrected for clock skew (the same clock here: off by the latency).
        let drift = time(&out["timestamp"]) - time(&entry["timestamp"]);
        assert!(drift.num_milliseconds().abs() < 5_000, "{name}: {drift}");
        // Every property posthog-node sent arrives unchanged...
        let sent_properties = entry["properties"].as_object().unwrap();
        let out_properties = out["properties"].as_object().unwrap();
        for (key, value) in sent_properties {
            assert_eq!(out_properties.get(key), Some(value), "{name}: {key}");
        }
        // ...and the only additions are the client IP PostHog would otherwise read off the
        // connection, and the page name of a pageview.
        let extra: Vec<&String> = out_properties
            .keys()
            .filter(|key| !sent_properties.contains_key(*key))
            .collect();
        let allowed: &[&str] = if name == "$pageview" {
            &["$ip", "name"]
        } else {
            &["$ip"]
        };
        assert!(
            extra.iter().all(|key| allowed.contains(&key.as_str())),
            "{name}: unexpected {extra:?}"
        );
        assert_eq!(out_properties["$ip"], "127.0.0.1");
    }
    let request = &fake.requests()[0];
    assert_eq!(request.json()["api_key"], FORWARD_KEY);
}

#[tokio::test]
async fn posthog_js_wire_formats_all_decode() {
    let dir = tempfile::tempdir().unwrap();
    let server = Switchyard::start(dir.path(), &config(""));
    let summary = run_script("posthog-js-wire.mjs", &server.base_url, TOKEN).await;
    let sent = summary["sent"].as_array().unwrap();
    assert_eq!(sent.len(), 7);
    let events = wait_for_events(&dir.path().join("events"), 7, Duration::from_secs(20)).await;
    assert_eq!(events.len(), 7, "{events:#?}");
    for entry in sent {
        let event = by_message_id(&events, entry["uuid"].as_str().unwrap());
        let name = entry["event"].as_str().unwrap();
        assert_eq!(event["type"], canonical_type(name), "{event}");
        let mut expected = entry["properties"].as_object().unwrap().clone();
        expected.remove("token");
        assert_eq!(
            event["properties"].as_object().unwrap(),
            &expected,
            "{name}: kept as sent, minus the project token"
        );
        assert_eq!(event["context"]["library"]["name"], "web");
        assert_eq!(event["context"]["page"]["url"], "https://app.example/home");
        assert_client_time(event, entry["timestamp"].as_str().unwrap());
        if name == "$identify" {
            assert_eq!(event["userId"], "js-user-1");
            assert_eq!(event["anonymousId"], "js-anon-1");
            assert_eq!(event["traits"], json!({"email": "js@example.com"}));
        } else {
            // posthog-js says `$is_identified: false`: the distinct id is an anonymous id.
            assert_eq!(event["anonymousId"], "js-anon-1", "{event}");
            assert!(event.get("userId").is_none());
        }
        if name != "$pageview" && name != "$identify" {
            assert_eq!(event["event"], name);
        }
    }
    let pageview = events.iter().find(|e| e["type"] == "page").unwrap();
    assert_eq!(pageview["name"], "Home");
}

#[tokio::test]
async fn capture_endpoints_authenticate_by_project_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = Switchyard::start(dir.path(), &config(""));
    let client = client();
    let event =
        json!({"event": "e", "distinct_id": "d", "uuid": "0190a3c2-7b1e-7cc0-8f00-0000000000aa"});
    for (body, status) in [
        (json!({"api_key": "phc_wrong", "batch": [event]}), 401),
        (json!({"batch": [event]}), 401),
        // A write key is not a PostHog token.
        (json!({"api_key": WRITE_KEY, "batch": [event]}), 401),
        (json!({"api_key": TOKEN, "batch": [event]}), 200),
    ] {
        let response = client
            .post(server.url("/batch/"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{body}");
    }
    let wrong_method = client.get(server.url("/i/v0/e/")).send().await.unwrap();
    assert_eq!(wrong_method.status(), 405);
    let events = wait_for_events(&dir.path().join("events"), 1, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(read_ndjson_dir(&dir.path().join("events")).len(), 1);
    assert_eq!(
        events[0]["messageId"],
        "0190a3c2-7b1e-7cc0-8f00-0000000000aa"
    );
}
