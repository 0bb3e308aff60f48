//! The GA4 sink: canonical events to the Google Analytics 4 Measurement Protocol
//! (`POST {url}/mp/collect`), also what a server-side GTM container accepts. The collect endpoint answers
//! 2xx even to payloads it then discards, so every payload is made valid here — names, counts, lengths,
//! nesting, size — and what had to be altered or dropped is counted (see docs/sinks/ga4.md).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use switchyard_schemas::{Event, EventType};

use crate::http::{self, Planned, RequestProgress};
use crate::sink::{SendError, Sink, SinkError};

/// Most events in one request (GA4's limit).
pub const MAX_EVENTS_PER_REQUEST: usize = 25;
/// Most parameters of one event.
pub const MAX_PARAMS: usize = 25;
/// Longest event or parameter name (characters).
pub const MAX_NAME_CHARS: usize = 40;
/// Longest string parameter value (characters), except the page parameters below.
pub const MAX_VALUE_CHARS: usize = 100;
/// Parameters GA4 allows longer values for.
pub const LONG_PARAMS: [(&str, usize); 3] = [
    ("page_location", 1000),
    ("page_referrer", 420),
    ("page_title", 300),
];
/// Most entries of an ecommerce `items` array.
pub const MAX_ITEMS: usize = 200;
/// Largest request body (bytes).
pub const MAX_BODY_BYTES: usize = 130_000;
/// Longest `user_id` (characters).
pub const MAX_USER_ID_CHARS: usize = 256;
/// How far back an event may be dated; older events are sent without their timestamp.
pub const MAX_BACKDATE: Duration = Duration::from_secs(72 * 3600);
/// Prefix put in front of names that are reserved or do not start with a letter.
pub const RENAME_PREFIX: &str = "sy_";
/// Name prefixes GA4 reserves for itself (events and parameters).
pub const RESERVED_PREFIXES: [&str; 3] = ["google_", "ga_", "firebase_"];
/// Event names the Measurement Protocol reserves.
pub const RESERVED_EVENT_NAMES: [&str; 34] = [
    "ad_activeview",
    "ad_click",
    "ad_exposure",
    "ad_impression",
    "ad_query",
    "ad_reward",
    "adunit_exposure",
    "app_background",
    "app_clear_data",
    "app_exception",
    "app_install",
    "app_remove",
    "app_store_refund",
    "app_update",
    "app_upgrade",
    "dynamic_link_app_open",
    "dynamic_link_app_update",
    "dynamic_link_first_open",
    "error",
    "firebase_campaign",
    "firebase_in_app_message_action",
    "firebase_in_app_message_dismiss",
    "firebase_in_app_message_impression",
    "first_open",
    "first_visit",
    "in_app_purchase",
    "notification_dismiss",
    "notification_foreground",
    "notification_open",
    "notification_receive",
    "os_update",
    "session_start",
    "session_start_with_rollout",
    "user_engagement",
];

/// `type = "ga4"`: the GA4 Measurement Protocol (`POST {url}/mp/collect`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ga4SinkConfig {
    /// Base URL (default `https://www.google-analytics.com`; EU collection:
    /// `https://region1.google-analytics.com`; or a server-side GTM container's host). Events go to
    /// `{url}/mp/collect?measurement_id=...&api_secret=...`.
    #[serde(default = "default_url")]
    pub url: String,
    /// The web data stream's measurement id: `G-` followed by capital letters and digits.
    pub measurement_id: String,
    /// A Measurement Protocol API secret of that stream. Use `${GA4_API_SECRET}`.
    pub api_secret: String,
    /// Most events in one request, 1 to 25 (default 25, GA4's limit). Each request carries one
    /// client's events, so requests are often smaller.
    #[serde(default = "default_max_events")]
    pub max_events_per_request: usize,
    /// Timeout of one request in milliseconds, 100 to 120000 (default 10000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_url() -> String {
    "https://www.google-analytics.com".into()
}

fn default_max_events() -> usize {
    MAX_EVENTS_PER_REQUEST
}

fn default_timeout_ms() -> u64 {
    http::DEFAULT_TIMEOUT_MS
}

impl fmt::Debug for Ga4SinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ga4SinkConfig")
            .field("url", &self.url)
            .field("measurement_id", &self.measurement_id)
            .field("api_secret", &"[redacted]")
            .field("max_events_per_request", &self.max_events_per_request)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

