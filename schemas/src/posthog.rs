//! PostHog capture events (what posthog-js, posthog-node and PostHog's other SDKs send to `/batch/`,
//! `/i/v0/e/`, `/e/`, `/capture/` and `/track/`) and their normalisation into the canonical [`Event`].
//!
//! The mapping (documented with a worked example in docs/sdk-compatibility.md):
//!
//! | PostHog event | canonical type | name / ids |
//! |---|---|---|
//! | `$pageview` | page | `name` = `$title`, else `$pathname`; `context.page` from `$current_url`, `$pathname`, `$referrer`, `$title` |
//! | `$screen` | screen | `name` = `$screen_name` |
//! | `$identify` | identify | `userId` = distinct_id, `anonymousId` = `$anon_distinct_id`, `traits` = `$set` |
//! | `$create_alias` | alias | `userId` = distinct_id, `previousId` = `properties.alias` |
//! | `$groupidentify` | group | `groupId` = `$group_key`, `traits` = `$group_set` |
//! | anything else | track | `event` = the event name |
//!
//! Every property is kept as sent (`$set`, `$set_once`, `$groups`, `$session_id`, ...), so the PostHog
//! sink forwards what the SDK sent; only `token` (the project key) is removed, and `$ip` unless the
//! request came from a trusted proxy.

use std::net::IpAddr;

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Utc};
use serde_json::Value;

use crate::event::{Event, EventType, JsonMap};
use crate::segment::{json_type_name, NormalizeError};
use crate::time::parse_timestamp;

/// PostHog cuts distinct ids to this many characters.
pub const MAX_DISTINCT_ID_CHARS: usize = 200;

/// PostHog moves events more than this far in the future to the time they were received.
pub const FUTURE_CUTOFF: TimeDelta = TimeDelta::hours(23);

/// What the server knows about the capture request that carried an event.
#[derive(Debug, Clone)]
pub struct CaptureDefaults<'a> {
    pub received_at: DateTime<Utc>,
    /// The request's `sent_at` (batch field, or the `_` query parameter in ms).
    pub sent_at: Option<DateTime<Utc>>,
    pub source: &'a str,
    pub request_id: &'a str,
    /// The client IP observed by the server (socket, or X-Forwarded-For behind a trusted proxy).
    pub ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    /// Whether a `$ip` property may replace the observed IP: only when the request's socket peer is a
    /// trusted proxy (a backend sending on behalf of its users).
    pub trust_ip_property: bool,
}

/// The distinct id as PostHog reads it: top-level `distinct_id` (or `$distinct_id`), else
/// `properties.distinct_id`; numbers and containers are written as JSON, NUL becomes U+FFFD, empty
/// is absent, and it is cut to 200 characters.
pub fn distinct_id(fields: &JsonMap) -> Option<String> {
    let value = [fields.get("distinct_id"), fields.get("$distinct_id")]
        .into_iter()
        .flatten()
        .find(|v| !v.is_null())
        .or_else(|| {
            fields
                .get("properties")
                .and_then(Value::as_object)
                .and_then(|p| p.get("distinct_id"))
                .filter(|v| !v.is_null())
        })?;
    let text = match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let text = text.replace('\0', "\u{FFFD}");
    if text.is_empty() {
        return None;
    }
    Some(text.chars().take(MAX_DISTINCT_ID_CHARS).collect())
}

/// The project token an event carries: `token`, `api_key` or `$token`, else `properties.token`.
pub fn event_token(fields: &JsonMap) -> Option<&str> {
    ["token", "api_key", "$token"]
        .into_iter()
        .find_map(|key| fields.get(key).and_then(Value::as_str))
        .or_else(|| {
            fields
                .get("properties")
                .and_then(Value::as_object)
                .and_then(|p| p.get("token"))
                .and_then(Value::as_str)
        })
        .filter(|token| !token.is_empty())
}

/// JavaScript truthiness, which PostHog's ingestion applies to flags such as `$ignore_sent_at`.
fn truthy(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(_)) | Some(Value::Object(_)) => true,
    }
}

fn wrong_type(field: &str, expected: &str, found: &Value) -> NormalizeError {
    NormalizeError::Malformed(format!(
        "{field}: invalid type: {}, expected {expected}",
        json_type_name(found)
    ))
}

