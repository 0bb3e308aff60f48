//! Reading request bodies within limits: the size cap is enforced while reading (before the whole body
//! is buffered), and gzip bodies are inflated with a cap on the inflated size (gzip bombs).

use std::io::Read;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};

use crate::http::ApiError;

/// Reads at most `max_bytes` of the body within `timeout`; more is a 413, slower a 408.
pub async fn read_limited_within(
    body: Incoming,
    max_bytes: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, ApiError> {
    match tokio::time::timeout(timeout, read_limited(body, max_bytes)).await {
        Ok(result) => result,
        Err(_) => Err(ApiError::new(
            hyper::StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the request body did not arrive within {} s",
                timeout.as_secs()
            ),
        )),
    }
}

/// After the limit is passed, up to this many more bytes are read and thrown away before the 413, so
/// a client still sending its (moderately) oversized body reads the answer instead of a reset.
pub const DRAIN_AFTER_LIMIT: usize = 8 * 1024 * 1024;

/// The most buffer reserved from a body's announced length before its bytes arrive.
const PREALLOCATE_AT_MOST: usize = 256 * 1024;

/// Reads at most `max_bytes` of the body; more is a 413. Bytes past the limit are never buffered.
pub async fn read_limited(mut body: Incoming, max_bytes: usize) -> Result<Bytes, ApiError> {
    // Sized from Content-Length up front: growing the buffer as frames came copied a 50 KB batch
    // about four times over. At most PREALLOCATE_AT_MOST, so a client announcing a big body and
    // sending nothing holds no more memory than it has sent beyond that.
    let announced = usize::try_from(body.size_hint().lower()).unwrap_or(usize::MAX);
    let mut buffer =
        bytes::BytesMut::with_capacity(announced.min(max_bytes).min(PREALLOCATE_AT_MOST));
    let mut drained: Option<usize> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            ApiError::bad_request(
                "body_read_failed",
                format!("could not read the request body: {error}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        match drained.as_mut() {
            Some(count) => {
                *count += data.len();
                if *count > DRAIN_AFTER_LIMIT {
                    break;
                }
            }
            None if buffer.len() + data.len() > max_bytes => {
                drained = Some(buffer.len() + data.len());
                buffer = bytes::BytesMut::new();
            }
            None => buffer.extend_from_slice(&data),
        }
    }
    if drained.is_some() {
        return Err(too_large(max_bytes));
    }
    Ok(buffer.freeze())
}

fn too_large(max_bytes: usize) -> ApiError {
    ApiError::new(
        hyper::StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("request body is over the limit of {max_bytes} bytes"),
    )
}

/// Whether the bytes start with the gzip magic number.
pub fn is_gzip(body: &[u8]) -> bool {
    body.starts_with(&[0x1f, 0x8b])
}

/// Inflates a gzip body, refusing output over `max_inflated` bytes.
pub fn gunzip(body: &[u8], max_inflated: usize) -> Result<Vec<u8>, ApiError> {
    let mut inflated = Vec::with_capacity((body.len() * 4).min(max_inflated));
    let decoder = flate2::read::MultiGzDecoder::new(body);
    match decoder
        .take(max_inflated as u64 + 1)
        .read_to_end(&mut inflated)
    {
        Ok(_) if inflated.len() > max_inflated => Err(ApiError::new(
            hyper::StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("decompressed body is over the limit of {max_inflated} bytes"),
        )),
        Ok(_) => Ok(inflated),
        Err(error) => Err(ApiError::bad_request(
            "bad_gzip",
            format!("invalid gzip body: {error}"),
        )),
    }
}

/// The body as sent, inflated when it is gzip (by header or by magic bytes).
pub fn decode_content(
    body: Bytes,
    content_encoding: Option<&str>,
    max_inflated: usize,
) -> Result<Bytes, ApiError> {
    let encoding = content_encoding.map(|value| value.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("") | Some("identity") | Some("gzip") | Some("x-gzip") => {}
        Some(other) => {
            return Err(ApiError::new(
                hyper::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_encoding",
                format!("Content-Encoding `{other}` is not supported (use gzip or none)"),
            ))
        }
    }
    if is_gzip(&body) {
        Ok(Bytes::from(gunzip(&body, max_inflated)?))
    } else if matches!(encoding.as_deref(), Some("gzip") | Some("x-gzip")) {
        Err(ApiError::bad_request(
            "bad_gzip",
            "Content-Encoding is gzip but the body is not gzip",
        ))
    } else {
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn inflates_by_magic_bytes_and_caps_bombs() {
        let body = gzip(b"{\"batch\":[]}");
        let decoded = decode_content(Bytes::from(body), None, 1024).unwrap();
        assert_eq!(&decoded[..], b"{\"batch\":[]}");
        let bomb = gzip(&vec![b' '; 10 * 1024 * 1024]);
        assert!(bomb.len() < 20_000);
        let error = decode_content(Bytes::from(bomb), Some("gzip"), 1024 * 1024).unwrap_err();
        assert_eq!(error.status, hyper::StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn rejects_lies_and_unknown_encodings() {
        assert_eq!(
            decode_content(Bytes::from_static(b"{}"), Some("gzip"), 1024)
                .unwrap_err()
                .code,
            "bad_gzip"
        );
        assert_eq!(
            decode_content(Bytes::from_static(b"{}"), Some("br"), 1024)
                .unwrap_err()
                .status,
            hyper::StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        let truncated = &gzip(b"hello world")[..10];
        assert_eq!(
            decode_content(Bytes::copy_from_slice(truncated), None, 1024)
                .unwrap_err()
                .code,
            "bad_gzip"
        );
    }
}
