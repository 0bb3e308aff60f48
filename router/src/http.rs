//! The HTTP server: hyper 1 on tokio (HTTP/1.1 and h2c, keep-alive), routing, the ingest handler,
//! health and readiness, and JSON error responses.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, USER_AGENT,
};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::Serialize;
use switchyard_sanitizers::{SanitizeReport, Verdict};
use switchyard_schemas::EventType;
use switchyard_sinks::log::{AppendNow, LogError};
use tokio::net::TcpListener;

use crate::app::{App, SourceCounters};
use crate::ingest::{decode_scanned_body, normalize_all, Normalized, Rejection, RequestFacts};

/// The response body type.
pub type Body = Full<Bytes>;

/// Header carrying the server's clock (ms since the Unix epoch) on every response, for skew correction.
pub const SERVER_TIME_HEADER: &str = "x-switchyard-server-time";
/// Header carrying the request id on every response.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// A whole-request failure, answered as `{"error": {"code", "message"}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_secs: Option<u64>,
    pub allow: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
            allow: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 429 with Retry-After (whole seconds, at least 1).
    pub fn too_many_requests(message: impl Into<String>, wait: Duration) -> ApiError {
        let mut error = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
        error.retry_after_secs = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
        error
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn method_not_allowed(allow: &'static str) -> ApiError {
        let mut error = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("this endpoint accepts {allow}"),
        );
        error.allow = Some(allow);
        error
    }

    pub fn into_response(self) -> Response<Body> {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut response = json_response(self.status, &body);
        if let Some(seconds) = self.retry_after_secs {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(seconds));
        }
        if let Some(allow) = self.allow {
            response
                .headers_mut()
                .insert("allow", HeaderValue::from_static(allow));
        }
        response
    }
}

/// A JSON response.
pub fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The answer to an ingest request.
#[derive(Debug, Serialize)]
pub struct IngestResponse {
    pub success: bool,
    pub accepted: usize,
    pub rejected: Vec<Rejection>,
    #[serde(skip_serializing_if = "DropCounts::is_empty")]
    pub dropped: DropCounts,
    /// Accepted events that violate the tracking plan and went to the quarantine sink only.
    #[serde(skip_serializing_if = "is_zero")]
    pub quarantined: usize,
    /// Accepted events that violate the tracking plan, routed with `context.violations`.
    #[serde(skip_serializing_if = "is_zero")]
    pub tagged: usize,
}

/// Events accepted but dropped before any sink, by reason.
#[derive(Debug, Default, Serialize)]
pub struct DropCounts {
    #[serde(skip_serializing_if = "is_zero")]
    pub opt_out: usize,
    #[serde(skip_serializing_if = "is_zero")]
    pub sanitizer: usize,
    /// Re-sent messageIds within the de-duplication window: accepted, not routed again.
    #[serde(skip_serializing_if = "is_zero")]
    pub duplicate: usize,
    /// Events of people who asked to be erased (the privacy suppression list).
    #[serde(skip_serializing_if = "is_zero")]
    pub suppressed: usize,
}

fn is_zero(value: &usize) -> bool {
    *value == 0
}

impl DropCounts {
    fn is_empty(&self) -> bool {
        self.opt_out == 0 && self.sanitizer == 0 && self.duplicate == 0 && self.suppressed == 0
    }
}

/// Which endpoints a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Ingest, health and admin (no separate admin address).
    Both,
    /// Ingest and health only (the admin API has its own address).
    Ingest,
    /// The admin API and health only.
    Admin,
}

