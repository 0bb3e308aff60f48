//! The Statsig sink: canonical events to Statsig's events API (`POST {url}/v1/log_event`), as custom
//! events for metrics and experiment analysis (see docs/sinks/statsig.md).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
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
    pub fn new(name: &str, config: StatsigSinkConfig) -> Result<StatsigSink, SinkError> {
        Ok(StatsigSink {
            name: name.to_string(),
            endpoint: http::join_url(&config.url, "v1/log_event"),
            client: http::shared_client()?,
            config,
            progress: RequestProgress::default(),
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
        let mut mapped: Vec<(&Event, Value)> = Vec::with_capacity(batch.len());
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
            let events: Vec<&Value> = chunk.iter().map(|(_, value)| value).collect();
            let body = serde_json::to_vec(&json!({
                "events": events,
                "statsigMetadata": {"sdkType": "switchyard", "sdkVersion": env!("CARGO_PKG_VERSION")},
            }))
            .map_err(|e| SendError::Permanent(format!("cannot encode the Statsig batch: {e}")))?;
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
pub fn metadata_string(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(_) | Value::Number(_) => Some(value.to_string()),
        Value::Array(_) | Value::Object(_) => Some(value.to_string()),
    }
}

/// Maps one canonical event to a Statsig event; None for call types Statsig has no event for
/// (identify, group, alias).
pub fn map_event(event: &Event, value_property: &str) -> Option<Value> {
    let event_name = match event.kind {
        EventType::Track => event.event.clone().filter(|name| !name.is_empty())?,
        EventType::Page => "page_view".to_string(),
        EventType::Screen => "screen_view".to_string(),
        EventType::Identify | EventType::Group | EventType::Alias => return None,
    };
    let mut user = Map::new();
    if let Some(user_id) = event.user_id.as_deref().filter(|id| !id.is_empty()) {
        user.insert("userID".into(), json!(user_id));
    }
    if let Some(anonymous_id) = event.anonymous_id.as_deref().filter(|id| !id.is_empty()) {
        user.insert("customIDs".into(), json!({ "stableID": anonymous_id }));
    }
    if user.is_empty() {
        return None;
    }
    let context_fields = [
        ("ip", event.context_str("ip").or(event.ip.as_deref())),
        (
            "userAgent",
            event
                .context_str("userAgent")
                .or(event.user_agent.as_deref()),
        ),
        ("locale", event.context_str("locale")),
        ("appVersion", event.context_str("app.version")),
    ];
    for (key, value) in context_fields {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            user.insert(key.into(), json!(value));
        }
    }

    let value = (!value_property.is_empty())
        .then(|| event.properties.get(value_property))
        .flatten()
        .filter(|v| v.is_number() || v.as_str().is_some_and(|s| !s.is_empty()))
        .cloned();
    let mut metadata = Map::new();
    for (key, property) in &event.properties {
        if value.is_some() && key == value_property {
            continue;
        }
        if let Some(text) = metadata_string(property) {
            metadata.insert(key.clone(), Value::String(text));
        }
    }
    if matches!(event.kind, EventType::Page | EventType::Screen) {
        let page_fields = [
            ("name", event.name.as_deref()),
            ("url", event.context_str("page.url")),
            ("path", event.context_str("page.path")),
            ("title", event.context_str("page.title")),
            ("referrer", event.context_str("page.referrer")),
        ];
        for (key, text) in page_fields {
            if let Some(text) = text.filter(|t| !t.is_empty()) {
                metadata
                    .entry(key)
                    .or_insert_with(|| Value::String(text.to_string()));
            }
        }
    }

    let mut mapped = Map::new();
    mapped.insert("eventName".into(), json!(event_name));
    mapped.insert("user".into(), Value::Object(user));
    mapped.insert("time".into(), json!(event.timestamp.timestamp_millis()));
    if let Some(value) = value {
        mapped.insert("value".into(), value);
    }
    if !metadata.is_empty() {
        mapped.insert("metadata".into(), Value::Object(metadata));
    }
    Some(Value::Object(mapped))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mapped = map_event(
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
        let mapped = map_event(&e, "revenue").unwrap();
        assert_eq!(mapped["value"], "19.99");
        assert_eq!(mapped["metadata"]["value"], "{\"nested\":1}");
        assert!(mapped["metadata"].get("revenue").is_none());
        assert!(mapped["user"].get("userID").is_none());
        assert_eq!(mapped["user"]["customIDs"]["stableID"], "a1");
        // An object is no Statsig value: it stays in the metadata.
        let mapped = map_event(&e, "value").unwrap();
        assert!(mapped.get("value").is_none());
        assert_eq!(mapped["metadata"]["revenue"], "19.99");
        let mapped = map_event(&e, "").unwrap();
        assert!(mapped.get("value").is_none());
    }

    #[test]
    fn page_and_screen_become_view_events_and_the_rest_is_skipped() {
        let page = map_event(
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
        let screen = map_event(
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
            assert!(map_event(&event(kind), "value").is_none());
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
