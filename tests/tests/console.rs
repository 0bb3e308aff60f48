//! End-to-end: the operator console in Debian's headless Chromium, driven by playwright-core
//! (tests/console/console.mjs), against the real switchyard process with a real ClickHouse server
//! seeded with the demo events: the sinks table, a rollout change and the kill switch reaching
//! `/admin/sinks`, reconciliation, KPI charts, error state and the token prompt. Screenshots go to
//! `target/console-screenshots/`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use switchyard_router::demo::{generate, DemoSpec};
use switchyard_tests::clickhouse::{shared, sink_section, wait_for_number};
use switchyard_tests::*;

fn console_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("console")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_shows_sinks_moves_a_dial_and_draws_kpis_in_chromium() {
    let chromium = std::env::var("CHROMIUM_PATH").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: install Debian's `chromium` package (./scripts/test.sh does)"
    );
    assert!(
        console_dir().join("node_modules/playwright-core").exists(),
        "run `npm ci` in tests/console (./scripts/test.sh does)"
    );
    let clickhouse = shared();
    let url = clickhouse.url();
    let database = format!("console_{}", std::process::id());
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
max_wait_ms = 100

[sinks.shadow]
type = "file"
path = "{{dir}}/shadow"
compare_with = "local"
[sinks.shadow.rollout]
percent = 50
mode = "shadow"
[sinks.shadow.batch]
max_wait_ms = 100
{}"#,
        sink_section("warehouse", &url, &database)
    );
    let switchyard = Switchyard::start(dir.path(), &config);

    let end = chrono::Utc::now().date_naive();
    let messages = generate(&DemoSpec {
        seed: 5,
        users: 90,
        days: 28,
        end,
    });
    let http = client();
    for chunk in messages.chunks(500) {
        let response = http
            .post(switchyard.url("/v1/batch"))
            .json(&serde_json::json!({ "batch": chunk }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let stored = wait_for_number(
        &url,
        &format!("SELECT count() FROM `{database}`.`events_by_person` FINAL"),
        messages.len() as u64,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(stored, messages.len() as u64, "{}", switchyard.logs());

    let screenshots =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    let screenshot_dir = screenshots.clone();
    let start = end - chrono::Duration::days(27);
    let base = switchyard.url("");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(console_dir().join("console.mjs"))
            .env("CONSOLE_BASE", base.trim_end_matches('/'))
            .env("ADMIN_TOKEN", ADMIN_TOKEN)
            .env("EXPECT_SINKS", "local,shadow,warehouse")
            .env("ROLLOUT_SINK", "shadow")
            .env("RANGE_START", start.to_string())
            .env("RANGE_END", end.to_string())
            .env("SCREENSHOT_DIR", &screenshots)
            .env("CHROMIUM_PATH", chromium)
            .output()
            .expect("node is needed for the console test")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report: Value = stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("no report from console.mjs:\n{stdout}\n{stderr}"));
    assert_eq!(
        report["ok"],
        true,
        "{report:#}\n{stderr}\n{}",
        switchyard.logs()
    );
    let findings = &report["findings"];
    for shot in std::fs::read_dir(&screenshot_dir).unwrap().flatten() {
        println!("screenshot: {}", shot.path().display());
    }
    assert!(
        findings["reconciliationRows"].as_u64().unwrap() > 0,
        "{findings}"
    );

    // What the browser did is what the server now holds, and it was audited as the console's doing.
    let sinks: Value = http
        .get(switchyard.url("/admin/sinks"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let shadow = sinks["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "shadow")
        .unwrap();
    assert_eq!(shadow["rollout"]["percent"], 0.0);
    let audit: Value = http
        .get(switchyard.url("/admin/audit?limit=10"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let records = audit["records"].as_array().unwrap();
    assert_eq!(records[0]["action"], "rollout");
    assert_eq!(records[0]["new"]["percent"], 0.0);
    assert_eq!(records[0]["caller"], "console");
    assert_eq!(records[1]["new"]["percent"], 25.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_assets_are_served_with_a_strict_policy() {
    let dir = tempfile::tempdir().unwrap();
    let switchyard = Switchyard::start(dir.path(), FILE_SINK_WITH_ADMIN);
    let http = client();
    // The shell holds no data, so it loads without a token; the APIs it calls demand one.
    let page = http.get(switchyard.url("/console")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(policy.contains("default-src 'none'") && policy.contains("connect-src 'self'"));
    assert!(page.text().await.unwrap().contains("/console/console.js"));
    for (asset, kind) in [
        ("console.js", "text/javascript"),
        ("console.css", "text/css"),
    ] {
        let response = http
            .get(switchyard.url(&format!("/console/{asset}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with(kind));
    }
    // Pages of other sites cannot use an operator's browser (or a token-adding proxy).
    for (name, value) in [
        ("sec-fetch-site", "cross-site"),
        ("origin", "https://evil.example"),
    ] {
        let response = http
            .get(switchyard.url("/admin/sinks"))
            .bearer_auth(ADMIN_TOKEN)
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{name}: {value}");
        assert!(response
            .headers()
            .get("access-control-allow-origin")
            .is_none());
    }
    let same_origin = http
        .get(switchyard.url("/admin/sinks"))
        .bearer_auth(ADMIN_TOKEN)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(same_origin.status(), 200);
    assert_eq!(
        http.get(switchyard.url("/console/secret.txt"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        http.get(switchyard.url("/admin/audit"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}