impl Ga4SinkConfig {
    /// Problems with the values, as (relative path, message) pairs.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if let Some(problem) = http::check_url(&self.url, false) {
            problems.push(("url".into(), problem));
        }
        let id_ok = self.measurement_id.strip_prefix("G-").is_some_and(|rest| {
            (4..=20).contains(&rest.len())
                && rest
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        });
        if !id_ok {
            problems.push((
                "measurement_id".into(),
                format!(
                    "`{}` is not a GA4 measurement id like G-ABC123XYZ",
                    self.measurement_id
                ),
            ));
        }
        if let Some(problem) = http::check_secret(&self.api_secret) {
            problems.push(("api_secret".into(), problem));
        }
        if !(1..=MAX_EVENTS_PER_REQUEST).contains(&self.max_events_per_request) {
            problems.push((
                "max_events_per_request".into(),
                format!("must be between 1 and {MAX_EVENTS_PER_REQUEST} (GA4's limit)"),
            ));
        }
        if !http::TIMEOUT_MS_RANGE.contains(&self.timeout_ms) {
            problems.push(("timeout_ms".into(), "must be between 100 and 120000".into()));
        }
        problems
    }
}

/// What the mapping of some events had to change, by kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Adjustments {
    /// identify / group / alias calls (GA4 has no event for them), not sent.
    pub events_skipped: u64,
    /// Events that cannot be made valid (a single event over the body size), not sent.
    pub events_dropped: u64,
    /// Event or parameter names changed to be valid (characters, first letter, length, reserved).
    pub names_altered: u64,
    /// Parameters left out: over 25, null, name collisions, arrays of objects other than `items`.
    pub params_dropped: u64,
    /// String values cut to their length limit.
    pub values_truncated: u64,
    /// Nested objects flattened into `a_b` parameters, arrays of scalars joined with `,`.
    pub values_flattened: u64,
    /// Timestamps older than 72 hours (or in the future) not sent; GA4 dates those events on receipt.
    pub timestamps_omitted: u64,
    /// `user_id`s over 256 characters not sent.
    pub user_ids_dropped: u64,
}

impl Adjustments {
    fn any_loss(&self) -> bool {
        self.events_dropped + self.params_dropped + self.user_ids_dropped > 0
    }
}

/// The sink's counters since start: events sent and every adjustment made to fit GA4's rules.
#[derive(Debug, Default)]
pub struct Ga4Stats {
    pub events_sent: AtomicU64,
    pub requests: AtomicU64,
    pub events_skipped: AtomicU64,
    pub events_dropped: AtomicU64,
    pub names_altered: AtomicU64,
    pub params_dropped: AtomicU64,
    pub values_truncated: AtomicU64,
    pub values_flattened: AtomicU64,
    pub timestamps_omitted: AtomicU64,
    pub user_ids_dropped: AtomicU64,
}

impl Ga4Stats {
    fn add(&self, a: &Adjustments) {
        let pairs = [
            (&self.events_skipped, a.events_skipped),
            (&self.events_dropped, a.events_dropped),
            (&self.names_altered, a.names_altered),
            (&self.params_dropped, a.params_dropped),
            (&self.values_truncated, a.values_truncated),
            (&self.values_flattened, a.values_flattened),
            (&self.timestamps_omitted, a.timestamps_omitted),
            (&self.user_ids_dropped, a.user_ids_dropped),
        ];
        for (counter, amount) in pairs {
            counter.fetch_add(amount, Ordering::Relaxed);
        }
    }

    /// The adjustment counters as one value.
    pub fn adjustments(&self) -> Adjustments {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Adjustments {
            events_skipped: load(&self.events_skipped),
            events_dropped: load(&self.events_dropped),
            names_altered: load(&self.names_altered),
            params_dropped: load(&self.params_dropped),
            values_truncated: load(&self.values_truncated),
            values_flattened: load(&self.values_flattened),
            timestamps_omitted: load(&self.timestamps_omitted),
            user_ids_dropped: load(&self.user_ids_dropped),
        }
    }
}

/// Sends canonical events to the GA4 Measurement Protocol.
pub struct Ga4Sink {
    name: String,
    config: Ga4SinkConfig,
    endpoint: reqwest::Url,
    client: reqwest::Client,
    progress: RequestProgress,
    stats: Arc<Ga4Stats>,
    /// The batch whose adjustments were last counted, so a retried batch is counted once.
    counted_batch: std::sync::Mutex<Option<u64>>,
}

impl Ga4Sink {
    pub fn new(
        name: &str,
        config: Ga4SinkConfig,
        max_concurrent_requests: usize,
    ) -> Result<Ga4Sink, SinkError> {
        let base = http::join_url(&config.url, "mp/collect");
        let endpoint = reqwest::Url::parse_with_params(
            &base,
            [
                ("measurement_id", config.measurement_id.as_str()),
                ("api_secret", config.api_secret.as_str()),
            ],
        )
        .map_err(|e| SinkError::Setup(format!("sinks.{name}.url: {e}")))?;
        Ok(Ga4Sink {
            name: name.to_string(),
            endpoint,
            client: http::shared_client()?,
            config,
            progress: RequestProgress::new(max_concurrent_requests),
            stats: Arc::default(),
            counted_batch: std::sync::Mutex::new(None),
        })
    }

