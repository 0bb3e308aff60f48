//! Ingest: decoding Segment-spec bodies into messages, normalising and enriching each into the canonical
//! event, and running the global sanitizer chain. Problems with one message reject that message only.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use switchyard_schemas::posthog::{normalize_capture_event, CaptureDefaults};
use switchyard_schemas::segment::{BatchEnvelope, InboundMessage, MessageDefaults, NormalizeError};
use switchyard_schemas::{normalize_message, Event, EventType, JsonMap};

use crate::freeing::{free_one_pending, FreeingOne};
use crate::http::ApiError;
use crate::limits::BodyShape;

/// One rejected message in a response.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Rejection {
    pub index: usize,
    pub reason: String,
    /// The reason's stable code (a metrics label; not in the response).
    #[serde(skip)]
    pub code: &'static str,
    /// Tracking-plan violations (schema path and message each), for events the plan rejected.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<switchyard_schemas::plan::Violation>,
}

/// One decoded message, still to be normalised.
#[derive(Debug)]
pub enum Message {
    /// A Segment-spec message (`/v1/...`).
    Segment(Box<InboundMessage>),
    /// A PostHog capture event (`/batch/`, `/i/v0/e/`, ...): its fields as sent.
    Posthog(JsonMap),
}

impl Message {
    /// Whether the client sent its own message id (`messageId`, PostHog's `uuid`).
    fn has_client_id(&self) -> bool {
        match self {
            Message::Segment(message) => message.message_id.is_some(),
            Message::Posthog(fields) => fields
                .get("uuid")
                .and_then(|v| v.as_str())
                .is_some_and(|id| !id.trim().is_empty()),
        }
    }
}

/// A decoded request body: its messages, still to be normalised, and batch-level fields.
pub struct DecodedBody {
    pub write_key: Option<String>,
    pub batch_sent_at: Option<DateTime<Utc>>,
    pub batch_context: Option<JsonMap>,
    pub messages: Vec<Result<Message, NormalizeError>>,
    /// Whether a client-supplied IP (PostHog's `$ip`) may stand for the client: only when the request's
    /// socket peer is a trusted proxy.
    pub trust_ip_property: bool,
    /// The length of the longest message's JSON text, for Segment-spec messages (whose events take
    /// their object members from that text and the batch's `context` only); None where normalising
    /// may add members (PostHog events) or the texts are not at hand.
    pub longest_segment_message: Option<usize>,
}

impl DecodedBody {
    /// An upper bound on the object members of any event normalised from this body, when one is
    /// known without looking at the events: the longest message text's bound plus the batch
    /// context's members (each event may take all of them). Lets ingest skip counting every
    /// event's members when no event can be over `limits.max_properties`.
    pub fn event_members_at_most(&self) -> Option<usize> {
        let longest = self.longest_segment_message?;
        let batch_context = self
            .batch_context
            .as_ref()
            .map_or(0, crate::limits::map_members);
        Some(crate::limits::members_in_text_at_most(longest) + batch_context)
    }
}

fn decode_message(
    raw: &RawValue,
    max_event_bytes: usize,
) -> Result<InboundMessage, NormalizeError> {
    let text = raw.get();
    if text.len() > max_event_bytes {
        return Err(NormalizeError::TooLarge {
            size: text.len(),
            limit: max_event_bytes,
        });
    }
    if !text.starts_with('{') {
        return Err(NormalizeError::Malformed(
            "message must be a JSON object".into(),
        ));
    }
    InboundMessage::from_json(text)
}

fn malformed(error: serde_json::Error) -> ApiError {
    ApiError::bad_request(
        "malformed_json",
        format!("request body is not valid JSON: {error}"),
    )
}

/// Decodes the body of `/v1/batch` (`implied_type = None`) or of `/v1/<type>` (one message).
pub fn decode_body(
    body: &[u8],
    implied_type: Option<EventType>,
    max_event_bytes: usize,
) -> Result<DecodedBody, ApiError> {
    decode_scanned_body(
        body,
        &crate::limits::body_shape(body),
        implied_type,
        max_event_bytes,
    )
}

