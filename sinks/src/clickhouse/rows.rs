//! Events as ClickHouse rows: the fields shared by both table layouts, the row types for RowBinary
//! inserts (DateTime64 milliseconds, or DateTime seconds plus a milliseconds column), and the context
//! fields lifted into their own columns.

use chrono::{DateTime, Utc};
use clickhouse::Row;
use serde::Serialize;
use sha2::{Digest, Sha256};
use switchyard_schemas::event::field_str;
use switchyard_schemas::{Event, JsonMap};

/// The context paths and property keys a session id is taken from, first match wins.
pub const SESSION_ID_PATHS: [(&str, &str); 4] = [
    ("context", "sessionId"),
    ("context", "session_id"),
    ("properties", "sessionId"),
    ("properties", "session_id"),
];

/// The columns both layouts share, borrowed from the event where possible.
pub struct Shared<'a> {
    pub message_id: &'a str,
    pub kind: &'a str,
    pub event: &'a str,
    pub name: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub anonymous_id: Option<&'a str>,
    pub person_id: &'a str,
    pub group_id: Option<&'a str>,
    pub previous_id: Option<&'a str>,
    pub session_id: Option<String>,
    pub properties: String,
    pub traits: String,
    pub context: String,
    pub integrations: String,
    pub source: &'a str,
    pub request_id: &'a str,
    pub ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub page_path: &'a str,
    pub page_url: &'a str,
    pub page_referrer: &'a str,
    pub library_name: &'a str,
    pub library_version: &'a str,
    pub locale: &'a str,
}

/// JSON text of a map (`{}` when empty, so `JSONExtract*` always sees an object).
fn json_text(map: &JsonMap) -> String {
    // The fast writer: serde_json's serializer (the same text) was 4% of the server's CPU with a
    // ClickHouse sink and two vendor sinks.
    switchyard_schemas::json_writer::map_text(map)
}

/// The session id: a string, or a number written as text.
pub fn session_id(event: &Event) -> Option<String> {
    SESSION_ID_PATHS.iter().find_map(|(section, key)| {
        let map = if *section == "context" {
            &event.context
        } else {
            &event.properties
        };
        match map.get(*key)? {
            serde_json::Value::String(text) if !text.is_empty() => Some(text.clone()),
            serde_json::Value::Number(number) => Some(number.to_string()),
            _ => None,
        }
    })
}

