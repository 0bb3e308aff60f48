//! Replays every committed fuzz seed (fuzz/seeds/<target>/) through the same decoders and checks as
//! the cargo-fuzz targets, so the seeds (and any crash input added there as a regression) run in every
//! `cargo test`, without the nightly tooling the fuzzer itself needs.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use switchyard_router::body::decode_content;
use switchyard_router::ingest::{decode_body, normalize_all, RequestFacts};
use switchyard_router::lz_string::decompress_base64_utf16;
use switchyard_router::posthog_capture::{decode_capture, decode_payload, CaptureRequest};
use switchyard_schemas::EventType;

#[path = "../../fuzz/capture_frames.rs"]
mod capture_frames;

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
    let limits = capture_frames::LIMITS;
    for (path, data) in seeds("posthog_capture") {
        let (_, request) = capture_frames::framed(&data).unwrap();
        // Every capture seed is a well-formed request in one of the encodings.
        let decoded = decode_capture(&request, &limits)
            .unwrap_or_else(|e| panic!("{}: {} {}", path.display(), e.code, e.message));
        let count = decoded.events.len();
        let body = decoded.into_body(false);
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
