//! The Statsig sink: canonical events to Statsig's events API (`POST {url}/v1/log_event`), as custom
//! events for metrics and experiment analysis (see docs/sinks/statsig.md).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchyard_schemas::event::field_str;
use switchyard_schemas::json_writer;
use switchyard_schemas::{Event, EventType};

use crate::http::{self, Planned, RequestProgress};
use crate::sink::{SendError, Sink, SinkError};

/// Bounds on `max_events_per_request`.
pub const MAX_EVENTS_RANGE: std::ops::RangeInclusive<usize> = 1..=1000;

/// `type = "statsig"`: Statsig's events API (`POST {url}/v1/log_event`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsigSinkConfig {
    /// Base URL of the Statsig events API (default `https://events.statsigapi.net`;
    /// `https://api.statsig.com` works too). Events go to `{url}/v1/log_event`.
    #[serde(default = "default_url")]
    pub url: String,
    /// The server secret key (`secret-...`), sent as the `statsig-api-key` header. Use
    /// `${STATSIG_SERVER_KEY}`.
    pub api_key: String,
    /// The event property whose value (a number or a string) becomes the Statsig event's `value`
    /// (default `value`; `""` sends no value).
    #[serde(default = "default_value_property")]
    pub value_property: String,
    /// Most events in one request, 1 to 1000 (default 500); a larger delivery batch is sent as several
    /// requests.
    #[serde(default = "default_max_events")]
    pub max_events_per_request: usize,
    /// Timeout of one request in milliseconds, 100 to 120000 (default 10000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_url() -> String {
    "https://events.statsigapi.net".into()
}

fn default_value_property() -> String {
    "value".into()
}

fn default_max_events() -> usize {
    500
}

fn default_timeout_ms() -> u64 {
    http::DEFAULT_TIMEOUT_MS
}

impl fmt::Debug for StatsigSinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatsigSinkConfig")
            .field("url", &self.url)
            .field("api_key", &"[redacted]")
            .field("value_property", &self.value_property)
            .field("max_events_per_request", &self.max_events_per_request)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

impl StatsigSinkConfig {
    /// Problems with the values, as (relative path, message) pairs.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if let Some(problem) = http::check_url(&self.url, false) {
            problems.push(("url".into(), problem));
        }
        if let Some(problem) = http::check_secret(&self.api_key) {
            problems.push(("api_key".into(), problem));
        }
        if !MAX_EVENTS_RANGE.contains(&self.max_events_per_request) {
            problems.push((
                "max_events_per_request".into(),
                format!(
                    "must be between {} and {}",
                    MAX_EVENTS_RANGE.start(),
                    MAX_EVENTS_RANGE.end()
                ),
            ));
        }
        if !http::TIMEOUT_MS_RANGE.contains(&self.timeout_ms) {
            problems.push(("timeout_ms".into(), "must be between 100 and 120000".into()));
        }
        problems
    }
}

/// Counters of what the mapping left out.
#[derive(Debug, Default)]
pub struct StatsigStats {
    /// Events sent in an accepted request.
    pub events_sent: AtomicU64,
    /// identify / group / alias calls, which have no Statsig custom-event equivalent.
    pub events_skipped: AtomicU64,
}

/// Sends canonical events to Statsig's `log_event` endpoint.
pub struct StatsigSink {
    name: String,
    config: StatsigSinkConfig,
    endpoint: String,
    client: reqwest::Client,
    progress: RequestProgress,
    stats: Arc<StatsigStats>,
}

impl StatsigSink {
    pub fn new(
        name: &str,
        config: StatsigSinkConfig,
        max_concurrent_requests: usize,
    ) -> Result<StatsigSink, SinkError> {
        Ok(StatsigSink {
            name: name.to_string(),
            endpoint: http::join_url(&config.url, "v1/log_event"),
            client: http::shared_client()?,
            config,
            progress: RequestProgress::new(max_concurrent_requests),
            stats: Arc::default(),
        })
    }

    /// The sink's mapping counters.
    pub fn stats(&self) -> Arc<StatsigStats> {
        self.stats.clone()
    }