    /// The sink's counters.
    pub fn stats(&self) -> Arc<Ga4Stats> {
        self.stats.clone()
    }

    async fn post(&self, body: Vec<u8>, events: usize) -> Result<(), SendError> {
        let request = self
            .client
            .post(self.endpoint.clone())
            .timeout(Duration::from_millis(self.config.timeout_ms))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        http::execute("GA4", request, &[&self.config.api_secret]).await?;
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        self.stats
            .events_sent
            .fetch_add(events as u64, Ordering::Relaxed);
        Ok(())
    }
}

#[async_trait]
impl Sink for Ga4Sink {
    async fn send(&self, batch: &[Arc<Event>]) -> Result<(), SendError> {
        let mut adjustments = Adjustments::default();
        let now = Utc::now();
        let mapped: Vec<(&Event, Mapped)> = batch
            .iter()
            .filter_map(|event| {
                map_event(event, now, &mut adjustments).map(|mapped| (event.as_ref(), mapped))
            })
            .collect();
        let requests = plan_requests(mapped, self.config.max_events_per_request, &mut adjustments);
        // Second line of defence: never send what GA4 would silently discard.
        for planned in &requests {
            if let Err(problem) = &planned.body.1 {
                return Err(SendError::Permanent(format!(
                    "GA4 payload failed validation before sending: {problem}"
                )));
            }
        }
        if adjustments != Adjustments::default() {
            if adjustments.any_loss() {
                tracing::warn!(sink = %self.name, events_dropped = adjustments.events_dropped,
                    params_dropped = adjustments.params_dropped, user_ids_dropped = adjustments.user_ids_dropped,
                    names_altered = adjustments.names_altered, values_truncated = adjustments.values_truncated,
                    "data left out to fit GA4's limits");
            } else {
                tracing::debug!(sink = %self.name, names_altered = adjustments.names_altered,
                    values_truncated = adjustments.values_truncated, values_flattened = adjustments.values_flattened,
                    timestamps_omitted = adjustments.timestamps_omitted, events_skipped = adjustments.events_skipped,
                    "payload adjusted to GA4's rules");
            }
        }
        let batch_key = http::fingerprint(batch.iter().map(|e| e.as_ref()));
        {
            // Count a batch's adjustments once, not once per retry.
            let mut counted = self.counted_batch.lock().unwrap_or_else(|p| p.into_inner());
            if *counted != Some(batch_key) {
                *counted = Some(batch_key);
                self.stats.add(&adjustments);
            }
        }
        self.progress
            .send_all(batch_key, requests, |(body, _, events)| {
                self.post(body, events)
            })
            .await
    }
}

/// One event mapped to GA4, with the request-level fields it needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    pub client_id: String,
    pub user_id: Option<String>,
    pub timestamp_micros: Option<i64>,
    /// `{"name", "params", "timestamp_micros"?}`
    pub event: Value,
}

/// The `client_id` of a user known only by `userId`: a stable hash shaped like a GA client id.
pub fn client_id_for_user(user_id: &str) -> String {
    let digest = Sha256::digest(format!("switchyard-ga4:{user_id}").as_bytes());
    let part = |range: std::ops::Range<usize>| {
        digest[range]
            .iter()
            .fold(0u32, |acc, byte| (acc << 8) | u32::from(*byte))
    };
    format!("{}.{}", part(0..4), part(4..8))
}

fn is_reserved_prefix(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    RESERVED_PREFIXES.iter().any(|p| lower.starts_with(p))
}

/// Makes a name valid for GA4: runs of characters other than ASCII letters, digits and `_` become one
/// `_` (leading underscores and a trailing replaced one are dropped); a name that is then reserved,
/// uses a reserved prefix or does not start with a letter gets the `sy_` prefix; the result is cut to
/// 40 characters. Returns None for a name with nothing usable in it.
pub fn sanitize_name(raw: &str, is_event: bool) -> Option<String> {
    let mut out = String::with_capacity(raw.len().min(64));
    let mut replaced_last = false;
    for c in raw.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c);
            replaced_last = false;
        } else if !out.ends_with('_') {
            out.push('_');
            replaced_last = true;
        }
    }
    if replaced_last {
        out.pop();
    }
    let out = out.trim_start_matches('_');
    if out.is_empty() {
        return None;
    }
    let reserved = (is_event
        && RESERVED_EVENT_NAMES
            .iter()
            .any(|r| r.eq_ignore_ascii_case(out)))
        || is_reserved_prefix(out)
        || !out.starts_with(|c: char| c.is_ascii_alphabetic());
    let mut name = if reserved {
        format!("{RENAME_PREFIX}{out}")
    } else {
        out.to_string()
    };
    name.truncate(MAX_NAME_CHARS);
    Some(name)
}

