//! ClickHouse for the end-to-end tests: one local server shared by every test of a test binary
//! (each test uses its own database), servers of their own for tests that stop and restart one, and
//! helpers to query the server over its HTTP interface and turn rows back into canonical events.

mod local_server;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use local_server::{LocalClickhouse, PASSWORD_USER};
use serde_json::{Map, Value};

/// The server shared by every test of this binary; started on first use, stopped (and its data
/// deleted) when the test process exits.
pub fn shared() -> &'static LocalClickhouse {
    static SERVER: OnceLock<Result<LocalClickhouse, String>> = OnceLock::new();
    match SERVER.get_or_init(LocalClickhouse::start_for_process) {
        Ok(server) => server,
        Err(error) => panic!("cannot start a local ClickHouse server: {error}"),
    }
}

/// Runs `sql` over HTTP and returns the body; panics with the server's message on failure.
pub async fn query(url: &str, sql: &str) -> String {
    let response = crate::client()
        .post(url)
        .body(sql.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    assert!(status.is_success(), "{sql}: {status}: {body}");
    body
}

/// Like [`query`], but `None` when the server cannot be reached or answers an error.
pub async fn try_query(url: &str, sql: &str) -> Option<String> {
    let response = crate::client()
        .post(url)
        .body(sql.to_string())
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.text().await.ok()
}

/// A single number (`SELECT count() ...`).
pub async fn number(url: &str, sql: &str) -> u64 {
    let text = query(url, sql).await;
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{sql}: not a number: {text:?}"))
}

/// Every row of `sql` as a JSON object (`FORMAT JSONEachRow` is appended).
pub async fn rows(url: &str, sql: &str) -> Vec<Value> {
    query(url, &format!("{sql} FORMAT JSONEachRow"))
        .await
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("bad row {line}: {e}")))
        .collect()
}

/// Polls the number `sql` returns until it is `expected` (or `timeout` passes); returns the last.
pub async fn wait_for_number(url: &str, sql: &str, expected: u64, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        let value = try_query(url, sql)
            .await
            .and_then(|text| text.trim().parse().ok());
        if value == Some(expected) || Instant::now() > deadline {
            return value.unwrap_or(0);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A `[sinks.<name>]` section for a ClickHouse sink with quick batches and retries.
pub fn sink_section(name: &str, url: &str, database: &str) -> String {
    format!(
        r#"
[sinks.{name}]
type = "clickhouse"
url = "{url}"
database = "{database}"
table = "events"
user = "default"
create_schema = true
retention_days = 395

[sinks.{name}.batch]
max_events = 2000
max_wait_ms = 200

[sinks.{name}.retry]
initial_backoff_ms = 50
max_backoff_ms = 500

[sinks.{name}.circuit_breaker]
open_secs = 1
"#
    )
}

/// A ClickHouse time (`2024-05-01 12:00:00`, or `... 12:00:00.123` for DateTime64) plus the
/// milliseconds column of old servers, as the canonical `2024-05-01T12:00:00.123Z`.
fn canonical_time(text: &str, millis: Option<u64>) -> String {
    let (seconds, fraction) = match text.split_once('.') {
        Some((seconds, fraction)) => (seconds, fraction.to_string()),
        None => (text, format!("{:03}", millis.unwrap_or(0))),
    };
    format!("{}.{fraction}Z", seconds.replace(' ', "T"))
}

/// Turns a row of the events table back into the canonical event JSON (as the file sink writes it).
pub fn row_to_event(row: &Value) -> Value {
    let mut event = Map::new();
    let text = |key: &str| row[key].as_str().map(str::to_string);
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            event.insert(key.to_string(), value);
        }
    };
    put("type", text("type").map(Value::String));
    put("messageId", text("message_id").map(Value::String));
    put(
        "event",
        text("event").filter(|e| !e.is_empty()).map(Value::String),
    );
    for (key, column) in [
        ("name", "name"),
        ("userId", "user_id"),
        ("anonymousId", "anonymous_id"),
        ("groupId", "group_id"),
        ("previousId", "previous_id"),
        ("ip", "ip"),
        ("userAgent", "user_agent"),
    ] {
        put(key, text(column).map(Value::String));
    }
    for (key, column) in [
        ("timestamp", "timestamp"),
        ("originalTimestamp", "original_timestamp"),
        ("sentAt", "sent_at"),
        ("receivedAt", "received_at"),
    ] {
        let millis = row[format!("{column}_ms")].as_u64();
        put(
            key,
            text(column).map(|time| Value::String(canonical_time(&time, millis))),
        );
    }
    for (key, column) in [
        ("properties", "properties"),
        ("traits", "traits"),
        ("context", "context"),
        ("integrations", "integrations"),
    ] {
        let parsed: Value = serde_json::from_str(&text(column).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{column} is not JSON: {e}"));
        let empty = parsed.as_object().is_some_and(Map::is_empty);
        put(key, (!empty).then_some(parsed));
    }
    put("source", text("source").map(Value::String));
    put(
        "requestId",
        text("request_id")
            .filter(|r| !r.is_empty())
            .map(Value::String),
    );
    Value::Object(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_times_from_both_layouts() {
        assert_eq!(
            canonical_time("2024-05-01 12:00:00", Some(7)),
            "2024-05-01T12:00:00.007Z"
        );
        assert_eq!(
            canonical_time("2024-05-01 12:00:00.120", None),
            "2024-05-01T12:00:00.120Z"
        );
    }
}