    async fn post(&self, body: Vec<u8>, events: usize) -> Result<(), SendError> {
        let request = self
            .client
            .post(&self.endpoint)
            .timeout(Duration::from_millis(self.config.timeout_ms))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("statsig-api-key", &self.config.api_key)
            .header(
                "STATSIG-CLIENT-TIME",
                chrono::Utc::now().timestamp_millis().to_string(),
            )
            .body(body);
        http::execute("Statsig", request, &[&self.config.api_key]).await?;
        self.stats
            .events_sent
            .fetch_add(events as u64, Ordering::Relaxed);
        Ok(())
    }
}

#[async_trait]
impl Sink for StatsigSink {
    async fn send(&self, batch: &[Arc<Event>]) -> Result<(), SendError> {
        let mut mapped: Vec<(&Event, StatsigEvent)> = Vec::with_capacity(batch.len());
        for event in batch {
            if let Some(value) = map_event(event, &self.config.value_property) {
                mapped.push((event.as_ref(), value));
            }
        }
        let skipped = (batch.len() - mapped.len()) as u64;
        if skipped > 0 {
            self.stats
                .events_skipped
                .fetch_add(skipped, Ordering::Relaxed);
            tracing::debug!(sink = %self.name, skipped, "identify/group/alias calls are not sent to Statsig");
        }
        let mut requests = Vec::new();
        for chunk in mapped.chunks(self.config.max_events_per_request) {
            let events: Vec<&StatsigEvent> = chunk.iter().map(|(_, mapped)| mapped).collect();
            let body = log_event_body(events);
            requests.push(Planned {
                key: http::fingerprint(chunk.iter().map(|(event, _)| *event)),
                events: chunk.len(),
                body: (body, chunk.len()),
            });
        }
        tracing::debug!(sink = %self.name, events = mapped.len(), requests = requests.len(), "sending to Statsig");
        let batch_key = http::fingerprint(batch.iter().map(|e| e.as_ref()));
        self.progress
            .send_all(batch_key, requests, |(body, events)| {
                self.post(body, events)
            })
            .await
    }
}

/// A JSON value as a Statsig metadata string: strings as they are, numbers and booleans printed,
/// objects and arrays as compact JSON, null left out.
pub fn metadata_string(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Bool(_) | Value::Number(_) | Value::Array(_) | Value::Object(_) => {
            Some(Cow::Owned(value.to_string()))
        }
    }
}

/// One Statsig event. It borrows the event's values (only metadata that is not a string is
/// printed anew). Fields are in alphabetical order, as a `serde_json` object would write them.
#[derive(Debug, Serialize)]
pub struct StatsigEvent<'a> {
    #[serde(rename = "eventName")]
    event_name: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    metadata: BTreeMap<&'a str, Cow<'a, str>>,
    time: i64,
    user: StatsigUser<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a Value>,
}

/// The event's `user`, fields in alphabetical order.
#[derive(Debug, Serialize)]
struct StatsigUser<'a> {
    #[serde(rename = "appVersion", skip_serializing_if = "Option::is_none")]
    app_version: Option<&'a str>,
    #[serde(rename = "customIDs", skip_serializing_if = "Option::is_none")]
    custom_ids: Option<CustomIds<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    locale: Option<&'a str>,
    #[serde(rename = "userAgent", skip_serializing_if = "Option::is_none")]
    user_agent: Option<&'a str>,
    #[serde(rename = "userID", skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct CustomIds<'a> {
    #[serde(rename = "stableID")]
    stable_id: &'a str,
}

/// The body of `POST /v1/log_event` as serde would write it; [`log_event_body`] writes the same
/// bytes faster (the tests compare the two).
#[cfg(test)]
#[derive(Serialize)]
struct LogEventBody<'a> {
    events: Vec<&'a StatsigEvent<'a>>,
    #[serde(rename = "statsigMetadata")]
    statsig_metadata: SdkMetadata,
}

#[cfg(test)]
#[derive(Serialize)]
struct SdkMetadata {
    #[serde(rename = "sdkType")]
    sdk_type: &'static str,
    #[serde(rename = "sdkVersion")]
    sdk_version: &'static str,
}