/// Serves HTTP (or HTTPS with `tls`) on `listener` until `shutdown` completes, then stops accepting and
/// waits (bounded) for open requests to finish. At most `server.max_connections` connections are
/// served at once; further ones wait in the OS backlog.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    role: Role,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let server = app.runtime().config.server.clone();
    let header_timeout = Duration::from_secs(server.header_read_timeout_secs.max(1));
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256);
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let connections = Arc::new(tokio::sync::Semaphore::new(server.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let service = service_fn(move |request| {
                    let app = app.clone();
                    async move { Ok::<_, Infallible>(handle(app, peer, request, role).await) }
                });
                let builder = builder.clone();
                let watcher = graceful.watcher();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let result = match tls {
                        None => watcher.watch(builder.serve_connection(TokioIo::new(stream), service)).await,
                        Some(acceptor) => {
                            let stream = match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                                Ok(Ok(stream)) => stream,
                                Ok(Err(error)) => {
                                    tracing::debug!(%error, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!("TLS handshake timed out");
                                    return;
                                }
                            };
                            watcher.watch(builder.serve_connection(TokioIo::new(stream), service)).await
                        }
                    };
                    if let Err(error) = result {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    let timeout = Duration::from_secs(app.runtime().config.server.shutdown_timeout_secs);
    if tokio::time::timeout(timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("open connections did not finish in time");
    }
}

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

/// Routes one request and stamps the common headers.
pub async fn handle(
    app: Arc<App>,
    peer: SocketAddr,
    request: Request<Incoming>,
    role: Role,
) -> Response<Body> {
    let request_id = request_id(request.headers());
    let path = request.uri().path();
    let operator = ["/admin", "/api/", "/console"]
        .iter()
        .any(|prefix| path.starts_with(prefix));
    // CORS is for browser SDKs on the ingest endpoints; operator endpoints answer only same-origin
    // browser requests (and tools that send no Origin).
    let origin = if operator {
        None
    } else {
        request.headers().get(hyper::header::ORIGIN).cloned()
    };
    let runtime = app.runtime();
    let mut response = if operator && crate::cors::is_cross_site(request.headers()) {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_site",
            "operator endpoints answer only pages of this server",
        )
        .into_response()
    } else {
        route(app, peer, request, &request_id, role)
            .await
            .unwrap_or_else(ApiError::into_response)
    };
    if let Some(origin) = origin {
        crate::cors::decorate(&runtime.config.server.cors, &origin, response.headers_mut());
    }
    let headers = response.headers_mut();
    headers.insert(
        SERVER_TIME_HEADER,
        HeaderValue::from(chrono::Utc::now().timestamp_millis()),
    );
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert(REQUEST_ID_HEADER, value);
    }
    response
}

async fn route(
    app: Arc<App>,
    peer: SocketAddr,
    request: Request<Incoming>,
    request_id: &str,
    role: Role,
) -> Result<Response<Body>, ApiError> {
    let path = request.uri().path().trim_end_matches('/').to_string();
    let method = request.method().clone();
    if path.starts_with("/admin") && role != Role::Ingest {
        return crate::admin::route(app, request, &path).await;
    }
    if (path == "/api/kpis" || path.starts_with("/api/kpis/")) && role != Role::Ingest {
        return crate::kpis::route(app, request, &path).await;
    }
    if (path == "/console" || path.starts_with("/console/")) && role != Role::Ingest {
        return crate::console::route(&app, &request, &path);
    }
    if role == Role::Admin && path != "/health" {
        return Err(ApiError::not_found(format!(
            "no endpoint at {}",
            request.uri().path()
        )));
    }
    let ingest_path = path == "/v1/batch"
        || path
            .strip_prefix("/v1/")
            .and_then(EventType::parse)
            .is_some()
        || crate::posthog_capture::is_capture_path(&path);
    if ingest_path {
        let runtime = app.runtime();
        if method == Method::OPTIONS {
            return Ok(crate::cors::preflight(
                &runtime.config.server.cors,
                request.headers(),
            ));
        }
        let ip = client_ip(peer.ip(), request.headers(), &runtime.trusted_proxies);
        if let Err(wait) = runtime.limiters.check_ip(ip) {
            app.stats.rate_limited_ip.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::too_many_requests(
                "too many requests from this address",
                wait,
            ));
        }
    }
    match path.as_str() {
        "/health" => {
            expect_method(&method, &Method::GET, "GET")?;
            Ok(json_response(
                StatusCode::OK,
                &serde_json::json!({"status": "ok"}),
            ))
        }
        "/ready" => {
            expect_method(&method, &Method::GET, "GET")?;
            let mut problems = app.readiness();
            problems.extend(app.engine.health().await);
            let status = if problems.is_empty() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            Ok(json_response(
                status,
                &serde_json::json!({"ready": problems.is_empty(), "problems": problems}),
            ))
        }
        "/metrics" => {
            expect_method(&method, &Method::GET, "GET")?;
            let text = crate::metrics::render(&app).await.map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "metrics_failed",
                    e.to_string(),
                )
            })?;
            let mut response = Response::new(Full::new(Bytes::from(text)));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            Ok(response)
        }
        "/v1/batch" => {
            expect_method(&method, &Method::POST, "POST")?;
            ingest(app, peer, request, None, request_id).await
        }
        capture if crate::posthog_capture::is_capture_path(capture) => {
            expect_method(&method, &Method::POST, "POST")?;
            crate::posthog_capture::ingest(app, peer, request, request_id).await
        }
        _ => {
            if let Some(kind) = path.strip_prefix("/v1/").and_then(EventType::parse) {
                expect_method(&method, &Method::POST, "POST")?;
                return ingest(app, peer, request, Some(kind), request_id).await;
            }
            Err(ApiError::not_found(format!(
                "no endpoint at {}",
                request.uri().path()
            )))
        }
    }
}

