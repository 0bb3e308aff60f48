//! Segment-spec messages (the HTTP Tracking API that Segment, RudderStack and Jitsu clients speak),
//! and their normalisation into the canonical [`Event`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};

use crate::event::{Event, EventType, JsonMap};
use crate::time::parse_timestamp;

/// The body of `POST /v1/batch`. With `M = &RawValue` the messages stay raw so each one is decoded
/// (and rejected) alone; with `M = InboundMessage` the whole body is decoded in one pass, which is
/// the fast path for a batch whose every message is valid.
#[derive(Debug, Deserialize)]
pub struct BatchEnvelope<M> {
    /// The messages.
    pub batch: Vec<M>,
    /// When the client sent the batch.
    #[serde(default, rename = "sentAt")]
    pub sent_at: Option<String>,
    /// Context shared by every message in the batch (a message's own keys win).
    #[serde(default)]
    pub context: Option<JsonMap>,
    /// The write key, when not given as HTTP Basic username.
    #[serde(default, rename = "writeKey")]
    pub write_key: Option<String>,
}

/// One Segment-spec message as a client sends it. Unknown fields (`channel`, `version`, `_metadata`) are
/// ignored; ids may be strings or numbers.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InboundMessage {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub event: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "deserialize_id")]
    pub user_id: Option<String>,
    #[serde(default, deserialize_with = "deserialize_id")]
    pub anonymous_id: Option<String>,
    #[serde(default, deserialize_with = "deserialize_id")]
    pub group_id: Option<String>,
    #[serde(default, deserialize_with = "deserialize_id")]
    pub previous_id: Option<String>,
    #[serde(default, deserialize_with = "deserialize_id")]
    pub message_id: Option<String>,
    #[serde(default)]
    pub timestamp: Option<String>,
    #[serde(default)]
    pub original_timestamp: Option<String>,
    #[serde(default)]
    pub sent_at: Option<String>,
    #[serde(default)]
    pub properties: Option<JsonMap>,
    #[serde(default)]
    pub traits: Option<JsonMap>,
    #[serde(default)]
    pub context: Option<JsonMap>,
    #[serde(default)]
    pub integrations: Option<JsonMap>,
    /// Only read for authentication on single-message endpoints.
    #[serde(default)]
    pub write_key: Option<String>,
}

impl InboundMessage {
    /// Decodes one message, naming the offending field in the error (`properties: invalid type ...`).
    pub fn from_json(raw: &str) -> Result<InboundMessage, NormalizeError> {
        // Fast path: plain serde (path tracking allocates for every key at every depth, which was a
        // third of decoding). Only a message that fails is decoded again, with the path, for the
        // error; the same deserializer on the same text fails the same way.
        let mut deserializer = serde_json::Deserializer::from_str(raw);
        if let Ok(message) = InboundMessage::deserialize(&mut deserializer) {
            return Ok(message);
        }
        let mut deserializer = serde_json::Deserializer::from_str(raw);
        serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
            let path = error.path().to_string();
            let inner = error.into_inner();
            let message = strip_position(&inner.to_string());
            if path == "." || path.is_empty() {
                NormalizeError::Malformed(message)
            } else {
                NormalizeError::Malformed(format!("{path}: {message}"))
            }
        })
    }
}

/// serde_json appends "at line 1 column 42" to its messages; inside one message that adds nothing.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(index) => message[..index].to_string(),
        None => message.to_string(),
    }
}

/// Accepts a string or a number (some SDKs send numeric ids); empty strings count as absent.
/// Read by a visitor of its own rather than through a `serde_json::Value`: ids are in every message.
fn deserialize_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    deserializer.deserialize_option(OptionalIdVisitor)
}

/// An absent id (`null`) or, through [`IdVisitor`], a present one.
struct OptionalIdVisitor;

impl<'de> serde::de::Visitor<'de> for OptionalIdVisitor {
    type Value = Option<String>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a string or a number")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(IdVisitor)
    }
}

/// A present id: its text (None when empty), a number's JSON text, or the same error as before
/// for any other type.
struct IdVisitor;

impl IdVisitor {
    fn wrong_type<E: serde::de::Error>(type_name: &str) -> E {
        E::custom(format!(
            "invalid type: {type_name}, expected a string or a number"
        ))
    }
}

