//! PostHog capture API ingest: `POST /batch/`, `/i/v0/e/`, `/e/`, `/capture/`, `/track/` (trailing
//! slash optional), accepting what PostHog's SDKs send, and handing the events to the same pipeline as
//! the Segment endpoints (opt-out, de-duplication, sanitizers, ingest log).
//!
//! A payload may be wrapped in several layers, peeled in any order until JSON appears (at most
//! [`MAX_LAYERS`]): gzip (by magic bytes, whatever `compression` says), a urlencoded form whose
//! `data` field holds the payload (posthog-js `sendBeacon` and old versions), base64
//! (`compression=base64`, or recognised by its alphabet), and lz-string base64 (`compression=lz64`).
//! The payload may also come in the `data` query parameter. Every layer's output is capped by
//! `server.max_decompressed_bytes`; the body as sent by `server.max_body_bytes`.
//!
//! The JSON is one event object, a bare array of events (posthog-js), or `{"api_key", "batch": [...],
//! "sent_at"}` (posthog-node and the other server SDKs). The project token (`api_key` / `token`, on
//! the batch or on the events) names the source via `[sources.<name>] posthog_tokens`. Each event is
//! decoded and normalised alone (`switchyard_schemas::posthog`): a bad event is rejected by index, the
//! others are accepted.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Datelike, Utc};
use hyper::body::Incoming;
use hyper::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;
use switchyard_config::ServerConfig;
use switchyard_schemas::posthog::event_token;
use switchyard_schemas::segment::NormalizeError;
use switchyard_schemas::JsonMap;

use crate::app::App;
use crate::http::{ApiError, Body};
use crate::ingest::{DecodedBody, Message};

/// The capture paths, without their optional trailing slash.
pub const CAPTURE_PATHS: [&str; 5] = ["/batch", "/i/v0/e", "/e", "/capture", "/track"];

/// Most encoding layers peeled off one payload.
pub const MAX_LAYERS: usize = 6;

/// Whether `path` (trailing slashes removed) is a PostHog capture endpoint.
pub fn is_capture_path(path: &str) -> bool {
    CAPTURE_PATHS.contains(&path)
}

/// A `compression` hint (query parameter, form field or Content-Encoding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Lz64,
    Base64,
}

impl Compression {
    /// The names PostHog's SDKs use.
    pub fn parse(value: &str) -> Option<Compression> {
        match value.trim().to_ascii_lowercase().as_str() {
            "gzip" | "gzip-js" | "x-gzip" => Some(Compression::Gzip),
            "lz64" | "lz-string" => Some(Compression::Lz64),
            "base64" | "b64" => Some(Compression::Base64),
            _ => None,
        }
    }
}

/// What a capture request carries, as read off the wire.
#[derive(Debug, Clone, Copy)]
pub struct CaptureRequest<'a> {
    /// The URL query string (without `?`).
    pub query: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub content_encoding: Option<&'a str>,
    pub body: &'a [u8],
}

/// The size limits every decoding layer obeys.
#[derive(Debug, Clone, Copy)]
pub struct CaptureLimits {
    pub max_body_bytes: usize,
    pub max_decompressed_bytes: usize,
    pub max_event_bytes: usize,
}

impl From<&ServerConfig> for CaptureLimits {
    fn from(server: &ServerConfig) -> CaptureLimits {
        CaptureLimits {
            max_body_bytes: server.max_body_bytes,
            max_decompressed_bytes: server.max_decompressed_bytes,
            max_event_bytes: server.max_event_bytes,
        }
    }
}

/// A decoded capture request: the project token, `sent_at`, and each event (or why it was rejected).
#[derive(Debug)]
pub struct DecodedCapture {
    pub token: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
    pub events: Vec<Result<JsonMap, NormalizeError>>,
}

impl DecodedCapture {
    /// The events as the shared ingest path takes them. `trust_ip_property`: whether an event's
    /// `$ip` may stand for the client address (only behind a trusted proxy).
    pub fn into_body(self, trust_ip_property: bool) -> DecodedBody {
        DecodedBody {
            write_key: None,
            batch_sent_at: self.sent_at,
            batch_context: None,
            messages: self
                .events
                .into_iter()
                .map(|event| event.map(Message::Posthog))
                .collect(),
            trust_ip_property,
            // Normalising a capture event may add members (lifted page and library fields).
            longest_segment_message: None,
        }
    }
}