fn value_limit(name: &str) -> usize {
    LONG_PARAMS
        .iter()
        .find(|(long, _)| *long == name)
        .map_or(MAX_VALUE_CHARS, |(_, limit)| *limit)
}

fn cut(text: &str, limit: usize, adjustments: &mut Adjustments) -> String {
    match text.char_indices().nth(limit) {
        Some((end, _)) => {
            adjustments.values_truncated += 1;
            text[..end].to_string()
        }
        None => text.to_string(),
    }
}

/// A scalar as a GA4 value: strings cut to `limit`, numbers kept, booleans as "true"/"false".
fn scalar(value: &Value, limit: usize, adjustments: &mut Adjustments) -> Option<Value> {
    match value {
        Value::String(s) => Some(Value::String(cut(s, limit, adjustments))),
        Value::Number(_) => Some(value.clone()),
        Value::Bool(b) => Some(Value::String(b.to_string())),
        _ => None,
    }
}

/// One ecommerce item: scalar fields kept (names made valid), nested ones dropped.
fn item(value: &Value, adjustments: &mut Adjustments) -> Option<Value> {
    let fields = value.as_object()?;
    let mut out = Map::new();
    for (key, field) in fields {
        let Some(name) = sanitize_name(key, false) else {
            adjustments.params_dropped += 1;
            continue;
        };
        if name != *key {
            adjustments.names_altered += 1;
        }
        match scalar(field, MAX_VALUE_CHARS, adjustments) {
            Some(v) if !out.contains_key(&name) => {
                out.insert(name, v);
            }
            _ => adjustments.params_dropped += 1,
        }
    }
    Some(Value::Object(out))
}

/// A parameter candidate before names are made valid: (raw name, value).
fn flatten(
    prefix: &str,
    value: &Value,
    top_level: bool,
    out: &mut Vec<(String, Value)>,
    adjustments: &mut Adjustments,
) {
    match value {
        Value::Null => adjustments.params_dropped += 1,
        Value::Object(map) => {
            adjustments.values_flattened += 1;
            for (key, inner) in map {
                flatten(&format!("{prefix}_{key}"), inner, false, out, adjustments);
            }
        }
        Value::Array(entries) if top_level && prefix == "items" => {
            if entries.iter().all(Value::is_object) {
                if entries.len() > MAX_ITEMS {
                    adjustments.params_dropped += (entries.len() - MAX_ITEMS) as u64;
                }
                let items: Vec<Value> = entries
                    .iter()
                    .take(MAX_ITEMS)
                    .filter_map(|entry| item(entry, adjustments))
                    .collect();
                out.push((prefix.to_string(), Value::Array(items)));
            } else {
                adjustments.params_dropped += 1;
            }
        }
        Value::Array(entries) => {
            if entries.iter().all(|e| !e.is_object() && !e.is_array()) {
                adjustments.values_flattened += 1;
                let joined = entries
                    .iter()
                    .filter_map(|e| match e {
                        Value::String(s) => Some(s.clone()),
                        Value::Null => None,
                        other => Some(other.to_string()),
                    })
                    .collect::<Vec<_>>()
                    .join(",");
                out.push((prefix.to_string(), Value::String(joined)));
            } else {
                adjustments.params_dropped += 1;
            }
        }
        scalar_value => out.push((prefix.to_string(), scalar_value.clone())),
    }
}

fn context_or_property<'a>(event: &'a Event, context: &str, property: &str) -> Option<&'a str> {
    event
        .context_str(context)
        .or_else(|| event.properties.get(property).and_then(Value::as_str))
        .filter(|s| !s.is_empty())
}