fn expect_method(method: &Method, expected: &Method, allow: &'static str) -> Result<(), ApiError> {
    if method == expected {
        Ok(())
    } else {
        Err(ApiError::method_not_allowed(allow))
    }
}

/// The write key from `Authorization: Basic base64(key:)`.
fn basic_auth_key(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let key = text.split_once(':').map(|(user, _)| user).unwrap_or(&text);
    (!key.is_empty()).then(|| key.to_string())
}

/// The client's IP: the socket peer, or X-Forwarded-For's nearest untrusted hop when the peer is a
/// trusted proxy.
pub fn client_ip(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &[switchyard_config::IpNet],
) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    for value in headers.get_all("x-forwarded-for") {
        let Ok(text) = value.to_str() else {
            return peer;
        };
        for hop in text.split(',').rev() {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip;
                    if !is_trusted(ip) {
                        return ip;
                    }
                }
                Err(_) => return client,
            }
        }
    }
    client
}

fn header_is_set(headers: &HeaderMap, name: &str) -> bool {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| matches!(v.trim(), "1" | "true" | "yes"))
}

async fn ingest(
    app: Arc<App>,
    peer: SocketAddr,
    request: Request<Incoming>,
    implied_type: Option<EventType>,
    request_id: &str,
) -> Result<Response<Body>, ApiError> {
    let runtime = app.runtime();
    let server = &runtime.config.server;
    app.stats.requests.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = request.into_parts();
    if let Some(length) = parts.headers.get(hyper::header::CONTENT_LENGTH) {
        if length
            .to_str()
            .ok()
            .and_then(|l| l.parse::<usize>().ok())
            // Moderately oversized bodies are read and dropped so the client sees the 413 (see
            // body::read_limited); a declared size far over the limit is refused at once.
            .is_some_and(|l| l > server.max_body_bytes + crate::body::DRAIN_AFTER_LIMIT)
        {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!(
                    "request body is over the limit of {} bytes",
                    server.max_body_bytes
                ),
            ));
        }
    }
    let raw = crate::body::read_limited_within(
        body,
        server.max_body_bytes,
        Duration::from_secs(server.body_read_timeout_secs),
    )
    .await?;
    let encoding = parts
        .headers
        .get(CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok());
    // One evicted record freed on this thread while the decoding allocates as much: an event of it
    // per decoded message (see crate::freeing).
    let decoded = crate::freeing::while_freeing(app.log.take_one_retired(), || {
        let body = crate::body::decode_content(raw, encoding, server.max_decompressed_bytes)?;
        let shape = check_nesting(&body, &runtime.config.limits)?;
        decode_scanned_body(&body, &shape, implied_type, server.max_event_bytes)
    })?;

    let key = basic_auth_key(&parts.headers).or_else(|| decoded.write_key.clone());
    let Some(source) = runtime.authenticate(key.as_deref()) else {
        app.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::unauthorized("unknown or missing write key"));
    };
    let request = Authenticated {
        parts: &parts,
        peer,
        request_id,
        source,
        implied_type,
    };
    ingest_decoded(app, runtime.clone(), request, decoded).await
}

/// Refuses bodies nested deeper than the limit before any parsing (the envelope and the batch array
/// add two levels).
pub(crate) fn check_nesting(
    body: &[u8],
    limits: &switchyard_config::LimitsConfig,
) -> Result<crate::limits::BodyShape, ApiError> {
    let scanned = crate::limits::body_shape(body);
    let shape = scanned.shape;
    if shape.max_depth > limits.max_json_depth + 2 {
        return Err(ApiError::bad_request(
            "too_deep",
            format!(
                "JSON nesting of {} levels is over the limit of {}",
                shape.max_depth, limits.max_json_depth
            ),
        ));
    }
    Ok(scanned)
}

