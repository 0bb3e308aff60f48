//! End-to-end: the ClickHouse sink of the real switchyard process against a real local ClickHouse
//! server — every field of 10k events intact and exactly once, a re-sent batch not duplicated,
//! migrations idempotent across restarts, permanent errors dead-lettered without retries, and a
//! server outage losing nothing.

use std::collections::{BTreeMap, HashSet};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchyard_tests::clickhouse::{
    number, query, row_to_event, rows, shared, sink_section, wait_for_number, LocalClickhouse,
};
use switchyard_tests::*;

fn config(url: &str, database: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
data_dir = "{{dir}}/data"
max_body_bytes = 2000000

[admin]
token = "${{ADMIN_TOKEN}}"

[sinks.local]
type = "file"
path = "{{dir}}/events"

[sinks.local.batch]
max_wait_ms = 100
{}"#,
        sink_section("warehouse", url, database)
    )
}

/// One of many shapes of message: every call type, ids as strings and numbers, nested and odd
/// property values, with and without client timestamps and `sentAt`.
fn varied_message(i: usize) -> Value {
    let day = 29 + i % 4; // 29, 30 April, 1, 2 May: two monthly partitions
    let (month, day) = if day > 30 { (5, day - 30) } else { (4, day) };
    let time = format!(
        "2024-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        i % 24,
        (i / 7) % 60,
        (i / 3) % 60,
        i % 1000
    );
    let library = ["analytics.js", "analytics-ios", "analytics-node"][i % 3];
    let locale = ["en-GB", "de-DE", "ja-JP"][i % 3];
    let event_name = ["Order Completed", "Bestellung abgeschlossen ✓", "Signed Up"][i % 3];
    let context = json!({
        "library": {"name": library, "version": format!("4.{}.0", i % 5)},
        "page": {"path": format!("/p/{}", i % 40), "url": format!("https://shop.test/p/{}?q=a%20b", i % 40), "referrer": "https://search.test/?q=x"},
        "locale": locale,
        "sessionId": if i.is_multiple_of(2) { json!(format!("s-{}", i % 500)) } else { json!(i % 500) },
        "campaign": {"name": "spring", "source": "newsletter"}
    });
    let mut message = match i % 6 {
        0 => {
            json!({"type": "track", "event": event_name,
                    "properties": {"total": i as f64 * 0.1, "count": i, "negative": -(i as i64), "big": 9_007_199_254_740_993u64,
                                   "ok": i.is_multiple_of(2), "none": null, "text": "tab\there\nnew line \"quoted\" back\\slash 日本",
                                   "items": [{"sku": format!("A-{i}"), "qty": 2, "tags": ["x", "y"]}], "nested": {"a": {"b": {"c": [1, 2.5, "three"]}}}}})
        }
        1 => {
            json!({"type": "page", "name": format!("Page {}", i % 40), "properties": {"title": "Prices", "path": "/pricing"}})
        }
        2 => {
            json!({"type": "identify", "traits": {"plan": "pro", "seats": i % 50, "company": {"name": "ACME"}}})
        }
        3 => json!({"type": "screen", "name": "Settings", "properties": {"variant": "b"}}),
        4 => {
            json!({"type": "group", "groupId": format!("g-{}", i % 20), "traits": {"industry": "retail"}})
        }
        _ => json!({"type": "alias", "previousId": format!("anon-{}", i % 400)}),
    };
    let object = message.as_object_mut().expect("object");
    if i.is_multiple_of(5) {
        object.insert("anonymousId".into(), json!(format!("anon-{}", i % 400)));
    } else if i.is_multiple_of(31) {
        object.insert("userId".into(), json!(100_000 + i % 150));
    } else {
        object.insert("userId".into(), json!(format!("user-{}", i % 150)));
        if i.is_multiple_of(3) {
            object.insert("anonymousId".into(), json!(format!("anon-{}", i % 400)));
        }
    }
    if !i.is_multiple_of(50) {
        object.insert("messageId".into(), json!(format!("m-{i}")));
    }
    if !i.is_multiple_of(9) {
        object.insert("timestamp".into(), json!(time));
    }
    if i.is_multiple_of(4) {
        object.insert("sentAt".into(), json!(time));
    }
    if i.is_multiple_of(7) {
        object.insert(
            "integrations".into(),
            json!({"All": false, "Mixpanel": true}),
        );
    }
    if !i.is_multiple_of(11) {
        object.insert("context".into(), context);
    }
    message
}