/// The query parameters the capture API reads.
#[derive(Debug, Default)]
struct Query {
    compression: Option<Compression>,
    data: Option<String>,
    /// `_`: when the SDK sent the request, in ms since the epoch (posthog-js).
    sent_at: Option<DateTime<Utc>>,
}

impl Query {
    fn parse(query: Option<&str>) -> Query {
        let mut parsed = Query::default();
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match key.as_ref() {
                "compression" => parsed.compression = Compression::parse(&value),
                "data" if !value.is_empty() => parsed.data = Some(restore_plus(value.into_owned())),
                // Only milliseconds count (as PostHog reads it): a value in seconds lands before 2021.
                "_" => {
                    parsed.sent_at = value
                        .parse::<i64>()
                        .ok()
                        .and_then(DateTime::<Utc>::from_timestamp_millis)
                        .filter(|time| time.year() > 2020)
                }
                _ => {}
            }
        }
        parsed
    }
}

fn bad_encoding(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("bad_encoding", message)
}

fn too_large(max_bytes: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("decoded body is over the limit of {max_bytes} bytes"),
    )
}

/// Urlencoding turns base64's `+` into a space; put it back when the value is base64-shaped.
fn restore_plus(value: String) -> String {
    let base64_shaped = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b' '));
    if base64_shaped && value.contains(' ') {
        value.replace(' ', "+")
    } else {
        value
    }
}

fn is_form_type(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|value| {
        value.split(';').next().is_some_and(|mime| {
            mime.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    })
}

/// Whether the bytes look like a capture form (`data=...`, `compression=lz64&data=...`).
fn looks_like_form(payload: &[u8]) -> bool {
    const KEYS: [&[u8]; 5] = [b"data=", b"compression=", b"_=", b"ip=", b"ver="];
    let head = &payload[..payload.len().min(256)];
    head.split(|b| *b == b'&')
        .take(8)
        .any(|pair| KEYS.iter().any(|key| pair.starts_with(key)))
}

/// Whether the whole payload is base64 text (either alphabet, padded to a multiple of 4).
fn looks_like_base64(payload: &[u8]) -> bool {
    let text = payload.trim_ascii();
    !text.is_empty()
        && text.len().is_multiple_of(4)
        && text
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_'))
}

fn decode_base64(payload: &[u8]) -> Result<Vec<u8>, ApiError> {
    let text = payload.trim_ascii();
    let engine = if text.iter().any(|b| matches!(b, b'-' | b'_')) {
        &base64::engine::general_purpose::URL_SAFE
    } else {
        &base64::engine::general_purpose::STANDARD
    };
    engine
        .decode(text)
        .map_err(|error| bad_encoding(format!("invalid base64 payload: {error}")))
}

fn is_json_start(payload: &[u8]) -> bool {
    matches!(
        payload.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'{') | Some(b'[')
    )
}

/// The `data` and `compression` fields of a urlencoded form.
fn parse_form(payload: &[u8]) -> (Option<String>, Option<Compression>) {
    let mut data = None;
    let mut compression = None;
    for (key, value) in form_urlencoded::parse(payload) {
        match key.as_ref() {
            "data" if data.is_none() => data = Some(restore_plus(value.into_owned())),
            "compression" => compression = Compression::parse(&value),
            _ => {}
        }
    }
    (data, compression)
}

/// The JSON text of a capture request, with every encoding layer peeled off, and the `_` query
/// parameter (`sent_at` in ms) that goes with it.
#[derive(Debug)]
pub struct CapturePayload {
    pub json: Vec<u8>,
    pub query_sent_at: Option<DateTime<Utc>>,
}

/// Peels every encoding layer off a capture payload.
pub fn decode_payload(
    request: &CaptureRequest<'_>,
    limits: &CaptureLimits,
) -> Result<CapturePayload, ApiError> {
    let query = Query::parse(request.query);
    Ok(CapturePayload {
        json: decode_layers(request, &query, limits)?,
        query_sent_at: query.sent_at,
    })
}