impl<'de> serde::de::Visitor<'de> for IdVisitor {
    type Value = Option<String>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a string or a number")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok((!text.is_empty()).then(|| text.to_string()))
    }

    fn visit_string<E: serde::de::Error>(self, text: String) -> Result<Self::Value, E> {
        Ok((!text.is_empty()).then_some(text))
    }

    fn visit_u64<E: serde::de::Error>(self, number: u64) -> Result<Self::Value, E> {
        Ok(Some(number.to_string()))
    }

    fn visit_i64<E: serde::de::Error>(self, number: i64) -> Result<Self::Value, E> {
        Ok(Some(number.to_string()))
    }

    fn visit_f64<E: serde::de::Error>(self, number: f64) -> Result<Self::Value, E> {
        // serde_json's own text for the number, as `Number::to_string` gave before.
        Ok(serde_json::Number::from_f64(number).map(|number| number.to_string()))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(IdVisitor::wrong_type("boolean"))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(IdVisitor::wrong_type("array"))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(IdVisitor::wrong_type("object"))
    }
}

pub(crate) fn json_type_name(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// Why one message was rejected; the text is returned to the client in `rejected[].reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    #[error("{0}")]
    Malformed(String),
    #[error("missing userId and anonymousId: one is required")]
    MissingIdentity,
    #[error("missing type: use /v1/batch messages with a `type`, or a /v1/<type> endpoint")]
    MissingType,
    #[error("unknown type `{0}`: expected track, identify, page, screen, group or alias")]
    UnknownType(String),
    #[error("type `{found}` does not match the endpoint /v1/{endpoint}")]
    TypeMismatch {
        found: String,
        endpoint: &'static str,
    },
    #[error("{0} is required for {1} calls")]
    MissingField(&'static str, &'static str),
    #[error("{field}: invalid timestamp `{value}`")]
    InvalidTimestamp { field: &'static str, value: String },
    #[error("event is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
}

impl NormalizeError {
    /// A short stable code for metrics (`reason` label).
    pub fn code(&self) -> &'static str {
        match self {
            NormalizeError::Malformed(_) => "malformed",
            NormalizeError::MissingIdentity => "missing_identity",
            NormalizeError::MissingType => "missing_type",
            NormalizeError::UnknownType(_) => "unknown_type",
            NormalizeError::TypeMismatch { .. } => "type_mismatch",
            NormalizeError::MissingField(..) => "missing_field",
            NormalizeError::InvalidTimestamp { .. } => "invalid_timestamp",
            NormalizeError::TooLarge { .. } => "too_large",
        }
    }
}

/// What the server knows about the request that carried a message.
#[derive(Debug, Clone)]
pub struct MessageDefaults<'a> {
    /// The type implied by the endpoint (`/v1/track`), if any.
    pub implied_type: Option<EventType>,
    pub received_at: DateTime<Utc>,
    /// The batch-level `sentAt`, used when the message has none.
    pub batch_sent_at: Option<DateTime<Utc>>,
    /// The batch-level context, merged under the message's own.
    pub batch_context: Option<&'a JsonMap>,
    pub source: &'a str,
    pub request_id: &'a str,
    pub ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

