//! Replays every committed fuzz seed (fuzz/seeds/<target>/) through the same decoders and checks as
//! the cargo-fuzz targets, so the seeds (and any crash input added there as a regression) run in every
//! `cargo test`, without the nightly tooling the fuzzer itself needs.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use switchyard_router::body::decode_content;
use switchyard_router::ingest::{decode_body, normalize_all, DecodedBody, Message, RequestFacts};
use switchyard_router::lz_string::decompress_base64_utf16;
use switchyard_router::posthog_capture::{
    decode_capture, decode_payload, CaptureLimits, CaptureRequest,
};
use switchyard_schemas::EventType;

fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    files
        .into_iter()
        .map(|path| {
            let data = std::fs::read(&path).unwrap();
            (path, data)
        })
        .collect()
}

fn facts(implied_type: Option<EventType>) -> RequestFacts<'static> {
    RequestFacts {
        implied_type,
        received_at: chrono::Utc::now(),
        source: "fuzz",
        request_id: "fuzz",
        ip: Some("127.0.0.1"),
        user_agent: None,
    }
}

#[test]
fn segment_seeds() {
    let mut accepted = 0;
    for (path, body) in seeds("segment_batch") {
        let Ok(decoded) = decode_body(&body, None, 32 * 1024) else {
            continue;
        };
        let count = decoded.messages.len();
        let normalized = normalize_all(decoded, &facts(None));
        assert_eq!(
            normalized.events.len() + normalized.rejected.len(),
            count,
            "{}",
            path.display()
        );
        accepted += normalized.events.len();
    }
    assert!(accepted >= 5, "the valid batch seed is accepted");
    for (path, data) in seeds("segment_single") {
        let (selector, body) = data.split_first().unwrap();
        let kind = EventType::ALL[usize::from(*selector) % EventType::ALL.len()];
        if let Ok(decoded) = decode_body(body, Some(kind), 32 * 1024) {
            for event in normalize_all(decoded, &facts(Some(kind))).events {
                assert_eq!(event.kind, kind, "{}", path.display());
            }
        }
    }
}

#[test]
fn posthog_seeds() {
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
    let limits = CaptureLimits {
        max_body_bytes: 64 * 1024,
        max_decompressed_bytes: 256 * 1024,
        max_event_bytes: 16 * 1024,
    };
    for (path, data) in seeds("posthog_capture") {
        let (selector, body) = data.split_first().unwrap();
        let (query, content_type, content_encoding) = FRAMES[usize::from(*selector) % FRAMES.len()];
        let request = CaptureRequest {
            query,
            content_type,
            content_encoding,
            body,
        };
        // Every capture seed is a well-formed request in one of the encodings.
        let decoded = decode_capture(&request, &limits)
            .unwrap_or_else(|e| panic!("{}: {} {}", path.display(), e.code, e.message));
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
            trust_ip_property: false,
        };
        let normalized = normalize_all(body, &facts(None));
        assert_eq!(normalized.events.len(), count, "{}", path.display());
        for event in &normalized.events {
            assert!(!event.properties.contains_key("token"));
            assert!(!event.properties.contains_key("$ip"));
        }
    }
    for (path, body) in seeds("base64_layer") {
        for content_type in [None, Some("application/x-www-form-urlencoded")] {
            let request = CaptureRequest {
                query: None,
                content_type,
                content_encoding: None,
                body: &body,
            };
            let payload = decode_payload(&request, &limits)
                .unwrap_or_else(|e| panic!("{}: {}", path.display(), e.message));
            assert!(payload.json.starts_with(b"{") || payload.json.starts_with(b"["));
        }
    }
}

#[test]
fn layer_seeds() {
    for (path, body) in seeds("gzip_layer") {
        let decoded = decode_content(Bytes::from(body.clone()), None, 64 * 1024)
            .unwrap_or_else(|e| panic!("{}: {}", path.display(), e.message));
        assert!(decoded.len() <= 64 * 1024);
    }
    for (path, body) in seeds("lz64_layer") {
        let text = std::str::from_utf8(&body).unwrap();
        let ours = decompress_base64_utf16(text, 1 << 20)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let reference = lz_str::decompress_from_base64(text).expect("lz-str reads the seed");
        assert_eq!(ours, reference, "{}", path.display());
    }
}