/// The JSON body of one `POST /v1/log_event` request: the bytes `serde_json` writes for it, by
/// the schemas crate's JSON writer (serde_json's string escaping, a byte at a time, was most of
/// encoding a batch).
pub fn log_event_body(events: Vec<&StatsigEvent<'_>>) -> Vec<u8> {
    let mut out = Vec::with_capacity(events.len() * 640 + 96);
    out.extend_from_slice(b"{\"events\":");
    json_writer::write_array(&mut out, events, write_event);
    out.extend_from_slice(b",\"statsigMetadata\":{\"sdkType\":\"switchyard\",\"sdkVersion\":");
    json_writer::write_str(&mut out, env!("CARGO_PKG_VERSION"));
    out.extend_from_slice(b"}}");
    out
}

/// One event, fields in [`StatsigEvent`]'s order, absent ones left out as serde leaves them out.
fn write_event(out: &mut Vec<u8>, event: &StatsigEvent<'_>) {
    out.extend_from_slice(b"{\"eventName\":");
    json_writer::write_str(out, event.event_name);
    if !event.metadata.is_empty() {
        out.extend_from_slice(b",\"metadata\":");
        json_writer::write_object(out, &event.metadata, |out, text| {
            json_writer::write_str(out, text)
        });
    }
    out.extend_from_slice(b",\"time\":");
    json_writer::write_i64(out, event.time);
    out.extend_from_slice(b",\"user\":{");
    let user = &event.user;
    let mut first = true;
    let mut field = |out: &mut Vec<u8>, key: &[u8], value: Option<&str>| {
        if let Some(value) = value {
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(key);
            json_writer::write_str(out, value);
        }
    };
    field(out, b"\"appVersion\":", user.app_version);
    if let Some(ids) = &user.custom_ids {
        field(out, b"\"customIDs\":{\"stableID\":", Some(ids.stable_id));
        out.push(b'}');
    }
    field(out, b"\"ip\":", user.ip);
    field(out, b"\"locale\":", user.locale);
    field(out, b"\"userAgent\":", user.user_agent);
    field(out, b"\"userID\":", user.user_id);
    out.push(b'}');
    if let Some(value) = event.value {
        out.extend_from_slice(b",\"value\":");
        json_writer::write_value(out, value);
    }
    out.push(b'}');
}