/// Maps one canonical event to GA4, or None when GA4 has no event for it (identify, group, alias).
pub fn map_event(
    event: &Event,
    now: DateTime<Utc>,
    adjustments: &mut Adjustments,
) -> Option<Mapped> {
    let (raw_name, mut candidates): (String, Vec<(String, Value)>) = match event.kind {
        EventType::Track => (event.event.clone().unwrap_or_default(), Vec::new()),
        EventType::Page => {
            let mut mapped = Vec::new();
            let fields = [
                (
                    "page_location",
                    context_or_property(event, "page.url", "url"),
                ),
                (
                    "page_referrer",
                    context_or_property(event, "page.referrer", "referrer"),
                ),
                (
                    "page_title",
                    event
                        .properties
                        .get("title")
                        .and_then(Value::as_str)
                        .or_else(|| event.context_str("page.title"))
                        .or(event.name.as_deref())
                        .filter(|s| !s.is_empty()),
                ),
            ];
            for (name, value) in fields {
                if let Some(value) = value {
                    mapped.push((name.to_string(), json!(value)));
                }
            }
            ("page_view".to_string(), mapped)
        }
        EventType::Screen => {
            let mut mapped = Vec::new();
            if let Some(name) = event.name.as_deref().filter(|s| !s.is_empty()) {
                mapped.push(("screen_name".to_string(), json!(name)));
            }
            ("screen_view".to_string(), mapped)
        }
        EventType::Identify | EventType::Group | EventType::Alias => {
            adjustments.events_skipped += 1;
            return None;
        }
    };
    let client_id = match (event.anonymous_id.as_deref(), event.user_id.as_deref()) {
        (Some(anonymous), _) if !anonymous.is_empty() => anonymous.to_string(),
        (_, Some(user)) if !user.is_empty() => client_id_for_user(user),
        _ => {
            adjustments.events_dropped += 1;
            return None;
        }
    };
    let user_id = match event.user_id.as_deref().filter(|u| !u.is_empty()) {
        Some(user) if user.chars().count() > MAX_USER_ID_CHARS => {
            adjustments.user_ids_dropped += 1;
            None
        }
        other => other.map(str::to_string),
    };
    let age = now.signed_duration_since(event.timestamp);
    let fresh = age <= chrono::Duration::from_std(MAX_BACKDATE).unwrap_or_default()
        && age >= -chrono::Duration::seconds(60);
    let timestamp_micros = if fresh {
        Some(event.timestamp.timestamp_micros())
    } else {
        adjustments.timestamps_omitted += 1;
        None
    };

    let name = match sanitize_name(&raw_name, true) {
        Some(name) => name,
        None => format!("{RENAME_PREFIX}event"),
    };
    if name != raw_name {
        adjustments.names_altered += 1;
    }

    // Mapped page/screen parameters come first; a property of the same name overrides their value.
    for (name, value) in candidates.iter_mut() {
        if let Some(own) = event.properties.get(name.as_str()).filter(|v| !v.is_null()) {
            *value = own.clone();
        }
    }
    let mapped_names: Vec<String> = candidates.iter().map(|(n, _)| n.clone()).collect();
    for (key, value) in &event.properties {
        if !mapped_names.contains(key) {
            flatten(key, value, true, &mut candidates, adjustments);
        }
    }
    let mut params = Map::new();
    for (raw, value) in candidates {
        let Some(param) = sanitize_name(&raw, false) else {
            adjustments.params_dropped += 1;
            continue;
        };
        if params.contains_key(&param) || params.len() >= MAX_PARAMS {
            adjustments.params_dropped += 1;
            continue;
        }
        if param != raw {
            adjustments.names_altered += 1;
        }
        let value = match value {
            Value::Array(items) => Value::Array(items),
            other => match scalar(&other, value_limit(&param), adjustments) {
                Some(v) => v,
                None => {
                    adjustments.params_dropped += 1;
                    continue;
                }
            },
        };
        params.insert(param, value);
    }
    let mut ga_event = Map::new();
    ga_event.insert("name".into(), Value::String(name));
    ga_event.insert("params".into(), Value::Object(params));
    if let Some(micros) = timestamp_micros {
        ga_event.insert("timestamp_micros".into(), json!(micros));
    }
    Some(Mapped {
        client_id,
        user_id,
        timestamp_micros,
        event: Value::Object(ga_event),
    })
}

/// A request body, borrowing the mapped events. Fields are in alphabetical order, as a
/// `serde_json` object would write them.
#[derive(Serialize)]
struct RequestBody<'a> {
    client_id: &'a str,
    events: Vec<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp_micros: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
}

fn request_body<'a>(events: &'a [(&Event, Mapped)]) -> RequestBody<'a> {
    let first = &events[0].1;
    RequestBody {
        client_id: &first.client_id,
        events: events.iter().map(|(_, m)| &m.event).collect(),
        timestamp_micros: events.iter().filter_map(|(_, m)| m.timestamp_micros).min(),
        user_id: first.user_id.as_deref(),
    }
}

/// A planned request: its JSON body, the result of checking it against the Measurement Protocol's
/// rules (see [`validate_payload`]), and how many events it carries.
type Body = (Vec<u8>, Result<(), String>, usize);

fn push_within_size(
    events: &[(&Event, Mapped)],
    out: &mut Vec<Planned<Body>>,
    adjustments: &mut Adjustments,
) {
    if events.is_empty() {
        return;
    }
    let body = request_body(events);
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    if bytes.is_empty() || bytes.len() > MAX_BODY_BYTES {
        if events.len() == 1 {
            adjustments.events_dropped += 1;
            return;
        }
        let (left, right) = events.split_at(events.len() / 2);
        push_within_size(left, out, adjustments);
        push_within_size(right, out, adjustments);
        return;
    }
    let checked = check_request(&body, bytes.len());
    out.push(Planned {
        key: http::fingerprint(events.iter().map(|(e, _)| *e)),
        events: events.len(),
        body: (bytes, checked, events.len()),
    });
}

