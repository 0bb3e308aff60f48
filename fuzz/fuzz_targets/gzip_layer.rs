//! Fuzz target: the gzip layer shared by every endpoint (magic-byte detection, Content-Encoding,
//! inflation capped at `max_decompressed_bytes`).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use switchyard_router::body::decode_content;

const CAP: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    for encoding in [None, Some("gzip"), Some("x-gzip"), Some("identity")] {
        if let Ok(decoded) = decode_content(Bytes::copy_from_slice(data), encoding, CAP) {
            // Inflated output obeys the cap; anything else passes through untouched.
            if data.starts_with(&[0x1f, 0x8b]) {
                assert!(decoded.len() <= CAP);
            } else {
                assert_eq!(&decoded[..], data);
            }
        }
    }
});
