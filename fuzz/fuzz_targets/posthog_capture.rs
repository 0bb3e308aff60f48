//! Fuzz target: PostHog capture requests (`/batch/`, `/e/`, ...) through every decoding layer, the
//! event parser and the PostHog -> canonical mapping. The first byte picks how the request is framed
//! (query string, content type, Content-Encoding), the rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_router::ingest::{normalize_all, RequestFacts};
use switchyard_router::posthog_capture::decode_capture;

#[path = "../capture_frames.rs"]
mod capture_frames;

fuzz_target!(|data: &[u8]| {
    let Some((selector, request)) = capture_frames::framed(data) else {
        return;
    };
    let Ok(decoded) = decode_capture(&request, &capture_frames::LIMITS) else {
        return;
    };
    let count = decoded.events.len();
    let body = decoded.into_body(selector & 1 == 1);
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