/// An optional object field; anything else but null is an error.
fn object_field(fields: &mut JsonMap, key: &str) -> Result<Option<JsonMap>, NormalizeError> {
    match fields.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(other) => Err(wrong_type(key, "an object", &other)),
    }
}

/// A string or number property as an id (PostHog accepts numeric group keys and aliases).
fn id_value(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

fn str_property<'a>(properties: &'a JsonMap, key: &str) -> Option<&'a str> {
    properties
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Parses a client timestamp the way PostHog's ingestion does: ISO-8601 / RFC 3339 with or without
/// an offset, or a bare date (midnight UTC). None when it cannot be read.
fn parse_posthog_timestamp(text: &str) -> Option<DateTime<Utc>> {
    parse_timestamp(text).or_else(|| {
        NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
            .ok()
            .and_then(|date| date.and_hms_opt(0, 0, 0))
            .map(|naive| naive.and_utc())
    })
}

/// The event time by PostHog's rules:
/// 1. `timestamp` with a `sent_at` (unless `$ignore_sent_at`): `received + (timestamp - sent_at)`,
///    which cancels the client's clock skew; without `sent_at`: `timestamp` as sent;
/// 2. a non-zero `offset` (ms before sending, old SDKs) wins: `received - offset`;
/// 3. no usable time: `received`;
/// 4. more than 23 h in the future, or outside years 0-9999: `received`.
///
/// An unreadable `timestamp` string is ignored (PostHog ingests such events at their receive time).
/// Returns `(timestamp, the client's own timestamp when the server corrected or replaced it)`.
fn event_time(
    timestamp: Option<DateTime<Utc>>,
    offset_ms: i64,
    sent_at: Option<DateTime<Utc>>,
    received: DateTime<Utc>,
) -> (DateTime<Utc>, Option<DateTime<Utc>>) {
    let (mut time, mut original) = match (timestamp, sent_at) {
        (Some(client), Some(sent)) => (
            received
                .checked_add_signed(client.signed_duration_since(sent))
                .unwrap_or(received),
            Some(client),
        ),
        (Some(client), None) => (client, None),
        (None, _) => (received, None),
    };
    if offset_ms != 0 {
        time = TimeDelta::try_milliseconds(offset_ms)
            .and_then(|offset| received.checked_sub_signed(offset))
            .unwrap_or(received);
        original = timestamp;
    }
    if time.signed_duration_since(received) > FUTURE_CUTOFF || !(0..=9999).contains(&time.year()) {
        time = received;
        original = timestamp;
    }
    (time, original)
}

/// Whether the person behind `distinct_id` is identified, by PostHog's signals, in this order:
/// 1. `$is_identified` (posthog-js sets it on every event): as sent;
/// 2. `$anon_distinct_id` different from the distinct id (the anonymous id an identified user had);
/// 3. `$device_id` (posthog-js, mobile SDKs): equal to the distinct id means anonymous, different
///    means identified;
/// 4. `$process_person_profile: false` (a personless, i.e. anonymous, event);
/// 5. otherwise identified: server-side SDKs (posthog-node, posthog-python, ...) send the user's own id,
///    and PostHog creates a person profile for it.
pub fn is_identified(distinct_id: &str, properties: &JsonMap) -> bool {
    if let Some(Value::Bool(identified)) = properties.get("$is_identified") {
        return *identified;
    }
    if str_property(properties, "$anon_distinct_id").is_some_and(|anon| anon != distinct_id) {
        return true;
    }
    if let Some(device) = str_property(properties, "$device_id") {
        return device != distinct_id;
    }
    if properties.get("$process_person_profile") == Some(&Value::Bool(false)) {
        return false;
    }
    true
}