fn parse_optional_timestamp(
    field: &'static str,
    value: Option<String>,
) -> Result<Option<DateTime<Utc>>, NormalizeError> {
    match value {
        None => Ok(None),
        Some(text) if text.is_empty() => Ok(None),
        Some(text) => match parse_timestamp(&text) {
            Some(time) => Ok(Some(time)),
            None => Err(NormalizeError::InvalidTimestamp {
                field,
                value: truncate(&text, 64),
            }),
        },
    }
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

/// Turns a decoded message into the canonical event: checks the type's required fields, generates a
/// messageId when absent, corrects the timestamp for client clock skew, and adds the server fields.
pub fn normalize_message(
    message: InboundMessage,
    defaults: &MessageDefaults<'_>,
) -> Result<Event, NormalizeError> {
    let kind = match (message.kind.as_deref(), defaults.implied_type) {
        (None, Some(implied)) => implied,
        (None, None) => return Err(NormalizeError::MissingType),
        (Some(found), implied) => {
            let parsed = EventType::parse(found)
                .ok_or_else(|| NormalizeError::UnknownType(truncate(found, 32)))?;
            match implied {
                Some(endpoint) if endpoint != parsed => {
                    return Err(NormalizeError::TypeMismatch {
                        found: parsed.as_str().to_string(),
                        endpoint: endpoint.as_str(),
                    })
                }
                _ => parsed,
            }
        }
    };
    if message.user_id.is_none() && message.anonymous_id.is_none() {
        return Err(NormalizeError::MissingIdentity);
    }
    let event_name = message.event.filter(|name| !name.is_empty());
    match kind {
        EventType::Track if event_name.is_none() => {
            return Err(NormalizeError::MissingField("event", "track"))
        }
        EventType::Group if message.group_id.is_none() => {
            return Err(NormalizeError::MissingField("groupId", "group"))
        }
        EventType::Alias if message.previous_id.is_none() => {
            return Err(NormalizeError::MissingField("previousId", "alias"))
        }
        _ => {}
    }

    let client_timestamp = match parse_optional_timestamp("timestamp", message.timestamp)? {
        Some(time) => Some(time),
        None => parse_optional_timestamp("originalTimestamp", message.original_timestamp)?,
    };
    let sent_at = parse_optional_timestamp("sentAt", message.sent_at)?.or(defaults.batch_sent_at);
    let received_at = defaults.received_at;
    let (timestamp, original_timestamp) = match (client_timestamp, sent_at) {
        (Some(original), Some(sent)) => (received_at - (sent - original), Some(original)),
        (Some(original), None) => (original, None),
        (None, _) => (received_at, None),
    };

    let mut context = message.context.unwrap_or_default();
    if let Some(batch_context) = defaults.batch_context {
        for (key, value) in batch_context {
            context.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }
    let user_agent = defaults.user_agent.map(str::to_string).or_else(|| {
        context
            .get("userAgent")
            .and_then(|v| v.as_str())
            .map(str::to_string)
    });

    Ok(Event {
        kind,
        message_id: message
            .message_id
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
        event: if kind == EventType::Track {
            event_name
        } else {
            None
        },
        name: message.name.filter(|name| !name.is_empty()),
        user_id: message.user_id,
        anonymous_id: message.anonymous_id,
        group_id: message.group_id,
        previous_id: message.previous_id,
        timestamp,
        original_timestamp,
        sent_at,
        received_at,
        properties: message.properties.unwrap_or_default(),
        traits: message.traits.unwrap_or_default(),
        context,
        integrations: message.integrations.unwrap_or_default(),
        source: defaults.source.to_string(),
        request_id: defaults.request_id.to_string(),
        ip: defaults.ip.map(str::to_string),
        user_agent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::format_timestamp;

    fn defaults() -> MessageDefaults<'static> {
        MessageDefaults {
            implied_type: None,
            received_at: parse_timestamp("2024-05-01T12:00:10Z").unwrap(),
            batch_sent_at: None,
            batch_context: None,
            source: "web",
            request_id: "req-1",
            ip: Some("203.0.113.9"),
            user_agent: None,
        }
    }

    fn normalize(json: &str) -> Result<Event, NormalizeError> {
        normalize_message(InboundMessage::from_json(json)?, &defaults())
    }

    #[test]
    fn corrects_skewed_client_clock() {
        // Client clock is 1 hour fast: it says it sent at 13:00:05 an event from 13:00:00.
        let event = normalize(
            r#"{"type":"track","event":"Signed Up","userId":"u1",
                "timestamp":"2024-05-01T13:00:00Z","sentAt":"2024-05-01T13:00:05Z"}"#,
        )
        .unwrap();
        assert_eq!(
            format_timestamp(&event.timestamp),
            "2024-05-01T12:00:05.000Z"
        );
        assert_eq!(
            format_timestamp(&event.original_timestamp.unwrap()),
            "2024-05-01T13:00:00.000Z"
        );
        assert_eq!(event.source, "web");
        assert_eq!(event.ip.as_deref(), Some("203.0.113.9"));
    }

    #[test]
    fn generates_message_id_and_uses_received_at_without_timestamp() {
        let event =
            normalize(r#"{"type":"identify","userId":42,"traits":{"plan":"pro"}}"#).unwrap();
        assert_eq!(event.user_id.as_deref(), Some("42"));
        assert_eq!(
            uuid::Uuid::parse_str(&event.message_id)
                .unwrap()
                .get_version_num(),
            7
        );
        assert_eq!(event.timestamp, event.received_at);
        assert!(event.original_timestamp.is_none());
    }

    #[test]
    fn rejects_with_reasons_naming_the_problem() {
        assert_eq!(
            normalize(r#"{"type":"track","event":"x"}"#).unwrap_err(),
            NormalizeError::MissingIdentity
        );
        assert_eq!(
            normalize(r#"{"type":"track","userId":"u"}"#).unwrap_err(),
            NormalizeError::MissingField("event", "track")
        );
        assert_eq!(
            normalize(r#"{"type":"bogus","userId":"u"}"#).unwrap_err(),
            NormalizeError::UnknownType("bogus".into())
        );
        let wrong_type = normalize(r#"{"type":"track","event":"x","userId":"u","properties":[1]}"#)
            .unwrap_err()
            .to_string();
        assert!(
            wrong_type.starts_with("properties: invalid type"),
            "{wrong_type}"
        );
        let bad_id = normalize(r#"{"type":"track","event":"x","userId":{"a":1}}"#)
            .unwrap_err()
            .to_string();
        assert!(bad_id.starts_with("userId:"), "{bad_id}");
        let bad_time = normalize(r#"{"type":"page","userId":"u","timestamp":"soon"}"#).unwrap_err();
        assert_eq!(
            bad_time,
            NormalizeError::InvalidTimestamp {
                field: "timestamp",
                value: "soon".into()
            }
        );
    }

    #[test]
    fn ids_are_strings_or_numbers_and_empty_or_null_ones_are_absent() {
        let decoded = |id: &str| {
            serde_json::from_str::<InboundMessage>(&format!(r#"{{"userId":{id},"type":"track"}}"#))
                .map(|message| message.user_id)
                .map_err(|error| error.to_string())
        };
        assert_eq!(decoded(r#""u-1""#), Ok(Some("u-1".into())));
        assert_eq!(
            decoded(r#""with \"escape\"""#),
            Ok(Some("with \"escape\"".into()))
        );
        assert_eq!(decoded("42"), Ok(Some("42".into())));
        assert_eq!(decoded("-7"), Ok(Some("-7".into())));
        assert_eq!(
            decoded("18446744073709551615"),
            Ok(Some("18446744073709551615".into()))
        );
        assert_eq!(decoded("1.5"), Ok(Some("1.5".into())));
        assert_eq!(decoded("1e3"), Ok(Some("1000.0".into())));
        assert_eq!(decoded(r#""""#), Ok(None));
        assert_eq!(decoded("null"), Ok(None));
        for (id, type_name) in [
            ("true", "boolean"),
            ("[1]", "array"),
            (r#"{"a":1}"#, "object"),
        ] {
            let error = decoded(id).unwrap_err();
            assert!(
                error.starts_with(&format!(
                    "invalid type: {type_name}, expected a string or a number"
                )),
                "{id}: {error}"
            );
        }
    }

    #[test]
    fn endpoint_type_is_implied_and_checked() {
        let mut with_track = defaults();
        with_track.implied_type = Some(EventType::Track);
        let message = InboundMessage::from_json(r#"{"event":"x","anonymousId":"a"}"#).unwrap();
        assert_eq!(
            normalize_message(message, &with_track).unwrap().kind,
            EventType::Track
        );
        let message = InboundMessage::from_json(r#"{"type":"page","anonymousId":"a"}"#).unwrap();
        assert!(matches!(
            normalize_message(message, &with_track),
            Err(NormalizeError::TypeMismatch { .. })
        ));
    }

    #[test]
    fn batch_context_fills_gaps_without_overriding() {
        let batch_context: JsonMap =
            serde_json::from_str(r#"{"locale":"de-DE","library":{"name":"batch"}}"#).unwrap();
        let mut with_context = defaults();
        with_context.batch_context = Some(&batch_context);
        let message = InboundMessage::from_json(
            r#"{"type":"screen","name":"Home","anonymousId":"a","context":{"library":{"name":"ios"}}}"#,
        )
        .unwrap();
        let event = normalize_message(message, &with_context).unwrap();
        assert_eq!(event.context_str("library.name"), Some("ios"));
        assert_eq!(event.context_str("locale"), Some("de-DE"));
        assert_eq!(event.name.as_deref(), Some("Home"));
    }

    #[test]
    fn canonical_event_round_trips_through_json() {
        let event = normalize(
            r#"{"type":"track","event":"Order Completed","userId":"u1","messageId":"m-1",
                "properties":{"total":12.5,"items":[{"sku":"a"}]},"context":{"page":{"path":"/cart"}}}"#,
        )
        .unwrap();
        let json = serde_json::to_string(&event).unwrap();
        let back: Event = serde_json::from_str(&json).unwrap();
        assert_eq!(back, event);
        assert_eq!(back.context_str("page.path"), Some("/cart"));
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_input(input in ".{0,200}") {
            if let Ok(message) = InboundMessage::from_json(&input) {
                let _ = normalize_message(message, &defaults());
            }
        }

        #[test]
        fn any_track_with_an_id_is_accepted(user in "[a-zA-Z0-9_-]{1,40}", name in "[ -~]{1,60}") {
            let json = serde_json::json!({"type": "track", "event": name, "userId": user}).to_string();
            let event = normalize(&json).unwrap();
            proptest::prop_assert_eq!(event.user_id.as_deref(), Some(user.as_str()));
            proptest::prop_assert_eq!(event.event.as_deref(), Some(name.as_str()));
        }
    }
}