/// Appends events to the ingest log, and words a failure for the client: a full log is a 503 with
/// Retry-After, anything else a 503 (and an error log line).
pub(crate) async fn append_to_log(
    app: &App,
    events: Vec<switchyard_schemas::Event>,
) -> Result<u64, ApiError> {
    // Encoded here, where the events were just built (cache-hot). The write is made here too when
    // it cannot wait (a copy into the page cache); one that might (a new segment file, a full log,
    // a busy writer, a disk that was just slow) goes to the blocking pool.
    let encoded = switchyard_sinks::log::EncodedRecord::new(events);
    let appended = match app.log.try_append_now(encoded) {
        AppendNow::Done(appended) => {
            // The hop to the blocking pool used to let the worker run other tasks (the sinks'
            // runners) here; without it, flat-out ingest starved them in the ClickHouse benchmark
            // (they fell behind the cache and read from disk: 57k delivered/s against 83k).
            tokio::task::yield_now().await;
            Ok(appended)
        }
        AppendNow::Deferred(encoded) => {
            let log = app.log.clone();
            tokio::task::spawn_blocking(move || log.append_encoded(encoded)).await
        }
    };
    match appended {
        Ok(Ok(seq)) => Ok(seq),
        Ok(Err(LogError::Full { .. })) => {
            let mut error = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "log_full",
                "the ingest log is full while sinks catch up; retry later",
            );
            error.retry_after_secs = Some(5);
            Err(error)
        }
        Ok(Err(error)) => {
            tracing::error!(%error, "ingest log append failed");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "log_unavailable",
                "events could not be stored; retry later",
            ))
        }
        Err(error) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("log writer failed: {error}"),
        )),
    }
}

/// An ingest request whose body is decoded and whose source is known.
pub(crate) struct Authenticated<'a> {
    pub parts: &'a hyper::http::request::Parts,
    pub peer: SocketAddr,
    pub request_id: &'a str,
    pub source: String,
    pub implied_type: Option<EventType>,
}