async fn post(server: &Switchyard, messages: &[Value]) {
    for chunk in messages.chunks(500) {
        let response = client()
            .post(server.url("/v1/batch"))
            .header("user-agent", "e2e-test/1.0")
            .json(&json!({"batch": chunk}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["accepted"], chunk.len(), "{body}");
    }
}

async fn sink_counters(server: &Switchyard, sink: &str) -> Value {
    let status: Value = client()
        .get(server.url("/admin/sinks"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    status["sinks"]
        .as_array()
        .and_then(|sinks| sinks.iter().find(|s| s["name"] == sink))
        .map(|s| s["counters"].clone())
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn ten_thousand_events_arrive_exactly_once_with_every_field_intact() {
    let url = shared().url();
    let dir = tempfile::tempdir().unwrap();
    let server = Switchyard::start(dir.path(), &config(&url, "e2e_exact"));
    let messages: Vec<Value> = (0..10_000).map(varied_message).collect();
    post(&server, &messages).await;

    let expected =
        wait_for_events(&dir.path().join("events"), 10_000, Duration::from_secs(60)).await;
    let arrived = wait_for_number(
        &url,
        "SELECT count() FROM e2e_exact.events FINAL",
        10_000,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(arrived, 10_000, "{}", server.logs());
    assert_eq!(
        number(&url, "SELECT count() FROM e2e_exact.events").await,
        10_000,
        "no copies even before FINAL"
    );

    // Row by row: each row, turned back into an event, equals what the file sink wrote.
    let expected: BTreeMap<String, Value> = expected
        .into_iter()
        .map(|event| (event["messageId"].as_str().unwrap().to_string(), event))
        .collect();
    assert_eq!(expected.len(), 10_000);
    let stored = rows(&url, "SELECT * FROM e2e_exact.events FINAL").await;
    assert_eq!(stored.len(), 10_000);
    let mut seen = HashSet::new();
    for row in &stored {
        let event = row_to_event(row);
        let id = event["messageId"].as_str().unwrap().to_string();
        let want = expected
            .get(&id)
            .unwrap_or_else(|| panic!("unexpected row {id}"));
        assert_eq!(&event, want, "row {id} differs");
        assert!(seen.insert(id));

        // Lifted columns.
        let context = &want["context"];
        let lifted = |path: &[&str]| {
            let mut value = context;
            for key in path {
                value = &value[key];
            }
            value.as_str().unwrap_or_default().to_string()
        };
        assert_eq!(row["page_path"], lifted(&["page", "path"]));
        assert_eq!(row["page_url"], lifted(&["page", "url"]));
        assert_eq!(row["page_referrer"], lifted(&["page", "referrer"]));
        assert_eq!(row["library_name"], lifted(&["library", "name"]));
        assert_eq!(row["library_version"], lifted(&["library", "version"]));
        assert_eq!(row["locale"], lifted(&["locale"]));
        let person = want["userId"]
            .as_str()
            .or(want["anonymousId"].as_str())
            .unwrap();
        assert_eq!(row["person_id"], person);
        let session = match &context["sessionId"] {
            Value::String(text) => Value::String(text.clone()),
            Value::Number(number) => Value::String(number.to_string()),
            _ => Value::Null,
        };
        assert_eq!(row["session_id"], session, "row {}", row["message_id"]);
    }

    // Rollups: every event counted once, unique people per day exact at this size.
    assert_eq!(
        number(
            &url,
            "SELECT sum(events) FROM (SELECT countMerge(events) AS events FROM e2e_exact.events_daily GROUP BY day)"
        )
        .await,
        10_000
    );
    let mut people_per_day: BTreeMap<String, HashSet<String>> = BTreeMap::new();
    for event in expected.values() {
        let day = event["timestamp"].as_str().unwrap()[..10].to_string();
        let person = event["userId"]
            .as_str()
            .or(event["anonymousId"].as_str())
            .unwrap();
        people_per_day
            .entry(day)
            .or_default()
            .insert(person.to_string());
    }
    let dau = rows(
        &url,
        "SELECT toString(day) AS day, uniqMerge(users) AS users FROM e2e_exact.events_daily GROUP BY day ORDER BY day",
    )
    .await;
    let dau: BTreeMap<String, u64> = dau
        .iter()
        .map(|r| {
            (
                r["day"].as_str().unwrap().to_string(),
                r["users"]
                    .as_u64()
                    .or_else(|| r["users"].as_str().and_then(|u| u.parse().ok()))
                    .unwrap(),
            )
        })
        .collect();
    let want_dau: BTreeMap<String, u64> = people_per_day
        .iter()
        .map(|(day, people)| (day.clone(), people.len() as u64))
        .collect();
    assert_eq!(dau, want_dau);
    assert_eq!(
        number(&url, "SELECT count() FROM e2e_exact.events_by_person FINAL").await,
        10_000
    );
}

#[tokio::test]
async fn restart_reapplies_no_migration_and_a_resent_batch_does_not_duplicate() {
    let url = shared().url();
    let dir = tempfile::tempdir().unwrap();
    let server = Switchyard::start(dir.path(), &config(&url, "e2e_resend"));
    assert!(server.logs().contains("applied ClickHouse migration"));
    // Keep background merges from collapsing copies, so the raw count shows the re-send.
    query(&url, "SYSTEM STOP MERGES e2e_resend.events").await;
    let messages: Vec<Value> = (0..3000).map(varied_message).collect();
    post(&server, &messages).await;
    let final_count = "SELECT count() FROM e2e_resend.events FINAL";
    assert_eq!(
        wait_for_number(&url, final_count, 3000, Duration::from_secs(60)).await,
        3000
    );
    assert!(server.terminate().success());
    let migrations = "SELECT count() FROM e2e_resend.switchyard_migrations";
    assert_eq!(number(&url, migrations).await, 3);

    // As if the process had died after the inserts but before committing its cursor.
    let cursor = dir.path().join("data/log/cursors/warehouse");
    assert!(cursor.exists(), "no cursor at {}", cursor.display());
    std::fs::write(&cursor, "0").unwrap();
    let restarted = Switchyard::start_with_file(dir.path(), &server_config(&dir));
    let deadline = Instant::now() + Duration::from_secs(60);
    while sink_counters(&restarted, "warehouse").await["delivered"] != 3000 {
        assert!(Instant::now() < deadline, "{}", restarted.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(number(&url, final_count).await, 3000);
    assert_eq!(
        number(
            &url,
            "SELECT count(DISTINCT message_id) FROM e2e_resend.events"
        )
        .await,
        3000
    );
    let raw = number(&url, "SELECT count() FROM e2e_resend.events").await;
    assert!(raw >= 3000, "raw {raw}");
    assert_eq!(number(&url, migrations).await, 3, "nothing re-applied");
    // Both runs log into the same file: only the first applied anything.
    let logs = restarted.logs();
    assert!(logs.contains("ClickHouse sink ready"));
    assert_eq!(
        logs.matches("applied ClickHouse migration").count(),
        3,
        "{logs}"
    );
}

fn server_config(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("switchyard.toml")
}

#[tokio::test]
async fn a_permanent_error_is_dead_lettered_without_retries() {
    let url = shared().url();
    let dir = tempfile::tempdir().unwrap();
    let server = Switchyard::start(dir.path(), &config(&url, "e2e_poison"));
    query(&url, "DROP TABLE e2e_poison.events").await;
    let messages: Vec<Value> = (0..100).map(varied_message).collect();
    post(&server, &messages).await;

    let letters_path = dir.path().join("data/dead-letters/warehouse.ndjson");
    let letters = eventually(Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&letters_path).ok()?;
        let letters: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        (letters.len() >= 100).then_some(letters)
    })
    .await
    .unwrap_or_else(|| panic!("no dead letters: {}", server.logs()));
    assert_eq!(letters.len(), 100);
    for letter in &letters {
        assert_eq!(letter["attempts"], 1, "not retried: {letter}");
        let error = letter["error"].as_str().unwrap();
        assert!(error.contains("Code: 60"), "{error}");
        assert!(error.contains("e2e_poison"), "{error}");
    }
    let counters = sink_counters(&server, "warehouse").await;
    assert_eq!(counters["dead_lettered"], 100, "{counters}");
    assert_eq!(
        counters["failed_attempts"], counters["batches"],
        "{counters}"
    );
    // The other sink was not held back.
    wait_for_events(&dir.path().join("events"), 100, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_server_outage_loses_nothing() {
    let mut clickhouse = LocalClickhouse::start().expect("start a ClickHouse server");
    let url = clickhouse.url();
    let dir = tempfile::tempdir().unwrap();
    let server = Switchyard::start(dir.path(), &config(&url, "e2e_outage"));
    let messages: Vec<Value> = (0..3000).map(varied_message).collect();
    post(&server, &messages[..1000]).await;
    let final_count = "SELECT count() FROM e2e_outage.events FINAL";
    assert_eq!(
        wait_for_number(&url, final_count, 1000, Duration::from_secs(30)).await,
        1000
    );

    clickhouse.stop();
    let ready = client().get(server.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let problems = ready.text().await.unwrap();
    assert!(problems.contains(&url), "{problems}");
    post(&server, &messages[1000..]).await;
    // The file sink keeps delivering while ClickHouse is down.
    wait_for_events(&dir.path().join("events"), 3000, Duration::from_secs(20)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while sink_counters(&server, "warehouse").await["failed_attempts"] == 0 {
        assert!(
            Instant::now() < deadline,
            "no failed attempt during the outage"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The breaker opens: the dead server is left alone instead of hammered.
    let breaker_metric =
        "switchyard_sink_breaker_opened_total{sink=\"warehouse\",type=\"clickhouse\"}";
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = client()
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let opened = metrics
            .lines()
            .find(|line| line.starts_with(breaker_metric))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse::<u64>().ok())
            .unwrap_or(0);
        if opened >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the breaker never opened:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    clickhouse.restart().expect("restart ClickHouse");
    assert_eq!(
        wait_for_number(&url, final_count, 3000, Duration::from_secs(60)).await,
        3000,
        "{}",
        server.logs()
    );
    assert_eq!(
        number(
            &url,
            "SELECT count(DISTINCT message_id) FROM e2e_outage.events"
        )
        .await,
        3000
    );
    assert!(!dir
        .path()
        .join("data/dead-letters/warehouse.ndjson")
        .exists());
    let deadline = Instant::now() + Duration::from_secs(10);
    while client()
        .get(server.url("/ready"))
        .send()
        .await
        .unwrap()
        .status()
        != 200
    {
        assert!(Instant::now() < deadline, "not ready after the restart");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Closed again once a probe succeeded.
    let metrics = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("switchyard_sink_breaker_state{sink=\"warehouse\",type=\"clickhouse\"} 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn bad_settings_and_an_unreachable_server_are_reported_with_their_path_and_url() {
    let dir = tempfile::tempdir().unwrap();
    let bad_values = dir.path().join("bad-values.toml");
    std::fs::write(
        &bad_values,
        r#"
[sinks.warehouse]
type = "clickhouse"
url = "ftp://user:pw@db.test:8123"
table = "1events"
retention_days = 0
"#,
    )
    .unwrap();
    let unknown_key = dir.path().join("unknown-key.toml");
    std::fs::write(
        &unknown_key,
        r#"
[sinks.warehouse]
type = "clickhouse"
url = "http://127.0.0.1:8123"
passwd = "x"
"#,
    )
    .unwrap();
    for (file, wanted) in [
        (
            &bad_values,
            vec![
                "sinks.warehouse.url",
                "sinks.warehouse.table",
                "sinks.warehouse.retention_days",
            ],
        ),
        (&unknown_key, vec!["sinks.warehouse", "passwd"]),
    ] {
        let output = Command::new(binary())
            .arg("validate")
            .arg("--config")
            .arg(file)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&output.stderr);
        for path in wanted {
            assert!(stderr.contains(path), "{path} missing in {stderr}");
        }
    }

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = format!("http://127.0.0.1:{closed}");
    let config_path = dir.path().join("switchyard.toml");
    std::fs::write(
        &config_path,
        config(&unreachable, "e2e_down").replace("{dir}", &dir.path().display().to_string()),
    )
    .unwrap();
    let output = Command::new(binary())
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .arg("run")
        .arg("--config")
        .arg(&config_path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("ClickHouse at {unreachable} is unreachable")),
        "{stderr}"
    );
}