/// Maps one canonical event to a Statsig event; None for call types Statsig has no event for
/// (identify, group, alias).
pub fn map_event<'a>(event: &'a Event, value_property: &str) -> Option<StatsigEvent<'a>> {
    let event_name: &str = match event.kind {
        EventType::Track => event.event.as_deref().filter(|name| !name.is_empty())?,
        EventType::Page => "page_view",
        EventType::Screen => "screen_view",
        EventType::Identify | EventType::Group | EventType::Alias => return None,
    };
    let present = |value: Option<&'a str>| value.filter(|v| !v.is_empty());
    let user = StatsigUser {
        user_id: present(event.user_id.as_deref()),
        custom_ids: present(event.anonymous_id.as_deref()).map(|stable_id| CustomIds { stable_id }),
        ip: present(event.context_str("ip").or(event.ip.as_deref())),
        user_agent: present(
            event
                .context_str("userAgent")
                .or(event.user_agent.as_deref()),
        ),
        locale: present(event.context_str("locale")),
        app_version: present(event.context_str("app.version")),
    };
    if user.user_id.is_none() && user.custom_ids.is_none() {
        return None;
    }

    let value = (!value_property.is_empty())
        .then(|| event.properties.get(value_property))
        .flatten()
        .filter(|v| v.is_number() || v.as_str().is_some_and(|s| !s.is_empty()));
    let mut metadata = BTreeMap::new();
    for (key, property) in &event.properties {
        if value.is_some() && key == value_property {
            continue;
        }
        if let Some(text) = metadata_string(property) {
            metadata.insert(key.as_str(), text);
        }
    }
    if matches!(event.kind, EventType::Page | EventType::Screen) {
        // `page` looked up once (a lookup by dotted path walks from the top).
        let page = event.context_object("page");
        let page_fields = [
            ("name", event.name.as_deref()),
            ("url", field_str(page, "url")),
            ("path", field_str(page, "path")),
            ("title", field_str(page, "title")),
            ("referrer", field_str(page, "referrer")),
        ];
        for (key, text) in page_fields {
            if let Some(text) = present(text) {
                metadata.entry(key).or_insert(Cow::Borrowed(text));
            }
        }
    }

    Some(StatsigEvent {
        event_name,
        metadata,
        time: event.timestamp.timestamp_millis(),
        user,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The event as a JSON value, for comparisons.
    fn as_value(event: &Event, value_property: &str) -> Option<Value> {
        map_event(event, value_property).map(|mapped| serde_json::to_value(mapped).unwrap())
    }

    #[test]
    fn events_are_written_in_the_order_of_a_json_object() {
        // The derived writer must give exactly the bytes of the same event as a serde_json Value
        // (keys sorted at every level), which is what the sink sent before events borrowed.
        let source = event(json!({
            "type": "page", "name": "Pricing", "userId": "u1", "anonymousId": "a1",
            "properties": {"zeta": 1, "value": 3, "alpha": {"y": 1, "x": 2}, "title": "T"},
            "context": {"locale": "de-DE", "app": {"version": "3.2.1"},
                        "page": {"url": "https://x.example/p", "title": "ignored"}}
        }));
        let mapped = map_event(&source, "value").unwrap();
        http::assert_writes_like_a_json_object(&mapped);
        let bytes = log_event_body(vec![&mapped]);
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        // The envelope too: its keys come out sorted, as the json! envelope wrote them.
        assert_eq!(bytes, serde_json::to_vec(&body).unwrap());
        assert_eq!(body["events"][0]["metadata"]["title"], "T");
        assert_eq!(body["statsigMetadata"]["sdkType"], "switchyard");
    }

    #[test]
    fn the_body_writer_writes_the_bytes_serde_writes() {
        // Every field present and absent, metadata that needs escaping and that is printed anew,
        // against the derived serde encoding of the same body.
        let sources = [
            json!({"type": "track", "event": "Order \"Completed\"", "userId": "u\n1",
                   "anonymousId": "a1",
                   "properties": {"value": 42.5, "items": [1, "two", null], "note": "tab\t\u{e9}",
                                  "flag": true, "nested": {"b": "x\u{1}", "a": 1}},
                   "context": {"locale": "fr-FR", "app": {"version": "1.0"}, "ip": "198.51.100.7",
                               "userAgent": "Mozilla/5.0 \"quoted\""}}),
            json!({"type": "page", "name": "Home", "anonymousId": "a2",
                   "properties": {"value": ""},
                   "context": {"page": {"url": "https://x.example/?q=\\", "path": "/"}}}),
            json!({"type": "screen", "name": "Settings", "userId": "u2", "properties": {}}),
            json!({"type": "track", "event": "Plain", "userId": "u3", "properties": {"value": 7}}),
            json!({"type": "track", "event": "Anonymous", "anonymousId": "a3"}),
        ];
        let mut events: Vec<Event> = sources.into_iter().map(event).collect();
        // A user with only one field, then one with only customIDs.
        for index in [2, 4] {
            events[index].ip = None;
            events[index].user_agent = None;
        }
        let mapped: Vec<StatsigEvent> = events
            .iter()
            .map(|source| map_event(source, "value").unwrap())
            .collect();
        assert!(mapped[2].metadata.contains_key("name") && mapped[2].user.ip.is_none());
        let body = log_event_body(mapped.iter().collect());
        let expected = serde_json::to_vec(&LogEventBody {
            events: mapped.iter().collect(),
            statsig_metadata: SdkMetadata {
                sdk_type: "switchyard",
                sdk_version: env!("CARGO_PKG_VERSION"),
            },
        })
        .unwrap();
        assert_eq!(
            String::from_utf8(body).unwrap(),
            String::from_utf8(expected).unwrap()
        );
    }

    fn event(value: Value) -> Event {
        let mut base = json!({
            "messageId": "msg-1", "timestamp": "2024-05-01T12:00:00.000Z",
            "receivedAt": "2024-05-01T12:00:01.000Z", "source": "web", "ip": "203.0.113.9",
            "userAgent": "curl/8"
        });
        for (k, v) in value.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn track_maps_to_a_custom_event() {
        let mapped = as_value(
            &event(json!({
                "type": "track", "event": "Order Completed", "userId": "u1", "anonymousId": "a1",
                "properties": {"value": 42.5, "currency": "EUR", "paid": true, "coupon": null,
                               "items": [{"sku": "A-1", "qty": 2}]},
                "context": {"locale": "de-DE", "app": {"version": "3.2.1"}}
            })),
            "value",
        )
        .unwrap();
        assert_eq!(
            mapped,
            json!({
                "eventName": "Order Completed",
                "user": {"userID": "u1", "customIDs": {"stableID": "a1"}, "ip": "203.0.113.9",
                         "userAgent": "curl/8", "locale": "de-DE", "appVersion": "3.2.1"},
                "time": 1714564800000i64,
                "value": 42.5,
                "metadata": {"currency": "EUR", "paid": "true",
                             "items": "[{\"qty\":2,\"sku\":\"A-1\"}]"}
            })
        );
    }

    #[test]
    fn value_property_is_configurable_and_optional() {
        let e = event(
            json!({"type": "track", "event": "Signup", "anonymousId": "a1",
            "properties": {"revenue": "19.99", "value": {"nested": 1}}}),
        );
        let mapped = as_value(&e, "revenue").unwrap();
        assert_eq!(mapped["value"], "19.99");
        assert_eq!(mapped["metadata"]["value"], "{\"nested\":1}");
        assert!(mapped["metadata"].get("revenue").is_none());
        assert!(mapped["user"].get("userID").is_none());
        assert_eq!(mapped["user"]["customIDs"]["stableID"], "a1");
        // An object is no Statsig value: it stays in the metadata.
        let mapped = as_value(&e, "value").unwrap();
        assert!(mapped.get("value").is_none());
        assert_eq!(mapped["metadata"]["revenue"], "19.99");
        let mapped = as_value(&e, "").unwrap();
        assert!(mapped.get("value").is_none());
    }

    #[test]
    fn page_and_screen_become_view_events_and_the_rest_is_skipped() {
        let page = as_value(
            &event(json!({"type": "page", "name": "Pricing", "userId": "u1",
                "context": {"page": {"url": "https://x.example/pricing", "path": "/pricing"}}})),
            "value",
        )
        .unwrap();
        assert_eq!(page["eventName"], "page_view");
        assert_eq!(
            page["metadata"],
            json!({"name": "Pricing", "url": "https://x.example/pricing", "path": "/pricing"})
        );
        let screen = as_value(
            &event(json!({"type": "screen", "name": "Home", "userId": "u1"})),
            "value",
        )
        .unwrap();
        assert_eq!(screen["eventName"], "screen_view");
        for kind in [
            json!({"type": "identify", "userId": "u1"}),
            json!({"type": "group", "userId": "u1", "groupId": "g"}),
            json!({"type": "alias", "userId": "u1", "previousId": "a"}),
        ] {
            assert!(as_value(&event(kind), "value").is_none());
        }
    }

    #[test]
    fn config_is_validated() {
        let config = StatsigSinkConfig {
            url: "events.statsigapi.net".into(),
            api_key: "".into(),
            value_property: "value".into(),
            max_events_per_request: 5000,
            timeout_ms: 10_000,
        };
        let paths: Vec<String> = config.validate().into_iter().map(|p| p.0).collect();
        assert_eq!(paths, ["url", "api_key", "max_events_per_request"]);
        let config: StatsigSinkConfig =
            serde_json::from_value(json!({"api_key": "secret-abc"})).unwrap();
        assert!(config.validate().is_empty());
        assert_eq!(config.url, "https://events.statsigapi.net");
        assert_eq!(config.max_events_per_request, 500);
        assert!(!format!("{config:?}").contains("secret-abc"));
    }
}