/// Turns one decoded capture event into the canonical event; problems reject this event only.
pub fn normalize_capture_event(
    mut fields: JsonMap,
    defaults: &CaptureDefaults<'_>,
) -> Result<Event, NormalizeError> {
    let name = match fields.remove("event") {
        Some(Value::String(name)) if !name.is_empty() => name,
        None | Some(Value::Null) | Some(Value::String(_)) => {
            return Err(NormalizeError::MissingField("event", "capture"))
        }
        Some(other) => return Err(wrong_type("event", "a string", &other)),
    };
    let distinct =
        distinct_id(&fields).ok_or(NormalizeError::MissingField("distinct_id", "capture"))?;
    let mut properties = object_field(&mut fields, "properties")?.unwrap_or_default();
    // Top-level `$set` / `$set_once` (older SDKs) are merged into the properties, top level winning.
    for key in ["$set", "$set_once"] {
        if let Some(top) = object_field(&mut fields, key)? {
            let merged = match properties.remove(key) {
                Some(Value::Object(mut inner)) => {
                    inner.extend(top);
                    inner
                }
                _ => top,
            };
            properties.insert(key.to_string(), Value::Object(merged));
        }
    }
    // The project key authenticates the request; it is not event data.
    properties.remove("token");

    let message_id = match fields.remove("uuid") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) if text.trim().is_empty() => None,
        Some(Value::String(text)) => match uuid::Uuid::parse_str(text.trim()) {
            Ok(uuid) => Some(uuid.to_string()),
            Err(_) => {
                return Err(NormalizeError::Malformed(format!(
                    "uuid: `{}` is not a UUID",
                    text.chars().take(64).collect::<String>()
                )))
            }
        },
        Some(other) => return Err(wrong_type("uuid", "a UUID string", &other)),
    };
    let timestamp = match fields.remove("timestamp") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => parse_posthog_timestamp(&text),
        Some(other) => return Err(wrong_type("timestamp", "an ISO-8601 string", &other)),
    };
    let offset_ms = match fields.remove("offset") {
        None | Some(Value::Null) => 0,
        Some(Value::Number(number)) => number.as_i64().ok_or_else(|| {
            NormalizeError::Malformed("offset: expected whole milliseconds".into())
        })?,
        Some(other) => return Err(wrong_type("offset", "a number of milliseconds", &other)),
    };
    let sent_at = defaults
        .sent_at
        .filter(|_| !truthy(properties.get("$ignore_sent_at")));
    let (time, original_timestamp) =
        event_time(timestamp, offset_ms, sent_at, defaults.received_at);

    let mut user_id = None;
    let mut anonymous_id = None;
    let mut group_id = None;
    let mut previous_id = None;
    let mut page_name = None;
    let mut traits = JsonMap::new();
    let kind = match name.as_str() {
        "$pageview" => {
            page_name = str_property(&properties, "$title")
                .or_else(|| str_property(&properties, "$pathname"))
                .map(str::to_string);
            EventType::Page
        }
        "$screen" => {
            page_name = str_property(&properties, "$screen_name").map(str::to_string);
            EventType::Screen
        }
        "$identify" => {
            if let Some(Value::Object(set)) = properties.get("$set") {
                traits = set.clone();
            }
            EventType::Identify
        }
        "$create_alias" => {
            previous_id = Some(id_value(properties.get("alias")).ok_or(
                NormalizeError::MissingField("properties.alias", "$create_alias"),
            )?);
            EventType::Alias
        }
        "$groupidentify" => {
            group_id = Some(id_value(properties.get("$group_key")).ok_or(
                NormalizeError::MissingField("properties.$group_key", "$groupidentify"),
            )?);
            if let Some(Value::Object(set)) = properties.get("$group_set") {
                traits = set.clone();
            }
            EventType::Group
        }
        _ => EventType::Track,
    };
    match kind {
        EventType::Identify => {
            anonymous_id = str_property(&properties, "$anon_distinct_id")
                .filter(|anon| *anon != distinct)
                .map(str::to_string);
            user_id = Some(distinct);
        }
        EventType::Alias => user_id = Some(distinct),
        _ if is_identified(&distinct, &properties) => {
            anonymous_id = str_property(&properties, "$device_id")
                .filter(|device| *device != distinct)
                .map(str::to_string);
            user_id = Some(distinct);
        }
        _ => anonymous_id = Some(distinct),
    }

    let mut ip = defaults.ip.map(str::to_string);
    let claimed_ip =
        str_property(&properties, "$ip").and_then(|ip| ip.trim().parse::<IpAddr>().ok());
    match claimed_ip {
        Some(claimed) if defaults.trust_ip_property => ip = Some(claimed.to_string()),
        _ => {
            properties.remove("$ip");
        }
    }

    let mut context = JsonMap::new();
    if let Some(library) = str_property(&properties, "$lib") {
        let mut entry = JsonMap::new();
        entry.insert("name".into(), Value::String(library.to_string()));
        if let Some(version) = str_property(&properties, "$lib_version") {
            entry.insert("version".into(), Value::String(version.to_string()));
        }
        context.insert("library".into(), Value::Object(entry));
    }
    let mut page = JsonMap::new();
    for (from, to) in [
        ("$current_url", "url"),
        ("$pathname", "path"),
        ("$referrer", "referrer"),
        ("$title", "title"),
    ] {
        if let Some(value) = str_property(&properties, from) {
            page.insert(to.into(), Value::String(value.to_string()));
        }
    }
    if !page.is_empty() {
        context.insert("page".into(), Value::Object(page));
    }
    let raw_user_agent = str_property(&properties, "$raw_user_agent").map(str::to_string);
    if let Some(agent) = &raw_user_agent {
        context.insert("userAgent".into(), Value::String(agent.clone()));
    }

    Ok(Event {
        kind,
        message_id: message_id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
        event: (kind == EventType::Track).then_some(name),
        name: page_name,
        user_id,
        anonymous_id,
        group_id,
        previous_id,
        timestamp: time,
        original_timestamp,
        sent_at: defaults.sent_at,
        received_at: defaults.received_at,
        properties,
        traits,
        context,
        integrations: JsonMap::new(),
        source: defaults.source.to_string(),
        request_id: defaults.request_id.to_string(),
        ip,
        user_agent: defaults.user_agent.map(str::to_string).or(raw_user_agent),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::format_timestamp;
    use serde_json::json;

    fn defaults() -> CaptureDefaults<'static> {
        CaptureDefaults {
            received_at: parse_timestamp("2024-05-01T12:00:10Z").unwrap(),
            sent_at: None,
            source: "web",
            request_id: "req-1",
            ip: Some("203.0.113.9"),
            user_agent: None,
            trust_ip_property: false,
        }
    }

    fn normalize_with(
        value: Value,
        defaults: &CaptureDefaults<'_>,
    ) -> Result<Event, NormalizeError> {
        let Value::Object(map) = value else {
            panic!("not an object")
        };
        normalize_capture_event(map, defaults)
    }

    fn normalize(value: Value) -> Result<Event, NormalizeError> {
        normalize_with(value, &defaults())
    }

    fn time(text: &str) -> DateTime<Utc> {
        parse_timestamp(text).unwrap()
    }

    #[test]
    fn posthog_node_capture_becomes_an_identified_track() {
        let event = normalize(json!({
            "distinct_id": "user-42", "event": "Order Completed", "type": "capture",
            "uuid": "0190A3C2-7B1E-7CC0-8F00-0123456789AB",
            "timestamp": "2024-05-01T12:00:00.000Z",
            "properties": {"total": 42.5, "$lib": "posthog-node", "$lib_version": "5.70.0",
                           "$groups": {"company": "acme"}, "$set": {"plan": "pro"}},
            "library": "posthog-node", "library_version": "5.70.0"
        }))
        .unwrap();
        assert_eq!(event.kind, EventType::Track);
        assert_eq!(event.event.as_deref(), Some("Order Completed"));
        assert_eq!(event.user_id.as_deref(), Some("user-42"));
        assert_eq!(event.anonymous_id, None);
        assert_eq!(event.message_id, "0190a3c2-7b1e-7cc0-8f00-0123456789ab");
        assert_eq!(
            format_timestamp(&event.timestamp),
            "2024-05-01T12:00:00.000Z"
        );
        assert_eq!(event.original_timestamp, None);
        assert_eq!(event.context_str("library.name"), Some("posthog-node"));
        assert_eq!(event.context_str("library.version"), Some("5.70.0"));
        assert_eq!(event.properties["$groups"], json!({"company": "acme"}));
        assert_eq!(event.properties["$set"], json!({"plan": "pro"}));
        assert_eq!(event.properties["$lib"], "posthog-node");
        assert_eq!(event.ip.as_deref(), Some("203.0.113.9"));
        assert_eq!(event.source, "web");
    }

    #[test]
    fn pageview_screen_identify_alias_group() {
        let page = normalize(json!({"event": "$pageview", "properties": {
            "distinct_id": "anon-1", "$device_id": "anon-1", "$current_url": "https://x.example/p?q=1",
            "$pathname": "/p", "$referrer": "https://google.com/", "$title": "Pricing", "token": "phc_abc"}}))
        .unwrap();
        assert_eq!(page.kind, EventType::Page);
        assert_eq!(page.name.as_deref(), Some("Pricing"));
        assert_eq!(page.anonymous_id.as_deref(), Some("anon-1"));
        assert_eq!(page.user_id, None);
        assert_eq!(
            page.context_str("page.url"),
            Some("https://x.example/p?q=1")
        );
        assert_eq!(page.context_str("page.path"), Some("/p"));
        assert_eq!(
            page.context_str("page.referrer"),
            Some("https://google.com/")
        );
        assert!(
            !page.properties.contains_key("token"),
            "the project key is dropped"
        );
        assert_eq!(page.properties["$device_id"], "anon-1");
        assert_eq!(page.event, None);

        let untitled = normalize(
            json!({"event": "$pageview", "distinct_id": "u", "properties": {"$pathname": "/docs"}}),
        )
        .unwrap();
        assert_eq!(untitled.name.as_deref(), Some("/docs"));

        let screen = normalize(json!({"event": "$screen", "distinct_id": "u1", "properties": {"$screen_name": "Home"}})).unwrap();
        assert_eq!(screen.kind, EventType::Screen);
        assert_eq!(screen.name.as_deref(), Some("Home"));

        let identify = normalize(json!({"event": "$identify", "distinct_id": "user-1",
            "$set": {"email": "top@example.com"},
            "properties": {"$anon_distinct_id": "anon-1", "$set": {"plan": "pro", "email": "inner@example.com"},
                           "$set_once": {"first_seen": "2024-01-01"}}}))
        .unwrap();
        assert_eq!(identify.kind, EventType::Identify);
        assert_eq!(identify.user_id.as_deref(), Some("user-1"));
        assert_eq!(identify.anonymous_id.as_deref(), Some("anon-1"));
        assert_eq!(
            identify.traits,
            *json!({"plan": "pro", "email": "top@example.com"})
                .as_object()
                .unwrap()
        );
        assert_eq!(
            identify.properties["$set_once"],
            json!({"first_seen": "2024-01-01"})
        );
        assert_eq!(
            identify.properties["$set"],
            json!({"plan": "pro", "email": "top@example.com"})
        );

        let alias = normalize(json!({"event": "$create_alias", "distinct_id": "user-1",
            "properties": {"distinct_id": "user-1", "alias": "anon-1"}}))
        .unwrap();
        assert_eq!(alias.kind, EventType::Alias);
        assert_eq!(alias.user_id.as_deref(), Some("user-1"));
        assert_eq!(alias.previous_id.as_deref(), Some("anon-1"));
        assert_eq!(alias.properties["alias"], "anon-1");

        let group = normalize(json!({"event": "$groupidentify", "distinct_id": "$company_acme",
            "properties": {"$group_type": "company", "$group_key": 77, "$group_set": {"name": "Acme"}}})).unwrap();
        assert_eq!(group.kind, EventType::Group);
        assert_eq!(group.group_id.as_deref(), Some("77"));
        assert_eq!(group.user_id.as_deref(), Some("$company_acme"));
        assert_eq!(group.traits, *json!({"name": "Acme"}).as_object().unwrap());
        assert_eq!(group.properties["$group_type"], "company");
    }

    #[test]
    fn distinct_id_rules() {
        let ids = |props: Value| {
            let event =
                normalize(json!({"event": "e", "distinct_id": "d", "properties": props})).unwrap();
            (event.user_id, event.anonymous_id)
        };
        let some = |s: &str| Some(s.to_string());
        // Server-side SDKs send nothing else: the distinct id is the user's.
        assert_eq!(ids(json!({})), (some("d"), None));
        // posthog-js states it.
        assert_eq!(
            ids(json!({"$is_identified": false, "$device_id": "x"})),
            (None, some("d"))
        );
        assert_eq!(
            ids(json!({"$is_identified": true, "$device_id": "dev"})),
            (some("d"), some("dev"))
        );
        // Without the flag, the device id tells.
        assert_eq!(ids(json!({"$device_id": "d"})), (None, some("d")));
        assert_eq!(ids(json!({"$device_id": "dev"})), (some("d"), some("dev")));
        assert_eq!(ids(json!({"$anon_distinct_id": "a"})), (some("d"), None));
        // Personless events are anonymous.
        assert_eq!(
            ids(json!({"$process_person_profile": false})),
            (None, some("d"))
        );
        assert_eq!(
            ids(json!({"$process_person_profile": true})),
            (some("d"), None)
        );
    }

    #[test]
    fn distinct_id_is_read_like_posthog() {
        let read = |v: Value| distinct_id(v.as_object().unwrap());
        assert_eq!(read(json!({"distinct_id": 23})), Some("23".into()));
        assert_eq!(read(json!({"$distinct_id": "x"})), Some("x".into()));
        assert_eq!(
            read(json!({"distinct_id": null, "properties": {"distinct_id": "p"}})),
            Some("p".into())
        );
        assert_eq!(
            read(json!({"distinct_id": "top", "properties": {"distinct_id": "p"}})),
            Some("top".into())
        );
        assert_eq!(
            read(json!({"distinct_id": ["a", "b"]})),
            Some(r#"["a","b"]"#.into())
        );
        assert_eq!(read(json!({"distinct_id": ""})), None);
        assert_eq!(
            read(json!({"distinct_id": "a\u{0}b"})),
            Some("a\u{FFFD}b".into())
        );
        assert_eq!(
            read(json!({"distinct_id": "é".repeat(300)}))
                .unwrap()
                .chars()
                .count(),
            200
        );
        assert_eq!(read(json!({})), None);
    }

    #[test]
    fn tokens_are_found_where_sdks_put_them() {
        let token = |v: Value| event_token(v.as_object().unwrap()).map(str::to_string);
        assert_eq!(token(json!({"api_key": "a"})), Some("a".into()));
        assert_eq!(token(json!({"token": "t"})), Some("t".into()));
        assert_eq!(token(json!({"$token": "d"})), Some("d".into()));
        assert_eq!(
            token(json!({"properties": {"token": "p"}})),
            Some("p".into())
        );
        assert_eq!(token(json!({"token": ""})), None);
        assert_eq!(token(json!({"token": 5})), None);
    }

    #[test]
    fn timestamps_follow_posthog() {
        let received = time("2024-05-01T12:00:10Z");
        // Client clock 1 h fast: corrected with sent_at.
        let (t, original) = event_time(
            Some(time("2024-05-01T13:00:00Z")),
            0,
            Some(time("2024-05-01T13:00:05Z")),
            received,
        );
        assert_eq!(t, time("2024-05-01T12:00:05Z"));
        assert_eq!(original, Some(time("2024-05-01T13:00:00Z")));
        // No sent_at: as sent.
        let (t, original) = event_time(Some(time("2024-04-01T00:00:00Z")), 0, None, received);
        assert_eq!((t, original), (time("2024-04-01T00:00:00Z"), None));
        // offset wins.
        let (t, _) = event_time(Some(time("2020-01-01T00:00:00Z")), 2_000, None, received);
        assert_eq!(t, time("2024-05-01T12:00:08Z"));
        // Nothing: received.
        assert_eq!(event_time(None, 0, None, received).0, received);
        // Far future: received.
        assert_eq!(
            event_time(Some(time("2024-05-03T00:00:00Z")), 0, None, received).0,
            received
        );
        assert_eq!(
            event_time(Some(time("2024-05-01T20:00:00Z")), 0, None, received).0,
            time("2024-05-01T20:00:00Z")
        );
        // Absurd offsets and skews never panic.
        assert_eq!(event_time(None, i64::MIN, None, received).0, received);
        assert_eq!(event_time(None, i64::MAX, None, received).0, received);
        let ancient = DateTime::<Utc>::MIN_UTC;
        assert_eq!(
            event_time(Some(ancient), 0, Some(DateTime::<Utc>::MAX_UTC), received).0,
            received
        );
    }

    #[test]
    fn sent_at_and_ignore_sent_at() {
        let mut with_sent_at = defaults();
        with_sent_at.sent_at = Some(time("2024-05-01T13:00:05Z"));
        let body = |ignore: bool| {
            json!({"event": "e", "distinct_id": "d", "timestamp": "2024-05-01T13:00:00Z",
                   "properties": {"$ignore_sent_at": ignore}})
        };
        let corrected = normalize_with(body(false), &with_sent_at).unwrap();
        assert_eq!(corrected.timestamp, time("2024-05-01T12:00:05Z"));
        assert_eq!(corrected.sent_at, with_sent_at.sent_at);
        let ignored = normalize_with(body(true), &with_sent_at).unwrap();
        assert_eq!(ignored.timestamp, time("2024-05-01T13:00:00Z"));
        // An unreadable timestamp is ignored, as PostHog does.
        let garbage =
            normalize(json!({"event": "e", "distinct_id": "d", "timestamp": "soon"})).unwrap();
        assert_eq!(garbage.timestamp, garbage.received_at);
        let date_only =
            normalize(json!({"event": "e", "distinct_id": "d", "timestamp": "2024-04-30"}))
                .unwrap();
        assert_eq!(date_only.timestamp, time("2024-04-30T00:00:00Z"));
    }

    #[test]
    fn ip_property_is_trusted_only_from_trusted_proxies() {
        let body = json!({"event": "e", "distinct_id": "d", "properties": {"$ip": "198.51.100.7"}});
        let untrusted = normalize(body.clone()).unwrap();
        assert_eq!(untrusted.ip.as_deref(), Some("203.0.113.9"));
        assert!(!untrusted.properties.contains_key("$ip"));
        let mut trusted = defaults();
        trusted.trust_ip_property = true;
        let relayed = normalize_with(body, &trusted).unwrap();
        assert_eq!(relayed.ip.as_deref(), Some("198.51.100.7"));
        assert_eq!(relayed.properties["$ip"], "198.51.100.7");
        let bogus = normalize_with(
            json!({"event": "e", "distinct_id": "d", "properties": {"$ip": "not an ip"}}),
            &trusted,
        )
        .unwrap();
        assert_eq!(bogus.ip.as_deref(), Some("203.0.113.9"));
        assert!(!bogus.properties.contains_key("$ip"));
    }

    #[test]
    fn bad_events_are_rejected_with_reasons() {
        let reason = |v: Value| normalize(v).unwrap_err().to_string();
        assert_eq!(
            reason(json!({"distinct_id": "d"})),
            "event is required for capture calls"
        );
        assert_eq!(
            reason(json!({"event": "", "distinct_id": "d"})),
            "event is required for capture calls"
        );
        assert!(reason(json!({"event": 5, "distinct_id": "d"}))
            .starts_with("event: invalid type: number"));
        assert_eq!(
            reason(json!({"event": "e"})),
            "distinct_id is required for capture calls"
        );
        assert!(
            reason(json!({"event": "e", "distinct_id": "d", "properties": [1]}))
                .starts_with("properties: invalid type: array")
        );
        assert!(
            reason(json!({"event": "e", "distinct_id": "d", "uuid": "nope"}))
                .starts_with("uuid: `nope` is not a UUID")
        );
        assert!(reason(json!({"event": "e", "distinct_id": "d", "uuid": 7}))
            .starts_with("uuid: invalid type"));
        assert!(
            reason(json!({"event": "e", "distinct_id": "d", "timestamp": 7}))
                .starts_with("timestamp: invalid type")
        );
        assert!(
            reason(json!({"event": "e", "distinct_id": "d", "offset": "x"}))
                .starts_with("offset: invalid type")
        );
        assert!(
            reason(json!({"event": "e", "distinct_id": "d", "offset": 1.5})).starts_with("offset:")
        );
        assert!(
            reason(json!({"event": "e", "distinct_id": "d", "$set": "x"}))
                .starts_with("$set: invalid type")
        );
        assert_eq!(
            reason(json!({"event": "$create_alias", "distinct_id": "d"})),
            "properties.alias is required for $create_alias calls"
        );
        assert_eq!(
            reason(
                json!({"event": "$groupidentify", "distinct_id": "d", "properties": {"$group_key": {}}})
            ),
            "properties.$group_key is required for $groupidentify calls"
        );
    }

    #[test]
    fn server_generates_a_message_id_when_there_is_no_uuid() {
        let event = normalize(json!({"event": "e", "distinct_id": "d", "uuid": ""})).unwrap();
        assert_eq!(
            uuid::Uuid::parse_str(&event.message_id)
                .unwrap()
                .get_version_num(),
            7
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_fields(input in "[\\[\\]{}\",:a-z0-9$_ .-]{0,200}") {
            if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&input) {
                let _ = normalize_capture_event(map, &defaults());
            }
        }

        #[test]
        fn any_named_event_with_a_distinct_id_is_accepted(id in "[a-zA-Z0-9_-]{1,40}", name in "[a-zA-Z][ -~]{0,59}") {
            let event = normalize(json!({"event": name, "distinct_id": id})).unwrap();
            proptest::prop_assert_eq!(event.user_id.as_deref(), Some(id.as_str()));
            proptest::prop_assert_eq!(event.event.as_deref(), Some(name.as_str()));
        }
    }
}