fn decode_layers(
    request: &CaptureRequest<'_>,
    query: &Query,
    limits: &CaptureLimits,
) -> Result<Vec<u8>, ApiError> {
    let header_hint = match request.content_encoding.map(str::trim) {
        None | Some("") => None,
        Some(value) if value.eq_ignore_ascii_case("identity") => None,
        Some(value) => Some(Compression::parse(value).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_encoding",
                format!(
                    "Content-Encoding `{}` is not supported (use gzip, base64, lz64 or none)",
                    value.chars().take(32).collect::<String>()
                ),
            )
        })?),
    };
    let mut payload: Vec<u8> = match &query.data {
        Some(data) if data.len() > limits.max_body_bytes => {
            return Err(too_large(limits.max_body_bytes))
        }
        Some(data) => data.clone().into_bytes(),
        None => request.body.to_vec(),
    };
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "invalid_batch",
            "the request carries no payload",
        ));
    }
    let mut hint = query.compression.or(header_hint);
    let mut form_seen = false;
    for _ in 0..MAX_LAYERS {
        if crate::body::is_gzip(&payload) {
            payload = crate::body::gunzip(&payload, limits.max_decompressed_bytes)?;
            if hint == Some(Compression::Gzip) {
                hint = None;
            }
            continue;
        }
        if is_json_start(&payload) {
            return Ok(payload);
        }
        let form_like = looks_like_form(&payload)
            || (is_form_type(request.content_type) && !looks_like_base64(&payload));
        if !form_seen && form_like {
            form_seen = true;
            let (data, form_hint) = parse_form(&payload);
            if query.compression.is_none() {
                hint = form_hint.or(hint);
            }
            payload = data
                .filter(|d| !d.is_empty())
                .ok_or_else(|| bad_encoding("form body without a `data` field"))?
                .into_bytes();
            continue;
        }
        if hint == Some(Compression::Lz64) {
            let text = std::str::from_utf8(&payload)
                .map_err(|_| bad_encoding("lz64 payload is not text"))?;
            payload = crate::lz_string::decompress_base64(text, limits.max_decompressed_bytes)
                .map_err(|error| match error {
                    crate::lz_string::LzError::TooLarge { .. } => {
                        too_large(limits.max_decompressed_bytes)
                    }
                    other => bad_encoding(other.to_string()),
                })?
                .into_bytes();
            hint = None;
            continue;
        }
        if looks_like_base64(&payload) {
            payload = decode_base64(&payload)?;
            if hint == Some(Compression::Base64) {
                hint = None;
            }
            continue;
        }
        break;
    }
    Err(match hint {
        Some(Compression::Gzip) => ApiError::bad_request(
            "bad_gzip",
            "compression says gzip but the payload is not gzip",
        ),
        Some(Compression::Base64) => {
            bad_encoding("compression says base64 but the payload is not base64")
        }
        _ => ApiError::bad_request(
            "malformed_json",
            "request body is not JSON (nor gzip, base64, lz64 or a data= form holding JSON)",
        ),
    })
}

/// serde_json appends "at line 1 column 42"; inside one event that adds nothing.
fn strip_position(message: String) -> String {
    match message.rfind(" at line ") {
        Some(index) => message[..index].to_string(),
        None => message,
    }
}

fn decode_event(raw: &RawValue, max_event_bytes: usize) -> Result<JsonMap, NormalizeError> {
    let text = raw.get();
    if text.len() > max_event_bytes {
        return Err(NormalizeError::TooLarge {
            size: text.len(),
            limit: max_event_bytes,
        });
    }
    if !text.starts_with('{') {
        return Err(NormalizeError::Malformed(
            "event must be a JSON object".into(),
        ));
    }
    serde_json::from_str::<JsonMap>(text)
        .map_err(|error| NormalizeError::Malformed(strip_position(error.to_string())))
}

/// The batch-level fields of `{"api_key", "batch", "sent_at"}` (unknown fields are ignored).
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    batch: Option<&'a RawValue>,
    #[serde(borrow, default)]
    api_key: Option<&'a RawValue>,
    #[serde(borrow, default)]
    token: Option<&'a RawValue>,
    #[serde(borrow, default)]
    sent_at: Option<&'a RawValue>,
}

fn malformed_json(error: serde_json::Error) -> ApiError {
    ApiError::bad_request(
        "malformed_json",
        format!("request body is not valid JSON: {error}"),
    )
}

