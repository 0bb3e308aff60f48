//! Fuzz target: `POST /v1/batch` bodies through the Segment decoder and normaliser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_router::ingest::{decode_body, normalize_all, RequestFacts};

fuzz_target!(|body: &[u8]| {
    let Ok(decoded) = decode_body(body, None, 32 * 1024) else {
        return;
    };
    let messages = decoded.messages.len();
    let facts = RequestFacts {
        implied_type: None,
        received_at: chrono::Utc::now(),
        source: "fuzz",
        request_id: "fuzz",
        ip: Some("127.0.0.1"),
        user_agent: None,
    };
    let normalized = normalize_all(decoded, &facts);
    // Every message is either an event or a rejection, never both, never lost.
    assert_eq!(
        normalized.events.len() + normalized.rejected.len(),
        messages
    );
    assert_eq!(normalized.events.len(), normalized.client_message_ids.len());
});