/// [`decode_body`] for a body already scanned by [`crate::limits::body_shape`] (the nesting check
/// scans every body first).
pub fn decode_scanned_body(
    body: &[u8],
    shape: &BodyShape,
    implied_type: Option<EventType>,
    max_event_bytes: usize,
) -> Result<DecodedBody, ApiError> {
    if implied_type.is_some() {
        let raw: &RawValue = serde_json::from_slice(body).map_err(malformed)?;
        if !raw.get().starts_with('{') {
            return Err(ApiError::bad_request(
                "malformed_json",
                "request body must be a JSON object",
            ));
        }
        let message = decode_message(raw, max_event_bytes);
        let write_key = message.as_ref().ok().and_then(|m| m.write_key.clone());
        return Ok(DecodedBody {
            write_key,
            batch_sent_at: None,
            batch_context: None,
            messages: vec![message.map(|m| Message::Segment(Box::new(m)))],
            trust_ip_property: false,
            longest_segment_message: Some(raw.get().len()),
        });
    }
    if let Some(decoded) = decode_valid_batch(body, shape, max_event_bytes) {
        return Ok(decoded);
    }
    let envelope: BatchEnvelope<&RawValue> = serde_json::from_slice(body).map_err(|error| {
        if error.is_data() {
            ApiError::bad_request(
                "invalid_batch",
                format!("expected {{\"batch\": [messages...]}}: {error}"),
            )
        } else {
            malformed(error)
        }
    })?;
    let batch_sent_at = batch_sent_at(envelope.sent_at.as_deref())?;
    let messages = envelope
        .batch
        .iter()
        .map(|raw| {
            let message = decode_message(raw, max_event_bytes);
            free_one_pending();
            message.map(|m| Message::Segment(Box::new(m)))
        })
        .collect();
    Ok(DecodedBody {
        write_key: envelope.write_key,
        batch_sent_at,
        batch_context: envelope.context,
        messages,
        trust_ip_property: false,
        longest_segment_message: Some(
            envelope
                .batch
                .iter()
                .map(|raw| raw.get().len())
                .max()
                .unwrap_or(0),
        ),
    })
}

/// The fast path of a batch: the whole body decoded in one pass, without first finding each
/// message's extent. Taken only when it gives exactly what decoding each message alone would: every
/// message (found by the scan) is an object within the size limit and the body decodes as a whole.
/// Otherwise None, and the caller decodes message by message so one bad message is rejected alone.
fn decode_valid_batch(
    body: &[u8],
    shape: &BodyShape,
    max_event_bytes: usize,
) -> Option<DecodedBody> {
    let elements = shape.batch_elements.as_ref()?;
    let all_plain_objects = elements
        .iter()
        .all(|span| span.len() <= max_event_bytes && body.get(span.start) == Some(&b'{'));
    if !all_plain_objects {
        return None;
    }
    // One UTF-8 check of the whole body, then the `str` reader, which skips the per-string checks
    // the byte reader makes (those made the one-pass decode slower than the two passes).
    let text = std::str::from_utf8(body).ok()?;
    // Each message decoded straight into its box: the batch's vector then grows by pointers, not by
    // copies of whole messages, and no message is moved again to be boxed.
    let envelope: BatchEnvelope<FreeingOne<Box<InboundMessage>>> =
        serde_json::from_str(text).ok()?;
    if envelope.batch.len() != elements.len() {
        return None;
    }
    let batch_sent_at = batch_sent_at(envelope.sent_at.as_deref()).ok()?;
    Some(DecodedBody {
        write_key: envelope.write_key,
        batch_sent_at,
        batch_context: envelope.context,
        messages: envelope
            .batch
            .into_iter()
            .map(|message| Ok(Message::Segment(message.0)))
            .collect(),
        trust_ip_property: false,
        longest_segment_message: Some(elements.iter().map(|span| span.len()).max().unwrap_or(0)),
    })
}

/// The batch's `sentAt`, when given and not empty.
fn batch_sent_at(sent_at: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    match sent_at {
        None | Some("") => Ok(None),
        Some(text) => switchyard_schemas::time::parse_timestamp(text)
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_batch",
                    format!(
                        "sentAt: invalid timestamp `{}`",
                        text.chars().take(64).collect::<String>()
                    ),
                )
            }),
    }
}

/// Server-side facts about the request, added to every event.
pub struct RequestFacts<'a> {
    pub implied_type: Option<EventType>,
    pub received_at: DateTime<Utc>,
    pub source: &'a str,
    pub request_id: &'a str,
    pub ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

/// The events of a request after normalisation.
pub struct Normalized {
    pub events: Vec<Event>,
    /// For each event, whether the client sent its messageId (server-generated ones are unique).
    pub client_message_ids: Vec<bool>,
    pub rejected: Vec<Rejection>,
}

