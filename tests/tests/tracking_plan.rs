//! End-to-end: tracking plans (versioned schemas, reject / tag / quarantine, replay after a fix, the
//! plan commands) and server-side sessions across a restart, on the real switchyard process.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use switchyard_tests::*;

const WAIT: Duration = Duration::from_secs(20);

fn write_schema(root: &Path, relative: &str, schema: Value) {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_vec_pretty(&schema).unwrap()).unwrap();
}

/// Product Viewed v1 needs a string product_id; v2 also a numeric price. Order Completed v1 needs a
/// numeric total (`total_types` lets a test widen it).
fn write_plan(root: &Path, total_types: Value) {
    write_schema(
        root,
        "Product Viewed/v1.json",
        json!({"type": "object", "properties": {"properties": {"type": "object",
            "required": ["product_id"], "properties": {"product_id": {"type": "string"}}}}}),
    );
    write_schema(
        root,
        "Product Viewed/v2.json",
        json!({"type": "object", "properties": {"properties": {"type": "object",
            "required": ["product_id", "price"],
            "properties": {"product_id": {"type": "string"}, "price": {"type": "number"}}}}}),
    );
    write_schema(
        root,
        "Order Completed/v1.json",
        json!({"type": "object", "properties": {"properties": {"type": "object",
            "required": ["total"], "properties": {"total": {"type": total_types}}}}}),
    );
}

fn config(plan_keys: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
data_dir = "{{dir}}/data"

[admin]
token = "${{ADMIN_TOKEN}}"

[sources.web]
write_keys = ["wk_web"]

[sources.ios]
write_keys = ["wk_ios"]
tracking_plan = {{ on_violation = "reject" }}

[tracking_plan]
path = "{{dir}}/plan"
{plan_keys}

[sinks.main]
type = "file"
path = "{{dir}}/main"

[sinks.main.batch]
max_wait_ms = 50

[sinks.quarantine]
type = "file"
path = "{{dir}}/quarantine"

[sinks.quarantine.batch]
max_wait_ms = 50
"#
    )
}

fn viewed(id: &str, properties: Value, version: Option<Value>) -> Value {
    let mut context = json!({"page": {"path": "/p"}});
    if let Some(version) = version {
        context["schema_version"] = version;
    }
    json!({"type": "track", "event": "Product Viewed", "userId": "u1", "messageId": id,
           "properties": properties, "context": context})
}

fn order(id: &str, total: Value) -> Value {
    json!({"type": "track", "event": "Order Completed", "userId": "u1", "messageId": id,
           "properties": {"total": total}})
}

