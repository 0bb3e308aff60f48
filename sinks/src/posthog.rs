//! The PostHog sink: canonical events to PostHog's capture API (`POST {url}/batch/`), mapped the way
//! PostHog's own SDKs send them (see docs/sinks/posthog.md).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use switchyard_schemas::event::field_str;
use switchyard_schemas::json_writer;
use switchyard_schemas::time::format_timestamp;
use switchyard_schemas::{Event, EventType};
use uuid::Uuid;

use crate::http::{self, Planned, RequestProgress};
use crate::sink::{SendError, Sink, SinkError};

/// Bounds on `max_events_per_request`.
pub const MAX_EVENTS_RANGE: std::ops::RangeInclusive<usize> = 1..=5000;

/// The namespace of the UUIDv5 derived from a `messageId` that is not itself a UUID.
pub const MESSAGE_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f0c_2b4e_8d1a_4c57_9e3b_52a1_d7c4_e890);

/// `type = "posthog"`: PostHog's capture API (`POST {url}/batch/`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PosthogSinkConfig {
    /// Base URL of the PostHog ingestion host: `https://us.i.posthog.com` (US cloud),
    /// `https://eu.i.posthog.com` (EU cloud) or your self-hosted instance. Events go to `{url}/batch/`.
    pub url: String,
    /// The project API key (`phc_...`, write-only). Use `${POSTHOG_API_KEY}`.
    pub api_key: String,
    /// Most events in one `/batch/` request, 1 to 5000 (default 1000); a larger delivery batch is sent
    /// as several requests.
    #[serde(default = "default_max_events")]
    pub max_events_per_request: usize,
    /// Timeout of one request in milliseconds, 100 to 120000 (default 10000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// The PostHog group type a `group` call's `groupId` belongs to, unless the call's traits carry a
    /// `groupType` (default `company`).
    #[serde(default = "default_group_type")]
    pub group_type: String,
}

fn default_max_events() -> usize {
    1000
}

fn default_timeout_ms() -> u64 {
    http::DEFAULT_TIMEOUT_MS
}

fn default_group_type() -> String {
    "company".into()
}

impl fmt::Debug for PosthogSinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PosthogSinkConfig")
            .field("url", &self.url)
            .field("api_key", &"[redacted]")
            .field("max_events_per_request", &self.max_events_per_request)
            .field("timeout_ms", &self.timeout_ms)
            .field("group_type", &self.group_type)
            .finish()
    }
}

impl PosthogSinkConfig {
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
        if self.group_type.trim().is_empty() {
            problems.push(("group_type".into(), "must not be empty".into()));
        }
        problems
    }
}

/// Counters of what the mapping could not send.
#[derive(Debug, Default)]
pub struct PosthogStats {
    /// Events sent in an accepted request.
    pub events_sent: AtomicU64,
    /// Events PostHog would refuse (no distinct id, an alias without `previousId`), left out.
    pub events_skipped: AtomicU64,
}

/// Sends canonical events to PostHog's `/batch/` endpoint.
pub struct PosthogSink {
    name: String,
    config: PosthogSinkConfig,
    endpoint: String,
    client: reqwest::Client,
    progress: RequestProgress,
    stats: Arc<PosthogStats>,
}

impl PosthogSink {
    pub fn new(
        name: &str,
        config: PosthogSinkConfig,
        max_concurrent_requests: usize,
    ) -> Result<PosthogSink, SinkError> {
        Ok(PosthogSink {
            name: name.to_string(),
            endpoint: http::join_url(&config.url, "batch/"),
            client: http::shared_client()?,
            config,
            progress: RequestProgress::new(max_concurrent_requests),
            stats: Arc::default(),
        })
    }

    /// The sink's mapping counters.
    pub fn stats(&self) -> Arc<PosthogStats> {
        self.stats.clone()
    }