/// The part of ingest shared by the Segment and PostHog endpoints, after decoding and
/// authentication: opt-out, normalisation, de-duplication, the global sanitizer chain, the log
/// append and the answer.
pub(crate) async fn ingest_decoded(
    app: Arc<App>,
    runtime: Arc<crate::app::Runtime>,
    request: Authenticated<'_>,
    decoded: crate::ingest::DecodedBody,
) -> Result<Response<Body>, ApiError> {
    let Authenticated {
        parts,
        peer,
        request_id,
        source,
        implied_type,
    } = request;
    let counters = app.stats.source(&source);
    SourceCounters::add(&counters.received, decoded.messages.len());
    let limits = &runtime.config.limits;
    if decoded.messages.len() > limits.max_events_per_batch {
        return Err(ApiError::bad_request(
            "too_many_events",
            format!(
                "{} events in one request is over the limit of {}",
                decoded.messages.len(),
                limits.max_events_per_batch
            ),
        ));
    }
    if let Err(wait) = runtime
        .limiters
        .check_source(&source, decoded.messages.len())
    {
        app.stats
            .rate_limited_source
            .fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::too_many_requests(
            "this source is over its event rate",
            wait,
        ));
    }
    let opted_out = runtime.config.consent.disabled
        || runtime
            .opt_out_headers
            .iter()
            .any(|name| header_is_set(&parts.headers, name));
    if opted_out {
        let dropped = decoded.messages.len();
        SourceCounters::add(&counters.dropped_opt_out, dropped);
        let response = IngestResponse {
            success: true,
            accepted: 0,
            rejected: Vec::new(),
            dropped: DropCounts {
                opt_out: dropped,
                ..DropCounts::default()
            },
            quarantined: 0,
            tagged: 0,
        };
        return Ok(json_response(StatusCode::OK, &response));
    }

    let ip = client_ip(peer.ip(), &parts.headers, &runtime.trusted_proxies).to_string();
    let user_agent = parts.headers.get(USER_AGENT).and_then(|v| v.to_str().ok());
    let facts = RequestFacts {
        implied_type,
        received_at: chrono::Utc::now(),
        source: &source,
        request_id,
        ip: Some(&ip),
        user_agent,
    };
    // Counting every event's members walks all its values; skipped when the message texts are too
    // short to hold more than the limit.
    let members_at_most = decoded.event_members_at_most();
    let Normalized {
        mut events,
        mut client_message_ids,
        mut rejected,
    } = normalize_all(decoded, &facts);
    if members_at_most.is_none_or(|most| most > limits.max_properties) {
        crate::limits::reject_oversized_events(
            limits.max_properties,
            &mut events,
            &mut client_message_ids,
            &mut rejected,
        );
    }

    // Context keys that steer routing are the server's; then the tracking plan (rejected events leave
    // here; quarantined ones skip de-duplication and sessions, and rejoin before the sanitizers).
    crate::plan_stage::strip_server_keys(&mut events);
    let plan_applied = match &runtime.plan {
        Some(plan) => plan.apply(&mut events, &mut client_message_ids, &mut rejected),
        None => crate::plan_stage::Applied::default(),
    };
    let (quarantined, tagged) = (plan_applied.quarantined.len(), plan_applied.tagged);

    let mut dropped = DropCounts::default();
    // People who asked to be erased are not tracked again.
    if !app.suppressions.is_empty() {
        let before = events.len();
        let mut keep = events
            .iter()
            .map(|event| !app.suppressions.suppresses(event))
            .collect::<Vec<_>>()
            .into_iter();
        let mut keep_ids = keep.clone();
        events.retain(|_| keep.next().unwrap_or(true));
        client_message_ids.retain(|_| keep_ids.next().unwrap_or(true));
        dropped.suppressed = before - events.len();
    }

    // Client retries: a messageId already accepted from this source within the window is not routed again.
    let mut claimed = Vec::new();
    if app.dedupe.enabled() {
        let digests: Vec<Option<u64>> = events
            .iter()
            .zip(&client_message_ids)
            .map(|(event, client)| {
                client.then(|| crate::dedupe::digest(&source, &event.message_id))
            })
            .collect();
        let wanted: Vec<u64> = digests.iter().flatten().copied().collect();
        let fresh = app.dedupe.claim(&wanted);
        let mut fresh_iter = fresh.iter();
        let mut keep = Vec::with_capacity(events.len());
        for digest in &digests {
            match digest {
                Some(digest) => {
                    let is_fresh = *fresh_iter.next().unwrap_or(&true);
                    if is_fresh {
                        claimed.push(*digest);
                    }
                    keep.push(is_fresh);
                }
                None => keep.push(true),
            }
        }
        let mut keep_iter = keep.into_iter();
        events.retain(|_| keep_iter.next().unwrap_or(true));
        dropped.duplicate = digests.len() - events.len();
    }

    events.extend(plan_applied.quarantined);
    if !runtime.global_chain.is_empty() {
        let mut report = SanitizeReport::default();
        events.retain_mut(
            |event| match runtime.global_chain.apply(event, &mut report) {
                Verdict::Keep => true,
                Verdict::Drop(_) => {
                    dropped.sanitizer += 1;
                    false
                }
            },
        );
    }
    let accepted = events.len();
    if runtime.config.sessions.enabled {
        let sessions = &runtime.config.sessions;
        app.sessions
            .assign(sessions, &mut events, facts.received_at, request_id);
    }
    if !events.is_empty() {
        if let Err(error) = append_to_log(&app, events).await {
            // Not stored: a retry of these messageIds must be accepted.
            app.dedupe.release(&claimed);
            if error.code == "log_full" {
                SourceCounters::add(&counters.refused_full, accepted);
            }
            return Err(error);
        }
    }
    let accepted = accepted + dropped.duplicate;
    SourceCounters::add(&counters.accepted, accepted);
    SourceCounters::add(&counters.dropped_sanitizer, dropped.sanitizer);
    SourceCounters::add(&counters.dropped_duplicate, dropped.duplicate);
    counters.add_rejected(rejected.iter().map(|r| r.code));
    let response = IngestResponse {
        success: rejected.is_empty(),
        accepted,
        rejected,
        dropped,
        quarantined,
        tagged,
    };
    Ok(json_response(StatusCode::OK, &response))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_used_only_behind_trusted_proxies() {
        let trusted = vec![switchyard_config::IpNet::parse("10.0.0.0/8").unwrap()];
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("198.51.100.1, 203.0.113.5, 10.0.0.7"),
        );
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(
            client_ip(proxy, &headers, &trusted).to_string(),
            "203.0.113.5"
        );
        let stranger: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(client_ip(stranger, &headers, &trusted), stranger);
        headers.insert("x-forwarded-for", HeaderValue::from_static("garbage"));
        assert_eq!(client_ip(proxy, &headers, &trusted), proxy);
    }

    #[test]
    fn basic_auth_takes_the_username() {
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Basic d2tfd2ViXzE6"),
        );
        assert_eq!(basic_auth_key(&headers).as_deref(), Some("wk_web_1"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(basic_auth_key(&headers), None);
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert_eq!(basic_auth_key(&headers), None);
    }
}