fn optional_string(raw: Option<&RawValue>, field: &str) -> Result<Option<String>, ApiError> {
    match raw.map(|raw| serde_json::from_str::<Option<String>>(raw.get())) {
        None | Some(Ok(None)) => Ok(None),
        Some(Ok(Some(text))) => Ok(Some(text)),
        Some(Err(_)) => Err(ApiError::bad_request(
            "invalid_batch",
            format!("{field} must be a string"),
        )),
    }
}

/// Parses the JSON of a capture request: one event, a bare array of events, or a batch object.
pub fn parse_events(
    payload: &CapturePayload,
    max_event_bytes: usize,
) -> Result<DecodedCapture, ApiError> {
    let json = &payload.json;
    let text = std::str::from_utf8(json).map_err(|error| {
        ApiError::bad_request(
            "malformed_json",
            format!("request body is not valid UTF-8: {error}"),
        )
    })?;
    let mut batch_token = None;
    let mut sent_at = None;
    let raws: Vec<&RawValue> = if text.trim_start().starts_with('[') {
        serde_json::from_str(text).map_err(malformed_json)?
    } else {
        let envelope: Envelope<'_> = serde_json::from_str(text).map_err(|error| {
            if error.is_data() {
                ApiError::bad_request(
                    "invalid_batch",
                    format!(
                        "expected an event, an array of events or {{\"batch\": [...]}}: {error}"
                    ),
                )
            } else {
                malformed_json(error)
            }
        })?;
        match envelope.batch {
            Some(batch) => {
                batch_token = optional_string(envelope.api_key, "api_key")?
                    .or(optional_string(envelope.token, "token")?)
                    .filter(|token| !token.is_empty());
                sent_at = optional_string(envelope.sent_at, "sent_at")?
                    .and_then(|text| switchyard_schemas::time::parse_timestamp(&text));
                serde_json::from_str(batch.get()).map_err(|_| {
                    ApiError::bad_request("invalid_batch", "batch must be an array of events")
                })?
            }
            None => vec![serde_json::from_str(text).map_err(malformed_json)?],
        }
    };
    let events: Vec<Result<JsonMap, NormalizeError>> = raws
        .iter()
        .map(|raw| decode_event(raw, max_event_bytes))
        .collect();
    let token = match batch_token {
        Some(token) => Some(token),
        None => {
            let tokens: BTreeSet<&str> = events
                .iter()
                .filter_map(|event| event.as_ref().ok().and_then(event_token))
                .collect();
            if tokens.len() > 1 {
                return Err(ApiError::bad_request(
                    "invalid_batch",
                    "the events carry different project tokens",
                ));
            }
            tokens.into_iter().next().map(str::to_string)
        }
    };
    Ok(DecodedCapture {
        token,
        sent_at: sent_at.or(payload.query_sent_at),
        events,
    })
}

/// Decodes a whole capture request: every encoding layer, then the JSON.
pub fn decode_capture(
    request: &CaptureRequest<'_>,
    limits: &CaptureLimits,
) -> Result<DecodedCapture, ApiError> {
    parse_events(&decode_payload(request, limits)?, limits.max_event_bytes)
}

