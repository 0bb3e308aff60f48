//! End-to-end: the admin API (auth, rollout dial, reload) and the validate command.

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use switchyard_tests::*;

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
data_dir = "{dir}/data"

[admin]
token = "${ADMIN_TOKEN}"

[sinks.primary]
type = "file"
path = "{dir}/primary"
[sinks.primary.batch]
max_wait_ms = 50

[sinks.canary]
type = "file"
path = "{dir}/canary"
[sinks.canary.batch]
max_wait_ms = 50
[sinks.canary.rollout]
percent = 0
"#;

async fn post_users(server: &Switchyard, prefix: &str, users: usize) {
    let batch: Vec<Value> = (0..users)
        .map(|i| track(&format!("{prefix}-{i}"), &format!("user-{i}")))
        .collect();
    let response = client()
        .post(server.url("/v1/batch"))
        .json(&json!({"batch": batch}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

fn admin(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    request
        .bearer_auth(ADMIN_TOKEN)
        .header("x-switchyard-caller", "release-manager")
}

#[tokio::test]
async fn admin_requires_the_bearer_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = Switchyard::start(dir.path(), CONFIG);
    let client = client();
    let missing = client.get(server.url("/admin/sinks")).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    let wrong = client
        .get(server.url("/admin/sinks"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let put = client
        .put(server.url("/admin/sinks/canary/rollout"))
        .bearer_auth("nope")
        .json(&json!({"percent": 100}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 401);
    let ok: Value = admin(client.get(server.url("/admin/sinks")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = ok["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["canary", "primary"]);
    assert_eq!(ok["sinks"][0]["rollout"]["percent"], 0.0);
}

#[tokio::test]
async fn rollout_dial_applies_at_once_is_sticky_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Switchyard::start(dir.path(), CONFIG);
    let client = client();
    post_users(&server, "before", 200).await;
    wait_for_events(&dir.path().join("primary"), 200, Duration::from_secs(20)).await;
    assert!(
        read_ndjson_dir(&dir.path().join("canary")).is_empty(),
        "0% gets nothing"
    );

    for (body, status) in [
        (json!({"percent": 101}), 400),
        (json!({"percent": 10.123}), 400),
        (json!({"percent": -1}), 400),
        (json!({"mode": "sideways"}), 400),
    ] {
        let response = admin(client.put(server.url("/admin/sinks/canary/rollout")))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{body}");
    }
    let unknown = admin(client.put(server.url("/admin/sinks/nope/rollout")))
        .json(&json!({"percent": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    let response = admin(client.put(server.url("/admin/sinks/canary/rollout")))
        .json(&json!({"percent": 50, "mode": "shadow"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["old"]["percent"], 0.0);
    assert_eq!(answer["new"]["percent"], 50.0);

    post_users(&server, "half", 400).await;
    wait_for_events(&dir.path().join("primary"), 600, Duration::from_secs(20)).await;
    let canary = eventually(Duration::from_secs(20), || {
        let events = read_ndjson_dir(&dir.path().join("canary"));
        (events.len() > 150).then_some(events)
    })
    .await
    .expect("canary receives its share");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let canary_users: HashSet<String> = read_ndjson_dir(&dir.path().join("canary"))
        .iter()
        .map(|e| e["userId"].as_str().unwrap().to_string())
        .collect();
    let share = canary.len() as f64 / 400.0;
    assert!((0.35..0.65).contains(&share), "50% dial gave {share}");

    let audit = std::fs::read_to_string(dir.path().join("data/audit.ndjson")).unwrap();
    let last: Value = serde_json::from_str(audit.lines().last().unwrap()).unwrap();
    assert_eq!(last["sink"], "canary");
    assert_eq!(last["caller"], "release-manager");
    assert_eq!(last["new"]["percent"], 50.0);

    // Restart: the dial is still at 50% and the same users are in.
    assert!(server.terminate().success());
    let restarted = Switchyard::start_with_file(dir.path(), &dir.path().join("switchyard.toml"));
    let status: Value = admin(client.get(restarted.url("/admin/sinks")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let canary_status = status["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "canary")
        .unwrap()
        .clone();
    assert_eq!(canary_status["rollout"]["percent"], 50.0);
    assert_eq!(canary_status["rollout"]["mode"], "shadow");
    let before = read_ndjson_dir(&dir.path().join("canary")).len();
    post_users(&restarted, "again", 400).await;
    let after = eventually(Duration::from_secs(20), || {
        let events = read_ndjson_dir(&dir.path().join("canary"));
        (events.len() >= before + canary_users.len()).then_some(events)
    })
    .await
    .expect("same share after restart");
    let again_users: HashSet<String> = after[before..]
        .iter()
        .map(|e| e["userId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        again_users, canary_users,
        "sticky: the same users are in the share"
    );

    // Kill switch.
    admin(client.put(restarted.url("/admin/sinks/canary/rollout")))
        .json(&json!({"percent": 0}))
        .send()
        .await
        .unwrap();
    let frozen = read_ndjson_dir(&dir.path().join("canary")).len();
    post_users(&restarted, "killed", 100).await;
    wait_for_events(&dir.path().join("primary"), 1100, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(read_ndjson_dir(&dir.path().join("canary")).len(), frozen);
}

#[tokio::test]
async fn reload_adds_and_removes_sinks_without_losing_events() {
    let dir = tempfile::tempdir().unwrap();
    let server = Switchyard::start(dir.path(), CONFIG);
    let client = client();
    post_users(&server, "a", 100).await;

    // Invalid config: 400 with every problem, the old config keeps running.
    let config_path = dir.path().join("switchyard.toml");
    let original = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        format!(
            "{original}\n[sinks.broken]\ntype = \"file\"\n[sinks.broken.batch]\nmax_events = 0\n"
        ),
    )
    .unwrap();
    let response = admin(client.post(server.url("/admin/reload")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    let problems: Vec<&str> = body["error"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("sinks.broken: missing field `path`")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("sinks.broken.batch.max_events")),
        "{problems:?}"
    );

    // Valid: add "extra", remove "canary", keep "primary".
    let replaced = original
        .replace(
            "[sinks.canary]\ntype = \"file\"\npath = \"",
            "[sinks.extra]\ntype = \"file\"\npath = \"",
        )
        .replace("/canary\"", "/extra\"")
        .replace("[sinks.canary.batch]", "[sinks.extra.batch]")
        .replace(
            "[sinks.canary.rollout]\npercent = 0",
            "[sinks.extra.rollout]\npercent = 100",
        );
    std::fs::write(&config_path, replaced).unwrap();
    // Keep traffic flowing while reloading.
    let sender = {
        let url = server.url("/v1/batch");
        tokio::spawn(async move {
            let client = switchyard_tests::client();
            for round in 0..20 {
                let batch: Vec<Value> = (0..10)
                    .map(|i| track(&format!("during-{round}-{i}"), &format!("u{i}")))
                    .collect();
                let response = client
                    .post(&url)
                    .json(&json!({"batch": batch}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let response = admin(client.post(server.url("/admin/reload")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["changes"]["added"], json!(["extra"]));
    assert_eq!(body["changes"]["removed"], json!(["canary"]));
    assert_eq!(body["changes"]["unchanged"], json!(["primary"]));
    sender.await.unwrap();
    post_users(&server, "b", 100).await;
    // The unchanged sink saw every event exactly once, across the reload.
    let primary = wait_for_events(&dir.path().join("primary"), 400, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let primary = read_ndjson_dir(&dir.path().join("primary"))
        .len()
        .max(primary.len());
    assert_eq!(primary, 400);
    // The new sink gets events accepted after the reload.
    let extra = wait_for_events(&dir.path().join("extra"), 100, Duration::from_secs(20)).await;
    assert!(extra.iter().any(|e| e["messageId"] == "b-99"));
    let status: Value = admin(client.get(server.url("/admin/sinks")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = status["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["extra", "primary"]);

    // SIGHUP reloads too.
    std::fs::write(&config_path, original).unwrap();
    server.hangup();
    let back = eventually(Duration::from_secs(10), || {
        server
            .logs()
            .contains("SIGHUP: configuration reloaded")
            .then_some(())
    })
    .await;
    assert!(back.is_some(), "{}", server.logs());
}

#[test]
fn validate_lists_every_problem_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nlisten = \"x\"\n[sinks.a]\ntype = \"file\"\npath = \"p\"\n[sinks.a.batch]\nmax_events = 0\n[sinks.b]\ntype = \"nope\"\n",
    )
    .unwrap();
    let output = Command::new(binary())
        .args(["validate", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "server.listen",
        "sinks.a.batch.max_events: must be > 0",
        "sinks.b.type: unknown variant `nope`",
    ] {
        assert!(
            stderr.contains(expected),
            "missing `{expected}` in {stderr}"
        );
    }
    let good = dir.path().join("good.toml");
    let default = Command::new(binary())
        .arg("default-config")
        .output()
        .unwrap();
    std::fs::write(&good, default.stdout).unwrap();
    let output = Command::new(binary())
        .args(["validate", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let schema = Command::new(binary()).arg("schema").output().unwrap();
    let schema: Value = serde_json::from_slice(&schema.stdout).unwrap();
    assert_eq!(schema["title"], "Event");
    assert!(schema["properties"]["messageId"].is_object());
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = Switchyard::start(dir.path(), CONFIG);
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2
        .post(server.url("/v1/track"))
        .json(&json!({"event": "Over H2", "userId": "u"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let events = wait_for_events(&dir.path().join("primary"), 1, Duration::from_secs(10)).await;
    assert_eq!(events[0]["event"], "Over H2");
}

#[tokio::test]
async fn rollout_cli_reads_and_moves_the_dial() {
    let dir = tempfile::tempdir().unwrap();
    let server = Switchyard::start(dir.path(), CONFIG);
    let run = |args: &[&str]| {
        let output = Command::new(binary())
            .args(args)
            .args(["--url", &server.base_url])
            .env("SWITCHYARD_ADMIN_TOKEN", ADMIN_TOKEN)
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).to_string(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };
    let (ok, out, err) = run(&["rollout", "set", "canary", "12.5", "--mode", "shadow"]);
    assert!(ok, "{err}");
    assert!(out.contains("\"percent\": 12.5"), "{out}");
    let (ok, table, _) = run(&["rollout", "status"]);
    assert!(ok);
    let canary = table.lines().find(|l| l.starts_with("canary")).unwrap();
    assert!(
        canary.contains("12.50") && canary.contains("shadow") && canary.contains("closed"),
        "{table}"
    );
    let (ok, _, err) = run(&["rollout", "set", "canary", "150"]);
    assert!(!ok);
    assert!(err.contains("HTTP 400"), "{err}");
    let output = Command::new(binary())
        .args([
            "rollout",
            "status",
            "--url",
            &server.base_url,
            "--token",
            "wrong-token-wrong-token",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("HTTP 401"));
}