    async fn post(&self, body: Vec<u8>, events: usize) -> Result<(), SendError> {
        let request = self
            .client
            .post(&self.endpoint)
            .timeout(Duration::from_millis(self.config.timeout_ms))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        http::execute("PostHog", request, &[&self.config.api_key]).await?;
        self.stats
            .events_sent
            .fetch_add(events as u64, Ordering::Relaxed);
        Ok(())
    }
}

#[async_trait]
impl Sink for PosthogSink {
    async fn send(&self, batch: &[Arc<Event>]) -> Result<(), SendError> {
        let mut mapped: Vec<(&Event, Entry)> = Vec::with_capacity(batch.len());
        let mut skipped = 0u64;
        for event in batch {
            match map_event(event, &self.config.group_type) {
                Some(value) => mapped.push((event.as_ref(), value)),
                None => skipped += 1,
            }
        }
        if skipped > 0 {
            self.stats
                .events_skipped
                .fetch_add(skipped, Ordering::Relaxed);
            tracing::warn!(sink = %self.name, skipped, "events PostHog would refuse were left out");
        }
        let sent_at = format_timestamp(&chrono::Utc::now());
        let mut requests = Vec::new();
        for chunk in mapped.chunks(self.config.max_events_per_request) {
            let entries: Vec<&Entry> = chunk.iter().map(|(_, entry)| entry).collect();
            let body = batch_body(&self.config.api_key, entries, &sent_at);
            requests.push(Planned {
                key: http::fingerprint(chunk.iter().map(|(event, _)| *event)),
                events: chunk.len(),
                body: (body, chunk.len()),
            });
        }
        tracing::debug!(sink = %self.name, events = mapped.len(), requests = requests.len(), "sending to PostHog");
        let batch_key = http::fingerprint(batch.iter().map(|e| e.as_ref()));
        self.progress
            .send_all(batch_key, requests, |(body, events)| {
                self.post(body, events)
            })
            .await
    }
}

/// The PostHog `uuid` of an event: its `messageId` when that is a UUID, otherwise a UUIDv5 of the
/// `messageId` in [`MESSAGE_ID_NAMESPACE`], so every retry carries the same uuid and PostHog
/// de-duplicates it.
pub fn event_uuid(message_id: &str) -> Uuid {
    Uuid::parse_str(message_id.trim())
        .unwrap_or_else(|_| Uuid::new_v5(&MESSAGE_ID_NAMESPACE, message_id.as_bytes()))
}

/// One PostHog batch entry. It borrows the event's values, so sending copies none of them: the
/// properties are written straight from the event. Fields are in alphabetical order, as a
/// `serde_json` object would write them.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    distinct_id: &'a str,
    event: &'a str,
    properties: Properties<'a>,
    timestamp: String,
    uuid: String,
}

/// A value in an entry's `properties`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Property<'a> {
    Text(&'a str),
    Value(&'a Value),
    /// `$set` / `$group_set`: traits overlaid with what the event already had under that key.
    Merged(BTreeMap<&'a str, &'a Value>),
}

/// An entry's `properties`, by name (sorted, as a `serde_json` object writes them).
type Properties<'a> = BTreeMap<&'a str, Property<'a>>;

/// The body of `POST /batch/` as serde would write it; [`batch_body`] writes the same bytes faster
/// (the tests compare the two).
#[cfg(test)]
#[derive(Serialize)]
struct BatchBody<'a> {
    api_key: &'a str,
    batch: Vec<&'a Entry<'a>>,
    sent_at: &'a str,
}

fn put_str<'a>(properties: &mut Properties<'a>, key: &'a str, value: Option<&'a str>) {
    if let Some(value) = value.filter(|v| !v.is_empty()) {
        properties.insert(key, Property::Text(value));
    }
}

fn property_str<'a>(event: &'a Event, key: &str) -> Option<&'a str> {
    event.properties.get(key).and_then(Value::as_str)
}

