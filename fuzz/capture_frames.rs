//! How the PostHog capture fuzz input is framed, shared by the fuzz target
//! (fuzz/fuzz_targets/posthog_capture.rs) and the seed replay (router/tests/fuzz_seeds.rs), so the
//! committed seeds are replayed exactly as the fuzzer reads them: the first byte picks the query
//! string, content type and Content-Encoding; the rest is the body.

use switchyard_router::posthog_capture::{CaptureLimits, CaptureRequest};

/// (query, content type, Content-Encoding) by selector byte.
pub const FRAMES: [(Option<&str>, Option<&str>, Option<&str>); 8] = [
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

pub const LIMITS: CaptureLimits = CaptureLimits {
    max_body_bytes: 64 * 1024,
    max_decompressed_bytes: 256 * 1024,
    max_event_bytes: 16 * 1024,
};

/// The selector byte and the request it frames; None for empty input.
pub fn framed(data: &[u8]) -> Option<(u8, CaptureRequest<'_>)> {
    let (selector, body) = data.split_first()?;
    let (query, content_type, content_encoding) = FRAMES[usize::from(*selector) % FRAMES.len()];
    Some((
        *selector,
        CaptureRequest {
            query,
            content_type,
            content_encoding,
            body,
        },
    ))
}