impl<'a> Shared<'a> {
    pub fn of(event: &'a Event) -> Shared<'a> {
        // `page` and `library` looked up once each (a lookup by dotted path walks from the top).
        let page = event.context_object("page");
        let library = event.context_object("library");
        let lifted = |section, key| field_str(section, key).unwrap_or_default();
        Shared {
            message_id: &event.message_id,
            kind: event.kind.as_str(),
            event: event.event.as_deref().unwrap_or_default(),
            name: event.name.as_deref(),
            user_id: event.user_id.as_deref(),
            anonymous_id: event.anonymous_id.as_deref(),
            person_id: event.person_id().unwrap_or_default(),
            group_id: event.group_id.as_deref(),
            previous_id: event.previous_id.as_deref(),
            session_id: session_id(event),
            properties: json_text(&event.properties),
            traits: json_text(&event.traits),
            context: json_text(&event.context),
            integrations: json_text(&event.integrations),
            source: &event.source,
            request_id: &event.request_id,
            ip: event.ip.as_deref(),
            user_agent: event.user_agent.as_deref(),
            page_path: lifted(page, "path"),
            page_url: lifted(page, "url"),
            page_referrer: lifted(page, "referrer"),
            library_name: lifted(library, "name"),
            library_version: lifted(library, "version"),
            locale: event.context_str("locale").unwrap_or_default(),
        }
    }
}

/// Defines a row type: the shared columns followed by the layout's timestamp columns. RowBinary
/// inserts name their columns, so the order here need not match the table's.
macro_rules! event_row {
    ($(#[$meta:meta])* $row:ident { $($field:ident: $kind:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Row, Serialize)]
        pub struct $row<'a> {
            pub message_id: &'a str,
            #[serde(rename = "type")]
            pub kind: &'a str,
            pub event: &'a str,
            pub name: Option<&'a str>,
            pub user_id: Option<&'a str>,
            pub anonymous_id: Option<&'a str>,
            pub person_id: &'a str,
            pub group_id: Option<&'a str>,
            pub previous_id: Option<&'a str>,
            pub session_id: Option<String>,
            pub properties: String,
            pub traits: String,
            pub context: String,
            pub integrations: String,
            pub source: &'a str,
            pub request_id: &'a str,
            pub ip: Option<&'a str>,
            pub user_agent: Option<&'a str>,
            pub page_path: &'a str,
            pub page_url: &'a str,
            pub page_referrer: &'a str,
            pub library_name: &'a str,
            pub library_version: &'a str,
            pub locale: &'a str,
            $(pub $field: $kind,)*
        }

        impl<'a> $row<'a> {
            #[allow(clippy::too_many_arguments)]
            fn assemble(shared: Shared<'a>, $($field: $kind),*) -> $row<'a> {
                $row {
                    message_id: shared.message_id,
                    kind: shared.kind,
                    event: shared.event,
                    name: shared.name,
                    user_id: shared.user_id,
                    anonymous_id: shared.anonymous_id,
                    person_id: shared.person_id,
                    group_id: shared.group_id,
                    previous_id: shared.previous_id,
                    session_id: shared.session_id,
                    properties: shared.properties,
                    traits: shared.traits,
                    context: shared.context,
                    integrations: shared.integrations,
                    source: shared.source,
                    request_id: shared.request_id,
                    ip: shared.ip,
                    user_agent: shared.user_agent,
                    page_path: shared.page_path,
                    page_url: shared.page_url,
                    page_referrer: shared.page_referrer,
                    library_name: shared.library_name,
                    library_version: shared.library_version,
                    locale: shared.locale,
                    $($field,)*
                }
            }
        }
    };
}

event_row!(
    /// A row of a `DateTime64(3, 'UTC')` table: timestamps as milliseconds since the epoch.
    ModernRow {
        timestamp: i64,
        original_timestamp: Option<i64>,
        sent_at: Option<i64>,
        received_at: i64,
    }
);

event_row!(
    /// A row of a `DateTime('UTC')` table: timestamps as seconds, milliseconds in `<column>_ms`.
    LegacyRow {
        timestamp: u32,
        timestamp_ms: u16,
        original_timestamp: Option<u32>,
        original_timestamp_ms: u16,
        sent_at: Option<u32>,
        sent_at_ms: u16,
        received_at: u32,
        received_at_ms: u16,
    }
);

/// `DateTime64(3)` covers 1900-01-01 to 2299-12-31.
const DATETIME64_MIN_MS: i64 = -2_208_988_800_000;
const DATETIME64_MAX_MS: i64 = 10_413_791_999_999;

/// Milliseconds for a `DateTime64(3)` column, clamped to its range; the flag says it was clamped.
pub fn datetime64_millis(time: &DateTime<Utc>) -> (i64, bool) {
    let millis = time.timestamp_millis();
    let clamped = millis.clamp(DATETIME64_MIN_MS, DATETIME64_MAX_MS);
    (clamped, clamped != millis)
}

/// Seconds and milliseconds for a `DateTime` column (1970 to 2106), clamped to its range.
pub fn datetime_parts(time: &DateTime<Utc>) -> (u32, u16, bool) {
    let seconds = time.timestamp();
    match u32::try_from(seconds) {
        Ok(seconds) => (
            seconds,
            time.timestamp_subsec_millis().min(999) as u16,
            false,
        ),
        Err(_) if seconds < 0 => (0, 0, true),
        Err(_) => (u32::MAX, 999, true),
    }
}

impl<'a> ModernRow<'a> {
    /// The row of `event`, and how many of its timestamps had to be clamped.
    pub fn of(event: &'a Event) -> (ModernRow<'a>, u32) {
        let mut clamped = 0;
        let mut millis = |time: &DateTime<Utc>| {
            let (value, was_clamped) = datetime64_millis(time);
            clamped += u32::from(was_clamped);
            value
        };
        let timestamp = millis(&event.timestamp);
        let original = event.original_timestamp.as_ref().map(&mut millis);
        let sent_at = event.sent_at.as_ref().map(&mut millis);
        let received_at = millis(&event.received_at);
        let row = ModernRow::assemble(Shared::of(event), timestamp, original, sent_at, received_at);
        (row, clamped)
    }
}

impl<'a> LegacyRow<'a> {
    /// The row of `event`, and how many of its timestamps had to be clamped.
    pub fn of(event: &'a Event) -> (LegacyRow<'a>, u32) {
        let mut clamped = 0;
        let mut parts = |time: &DateTime<Utc>| {
            let (seconds, millis, was_clamped) = datetime_parts(time);
            clamped += u32::from(was_clamped);
            (seconds, millis)
        };
        let (timestamp, timestamp_ms) = parts(&event.timestamp);
        let original = event.original_timestamp.as_ref().map(&mut parts);
        let sent = event.sent_at.as_ref().map(&mut parts);
        let (received_at, received_at_ms) = parts(&event.received_at);
        let row = LegacyRow::assemble(
            Shared::of(event),
            timestamp,
            timestamp_ms,
            original.map(|(seconds, _)| seconds),
            original.map(|(_, millis)| millis).unwrap_or_default(),
            sent.map(|(seconds, _)| seconds),
            sent.map(|(_, millis)| millis).unwrap_or_default(),
            received_at,
            received_at_ms,
        );
        (row, clamped)
    }
}

/// The insert deduplication token of a batch: the same batch re-sent gets the same token.
pub fn dedup_token<'a>(message_ids: impl IntoIterator<Item = &'a str>) -> String {
    let mut hasher = Sha256::new();
    let mut count = 0u64;
    for id in message_ids {
        hasher.update(id.as_bytes());
        hasher.update(b"\n");
        count += 1;
    }
    hasher.update(count.to_le_bytes());
    hex::encode(&hasher.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: serde_json::Value) -> Event {
        serde_json::from_value(json).unwrap()
    }

    fn sample() -> Event {
        event(serde_json::json!({
            "type": "page", "name": "Pricing", "messageId": "m-1", "anonymousId": "anon-1",
            "timestamp": "2024-05-01T12:00:00.123Z", "receivedAt": "2024-05-01T12:00:01.456Z",
            "originalTimestamp": "2024-05-01T11:59:59.001Z",
            "properties": {"plan": "pro", "session_id": 7},
            "context": {"page": {"path": "/pricing", "url": "https://x.test/pricing?a=1", "referrer": "https://ref.test/"},
                        "library": {"name": "analytics.js", "version": "4.1.0"}, "locale": "de-DE"},
            "source": "web", "requestId": "r-1", "ip": "198.51.100.7"
        }))
    }

    #[test]
    fn lifts_context_fields_and_person_id() {
        let event = sample();
        let shared = Shared::of(&event);
        assert_eq!(shared.kind, "page");
        assert_eq!(shared.event, "");
        assert_eq!(shared.name, Some("Pricing"));
        assert_eq!(shared.person_id, "anon-1");
        assert_eq!(shared.page_path, "/pricing");
        assert_eq!(shared.page_url, "https://x.test/pricing?a=1");
        assert_eq!(shared.page_referrer, "https://ref.test/");
        assert_eq!(shared.library_name, "analytics.js");
        assert_eq!(shared.library_version, "4.1.0");
        assert_eq!(shared.locale, "de-DE");
        assert_eq!(
            shared.session_id.as_deref(),
            Some("7"),
            "numbers become text"
        );
        assert_eq!(shared.traits, "{}");
        let properties: serde_json::Value = serde_json::from_str(&shared.properties).unwrap();
        assert_eq!(properties["plan"], "pro");
    }

    #[test]
    fn session_id_prefers_context_then_properties() {
        let mut event = sample();
        event
            .context
            .insert("sessionId".into(), serde_json::json!("s-ctx"));
        assert_eq!(session_id(&event).as_deref(), Some("s-ctx"));
        event.context.remove("sessionId");
        event.properties.remove("session_id");
        assert_eq!(session_id(&event), None);
    }

    #[test]
    fn timestamps_keep_milliseconds_in_both_layouts() {
        let event = sample();
        let (modern, clamped) = ModernRow::of(&event);
        assert_eq!(clamped, 0);
        assert_eq!(modern.timestamp, event.timestamp.timestamp_millis());
        assert_eq!(modern.timestamp % 1000, 123);
        assert_eq!(modern.sent_at, None);
        assert_eq!(modern.original_timestamp.map(|ms| ms % 1000), Some(1));
        let (legacy, clamped) = LegacyRow::of(&event);
        assert_eq!(clamped, 0);
        assert_eq!(legacy.timestamp as i64, event.timestamp.timestamp());
        assert_eq!(legacy.timestamp_ms, 123);
        assert_eq!(legacy.received_at_ms, 456);
        assert_eq!(legacy.original_timestamp_ms, 1);
        assert_eq!((legacy.sent_at, legacy.sent_at_ms), (None, 0));
    }

    #[test]
    fn out_of_range_timestamps_are_clamped_and_counted() {
        let mut event = sample();
        event.timestamp = "1960-01-01T00:00:00.500Z".parse().unwrap();
        event.sent_at = Some("2200-01-01T00:00:00Z".parse().unwrap());
        let (legacy, clamped) = LegacyRow::of(&event);
        assert_eq!(clamped, 2);
        assert_eq!((legacy.timestamp, legacy.timestamp_ms), (0, 0));
        assert_eq!((legacy.sent_at, legacy.sent_at_ms), (Some(u32::MAX), 999));
        let (modern, clamped) = ModernRow::of(&event);
        assert_eq!(clamped, 0, "DateTime64 covers 1900..2299");
        assert_eq!(modern.timestamp, event.timestamp.timestamp_millis());
    }

    #[test]
    fn dedup_token_depends_on_the_batch_only() {
        let a = dedup_token(["m-1", "m-2"]);
        assert_eq!(a, dedup_token(["m-1", "m-2"]));
        assert_ne!(a, dedup_token(["m-1"]));
        assert_ne!(a, dedup_token(["m-1\nm-2"]));
        assert_eq!(a.len(), 32);
    }
}