/// Groups mapped events into requests: one client (and user) per request, events with and without a
/// timestamp apart, at most `max_events` per request and [`MAX_BODY_BYTES`] per body; order kept
/// within a client.
pub fn plan_requests(
    mapped: Vec<(&Event, Mapped)>,
    max_events: usize,
    adjustments: &mut Adjustments,
) -> Vec<Planned<Body>> {
    let mut groups: Vec<Vec<(&Event, Mapped)>> = Vec::new();
    let mut index: HashMap<(String, Option<String>, bool), usize> = HashMap::new();
    for (event, m) in mapped {
        let key = (
            m.client_id.clone(),
            m.user_id.clone(),
            m.timestamp_micros.is_some(),
        );
        let slot = *index.entry(key).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[slot].push((event, m));
    }
    let mut requests = Vec::new();
    for group in &groups {
        for chunk in group.chunks(max_events.clamp(1, MAX_EVENTS_PER_REQUEST)) {
            push_within_size(chunk, &mut requests, adjustments);
        }
    }
    requests
}

fn valid_name(name: &str, is_event: bool) -> bool {
    sanitize_name(name, is_event).as_deref() == Some(name)
        && name.len() <= MAX_NAME_CHARS
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
}

/// Checks a request body against the Measurement Protocol's rules; the first problem found.
pub fn validate_payload(body: &Value) -> Result<(), String> {
    let size = serde_json::to_vec(body)
        .map(|b| b.len())
        .unwrap_or(usize::MAX);
    let events = body["events"]
        .as_array()
        .ok_or_else(|| "events missing".to_string())?;
    let request = RequestBody {
        client_id: body["client_id"].as_str().unwrap_or_default(),
        events: events.iter().collect(),
        timestamp_micros: None,
        user_id: None,
    };
    check_request(&request, size)
}