async fn send(server: &Switchyard, key: &str, batch: Vec<Value>) -> Value {
    let response = client()
        .post(server.url("/v1/batch"))
        .basic_auth(key, Some(""))
        .json(&json!({ "batch": batch }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn ids(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["messageId"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn versions_apply_their_own_rules_and_reject_mode_explains() {
    let dir = tempfile::tempdir().unwrap();
    write_plan(&dir.path().join("plan"), json!("number"));
    let server = Switchyard::start(
        dir.path(),
        &config("on_violation = \"reject\"\nunknown_events = \"reject\""),
    );
    let answer = send(
        &server,
        "wk_web",
        vec![
            viewed("v1-ok", json!({"product_id": "p1"}), Some(json!(1))),
            viewed("v2-ok", json!({"product_id": "p1", "price": 10}), None),
            viewed("v2-no-price", json!({"product_id": "p1"}), None),
            viewed("v1-bad-id", json!({"product_id": 5}), Some(json!("v1"))),
            json!({"type": "track", "event": "Mystery", "userId": "u1", "messageId": "unknown"}),
            json!({"type": "identify", "userId": "u1", "messageId": "identify"}),
        ],
    )
    .await;
    assert_eq!(answer["accepted"], 3, "{answer}");
    assert_eq!(answer["success"], false);
    let rejected = answer["rejected"].as_array().unwrap();
    let indexes: Vec<u64> = rejected
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, vec![2, 3, 4], "{answer}");
    let no_price = &rejected[0];
    assert!(
        no_price["reason"]
            .as_str()
            .unwrap()
            .starts_with("tracking plan: Product Viewed v2: /properties:"),
        "{no_price}"
    );
    assert_eq!(
        no_price["violations"][0]["schema"],
        "Product Viewed/v2.json"
    );
    assert_eq!(
        no_price["violations"][0]["schema_path"],
        "/properties/properties/required"
    );
    assert_eq!(no_price["violations"][0]["keyword"], "required");
    let bad_id = &rejected[1];
    assert_eq!(bad_id["violations"][0]["schema"], "Product Viewed/v1.json");
    assert_eq!(
        bad_id["violations"][0]["instance_path"],
        "/properties/product_id"
    );
    assert!(rejected[2]["reason"]
        .as_str()
        .unwrap()
        .contains("unknown event `Mystery`"));

    let events = wait_for_events(&dir.path().join("main"), 3, WAIT).await;
    assert_eq!(ids(&events), vec!["v1-ok", "v2-ok", "identify"]);
    assert!(events
        .iter()
        .all(|e| e["context"].get("violations").is_none()));
}

#[tokio::test]
async fn tag_mode_lets_violations_through_and_sources_override() {
    let dir = tempfile::tempdir().unwrap();
    write_plan(&dir.path().join("plan"), json!("number"));
    let server = Switchyard::start(dir.path(), &config("on_violation = \"tag\""));
    let web = send(
        &server,
        "wk_web",
        vec![
            order("tagged", json!("12.50")),
            order("clean", json!(12.5)),
            // A client cannot set the routing markers itself.
            json!({"type": "track", "event": "Order Completed", "userId": "u1", "messageId": "sneaky",
                   "properties": {"total": 1}, "context": {"quarantine": {"sink": "quarantine"}, "violations": ["x"]}}),
        ],
    )
    .await;
    assert_eq!(web["accepted"], 3, "{web}");
    assert_eq!(web["tagged"], 1, "{web}");
    assert_eq!(web["rejected"], json!([]));
    let ios = send(&server, "wk_ios", vec![order("ios-bad", json!("12.50"))]).await;
    assert_eq!(ios["accepted"], 0, "{ios}");
    assert_eq!(ios["rejected"][0]["index"], 0);

    let events = wait_for_events(&dir.path().join("main"), 3, WAIT).await;
    assert_eq!(ids(&events), vec!["tagged", "clean", "sneaky"]);
    let violations = events[0]["context"]["violations"].as_array().unwrap();
    assert_eq!(violations[0]["instance_path"], "/properties/total");
    assert_eq!(violations[0]["schema"], "Order Completed/v1.json");
    assert!(events[1]["context"].get("violations").is_none());
    assert!(events[2]["context"].get("quarantine").is_none());
    assert!(events[2]["context"].get("violations").is_none());
}

fn run_cli(args: &[&str], stdin: Option<&str>) -> (i32, String) {
    let mut child = Command::new(binary())
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
    }
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

async fn admin_get(server: &Switchyard, path: &str) -> Value {
    client()
        .get(server.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits until `sink` has skipped `count` events (events not meant for it).
async fn wait_skipped(server: &Switchyard, sink: &str, count: u64) {
    for _ in 0..400 {
        let status = admin_get(server, "/admin/sinks").await;
        let sinks = status["sinks"].as_array().cloned().unwrap_or_default();
        if sinks
            .iter()
            .any(|s| s["name"] == sink && s["counters"]["skipped"].as_u64().unwrap_or(0) >= count)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("sink {sink} did not skip {count} events");
}

#[tokio::test]
async fn quarantine_keeps_violations_apart_and_replays_after_the_plan_is_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan");
    write_plan(&plan, json!("number"));
    let server = Switchyard::start(
        dir.path(),
        &config("on_violation = \"quarantine\"\nquarantine_sink = \"quarantine\""),
    );
    let answer = send(
        &server,
        "wk_web",
        vec![order("ok-1", json!(10)), order("bad-1", json!("12.50"))],
    )
    .await;
    assert_eq!(answer["accepted"], 2, "{answer}");
    assert_eq!(answer["quarantined"], 1, "{answer}");
    assert_eq!(answer["rejected"], json!([]));

    let quarantined = wait_for_events(&dir.path().join("quarantine"), 1, WAIT).await;
    assert_eq!(ids(&quarantined), vec!["bad-1"]);
    let stored = &quarantined[0];
    assert_eq!(
        stored["context"]["quarantine"],
        json!({"sink": "quarantine", "reason": "violation", "schema": "Order Completed v1"})
    );
    assert_eq!(
        stored["context"]["violations"][0]["instance_path"],
        "/properties/total"
    );
    let main = wait_for_events(&dir.path().join("main"), 1, WAIT).await;
    assert_eq!(ids(&main), vec!["ok-1"]);

    let url = server.base_url.clone();
    let quarantine_dir = dir.path().join("quarantine").display().to_string();
    let replay_args = [
        "plan",
        "replay",
        "--from",
        quarantine_dir.as_str(),
        "--url",
        url.as_str(),
        "--token",
        ADMIN_TOKEN,
    ];
    // Not fixed yet: the event still fails and stays where it is.
    let (code, output) = run_cli(&replay_args, None);
    assert_eq!(code, 1, "{output}");
    assert!(output.contains("still_failing: bad-1"), "{output}");
    assert!(output.contains("replayed 0, still failing 1"), "{output}");

    // Fix the plan (the app sends totals as strings), reload, replay.
    write_plan(&plan, json!(["number", "string"]));
    let reload = client()
        .post(server.url("/admin/reload"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), 200, "{}", reload.text().await.unwrap());
    let (code, output) = run_cli(&replay_args, None);
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("replayed 1, still failing 0"), "{output}");

    // The replayed event reaches the main sink as it was, without the markers; new events flow too.
    send(&server, "wk_web", vec![order("ok-2", json!("3.00"))]).await;
    let main = wait_for_events(&dir.path().join("main"), 3, WAIT).await;
    assert_eq!(ids(&main), vec!["ok-1", "bad-1", "ok-2"]);
    let replayed = &main[1];
    assert!(replayed["context"].get("quarantine").is_none());
    assert!(replayed["context"].get("violations").is_none());
    assert_eq!(replayed["source"], "web");
    assert_eq!(replayed["receivedAt"], stored["receivedAt"]);
    assert_eq!(replayed["requestId"], stored["requestId"]);
    // The quarantine sink read all of it (skipping ok-1, the replayed bad-1 and ok-2) and kept only
    // the one quarantined event.
    wait_skipped(&server, "quarantine", 3).await;
    assert_eq!(
        ids(&read_ndjson_dir(&dir.path().join("quarantine"))),
        vec!["bad-1"]
    );
}

#[test]
fn plan_check_flags_breaking_changes_and_plan_test_explains() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan");
    write_plan(&plan, json!("number"));
    let plan_arg = plan.display().to_string();
    let (code, output) = run_cli(&["plan", "check", "--plan", &plan_arg], None);
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("Product Viewed: v1, v2"), "{output}");
    assert!(
        output.contains("Product Viewed v1 -> v2: /properties/properties/required: `price` is now required [new_required]"),
        "{output}"
    );
    let (code, _) = run_cli(&["plan", "check", "--plan", &plan_arg, "--strict"], None);
    assert_eq!(code, 1);

    let input = [
        json!({"type": "track", "event": "Order Completed", "userId": "u", "properties": {"total": 3}}),
        json!({"type": "track", "event": "Order Completed", "userId": "u", "properties": {"total": "3"}}),
        json!({"type": "track", "event": "Nope", "userId": "u"}),
    ]
    .iter()
    .map(Value::to_string)
    .collect::<Vec<_>>()
    .join("\n");
    let (code, output) = run_cli(&["plan", "test", "--plan", &plan_arg], Some(&input));
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains("line 1: pass [Order Completed v1]"),
        "{output}"
    );
    assert!(
        output.contains("line 2: fail [Order Completed v1]"),
        "{output}"
    );
    assert!(
        output.contains("/properties/total: value is not of type \"number\""),
        "{output}"
    );
    assert!(output.contains("line 3: unknown"), "{output}");

    // A schema that does not compile: plan check and config validation name the file.
    write_schema(&plan, "Order Completed/v2.json", json!({"type": "strng"}));
    let (code, output) = run_cli(&["plan", "check", "--plan", &plan_arg], None);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains("Order Completed/v2.json: does not compile"),
        "{output}"
    );
    let config_path = dir.path().join("switchyard.toml");
    std::fs::write(
        &config_path,
        config("").replace("{dir}", &dir.path().display().to_string()),
    )
    .unwrap();
    let (code, output) = Command::new(binary())
        .args(["validate", "--config", &config_path.display().to_string()])
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .map(|o| {
            (
                o.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&o.stderr).to_string(),
            )
        })
        .unwrap();
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains("tracking_plan.path:") && output.contains("Order Completed/v2.json"),
        "{output}"
    );

    // The shipped example plans load.
    let plans = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plans");
    for name in ["web", "game"] {
        let path = plans.join(name).display().to_string();
        let (code, output) = run_cli(&["plan", "check", "--plan", &path], None);
        assert_eq!(code, 0, "{name}: {output}");
    }
}