/// Handles one capture request: read within limits, decode, authenticate by project token, then the
/// shared ingest pipeline (same answer as `/v1/batch`; PostHog SDKs only look at the 200).
pub async fn ingest(
    app: Arc<App>,
    peer: SocketAddr,
    request: Request<Incoming>,
    request_id: &str,
) -> Result<Response<Body>, ApiError> {
    let runtime = app.runtime();
    app.stats.requests.fetch_add(1, Ordering::Relaxed);
    let limits = CaptureLimits::from(&runtime.config.server);
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > limits.max_body_bytes as u64) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "request body is over the limit of {} bytes",
                limits.max_body_bytes
            ),
        ));
    }
    let raw = crate::body::read_limited_within(
        body,
        limits.max_body_bytes,
        Duration::from_secs(runtime.config.server.body_read_timeout_secs),
    )
    .await?;
    // As in the Segment endpoints: one evicted record freed here, before the decoding allocates.
    app.log.free_one_retired();
    let header =
        |name: hyper::header::HeaderName| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let payload = decode_payload(
        &CaptureRequest {
            query: parts.uri.query(),
            content_type: header(CONTENT_TYPE),
            content_encoding: header(CONTENT_ENCODING),
            body: &raw,
        },
        &limits,
    )?;
    crate::http::check_nesting(&payload.json, &runtime.config.limits)?;
    let decoded = parse_events(&payload, limits.max_event_bytes)?;
    let Some(source) = runtime.authenticate_posthog(decoded.token.as_deref()) else {
        app.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::unauthorized(
            "unknown or missing project token (api_key)",
        ));
    };
    let trusted_peer = runtime
        .trusted_proxies
        .iter()
        .any(|net| net.contains(peer.ip()));
    let decoded = decoded.into_body(trusted_peer);
    let request = crate::http::Authenticated {
        parts: &parts,
        peer,
        request_id,
        source,
        implied_type: None,
    };
    crate::http::ingest_decoded(app, runtime.clone(), request, decoded).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const LIMITS: CaptureLimits = CaptureLimits {
        max_body_bytes: 64 * 1024,
        max_decompressed_bytes: 256 * 1024,
        max_event_bytes: 8 * 1024,
    };

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn b64(data: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(data)
    }

    fn urlencode(value: &str) -> String {
        form_urlencoded::byte_serialize(value.as_bytes()).collect()
    }

    fn request<'a>(
        query: Option<&'a str>,
        content_type: Option<&'a str>,
        body: &'a [u8],
    ) -> CaptureRequest<'a> {
        CaptureRequest {
            query,
            content_type,
            content_encoding: None,
            body,
        }
    }

    fn decode(request: CaptureRequest<'_>) -> Result<DecodedCapture, ApiError> {
        decode_capture(&request, &LIMITS)
    }

    const EVENTS: &str = r#"[{"event":"$pageview","properties":{"distinct_id":"d1","token":"phc_js","$current_url":"https://x.example/"}},
                             {"event":"clicked","properties":{"distinct_id":"d1","token":"phc_js"}}]"#;

    fn assert_two_js_events(decoded: DecodedCapture) {
        assert_eq!(decoded.token.as_deref(), Some("phc_js"));
        assert_eq!(decoded.events.len(), 2);
        assert_eq!(decoded.events[0].as_ref().unwrap()["event"], "$pageview");
        assert_eq!(decoded.events[1].as_ref().unwrap()["event"], "clicked");
    }

    #[test]
    fn paths_with_and_without_trailing_slash() {
        for path in ["/batch", "/i/v0/e", "/e", "/capture", "/track"] {
            assert!(is_capture_path(path), "{path}");
        }
        assert!(!is_capture_path("/v1/batch"));
        assert!(!is_capture_path("/decide"));
        assert!(!is_capture_path("/e/x"));
    }

    #[test]
    fn every_encoding_posthog_sdks_use() {
        let plain = EVENTS.as_bytes();
        let gzipped = gzip(plain);
        let base64 = b64(plain);
        let lz = lz_str::compress_to_base64(EVENTS);
        let form_b64 = format!("data={}&compression=base64", urlencode(&base64));
        let form_b64_spaces = format!("data={}", base64.replace('+', " "));
        let form_lz = format!("data={}&compression=lz64", urlencode(&lz));
        let form_lz_no_hint = format!("data={}", urlencode(&lz));
        let form_plain = format!("data={}", urlencode(EVENTS));
        let query_data = format!("data={}&compression=base64&ver=1.2.3", urlencode(&base64));
        let base64_gzip = b64(&gzipped);
        let form = Some("application/x-www-form-urlencoded");
        let cases: Vec<(&str, CaptureRequest<'_>)> = vec![
            ("plain", request(None, Some("application/json"), plain)),
            ("gzip by magic", request(None, None, &gzipped)),
            (
                "gzip-js hint",
                request(
                    Some("compression=gzip-js&ver=1.0"),
                    Some("text/plain"),
                    &gzipped,
                ),
            ),
            (
                "base64 body",
                request(Some("compression=base64"), None, base64.as_bytes()),
            ),
            (
                "base64 body, no hint",
                request(None, None, base64.as_bytes()),
            ),
            (
                "base64 of gzip",
                request(None, None, base64_gzip.as_bytes()),
            ),
            (
                "lz64 hint",
                request(Some("compression=lz64"), None, lz.as_bytes()),
            ),
            ("form base64", request(None, form, form_b64.as_bytes())),
            (
                "form base64, + as spaces",
                request(None, form, form_b64_spaces.as_bytes()),
            ),
            ("form lz64", request(None, form, form_lz.as_bytes())),
            (
                "form lz64 hint in query",
                request(Some("compression=lz64"), form, form_lz_no_hint.as_bytes()),
            ),
            (
                "form plain JSON",
                request(None, form, form_plain.as_bytes()),
            ),
            (
                "form without content type",
                request(None, None, form_plain.as_bytes()),
            ),
            ("data in the query", request(Some(&query_data), None, b"")),
        ];
        for (name, request) in cases {
            match decode(request) {
                Ok(decoded) => assert_two_js_events(decoded),
                Err(error) => panic!("{name}: {} {}", error.code, error.message),
            }
        }
        let mut with_header = request(None, None, lz.as_bytes());
        with_header.content_encoding = Some("lz64");
        assert_two_js_events(decode(with_header).unwrap());
    }

    #[test]
    fn batch_single_and_array_shapes() {
        let batch = br#"{"api_key":"phc_node","sent_at":"2024-05-01T12:00:05.000Z","historical_migration":false,
            "batch":[{"event":"e","distinct_id":"u1"},{"event":"f","distinct_id":"u2","properties":{"token":"other"}}]}"#;
        let decoded = decode(request(None, None, batch)).unwrap();
        assert_eq!(
            decoded.token.as_deref(),
            Some("phc_node"),
            "the batch token wins"
        );
        assert_eq!(
            decoded.sent_at.unwrap().to_rfc3339(),
            "2024-05-01T12:00:05+00:00"
        );
        assert_eq!(decoded.events.len(), 2);

        let single =
            br#"{"event":"e","distinct_id":"u1","api_key":"phc_single","properties":{"a":1}}"#;
        let decoded = decode(request(None, None, single)).unwrap();
        assert_eq!(decoded.token.as_deref(), Some("phc_single"));
        assert_eq!(decoded.events.len(), 1);
        assert_eq!(decoded.events[0].as_ref().unwrap()["properties"]["a"], 1);

        let with_token_field = br#"{"token":"phc_t","batch":[]}"#;
        assert_eq!(
            decode(request(None, None, with_token_field))
                .unwrap()
                .token
                .as_deref(),
            Some("phc_t")
        );

        let query_time = decode(request(Some("_=1714564805000"), None, single)).unwrap();
        assert_eq!(
            query_time.sent_at.unwrap().to_rfc3339(),
            "2024-05-01T12:00:05+00:00"
        );
        let seconds = decode(request(Some("_=1714564805"), None, single)).unwrap();
        assert_eq!(
            seconds.sent_at, None,
            "seconds are not read as milliseconds"
        );
    }

    #[test]
    fn bad_events_are_rejected_alone() {
        let body = format!(
            r#"[{{"event":"ok","distinct_id":"u"}}, 5, {{"event":"big","distinct_id":"u","properties":{{"x":"{}"}}}}, "s"]"#,
            "y".repeat(9000)
        );
        let decoded = decode(request(None, None, body.as_bytes())).unwrap();
        assert!(decoded.events[0].is_ok());
        assert_eq!(
            decoded.events[1].as_ref().unwrap_err().to_string(),
            "event must be a JSON object"
        );
        assert!(matches!(
            decoded.events[2],
            Err(NormalizeError::TooLarge { .. })
        ));
        assert!(decoded.events[3].is_err());
        assert_eq!(decoded.token, None);
    }

    #[test]
    fn whole_request_problems() {
        let code = |request: CaptureRequest<'_>| decode(request).unwrap_err().code;
        assert_eq!(code(request(None, None, b"")), "invalid_batch");
        assert_eq!(code(request(None, None, b"  \n")), "invalid_batch");
        assert_eq!(code(request(None, None, b"{\"event\": ")), "malformed_json");
        assert_eq!(
            code(request(None, None, b"[{\"event\":\"e\"}")),
            "malformed_json"
        );
        assert_eq!(code(request(None, None, b"\xff\xfe{}")), "malformed_json");
        assert_eq!(
            code(request(None, None, b"{\"batch\": 5}")),
            "invalid_batch"
        );
        assert_eq!(
            code(request(None, None, b"{\"batch\": [], \"api_key\": 5}")),
            "invalid_batch"
        );
        assert_eq!(
            code(request(None, None, b"{\"batch\": [], \"sent_at\": {}}")),
            "invalid_batch"
        );
        assert_eq!(
            code(request(None, None, b"\"just a string\"")),
            "malformed_json"
        );
        assert_eq!(code(request(None, None, b"12345678")), "malformed_json");
        assert_eq!(
            code(request(Some("compression=gzip"), None, b"not gzip")),
            "bad_gzip"
        );
        assert_eq!(
            code(request(Some("compression=lz64"), None, b"!!!")),
            "bad_encoding"
        );
        assert_eq!(
            code(request(Some("compression=base64"), None, b"a=b=c")),
            "bad_encoding"
        );
        assert_eq!(
            code(request(
                None,
                Some("application/x-www-form-urlencoded"),
                b"ver=1&ip=1"
            )),
            "bad_encoding"
        );
        assert_eq!(
            code(request(None, None, &gzip(b"{\"event\"")[..12])),
            "bad_gzip"
        );
        let mixed = br#"[{"event":"e","distinct_id":"d","token":"a"},{"event":"e","distinct_id":"d","token":"b"}]"#;
        assert_eq!(code(request(None, None, mixed)), "invalid_batch");
        let mut unknown = request(None, None, b"{}");
        unknown.content_encoding = Some("br");
        assert_eq!(
            decode(unknown).unwrap_err().status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
    }

    #[test]
    fn every_layer_is_capped() {
        let bomb = gzip(&vec![b' '; 1024 * 1024]);
        let error = decode(request(None, None, &bomb)).unwrap_err();
        assert_eq!(error.status, StatusCode::PAYLOAD_TOO_LARGE);
        let lz_bomb = lz_str::compress_to_base64("[".repeat(1024 * 1024).as_str());
        assert!(lz_bomb.len() < 8 * 1024);
        let error =
            decode(request(Some("compression=lz64"), None, lz_bomb.as_bytes())).unwrap_err();
        assert_eq!(error.status, StatusCode::PAYLOAD_TOO_LARGE);
        // gzip inside base64 inside a form: the inner bomb is still caught.
        let wrapped = format!("data={}", urlencode(&b64(&bomb)));
        let error = decode(request(None, None, wrapped.as_bytes())).unwrap_err();
        assert_eq!(error.status, StatusCode::PAYLOAD_TOO_LARGE);
        let long_query = format!("data={}", "a".repeat(LIMITS.max_body_bytes + 4));
        let error = decode(request(Some(&long_query), None, b"")).unwrap_err();
        assert_eq!(error.status, StatusCode::PAYLOAD_TOO_LARGE);
        // Layers nested deeper than MAX_LAYERS stop, with an error.
        let mut nested = EVENTS.as_bytes().to_vec();
        for _ in 0..MAX_LAYERS + 1 {
            nested = b64(&nested).into_bytes();
        }
        assert!(decode(request(None, None, &nested)).is_err());
    }

    #[test]
    fn deep_nesting_is_refused_without_overflowing_the_stack() {
        let deep_event = format!(
            r#"[{{"event":"e","distinct_id":"d","properties":{{"x":{}1{}}}}}]"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let limits = CaptureLimits {
            max_body_bytes: 1 << 20,
            max_decompressed_bytes: 1 << 20,
            max_event_bytes: 1 << 20,
        };
        match decode_capture(&request(None, None, deep_event.as_bytes()), &limits) {
            Ok(decoded) => assert!(decoded.events[0].is_err()),
            Err(error) => assert_eq!(error.code, "malformed_json"),
        }
    }

    #[test]
    fn restore_plus_only_touches_base64() {
        assert_eq!(restore_plus("ab c=".into()), "ab+c=");
        assert_eq!(restore_plus("{\"a b\": 1}".into()), "{\"a b\": 1}");
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
                                           query in "[a-z0-9=&_%+-]{0,40}") {
            let _ = decode(request(Some(&query), None, &body));
            let _ = decode(request(None, Some("application/x-www-form-urlencoded"), &body));
        }

        #[test]
        fn never_panics_on_json_shaped_bodies(inner in "[\\[\\]{}\",:a-z0-9_$ ]{0,200}") {
            let body = format!("{{\"batch\":[{inner}],\"api_key\":\"k\"}}");
            let _ = decode(request(None, None, body.as_bytes()));
            let _ = decode(request(None, None, format!("[{inner}]").as_bytes()));
        }
    }
}
