//! End-to-end: the vendor forwarders (PostHog, Statsig, GA4, signed webhook) of the real switchyard
//! process, checked against strict local fakes of each vendor: endpoint, auth, body shape, mapping,
//! every event exactly once, and the failure cases (500 then success, 429/503 with Retry-After, 400).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde_json::{json, Value};
use switchyard_tests::fakes::{Fake, Reply, Vendor};
use switchyard_tests::*;

const POSTHOG_KEY: &str = "phc_test_key_0123456789";
const STATSIG_KEY: &str = "secret-test-0123456789";
const GA4_ID: &str = "G-TEST12345";
const GA4_SECRET: &str = "ga4SecretValue42";
const HOOK_SECRET: &str = "whsec_test_0123456789abcdef";

/// A config with `sinks` and quick batching/retries for `name`.
fn config(name: &str, sink: &str, max_backoff_ms: u64) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
data_dir = "{{dir}}/data"

[sinks.{name}]
{sink}

[sinks.{name}.batch]
max_events = 200
max_wait_ms = 50

[sinks.{name}.retry]
initial_backoff_ms = 20
max_backoff_ms = {max_backoff_ms}
"#
    )
}

async fn post_batch(server: &Switchyard, batch: &[Value]) {
    let response = client()
        .post(server.url("/v1/batch"))
        .json(&json!({ "batch": batch }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["accepted"], batch.len(), "{body}");
}

/// The PostHog uuid documented for a messageId that is not a UUID (docs/sinks/posthog.md).
fn derived_uuid(message_id: &str) -> String {
    let namespace = uuid::Uuid::parse_str("6f0c2b4e-8d1a-4c57-9e3b-52a1d7c4e890").unwrap();
    uuid::Uuid::new_v5(&namespace, message_id.as_bytes()).to_string()
}

fn iso(time: chrono::DateTime<chrono::Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posthog_gets_every_event_once_in_the_sdk_shape() {
    let fake = Fake::start(Vendor::Posthog {
        api_key: POSTHOG_KEY.into(),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let sink = format!(
        "type = \"posthog\"\nurl = \"{}\"\napi_key = \"{POSTHOG_KEY}\"\nmax_events_per_request = 4",
        fake.url
    );
    let server = Switchyard::start(dir.path(), &config("posthog", &sink, 2000));
    let uuid_id = "0190a3c2-7b1e-7cc0-8f00-0123456789ab";
    let context = json!({"library": {"name": "analytics-node", "version": "2.1.0"},
                         "page": {"url": "https://shop.example/checkout", "path": "/checkout"}});
    let mut batch = vec![
        json!({"type": "track", "event": "Order Completed", "messageId": "m-0", "userId": "user-1",
               "anonymousId": "anon-1", "timestamp": "2024-05-01T12:00:00.000Z", "context": context,
               "properties": {"total": 42.5, "$set": {"plan": "pro"}}}),
        json!({"type": "track", "event": "Signed Up", "messageId": uuid_id, "anonymousId": "anon-2"}),
        json!({"type": "page", "name": "Pricing", "messageId": "p-1", "anonymousId": "anon-1",
               "context": {"page": {"url": "https://shop.example/pricing", "path": "/pricing",
                                    "title": "Pricing | Shop"}}}),
        json!({"type": "screen", "name": "Home", "messageId": "s-1", "userId": "user-1"}),
        json!({"type": "identify", "messageId": "i-1", "userId": "user-1", "anonymousId": "anon-1",
               "traits": {"plan": "pro", "email": "ada@example.com"}}),
        json!({"type": "group", "messageId": "g-1", "userId": "user-1", "groupId": "acme",
               "traits": {"name": "Acme"}}),
        json!({"type": "alias", "messageId": "a-1", "userId": "user-1", "previousId": "anon-1"}),
    ];
    batch.extend((2..6).map(|i| track(&format!("m-{i}"), "user-2")));
    post_batch(&server, &batch).await;

    fake.wait_for_events(11, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    fake.assert_no_violations();
    assert_eq!(fake.events().len(), 11, "every event exactly once");
    let by_uuid: BTreeMap<String, Value> = fake
        .events()
        .into_iter()
        .map(|e| (e["uuid"].as_str().unwrap().to_string(), e))
        .collect();
    assert_eq!(by_uuid.len(), 11, "uuids are unique");
    let requests = fake.requests();
    assert!(requests.len() >= 3, "split into requests of at most 4");
    for request in &requests {
        let body = request.json();
        assert_eq!(body["api_key"], POSTHOG_KEY);
        assert!(body["batch"].as_array().unwrap().len() <= 4);
        assert_eq!(request.header("content-type"), Some("application/json"));
    }

    let order = &by_uuid[&derived_uuid("m-0")];
    assert_eq!(order["event"], "Order Completed");
    assert_eq!(order["distinct_id"], "user-1");
    assert_eq!(order["timestamp"], "2024-05-01T12:00:00.000Z");
    let properties = &order["properties"];
    assert_eq!(properties["total"], 42.5);
    assert_eq!(properties["$set"], json!({"plan": "pro"}));
    assert_eq!(properties["$lib"], "analytics-node");
    assert_eq!(properties["$lib_version"], "2.1.0");
    assert_eq!(properties["$current_url"], "https://shop.example/checkout");
    assert_eq!(properties["$ip"], "127.0.0.1");

    let signed_up = &by_uuid[uuid_id];
    assert_eq!(signed_up["distinct_id"], "anon-2");

    let page = &by_uuid[&derived_uuid("p-1")];
    assert_eq!(page["event"], "$pageview");
    assert_eq!(
        page["properties"]["$current_url"],
        "https://shop.example/pricing"
    );
    assert_eq!(page["properties"]["$pathname"], "/pricing");
    assert_eq!(page["properties"]["$title"], "Pricing | Shop");

    let screen = &by_uuid[&derived_uuid("s-1")];
    assert_eq!(screen["event"], "$screen");
    assert_eq!(screen["properties"]["$screen_name"], "Home");

    let identify = &by_uuid[&derived_uuid("i-1")];
    assert_eq!(identify["event"], "$identify");
    assert_eq!(identify["distinct_id"], "user-1");
    assert_eq!(
        identify["properties"]["$set"],
        json!({"plan": "pro", "email": "ada@example.com"})
    );
    assert_eq!(identify["properties"]["$anon_distinct_id"], "anon-1");

    let group = &by_uuid[&derived_uuid("g-1")];
    assert_eq!(group["event"], "$groupidentify");
    assert_eq!(group["properties"]["$group_type"], "company");
    assert_eq!(group["properties"]["$group_key"], "acme");
    assert_eq!(group["properties"]["$group_set"], json!({"name": "Acme"}));

    let alias = &by_uuid[&derived_uuid("a-1")];
    assert_eq!(alias["event"], "$create_alias");
    assert_eq!(alias["distinct_id"], "user-1");
    assert_eq!(alias["properties"]["alias"], "anon-1");
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posthog_500_is_retried_without_resending_accepted_requests() {
    let fake = Fake::start(Vendor::Posthog {
        api_key: POSTHOG_KEY.into(),
    })
    .await;
    // Request 1 of 3 is accepted, request 2 fails once with a 500.
    fake.script([
        Reply::normal(),
        Reply::status(500).body("{\"detail\": \"oops\"}"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let sink = format!(
        "type = \"posthog\"\nurl = \"{}\"\napi_key = \"{POSTHOG_KEY}\"\nmax_events_per_request = 2",
        fake.url
    );
    let server = Switchyard::start(dir.path(), &config("posthog", &sink, 2000));
    let batch: Vec<Value> = (0..5).map(|i| track(&format!("r-{i}"), "user-1")).collect();
    post_batch(&server, &batch).await;

    fake.wait_for_events(5, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    fake.assert_no_violations();
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 500, 200, 200]);
    let uuids: Vec<String> = fake
        .events()
        .iter()
        .map(|e| e["uuid"].as_str().unwrap().to_string())
        .collect();
    let expected: HashSet<String> = (0..5).map(|i| derived_uuid(&format!("r-{i}"))).collect();
    assert_eq!(uuids.len(), 5, "delivered once: {uuids:?}");
    assert_eq!(uuids.into_iter().collect::<HashSet<_>>(), expected);
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statsig_waits_for_retry_after_on_429_and_maps_events() {
    let fake = Fake::start(Vendor::Statsig {
        api_key: STATSIG_KEY.into(),
    })
    .await;
    fake.script([Reply::status(429).header("Retry-After", "1")]);
    let dir = tempfile::tempdir().unwrap();
    let sink = format!(
        "type = \"statsig\"\nurl = \"{}\"\napi_key = \"{STATSIG_KEY}\"\nvalue_property = \"revenue\"",
        fake.url
    );
    let server = Switchyard::start(dir.path(), &config("statsig", &sink, 5000));
    let batch = vec![
        json!({"type": "track", "event": "Purchase", "messageId": "t-1", "userId": "user-1",
               "anonymousId": "anon-1", "timestamp": "2024-05-01T12:00:00.000Z",
               "context": {"locale": "de-DE"},
               "properties": {"revenue": 19.99, "plan": "pro", "trial": false,
                              "items": [{"sku": "A-1"}]}}),
        json!({"type": "page", "name": "Pricing", "messageId": "p-1", "anonymousId": "anon-2",
               "context": {"page": {"url": "https://shop.example/pricing"}}}),
        json!({"type": "screen", "name": "Home", "messageId": "s-1", "userId": "user-3"}),
        json!({"type": "identify", "messageId": "i-1", "userId": "user-1", "traits": {"plan": "pro"}}),
    ];
    post_batch(&server, &batch).await;

    let events = fake.wait_for_events(3, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    fake.assert_no_violations();
    assert_eq!(fake.events().len(), 3, "identify is not a Statsig event");
    let requests = fake.requests();
    assert_eq!(
        requests.iter().map(|r| r.status).collect::<Vec<_>>(),
        [429, 202]
    );
    let waited = requests[1].at.duration_since(requests[0].at);
    assert!(waited >= Duration::from_secs(1), "waited only {waited:?}");
    assert_eq!(requests[1].header("statsig-api-key"), Some(STATSIG_KEY));
    assert!(requests[1].header("statsig-client-time").is_some());
    assert_eq!(
        requests[1].json()["statsigMetadata"]["sdkType"],
        "switchyard"
    );

    let purchase = events
        .iter()
        .find(|e| e["eventName"] == "Purchase")
        .unwrap();
    assert_eq!(purchase["user"]["userID"], "user-1");
    assert_eq!(purchase["user"]["customIDs"]["stableID"], "anon-1");
    assert_eq!(purchase["user"]["locale"], "de-DE");
    assert_eq!(purchase["user"]["ip"], "127.0.0.1");
    assert_eq!(purchase["time"], 1_714_564_800_000i64);
    assert_eq!(purchase["value"], 19.99);
    assert_eq!(
        purchase["metadata"],
        json!({"plan": "pro", "trial": "false", "items": "[{\"sku\":\"A-1\"}]"})
    );
    let page = events
        .iter()
        .find(|e| e["eventName"] == "page_view")
        .unwrap();
    assert_eq!(page["user"]["customIDs"]["stableID"], "anon-2");
    assert!(page["user"].get("userID").is_none());
    assert_eq!(page["metadata"]["name"], "Pricing");
    assert_eq!(page["metadata"]["url"], "https://shop.example/pricing");
    assert!(events.iter().any(|e| e["eventName"] == "screen_view"));
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ga4_payloads_are_made_valid_and_split_at_25() {
    let fake = Fake::start(Vendor::Ga4 {
        measurement_id: GA4_ID.into(),
        api_secret: GA4_SECRET.into(),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let sink = format!(
        "type = \"ga4\"\nurl = \"{}\"\nmeasurement_id = \"{GA4_ID}\"\napi_secret = \"{GA4_SECRET}\"",
        fake.url
    );
    let server = Switchyard::start(dir.path(), &config("ga4", &sink, 2000));
    let recent = chrono::Utc::now() - chrono::Duration::seconds(60);
    let mut batch: Vec<Value> = (0..30)
        .map(|i| {
            let mut properties = json!({"n": i, "total": 42.5, "Coupon Code": "SPRING",
                "shipping": {"city": "Berlin"}, "note": "y".repeat(150)});
            if i == 0 {
                // Parameters are kept in key order up to 25: x_00..x_19 fit, x_20.. do not.
                for p in 0..30 {
                    properties[format!("x_{p:02}")] = json!(p);
                }
            }
            json!({"type": "track", "event": "Order Completed", "messageId": format!("o-{i}"),
                   "userId": "user-1", "anonymousId": "anon-1", "timestamp": iso(recent),
                   "properties": properties})
        })
        .collect();
    batch.push(
        json!({"type": "page", "name": "Pricing", "messageId": "p-1", "anonymousId": "anon-2",
        "timestamp": iso(recent),
        "context": {"page": {"url": "https://shop.example/pricing", "title": "Pricing | Shop"}}}),
    );
    batch.push(json!({"type": "identify", "messageId": "i-1", "userId": "user-1"}));
    batch.push(
        json!({"type": "track", "event": "error", "messageId": "e-1", "anonymousId": "anon-3",
        "timestamp": iso(recent)}),
    );
    batch.push(
        json!({"type": "track", "event": "Old Event", "messageId": "x-1", "userId": "user-9",
        "timestamp": "2024-05-01T12:00:00.000Z"}),
    );
    post_batch(&server, &batch).await;

    let events = fake.wait_for_events(33, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    fake.assert_no_violations();
    assert_eq!(
        fake.events().len(),
        33,
        "every event once; identify skipped"
    );
    // The requests of a batch go out concurrently (`batch.max_concurrent_requests`), so they may
    // arrive in any order: the split is what is checked.
    let mut anon_1_requests: Vec<usize> = fake
        .requests()
        .iter()
        .map(|r| r.json())
        .filter(|b| b["client_id"] == "anon-1")
        .map(|b| b["events"].as_array().unwrap().len())
        .collect();
    anon_1_requests.sort_unstable();
    assert_eq!(anon_1_requests, [5, 25]);

    let orders: Vec<&Value> = events
        .iter()
        .filter(|e| e["name"] == "Order_Completed")
        .collect();
    let ns: HashSet<i64> = orders
        .iter()
        .map(|e| e["params"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!((orders.len(), ns.len()), (30, 30));
    let micros = recent.timestamp_millis() * 1000;
    for order in &orders {
        assert_eq!(order["client_id"], "anon-1");
        assert_eq!(order["user_id"], "user-1");
        assert_eq!(order["timestamp_micros"], micros);
        assert_eq!(order["params"]["Coupon_Code"], "SPRING");
        assert_eq!(order["params"]["shipping_city"], "Berlin");
        assert_eq!(order["params"]["note"], "y".repeat(100));
        assert_eq!(order["params"]["total"], 42.5);
    }
    let first = orders.iter().find(|e| e["params"]["n"] == 0).unwrap();
    assert_eq!(first["params"].as_object().unwrap().len(), 25);
    assert_eq!(first["params"]["x_19"], 19);
    assert!(first["params"].get("x_20").is_none());

    let page = events.iter().find(|e| e["name"] == "page_view").unwrap();
    assert_eq!(page["client_id"], "anon-2");
    assert_eq!(
        page["params"]["page_location"],
        "https://shop.example/pricing"
    );
    assert_eq!(page["params"]["page_title"], "Pricing | Shop");
    assert!(events.iter().any(|e| e["name"] == "sy_error"));
    let old = events.iter().find(|e| e["name"] == "Old_Event").unwrap();
    assert_eq!(old["user_id"], "user-9");
    assert!(old["timestamp_micros"].is_null(), "over 72 h: no timestamp");
    let client_id = old["client_id"].as_str().unwrap();
    assert!(
        client_id.split('.').all(|p| p.parse::<u32>().is_ok()),
        "{client_id}"
    );
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ga4_400_is_permanent_and_dead_lettered_without_the_secret() {
    let fake = Fake::start(Vendor::Ga4 {
        measurement_id: GA4_ID.into(),
        api_secret: GA4_SECRET.into(),
    })
    .await;
    fake.script([Reply::status(400).body(&format!(
        "{{\"error\": {{\"message\": \"Invalid request: boom (api_secret={GA4_SECRET})\"}}}}"
    ))]);
    let dir = tempfile::tempdir().unwrap();
    let sink = format!(
        "type = \"ga4\"\nurl = \"{}\"\nmeasurement_id = \"{GA4_ID}\"\napi_secret = \"{GA4_SECRET}\"",
        fake.url
    );
    let server = Switchyard::start(dir.path(), &config("ga4", &sink, 2000));
    let batch: Vec<Value> = (0..2).map(|i| track(&format!("d-{i}"), "user-1")).collect();
    post_batch(&server, &batch).await;

    let dead_letters = dir.path().join("data/dead-letters/ga4.ndjson");
    let lines = eventually(Duration::from_secs(20), || {
        let text = std::fs::read_to_string(&dead_letters).ok()?;
        let lines: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (lines.len() >= 2).then_some(lines)
    })
    .await
    .unwrap_or_else(|| panic!("no dead letters: {}", server.logs()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.requests().len(), 1, "a 400 is not retried");
    assert!(fake.events().is_empty());
    fake.assert_no_violations();
    for line in &lines {
        let error = line["error"].as_str().unwrap();
        assert!(error.contains("400") && error.contains("boom"), "{error}");
        assert!(!error.contains(GA4_SECRET), "secret leaked: {error}");
        assert_eq!(line["attempts"], 1);
    }
    let ids: HashSet<&str> = lines
        .iter()
        .map(|l| l["event"]["messageId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, HashSet::from(["d-0", "d-1"]));
    assert!(!server.logs().contains(GA4_SECRET), "secret in the logs");
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_batches_are_signed_and_a_503_http_date_is_honoured() {
    let fake = Fake::start(Vendor::Webhook {
        method: "PUT".into(),
        path: "/hooks/analytics".into(),
        secret: HOOK_SECRET.into(),
        headers: vec![("X-Team".into(), "growth".into())],
    })
    .await;
    let retry_at = chrono::Utc::now() + chrono::Duration::seconds(3);
    fake.script([Reply::status(503).header(
        "Retry-After",
        &retry_at.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
    )]);
    let dir = tempfile::tempdir().unwrap();
    let sink = format!(
        "type = \"webhook\"\nurl = \"{}/hooks/analytics?team=growth\"\nsecret = \"{HOOK_SECRET}\"\nmethod = \"PUT\"\nheaders = {{ \"X-Team\" = \"growth\" }}",
        fake.url
    );
    let server = Switchyard::start(dir.path(), &config("hook", &sink, 5000));
    let batch: Vec<Value> = (0..3).map(|i| track(&format!("w-{i}"), "user-1")).collect();
    post_batch(&server, &batch).await;

    let events = fake.wait_for_events(3, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    fake.assert_no_violations();
    assert_eq!(fake.events().len(), 3);
    let requests = fake.requests();
    assert_eq!(
        requests.iter().map(|r| r.status).collect::<Vec<_>>(),
        [503, 200]
    );
    let waited = requests[1].at.duration_since(requests[0].at);
    assert!(
        waited >= Duration::from_millis(1500),
        "waited only {waited:?}"
    );
    assert_eq!(requests[1].query, "team=growth");
    let ids: HashSet<&str> = events
        .iter()
        .map(|e| e["messageId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, HashSet::from(["w-0", "w-1", "w-2"]));
    let first = events.iter().find(|e| e["messageId"] == "w-0").unwrap();
    assert_eq!(first["event"], "Order Completed");
    assert_eq!(first["properties"]["items"][0]["sku"], "A-1");
    assert_eq!(first["source"], "default");
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fakes_refuse_what_the_vendors_refuse() {
    let http = client();
    let posthog = Fake::start(Vendor::Posthog {
        api_key: POSTHOG_KEY.into(),
    })
    .await;
    let no_key = http
        .post(format!("{}/batch/", posthog.url))
        .json(&json!({"batch": [{"event": "e", "distinct_id": "u"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status(), 401);
    let no_distinct_id = http
        .post(format!("{}/batch/", posthog.url))
        .json(&json!({"api_key": POSTHOG_KEY, "batch": [{"event": "e"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_distinct_id.status(), 400);
    assert_eq!(posthog.violations().len(), 2);
    assert!(posthog.events().is_empty());

    let statsig = Fake::start(Vendor::Statsig {
        api_key: STATSIG_KEY.into(),
    })
    .await;
    let good_event = json!({"eventName": "e", "user": {"userID": "u"}, "time": 1714564800000i64});
    let no_time_header = http
        .post(format!("{}/v1/log_event", statsig.url))
        .header("statsig-api-key", STATSIG_KEY)
        .json(&json!({"events": [good_event]}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_time_header.status(), 400);
    let no_event_name = http
        .post(format!("{}/v1/log_event", statsig.url))
        .header("statsig-api-key", STATSIG_KEY)
        .header(
            "STATSIG-CLIENT-TIME",
            chrono::Utc::now().timestamp_millis().to_string(),
        )
        .json(&json!({"events": [{"user": {"userID": "u"}, "time": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_event_name.status(), 400);
    assert_eq!(statsig.violations().len(), 2);

    let ga4 = Fake::start(Vendor::Ga4 {
        measurement_id: GA4_ID.into(),
        api_secret: GA4_SECRET.into(),
    })
    .await;
    let params: serde_json::Map<String, Value> =
        (0..26).map(|i| (format!("p{i}"), json!(i))).collect();
    let malformed = http
        .post(format!(
            "{}/mp/collect?measurement_id={GA4_ID}&api_secret={GA4_SECRET}",
            ga4.url
        ))
        .json(&json!({"client_id": "c", "events": [
            {"name": "bad name", "params": {"ok": 1}},
            {"name": "many", "params": params},
            {"name": "long", "params": {"v": "x".repeat(101)}},
            {"name": "session_start"}
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 204, "GA4 answers 2xx and discards");
    let violations = ga4.violations();
    assert_eq!(violations.len(), 4, "{violations:#?}");
    assert!(ga4.events().is_empty());

    let hook = Fake::start(Vendor::Webhook {
        method: "POST".into(),
        path: "/h".into(),
        secret: HOOK_SECRET.into(),
        headers: Vec::new(),
    })
    .await;
    let now = chrono::Utc::now().timestamp();
    let forged = http
        .post(format!("{}/h", hook.url))
        .header("content-type", "application/json")
        .header(
            "X-Switchyard-Signature",
            format!("t={now},v1={}", "0".repeat(64)),
        )
        .body("{\"events\": []}")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    assert_eq!(hook.violations().len(), 1);
}

#[test]
fn invalid_vendor_settings_are_reported_with_their_paths() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        r#"
[sinks.ph]
type = "posthog"
url = "ftp://posthog.example"
api_key = ""

[sinks.ss]
type = "statsig"
api_key = "secret-x"
max_events_per_request = 100000

[sinks.ga]
type = "ga4"
measurement_id = "UA-123-1"
api_secret = "s"

[sinks.hook]
type = "webhook"
url = "hooks.example.com"
secret = "short"
headers = { "Content-Type" = "text/plain" }
surprise = 1
"#,
    )
    .unwrap();
    let output = std::process::Command::new(binary())
        .args(["validate", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "sinks.ph.url",
        "sinks.ph.api_key",
        "sinks.ss.max_events_per_request",
        "sinks.ga.measurement_id",
        "sinks.hook",
    ] {
        assert!(
            stderr.contains(expected),
            "missing `{expected}` in {stderr}"
        );
    }
    // The unknown key hides nothing else: fix it and the webhook's own problems show.
    let text = std::fs::read_to_string(&bad)
        .unwrap()
        .replace("surprise = 1\n", "");
    std::fs::write(&bad, text).unwrap();
    let output = std::process::Command::new(binary())
        .args(["validate", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "sinks.hook.url",
        "sinks.hook.secret",
        "sinks.hook.headers.Content-Type",
    ] {
        assert!(
            stderr.contains(expected),
            "missing `{expected}` in {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_batch_is_dead_lettered_the_sink_keeps_flowing_and_a_replay_delivers_it() {
    let fake = Fake::start(Vendor::Ga4 {
        measurement_id: GA4_ID.into(),
        api_secret: GA4_SECRET.into(),
    })
    .await;
    fake.script([Reply::status(400).body("{\"error\": {\"message\": \"rejected\"}}")]);
    let dir = tempfile::tempdir().unwrap();
    let sink = format!(
        "type = \"ga4\"\nurl = \"{}\"\nmeasurement_id = \"{GA4_ID}\"\napi_secret = \"{GA4_SECRET}\"",
        fake.url
    );
    let config = config("ga4", &sink, 2000) + "\n[admin]\ntoken = \"${ADMIN_TOKEN}\"\n";
    let server = Switchyard::start(dir.path(), &config);
    post_batch(
        &server,
        &[track("poison-0", "user-1"), track("poison-1", "user-2")],
    )
    .await;
    let dead_letters = dir.path().join("data/dead-letters/ga4.ndjson");
    eventually(Duration::from_secs(20), || {
        let text = std::fs::read_to_string(&dead_letters).ok()?;
        (text.lines().count() >= 2).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("no dead letters: {}", server.logs()));

    // The sink keeps flowing after the poison batch.
    post_batch(&server, &[track("healthy-0", "user-3")]).await;
    let delivered = fake.wait_for_events(1, Duration::from_secs(20)).await;
    assert_eq!(delivered.len(), 1);

    // The operator looks (offline, from the data dir) and re-sends after the fix.
    let list = std::process::Command::new(binary())
        .args(["dead-letters", "list", "--sink", "ga4", "--config"])
        .arg(dir.path().join("switchyard.toml"))
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    assert!(summary.contains("ga4: 2 dead letters"), "{summary}");
    assert!(summary.contains("rejected"), "{summary}");
    let replay = std::process::Command::new(binary())
        .args([
            "dead-letters",
            "replay",
            "--sink",
            "ga4",
            "--url",
            &server.base_url,
            "--token",
            ADMIN_TOKEN,
        ])
        .output()
        .unwrap();
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let outcome: Value = serde_json::from_slice(&replay.stdout).unwrap();
    assert_eq!(outcome["outcome"]["delivered"], 2, "{outcome}");
    let events = fake.wait_for_events(3, Duration::from_secs(20)).await;
    assert_eq!(events.len(), 3);
    fake.assert_no_violations();
    assert!(std::fs::read_to_string(&dead_letters)
        .map(|t| t.trim().is_empty())
        .unwrap_or(true));
}