#[tokio::test]
async fn open_sessions_survive_a_restart_and_synthetic_events_are_excludable() {
    let dir = tempfile::tempdir().unwrap();
    let config = r#"
[server]
listen = "127.0.0.1:0"
data_dir = "{dir}/data"

[sessions]
enabled = true
timeout_minutes = 30

[sinks.all]
type = "file"
path = "{dir}/all"

[sinks.all.batch]
max_wait_ms = 50

[sinks.vendor]
type = "file"
path = "{dir}/vendor"
exclude_synthetic = true

[sinks.vendor.batch]
max_wait_ms = 50
"#;
    let server = Switchyard::start(dir.path(), config);
    let click =
        |id: &str| json!({"type": "track", "event": "Clicked", "userId": "u1", "messageId": id});
    send(&server, "any", vec![click("c1")]).await;
    let all = wait_for_events(&dir.path().join("all"), 2, WAIT).await;
    assert_eq!(all[0]["event"], "Session Started");
    assert_eq!(all[0]["context"]["synthetic"], true);
    let session = all[1]["context"]["session"].clone();
    assert_eq!(all[1]["messageId"], "c1");
    assert_eq!(session["sequence"], 1);
    assert_eq!(all[0]["properties"]["session_id"], session["id"]);
    let vendor = wait_for_events(&dir.path().join("vendor"), 1, WAIT).await;
    assert_eq!(ids(&vendor), vec!["c1"]);
    assert_eq!(vendor[0]["context"]["session"], session);

    let status = server.terminate();
    assert!(status.success());
    assert!(dir.path().join("data/sessions.json").exists());

    let server = Switchyard::start_with_file(dir.path(), &dir.path().join("switchyard.toml"));
    send(&server, "any", vec![click("c2")]).await;
    let all = wait_for_events(&dir.path().join("all"), 3, WAIT).await;
    assert_eq!(all[2]["messageId"], "c2");
    assert_eq!(all[2]["context"]["session"]["id"], session["id"]);
    assert_eq!(all[2]["context"]["session"]["sequence"], 2);
    assert_eq!(
        all.iter()
            .filter(|e| e["event"] == "Session Started")
            .count(),
        1,
        "the session went on: no new start"
    );
    let vendor = wait_for_events(&dir.path().join("vendor"), 2, WAIT).await;
    assert_eq!(ids(&vendor), vec!["c1", "c2"]);
}