/// Maps one canonical event to a PostHog batch entry, or None when PostHog would refuse it.
pub fn map_event<'a>(event: &'a Event, default_group_type: &'a str) -> Option<Entry<'a>> {
    let distinct_id = event.person_id().filter(|id| !id.is_empty())?;
    // `page` and `library` looked up once each (a lookup by dotted path walks from the top).
    let page = event.context_object("page");
    let library = event.context_object("library");
    let mut properties = Properties::new();
    put_str(
        &mut properties,
        "$ip",
        event.context_str("ip").or(event.ip.as_deref()),
    );
    put_str(
        &mut properties,
        "$current_url",
        field_str(page, "url").or_else(|| property_str(event, "url")),
    );
    put_str(&mut properties, "$lib", field_str(library, "name"));
    put_str(
        &mut properties,
        "$lib_version",
        field_str(library, "version"),
    );
    let name: &str = match event.kind {
        EventType::Track => event.event.as_deref().filter(|name| !name.is_empty())?,
        EventType::Page => {
            put_str(
                &mut properties,
                "$pathname",
                field_str(page, "path").or_else(|| property_str(event, "path")),
            );
            put_str(
                &mut properties,
                "$title",
                property_str(event, "title").or_else(|| field_str(page, "title")),
            );
            put_str(
                &mut properties,
                "$referrer",
                field_str(page, "referrer").or_else(|| property_str(event, "referrer")),
            );
            put_str(&mut properties, "name", event.name.as_deref());
            "$pageview"
        }
        EventType::Screen => {
            put_str(&mut properties, "$screen_name", event.name.as_deref());
            "$screen"
        }
        EventType::Identify => {
            if event.user_id.is_some() {
                put_str(
                    &mut properties,
                    "$anon_distinct_id",
                    event.anonymous_id.as_deref(),
                );
            }
            "$identify"
        }
        EventType::Group => {
            let group_key = event.group_id.as_deref().filter(|id| !id.is_empty())?;
            let group_type = event
                .traits
                .get("groupType")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .unwrap_or(default_group_type);
            put_str(&mut properties, "$group_type", Some(group_type));
            put_str(&mut properties, "$group_key", Some(group_key));
            "$groupidentify"
        }
        EventType::Alias => {
            let previous = event.previous_id.as_deref().filter(|id| !id.is_empty())?;
            put_str(&mut properties, "alias", Some(previous));
            put_str(&mut properties, "distinct_id", Some(distinct_id));
            "$create_alias"
        }
    };
    // What the event already carries wins, including PostHog's own `$` properties.
    for (key, value) in &event.properties {
        properties.insert(key, Property::Value(value));
    }
    match event.kind {
        EventType::Identify => merge_traits(&mut properties, "$set", &event.traits, None),
        EventType::Group => merge_traits(
            &mut properties,
            "$group_set",
            &event.traits,
            Some("groupType"),
        ),
        _ => {}
    }
    Some(Entry {
        distinct_id,
        event: name,
        properties,
        timestamp: format_timestamp(&event.timestamp),
        uuid: event_uuid(&event.message_id).to_string(),
    })
}

/// `properties[key]` = `traits` (less `except`) overlaid with what the event already had under
/// `key`, when that holds anything.
fn merge_traits<'a>(
    properties: &mut Properties<'a>,
    key: &'a str,
    traits: &'a Map<String, Value>,
    except: Option<&str>,
) {
    let mut merged: BTreeMap<&'a str, &'a Value> = traits
        .iter()
        .filter(|(name, _)| Some(name.as_str()) != except)
        .map(|(name, value)| (name.as_str(), value))
        .collect();
    if let Some(Property::Value(Value::Object(existing))) = properties.get(key) {
        for (name, value) in existing.iter() {
            merged.insert(name.as_str(), value);
        }
    }
    if !merged.is_empty() {
        properties.insert(key, Property::Merged(merged));
    }
}