/// Normalises every decoded message; returns the events and the rejections (by index in the batch).
pub fn normalize_all(decoded: DecodedBody, facts: &RequestFacts<'_>) -> Normalized {
    let defaults = MessageDefaults {
        implied_type: facts.implied_type,
        received_at: facts.received_at,
        batch_sent_at: decoded.batch_sent_at,
        batch_context: decoded.batch_context.as_ref(),
        source: facts.source,
        request_id: facts.request_id,
        ip: facts.ip,
        user_agent: facts.user_agent,
    };
    let capture_defaults = CaptureDefaults {
        received_at: facts.received_at,
        sent_at: decoded.batch_sent_at,
        source: facts.source,
        request_id: facts.request_id,
        ip: facts.ip,
        user_agent: facts.user_agent,
        trust_ip_property: decoded.trust_ip_property,
    };
    let mut events = Vec::with_capacity(decoded.messages.len());
    let mut client_message_ids = Vec::with_capacity(decoded.messages.len());
    let mut rejected = Vec::new();
    for (index, message) in decoded.messages.into_iter().enumerate() {
        let client_id = message.as_ref().is_ok_and(Message::has_client_id);
        let normalized = message.and_then(|message| match message {
            Message::Segment(message) => normalize_message(*message, &defaults),
            Message::Posthog(fields) => normalize_capture_event(fields, &capture_defaults),
        });
        match normalized {
            Ok(event) => {
                events.push(event);
                client_message_ids.push(client_id);
            }
            Err(error) => rejected.push(Rejection {
                index,
                reason: error.to_string(),
                code: error.code(),
                violations: Vec::new(),
            }),
        }
    }
    Normalized {
        events,
        client_message_ids,
        rejected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> RequestFacts<'static> {
        RequestFacts {
            implied_type: None,
            received_at: Utc::now(),
            source: "web",
            request_id: "r",
            ip: None,
            user_agent: None,
        }
    }

    #[test]
    fn bad_messages_are_rejected_alone() {
        let body = br#"{"batch":[
            {"type":"track","event":"ok","userId":"u"},
            {"type":"track","event":"no id"},
            "not an object",
            {"type":"identify","anonymousId":"a","traits":{"big":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}},
            {"type":"page","userId":"u","properties":{"path":"/"}}
        ],"writeKey":"wk"}"#;
        let decoded = decode_body(body, None, 100).unwrap();
        assert_eq!(decoded.write_key.as_deref(), Some("wk"));
        let Normalized {
            events,
            rejected,
            client_message_ids,
        } = normalize_all(decoded, &facts());
        assert_eq!(events.len(), 2);
        assert_eq!(client_message_ids, vec![false, false]);
        let indexes: Vec<usize> = rejected.iter().map(|r| r.index).collect();
        assert_eq!(indexes, vec![1, 2, 3]);
        assert!(rejected[2].reason.contains("over the limit of 100 bytes"));
    }

    #[test]
    fn the_one_pass_decode_gives_what_decoding_each_message_alone_gives() {
        let body = r#"{"sentAt":"2024-05-01T10:00:05Z","context":{"app":{"name":"shop"},"locale":"de"},
            "batch":[
            {"type":"track","event":"Order \u00e9","userId":42,"messageId":"m1","timestamp":"2024-05-01T10:00:00Z",
             "properties":{"total":12.5,"items":[{"sku":"a","tags":["x",null,true]}],"note":"a \"quoted\" ] , text"},
             "context":{"locale":"fr"},"integrations":{"All":true}},
            {"type":"identify","anonymousId":"a1","messageId":"m2","traits":{"email":"jane@example.com","n":-1e3}},
            {"type":"page","name":"Home","userId":"u","messageId":"m3","channel":"web","_metadata":{"x":[1]}}
            ],"writeKey":"wk"}"#;
        let shape = crate::limits::body_shape(body.as_bytes());
        assert!(decode_valid_batch(body.as_bytes(), &shape, 1000).is_some());
        let one_pass = decode_body(body.as_bytes(), None, 1000).unwrap();
        let unscanned = BodyShape {
            shape: shape.shape,
            batch_elements: None,
        };
        let alone = decode_scanned_body(body.as_bytes(), &unscanned, None, 1000).unwrap();
        assert_eq!(one_pass.write_key, alone.write_key);
        let facts = facts();
        let encode = |normalized: Normalized| {
            assert!(normalized.rejected.is_empty());
            serde_json::to_string(&normalized.events).unwrap()
        };
        assert_eq!(
            encode(normalize_all(one_pass, &facts)),
            encode(normalize_all(alone, &facts))
        );
    }

    #[test]
    fn a_message_of_the_wrong_shape_sends_the_batch_down_the_message_by_message_path() {
        let body = br#"{"batch":[{"type":"track","event":"a","userId":"u"},{"type":"track","event":"b","userId":"u","properties":5},{"type":"track","event":"c","userId":"u"}]}"#;
        let shape = crate::limits::body_shape(body);
        assert!(decode_valid_batch(body, &shape, 1000).is_none());
        let normalized = normalize_all(decode_body(body, None, 1000).unwrap(), &facts());
        assert_eq!(normalized.events.len(), 2);
        assert_eq!(normalized.rejected[0].index, 1);
        assert!(
            normalized.rejected[0].reason.starts_with("properties:"),
            "{}",
            normalized.rejected[0].reason
        );
        // Too large, or not an object: found by the scan before any decoding.
        let big = format!(
            r#"{{"batch":[{{"type":"track","event":"{}","userId":"u"}}]}}"#,
            "x".repeat(200)
        );
        let shape = crate::limits::body_shape(big.as_bytes());
        assert!(decode_valid_batch(big.as_bytes(), &shape, 100).is_none());
        assert!(decode_valid_batch(big.as_bytes(), &shape, 1000).is_some());
        let array = br#"{"batch":[["type","track"]]}"#;
        assert!(decode_valid_batch(array, &crate::limits::body_shape(array), 1000).is_none());
    }

    #[test]
    fn the_member_bound_covers_every_event_on_every_decode_path() {
        let wide = |n: usize| -> JsonMap {
            (0..n)
                .map(|i| (format!("k{i}"), serde_json::json!({"": [{"": 0}]})))
                .collect()
        };
        let message = |n: usize| {
            serde_json::json!({"type": "track", "event": "e", "userId": "u",
                "properties": wide(n), "context": {"page": wide(n / 2)}})
        };
        let batch = serde_json::json!({"batch": [message(3), message(40), message(0)],
            "context": {"library": wide(7), "locale": "en"}});
        let with_bad_message = serde_json::json!({"batch": [message(12), "not an object"],
            "context": {"library": wide(30)}});
        let bodies: [(&str, Vec<u8>, Option<EventType>); 3] = [
            ("the one-pass batch", batch.to_string().into_bytes(), None),
            (
                "message by message",
                with_bad_message.to_string().into_bytes(),
                None,
            ),
            (
                "one message",
                message(25).to_string().into_bytes(),
                Some(EventType::Track),
            ),
        ];
        for (path, body, implied) in bodies {
            let decoded = decode_body(&body, implied, 1 << 20).unwrap();
            let bound = decoded.event_members_at_most().unwrap();
            let normalized = normalize_all(
                decoded,
                &RequestFacts {
                    implied_type: implied,
                    ..facts()
                },
            );
            assert!(!normalized.events.is_empty(), "{path}");
            for event in &normalized.events {
                let members = crate::limits::event_members(event);
                assert!(
                    members <= bound,
                    "{path}: {members} members over the bound {bound}"
                );
            }
        }
    }

    #[test]
    fn whole_request_problems_are_errors() {
        assert_eq!(
            decode_body(b"{\"batch\": [", None, 100).err().unwrap().code,
            "malformed_json"
        );
        assert_eq!(
            decode_body(b"{\"nope\": 1}", None, 100).err().unwrap().code,
            "invalid_batch"
        );
        assert_eq!(
            decode_body(b"[1,2]", None, 100).err().unwrap().code,
            "invalid_batch"
        );
        assert_eq!(
            decode_body(b"[]", Some(EventType::Track), 100)
                .err()
                .unwrap()
                .code,
            "malformed_json"
        );
        assert_eq!(
            decode_body(b"\xff\xfe", None, 100).err().unwrap().code,
            "malformed_json"
        );
    }

    #[test]
    fn single_message_endpoint_reads_write_key_from_body() {
        let decoded = decode_body(
            br#"{"event":"x","userId":"u","writeKey":"k"}"#,
            Some(EventType::Track),
            1000,
        )
        .unwrap();
        assert_eq!(decoded.write_key.as_deref(), Some("k"));
        let mut facts = facts();
        facts.implied_type = Some(EventType::Track);
        let normalized = normalize_all(decoded, &facts);
        assert!(normalized.rejected.is_empty());
        assert_eq!(normalized.events[0].kind, EventType::Track);
    }

    proptest::proptest! {
        #[test]
        fn decoder_never_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            if let Ok(decoded) = decode_body(&body, None, 1000) {
                let _ = normalize_all(decoded, &facts());
            }
            let _ = decode_body(&body, Some(EventType::Page), 1000);
        }

        #[test]
        fn json_shaped_bodies_never_panic(inner in "[\\[\\]{}\",:a-z0-9 ]{0,200}") {
            let body = format!("{{\"batch\":[{inner}]}}");
            if let Ok(decoded) = decode_body(body.as_bytes(), None, 1000) {
                let _ = normalize_all(decoded, &facts());
            }
        }
    }
}
