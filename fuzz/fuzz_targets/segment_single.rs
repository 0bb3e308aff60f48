//! Fuzz target: `POST /v1/<type>` single-message bodies (the first byte picks the type).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_router::ingest::{decode_body, normalize_all, RequestFacts};
use switchyard_schemas::EventType;

fuzz_target!(|data: &[u8]| {
    let Some((selector, body)) = data.split_first() else {
        return;
    };
    let kind = EventType::ALL[usize::from(*selector) % EventType::ALL.len()];
    let Ok(decoded) = decode_body(body, Some(kind), 32 * 1024) else {
        return;
    };
    assert_eq!(decoded.messages.len(), 1);
    let facts = RequestFacts {
        implied_type: Some(kind),
        received_at: chrono::Utc::now(),
        source: "fuzz",
        request_id: "fuzz",
        ip: None,
        user_agent: Some("fuzz"),
    };
    let normalized = normalize_all(decoded, &facts);
    for event in &normalized.events {
        assert_eq!(
            event.kind, kind,
            "the endpoint's type wins or the message is rejected"
        );
        assert!(event.user_id.is_some() || event.anonymous_id.is_some());
    }
});
