//! Fuzz target: PostHog capture requests (`/batch/`, `/e/`, ...) through every decoding layer, the
//! event parser and the PostHog -> canonical mapping. The first byte picks how the request is framed
//! (query string, content type, Content-Encoding), the rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_router::ingest::{normalize_all, DecodedBody, Message, RequestFacts};
use switchyard_router::posthog_capture::{decode_capture, CaptureLimits, CaptureRequest};

const FRAMES: [(Option<&str>, Option<&str>, Option<&str>); 8] = [
    (None, None, None),
    (
        Some("compression=gzip-js&ver=1.0&_=1714564805000"),
        Some("text/plain"),
        None,
    ),
    (Some("compression=base64"), None, None),
    (
        Some("compression=lz64"),
        Some("application/x-www-form-urlencoded"),
        None,
    ),
    (None, Some("application/x-www-form-urlencoded"), None),
    (None, None, Some("gzip")),
    (None, None, Some("lz64")),
    (Some("data="), Some("application/json"), Some("base64")),
];

const LIMITS: CaptureLimits = CaptureLimits {
    max_body_bytes: 64 * 1024,
    max_decompressed_bytes: 256 * 1024,
    max_event_bytes: 16 * 1024,
};

fuzz_target!(|data: &[u8]| {
    let Some((selector, body)) = data.split_first() else {
        return;
    };
    let (query, content_type, content_encoding) = FRAMES[usize::from(*selector) % FRAMES.len()];
    let request = CaptureRequest {
        query,
        content_type,
        content_encoding,
        body,
    };
    let Ok(decoded) = decode_capture(&request, &LIMITS) else {
        return;
    };
    let count = decoded.events.len();
    let body = DecodedBody {
        write_key: None,
        batch_sent_at: decoded.sent_at,
        batch_context: None,
        messages: decoded
            .events
            .into_iter()
            .map(|event| event.map(Message::Posthog))
            .collect(),
        trust_ip_property: selector & 1 == 1,
    };
    let facts = RequestFacts {
        implied_type: None,
        received_at: chrono::Utc::now(),
        source: "fuzz",
        request_id: "fuzz",
        ip: Some("127.0.0.1"),
        user_agent: None,
    };
    let normalized = normalize_all(body, &facts);
    assert_eq!(normalized.events.len() + normalized.rejected.len(), count);
    for event in &normalized.events {
        assert!(event.user_id.is_some() || event.anonymous_id.is_some());
        assert!(
            !event.properties.contains_key("token"),
            "the project key never reaches a sink"
        );
        if selector & 1 == 0 {
            assert!(
                !event.properties.contains_key("$ip"),
                "$ip only from trusted proxies"
            );
        }
    }
});