/// [`validate_payload`] on a planned request whose encoded body is `size` bytes.
fn check_request(body: &RequestBody<'_>, size: usize) -> Result<(), String> {
    if size > MAX_BODY_BYTES {
        return Err(format!("body is {size} bytes (limit {MAX_BODY_BYTES})"));
    }
    if body.client_id.is_empty() {
        return Err("client_id missing".into());
    }
    let events = &body.events;
    if events.is_empty() || events.len() > MAX_EVENTS_PER_REQUEST {
        return Err(format!("{} events in one request", events.len()));
    }
    for event in events {
        let name = event["name"].as_str().unwrap_or_default();
        if !valid_name(name, true) {
            return Err(format!("invalid event name `{name}`"));
        }
        let params = event["params"].as_object().map(Map::len).unwrap_or(0);
        if params > MAX_PARAMS {
            return Err(format!("{params} params on `{name}`"));
        }
        for (param, value) in event["params"].as_object().into_iter().flatten() {
            if !valid_name(param, false) {
                return Err(format!("invalid parameter name `{param}`"));
            }
            let ok = match value {
                Value::String(s) => s.chars().count() <= value_limit(param),
                Value::Number(_) => true,
                Value::Array(items) => param == "items" && items.len() <= MAX_ITEMS,
                _ => false,
            };
            if !ok {
                return Err(format!("invalid value for parameter `{param}`"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(value: Value) -> Event {
        let mut base = json!({
            "messageId": "msg-1", "timestamp": "2024-05-01T12:00:00.000Z",
            "receivedAt": "2024-05-01T12:00:01.000Z", "source": "web"
        });
        for (k, v) in value.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    fn now() -> DateTime<Utc> {
        "2024-05-01T13:00:00Z".parse().unwrap()
    }

    #[test]
    fn names_are_made_valid() {
        assert_eq!(
            sanitize_name("Order Completed", true).unwrap(),
            "Order_Completed"
        );
        assert_eq!(
            sanitize_name("sign-up: done!", true).unwrap(),
            "sign_up_done"
        );
        assert_eq!(sanitize_name("_private", false).unwrap(), "private");
        assert_eq!(
            sanitize_name("2fa enabled", false).unwrap(),
            "sy_2fa_enabled"
        );
        assert_eq!(sanitize_name("error", true).unwrap(), "sy_error");
        assert_eq!(sanitize_name("error", false).unwrap(), "error");
        assert_eq!(sanitize_name("ga_session", false).unwrap(), "sy_ga_session");
        assert_eq!(sanitize_name("Google_Ads", true).unwrap(), "sy_Google_Ads");
        assert_eq!(sanitize_name("ünïcode", false).unwrap(), "n_code");
        assert_eq!(sanitize_name("a__b", false).unwrap(), "a__b");
        assert_eq!(sanitize_name("🎉", true), None);
        let long = sanitize_name(&"x".repeat(60), false).unwrap();
        assert_eq!(long.len(), MAX_NAME_CHARS);
        assert!(valid_name("page_view", true));
        assert!(!valid_name("Order Completed", true));
        assert!(!valid_name("session_start", true));
    }

    #[test]
    fn track_is_flattened_cut_and_counted() {
        let mut adjustments = Adjustments::default();
        let mapped = map_event(
            &event(json!({
                "type": "track", "event": "Order Completed", "userId": "u1", "anonymousId": "a1",
                "timestamp": "2024-05-01T12:30:00.000Z",
                "properties": {
                    "total": 42.5, "paid": true, "note": null, "tags": ["a", "b", 3],
                    "shipping": {"address": {"city": "Berlin"}, "method": "dhl"},
                    "long": "y".repeat(150),
                    "items": [{"sku": "A-1", "qty": 2, "meta": {"x": 1}}],
                    "matrix": [[1, 2]],
                    "ga_id": "x"
                }
            })),
            now(),
            &mut adjustments,
        )
        .unwrap();
        assert_eq!(mapped.client_id, "a1");
        assert_eq!(mapped.user_id.as_deref(), Some("u1"));
        assert_eq!(mapped.timestamp_micros, Some(1_714_566_600_000_000));
        assert_eq!(
            mapped.event,
            json!({
                "name": "Order_Completed",
                "timestamp_micros": 1_714_566_600_000_000i64,
                "params": {
                    "total": 42.5, "paid": "true", "tags": "a,b,3",
                    "shipping_address_city": "Berlin", "shipping_method": "dhl",
                    "long": "y".repeat(100),
                    "items": [{"sku": "A-1", "qty": 2}],
                    "sy_ga_id": "x"
                }
            })
        );
        assert_eq!(
            adjustments,
            Adjustments {
                names_altered: 2,
                params_dropped: 3, // note (null), matrix (nested array), items[0].meta
                values_truncated: 1,
                values_flattened: 3, // tags, shipping, shipping.address
                ..Adjustments::default()
            }
        );
        assert!(validate_payload(&json!({"client_id": "a1", "events": [mapped.event]})).is_ok());
    }

    #[test]
    fn at_most_25_params_are_kept() {
        let properties: Map<String, Value> =
            (0..30).map(|i| (format!("p{i:02}"), json!(i))).collect();
        let mut adjustments = Adjustments::default();
        let mapped = map_event(
            &event(json!({"type": "track", "event": "Many", "userId": "u1",
                "properties": properties})),
            now(),
            &mut adjustments,
        )
        .unwrap();
        assert_eq!(
            mapped.event["params"].as_object().unwrap().len(),
            MAX_PARAMS
        );
        assert_eq!(adjustments.params_dropped, 5);
        assert!(mapped.event["params"].get("p24").is_some());
        assert!(mapped.event["params"].get("p25").is_none());
        // Known by userId only: a stable GA-shaped client id.
        assert_eq!(mapped.client_id, client_id_for_user("u1"));
        assert!(mapped
            .client_id
            .split('.')
            .all(|p| p.parse::<u32>().is_ok()));
    }

    #[test]
    fn page_becomes_page_view_with_long_page_params() {
        let url = format!("https://shop.example/{}", "p".repeat(200));
        let mut adjustments = Adjustments::default();
        let mapped = map_event(
            &event(
                json!({"type": "page", "name": "Pricing", "anonymousId": "a1",
                "properties": {"title": "Pricing | Shop"},
                "context": {"page": {"url": url, "referrer": "https://google.com/"}}}),
            ),
            now(),
            &mut adjustments,
        )
        .unwrap();
        assert_eq!(mapped.event["name"], "page_view");
        assert_eq!(mapped.event["params"]["page_location"], url.as_str());
        assert_eq!(mapped.event["params"]["page_title"], "Pricing | Shop");
        assert_eq!(
            mapped.event["params"]["page_referrer"],
            "https://google.com/"
        );
        assert!(mapped.event["params"].get("title").is_some());
        assert_eq!(adjustments.values_truncated, 0);
        let screen = map_event(
            &event(json!({"type": "screen", "name": "Home", "anonymousId": "a1"})),
            now(),
            &mut adjustments,
        )
        .unwrap();
        assert_eq!(screen.event["name"], "screen_view");
        assert_eq!(screen.event["params"]["screen_name"], "Home");
    }

    #[test]
    fn identify_is_skipped_and_stale_timestamps_are_omitted() {
        let mut adjustments = Adjustments::default();
        assert!(map_event(
            &event(json!({"type": "identify", "userId": "u1"})),
            now(),
            &mut adjustments
        )
        .is_none());
        let old = map_event(
            &event(json!({"type": "track", "event": "Old", "userId": "u1",
                "timestamp": "2024-04-01T00:00:00.000Z"})),
            now(),
            &mut adjustments,
        )
        .unwrap();
        assert_eq!(old.timestamp_micros, None);
        assert!(old.event.get("timestamp_micros").is_none());
        assert_eq!(adjustments.events_skipped, 1);
        assert_eq!(adjustments.timestamps_omitted, 1);
    }

    #[test]
    fn requests_hold_one_client_and_at_most_25_events() {
        let events: Vec<Event> = (0..60)
            .map(|i| {
                event(
                    json!({"type": "track", "event": "E", "messageId": format!("m{i}"),
                    "anonymousId": if i < 55 { "a1" } else { "a2" },
                    "timestamp": "2024-05-01T12:00:00.000Z",
                    "properties": {"n": i}}),
                )
            })
            .collect();
        let mut adjustments = Adjustments::default();
        let mapped: Vec<(&Event, Mapped)> = events
            .iter()
            .map(|e| (e, map_event(e, now(), &mut adjustments).unwrap()))
            .collect();
        let requests = plan_requests(mapped, 25, &mut adjustments);
        let sizes: Vec<usize> = requests.iter().map(|r| r.events).collect();
        assert_eq!(sizes, [25, 25, 5, 5]);
        let bodies: Vec<Value> = requests
            .iter()
            .map(|r| serde_json::from_slice(&r.body.0).unwrap())
            .collect();
        assert_eq!(bodies[3]["client_id"], "a2");
        for (request, body) in requests.iter().zip(&bodies) {
            request.body.1.clone().unwrap();
            validate_payload(body).unwrap();
            assert_eq!(body["timestamp_micros"], json!(1_714_564_800_000_000i64));
            // The borrowed body writes what the same body as a JSON object writes.
            assert_eq!(request.body.0, serde_json::to_vec(body).unwrap());
        }
    }

    #[test]
    fn oversized_requests_are_split() {
        // Ecommerce items are the one way past 130 kB: 50 items of 5 long fields per event.
        let items: Vec<Value> = (0..50)
            .map(|_| {
                let fields: Map<String, Value> = (0..5)
                    .map(|f| (format!("f{f}"), json!("z".repeat(100))))
                    .collect();
                Value::Object(fields)
            })
            .collect();
        let events: Vec<Event> = (0..25)
            .map(|i| {
                event(
                    json!({"type": "track", "event": "Big", "messageId": format!("m{i}"),
                    "anonymousId": "a1", "properties": {"items": items}}),
                )
            })
            .collect();
        let mut adjustments = Adjustments::default();
        let mapped: Vec<(&Event, Mapped)> = events
            .iter()
            .map(|e| (e, map_event(e, now(), &mut adjustments).unwrap()))
            .collect();
        let requests = plan_requests(mapped, 25, &mut adjustments);
        assert!(requests.len() >= 4, "{} requests", requests.len());
        assert_eq!(requests.iter().map(|r| r.events).sum::<usize>(), 25);
        assert_eq!(adjustments.events_dropped, 0);
        assert!(requests.iter().all(|r| r.body.0.len() <= MAX_BODY_BYTES));
    }

    #[test]
    fn validation_catches_what_ga4_would_discard() {
        assert!(validate_payload(&json!({"client_id": "c", "events": []})).is_err());
        assert!(validate_payload(&json!({"events": [{"name": "ok"}]})).is_err());
        assert!(
            validate_payload(&json!({"client_id": "c", "events": [{"name": "bad name"}]})).is_err()
        );
        assert!(validate_payload(
            &json!({"client_id": "c", "events": [{"name": "ok", "params": {"v": "x".repeat(101)}}]})
        )
        .is_err());
        assert!(validate_payload(
            &json!({"client_id": "c", "events": [{"name": "ok", "params": {"v": {"a": 1}}}]})
        )
        .is_err());
        assert!(
            validate_payload(&json!({"client_id": "c", "events": [{"name": "error"}]})).is_err()
        );
    }

    #[test]
    fn config_is_validated() {
        let config = Ga4SinkConfig {
            url: "https://www.google-analytics.com".into(),
            measurement_id: "UA-12345-1".into(),
            api_secret: "".into(),
            max_events_per_request: 26,
            timeout_ms: 10_000,
        };
        let paths: Vec<String> = config.validate().into_iter().map(|p| p.0).collect();
        assert_eq!(
            paths,
            ["measurement_id", "api_secret", "max_events_per_request"]
        );
        let config: Ga4SinkConfig = serde_json::from_value(
            json!({"measurement_id": "G-ABC123XYZ", "api_secret": "s3cr3t"}),
        )
        .unwrap();
        assert!(config.validate().is_empty());
        assert!(!format!("{config:?}").contains("s3cr3t"));
    }
}
