//! Fuzz target: the base64 and urlencoded-form layers of PostHog payloads (`compression=base64`,
//! `data=` forms, base64 recognised by its alphabet), every output within the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_router::posthog_capture::{decode_payload, CaptureLimits, CaptureRequest};

const LIMITS: CaptureLimits = CaptureLimits {
    max_body_bytes: 64 * 1024,
    max_decompressed_bytes: 128 * 1024,
    max_event_bytes: 16 * 1024,
};

fuzz_target!(|data: &[u8]| {
    for (query, content_type) in [
        (Some("compression=base64"), None),
        (None, None),
        (None, Some("application/x-www-form-urlencoded")),
        (
            Some("compression=b64"),
            Some("application/x-www-form-urlencoded; charset=UTF-8"),
        ),
    ] {
        let request = CaptureRequest {
            query,
            content_type,
            content_encoding: None,
            body: data,
        };
        if let Ok(payload) = decode_payload(&request, &LIMITS) {
            assert!(payload.json.len() <= LIMITS.max_decompressed_bytes);
            let first = payload.json.iter().find(|b| !b.is_ascii_whitespace());
            assert!(
                matches!(first, Some(b'{') | Some(b'[')),
                "only JSON comes out"
            );
        }
    }
});