/// The JSON body of one `POST /batch/` request: the bytes `serde_json` writes for it, by the
/// schemas crate's JSON writer (serde_json's string escaping, a byte at a time, was most of
/// encoding a batch).
pub fn batch_body(api_key: &str, entries: Vec<&Entry<'_>>, sent_at: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * 768 + 96);
    out.extend_from_slice(b"{\"api_key\":");
    json_writer::write_str(&mut out, api_key);
    out.extend_from_slice(b",\"batch\":");
    json_writer::write_array(&mut out, entries, write_entry);
    out.extend_from_slice(b",\"sent_at\":");
    json_writer::write_str(&mut out, sent_at);
    out.push(b'}');
    out
}

/// One entry, fields in [`Entry`]'s order.
fn write_entry(out: &mut Vec<u8>, entry: &Entry<'_>) {
    out.extend_from_slice(b"{\"distinct_id\":");
    json_writer::write_str(out, entry.distinct_id);
    out.extend_from_slice(b",\"event\":");
    json_writer::write_str(out, entry.event);
    out.extend_from_slice(b",\"properties\":");
    json_writer::write_object(out, &entry.properties, |out, property| match property {
        Property::Text(text) => json_writer::write_str(out, text),
        Property::Value(value) => json_writer::write_value(out, value),
        Property::Merged(merged) => json_writer::write_object(out, merged, |out, value| {
            json_writer::write_value(out, value)
        }),
    });
    out.extend_from_slice(b",\"timestamp\":");
    json_writer::write_str(out, &entry.timestamp);
    out.extend_from_slice(b",\"uuid\":");
    json_writer::write_str(out, &entry.uuid);
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The entry as a JSON value, for comparisons.
    fn as_value(event: &Event, default_group_type: &str) -> Option<Value> {
        map_event(event, default_group_type).map(|entry| serde_json::to_value(entry).unwrap())
    }

    fn event(value: Value) -> Event {
        let mut base = json!({
            "messageId": "msg-1", "timestamp": "2024-05-01T12:00:00.000Z",
            "receivedAt": "2024-05-01T12:00:01.000Z", "source": "web", "ip": "203.0.113.9"
        });
        for (k, v) in value.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn track_maps_to_a_named_event_with_context() {
        let mapped = as_value(
            &event(json!({
                "type": "track", "event": "Order Completed", "userId": "u1", "anonymousId": "a1",
                "properties": {"total": 42.5, "$set": {"plan": "pro"}, "$groups": {"company": "c1"}},
                "context": {"library": {"name": "analytics-node", "version": "2.1.0"},
                            "page": {"url": "https://shop.example/checkout"}, "ip": "198.51.100.7"}
            })),
            "company",
        )
        .unwrap();
        assert_eq!(
            mapped,
            json!({
                "event": "Order Completed", "distinct_id": "u1",
                "uuid": event_uuid("msg-1").to_string(),
                "timestamp": "2024-05-01T12:00:00.000Z",
                "properties": {
                    "total": 42.5, "$set": {"plan": "pro"}, "$groups": {"company": "c1"},
                    "$ip": "198.51.100.7", "$current_url": "https://shop.example/checkout",
                    "$lib": "analytics-node", "$lib_version": "2.1.0"
                }
            })
        );
    }

    #[test]
    fn the_body_writer_writes_the_bytes_serde_writes() {
        // Every call type and property kind (text, values, merged traits), with strings that need
        // escaping, against the derived serde encoding of the same body.
        let sources = [
            json!({"type": "track", "event": "Order \"Completed\"", "userId": "u\n1",
                   "properties": {"total": 42.5, "items": [1, "two", null, {"k\u{1}": true}],
                                  "note": "tab\there \u{e9} \u{1F600}"},
                   "context": {"ip": "198.51.100.7", "page": {"url": "https://x.example/?q=\\"},
                               "library": {"name": "analytics.js", "version": "4.1"}}}),
            json!({"type": "page", "name": "Home", "anonymousId": "a1",
                   "properties": {"title": "Welcome", "path": "/"},
                   "context": {"page": {"referrer": "https://ref.example/"}}}),
            json!({"type": "screen", "name": "Settings", "userId": "u2"}),
            json!({"type": "identify", "userId": "u1", "anonymousId": "a1",
                   "traits": {"plan": "pro", "nested": {"b": 1, "a": [true]}},
                   "properties": {"$set": {"plan": "enterprise"}}}),
            json!({"type": "group", "userId": "u1", "groupId": "g1",
                   "traits": {"groupType": "team", "size": 12}}),
            json!({"type": "alias", "userId": "u1", "previousId": "a1"}),
        ];
        let events: Vec<Event> = sources.into_iter().map(event).collect();
        let entries: Vec<Entry> = events
            .iter()
            .map(|source| map_event(source, "company").unwrap())
            .collect();
        let body = batch_body(
            "phc_\"key",
            entries.iter().collect(),
            "2024-05-01T12:01:00.000Z",
        );
        let expected = serde_json::to_vec(&BatchBody {
            api_key: "phc_\"key",
            batch: entries.iter().collect(),
            sent_at: "2024-05-01T12:01:00.000Z",
        })
        .unwrap();
        assert_eq!(
            String::from_utf8(body).unwrap(),
            String::from_utf8(expected).unwrap()
        );
        assert_eq!(
            batch_body("k", Vec::new(), "t"),
            br#"{"api_key":"k","batch":[],"sent_at":"t"}"#
        );
    }

    #[test]
    fn entries_are_written_in_the_order_of_a_json_object() {
        // The derived writer must give exactly the bytes of the same entry as a serde_json Value
        // (keys sorted at every level), which is what the sink sent before entries borrowed.
        let source = event(json!({
            "type": "identify", "userId": "u1", "anonymousId": "a1",
            "traits": {"plan": "pro", "email": "x@example.com", "b": [1, {"z": 1, "a": 2}]},
            "properties": {"zeta": 1, "$set": {"plan": "enterprise"}, "alpha": {"y": 1, "x": 2}},
            "context": {"library": {"name": "analytics-ruby", "version": "2.4.0"}}
        }));
        let entry = map_event(&source, "company").unwrap();
        http::assert_writes_like_a_json_object(&entry);
        let body = batch_body("phc_key", vec![&entry], "2024-05-01T12:01:00.000Z");
        let parsed: Value = serde_json::from_slice(&body).unwrap();
        // The envelope too: its keys come out sorted, as the json! envelope wrote them.
        assert_eq!(body, serde_json::to_vec(&parsed).unwrap());
        assert_eq!(parsed["api_key"], "phc_key");
        assert_eq!(
            parsed["batch"][0]["properties"]["$set"]["plan"],
            "enterprise"
        );
        assert_eq!(
            parsed["batch"][0]["properties"]["$set"]["email"],
            "x@example.com"
        );
    }

    #[test]
    fn uuids_are_kept_or_derived_deterministically() {
        let real = "0190a3c2-7b1e-7cc0-8f00-0123456789ab";
        assert_eq!(event_uuid(real).to_string(), real);
        assert_eq!(
            event_uuid("{0190A3C2-7B1E-7CC0-8F00-0123456789AB}").to_string(),
            real
        );
        let derived = event_uuid("m-1");
        assert_eq!(derived, event_uuid("m-1"));
        assert_ne!(derived, event_uuid("m-2"));
        assert_eq!(derived.get_version_num(), 5);
    }

    #[test]
    fn page_screen_identify_group_alias_use_posthog_special_events() {
        let page = as_value(
            &event(
                json!({"type": "page", "name": "Pricing", "anonymousId": "a1",
                "context": {"page": {"url": "https://x.example/pricing", "path": "/pricing",
                "title": "Pricing - X", "referrer": "https://google.com/"}}}),
            ),
            "company",
        )
        .unwrap();
        assert_eq!(page["event"], "$pageview");
        assert_eq!(page["distinct_id"], "a1");
        assert_eq!(
            page["properties"]["$current_url"],
            "https://x.example/pricing"
        );
        assert_eq!(page["properties"]["$pathname"], "/pricing");
        assert_eq!(page["properties"]["$title"], "Pricing - X");
        assert_eq!(page["properties"]["$referrer"], "https://google.com/");
        assert_eq!(page["properties"]["$ip"], "203.0.113.9");
        assert_eq!(page["properties"]["name"], "Pricing");

        let screen = as_value(
            &event(json!({"type": "screen", "name": "Home", "userId": "u1"})),
            "company",
        )
        .unwrap();
        assert_eq!(screen["event"], "$screen");
        assert_eq!(screen["properties"]["$screen_name"], "Home");

        let identify = as_value(
            &event(
                json!({"type": "identify", "userId": "u1", "anonymousId": "a1",
                "traits": {"plan": "pro", "email": "x@example.com"},
                "properties": {"$set": {"plan": "enterprise"}, "$set_once": {"first": "2024"}}}),
            ),
            "company",
        )
        .unwrap();
        assert_eq!(identify["event"], "$identify");
        assert_eq!(identify["properties"]["$anon_distinct_id"], "a1");
        assert_eq!(
            identify["properties"]["$set"],
            json!({"plan": "enterprise", "email": "x@example.com"})
        );
        assert_eq!(
            identify["properties"]["$set_once"],
            json!({"first": "2024"})
        );

        let group = as_value(
            &event(json!({"type": "group", "userId": "u1", "groupId": "acme",
                "traits": {"name": "Acme", "groupType": "organization"}})),
            "company",
        )
        .unwrap();
        assert_eq!(group["event"], "$groupidentify");
        assert_eq!(group["properties"]["$group_type"], "organization");
        assert_eq!(group["properties"]["$group_key"], "acme");
        assert_eq!(group["properties"]["$group_set"], json!({"name": "Acme"}));
        let default_type = as_value(
            &event(json!({"type": "group", "userId": "u1", "groupId": "acme"})),
            "company",
        )
        .unwrap();
        assert_eq!(default_type["properties"]["$group_type"], "company");

        let alias = as_value(
            &event(json!({"type": "alias", "userId": "u1", "previousId": "a1"})),
            "company",
        )
        .unwrap();
        assert_eq!(alias["event"], "$create_alias");
        assert_eq!(alias["distinct_id"], "u1");
        assert_eq!(alias["properties"]["alias"], "a1");
        assert_eq!(alias["properties"]["distinct_id"], "u1");
    }

    #[test]
    fn events_posthog_would_refuse_are_not_mapped() {
        let mut no_ids = event(json!({"type": "track", "event": "E", "userId": "u"}));
        no_ids.user_id = None;
        assert!(as_value(&no_ids, "company").is_none());
        let mut alias = event(json!({"type": "alias", "userId": "u1", "previousId": "a1"}));
        alias.previous_id = None;
        assert!(as_value(&alias, "company").is_none());
    }

    #[test]
    fn config_is_validated_and_debug_hides_the_key() {
        let config = PosthogSinkConfig {
            url: "posthog.example".into(),
            api_key: "".into(),
            max_events_per_request: 0,
            timeout_ms: 5,
            group_type: " ".into(),
        };
        let paths: Vec<String> = config.validate().into_iter().map(|p| p.0).collect();
        assert_eq!(
            paths,
            [
                "url",
                "api_key",
                "max_events_per_request",
                "timeout_ms",
                "group_type"
            ]
        );
        let config = PosthogSinkConfig {
            url: "https://us.i.posthog.com".into(),
            api_key: "phc_secret".into(),
            max_events_per_request: 1000,
            timeout_ms: 10_000,
            group_type: "company".into(),
        };
        assert!(config.validate().is_empty());
        assert!(!format!("{config:?}").contains("phc_secret"));
    }
}
