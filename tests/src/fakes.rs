//! Strict local fakes of the vendor APIs Switchyard forwards to (PostHog, Statsig, GA4 Measurement
//! Protocol, a signed webhook), served over real HTTP on 127.0.0.1.
//!
//! Each fake checks what the real vendor checks — endpoint, method, headers, auth, body shape, names,
//! counts and lengths — and answers like the vendor (401 for a bad key, 400 for a bad payload; GA4
//! answers 2xx and silently discards, as the real collect endpoint does). Anything the real vendor
//! would refuse or discard is also recorded as a *violation*, so a test that asserts
//! `no_violations()` cannot pass on a malformed payload. Events of accepted requests are recorded; a
//! script of replies can make the next requests fail (500, 429 with Retry-After, 400, ...).
//!
//! The rules are written here from the vendors' documentation, independently of the sink code.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Map, Value};
use sha2::Sha256;

/// Which vendor a fake plays, with the credentials it accepts.
#[derive(Debug, Clone)]
pub enum Vendor {
    /// `POST /batch/` with `{"api_key", "batch": [...]}`.
    Posthog { api_key: String },
    /// `POST /v1/log_event` with the `statsig-api-key` and `STATSIG-CLIENT-TIME` headers.
    Statsig { api_key: String },
    /// `POST /mp/collect?measurement_id=..&api_secret=..`.
    Ga4 {
        measurement_id: String,
        api_secret: String,
    },
    /// `method path` with `{"events": [...]}` signed by `X-Switchyard-Signature`.
    Webhook {
        method: String,
        path: String,
        secret: String,
        headers: Vec<(String, String)>,
    },
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// None: answer as the vendor normally would.
    pub status: Option<u16>,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// Answer with this status (the request's events are not recorded).
    pub fn status(code: u16) -> Reply {
        Reply {
            status: Some(code),
            headers: Vec::new(),
            body: String::new(),
        }
    }

    /// Answer normally (a placeholder to script a later request).
    pub fn normal() -> Reply {
        Reply {
            status: None,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: &str) -> Reply {
        self.body = body.to_string();
        self
    }
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status the fake answered.
    pub status: u16,
}

impl Received {
    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (Null when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Default)]
struct State {
    requests: Vec<Received>,
    events: Vec<Value>,
    violations: Vec<String>,
    script: VecDeque<Reply>,
}

/// A running fake vendor.
pub struct Fake {
    /// `http://127.0.0.1:<port>`: the base URL to configure in the sink.
    pub url: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Fake {
    /// Starts a fake on a free port of 127.0.0.1.
    pub async fn start(vendor: Vendor) -> Fake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a local port");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let state = Arc::new(Mutex::new(State::default()));
        let vendor = Arc::new(vendor);
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (state, vendor) = (shared.clone(), vendor.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        handle(request, vendor.clone(), state.clone())
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Fake { url, state, task }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues replies for the next requests, in order.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.lock().script.extend(replies);
    }

    /// Every event of every accepted request, in arrival order.
    pub fn events(&self) -> Vec<Value> {
        self.lock().events.clone()
    }

    /// Every request received.
    pub fn requests(&self) -> Vec<Received> {
        self.lock().requests.clone()
    }

    /// Everything the real vendor would have refused or silently discarded.
    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    /// Panics with the violations, if any.
    pub fn assert_no_violations(&self) {
        let violations = self.violations();
        assert!(
            violations.is_empty(),
            "the vendor would refuse: {violations:#?}"
        );
    }

    /// Waits until at least `count` events were accepted, and returns them.
    pub async fn wait_for_events(&self, count: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.events();
            if events.len() >= count {
                return events;
            }
            if Instant::now() > deadline {
                panic!(
                    "expected {count} events, got {}; violations: {:?}; statuses: {:?}",
                    events.len(),
                    self.violations(),
                    self.requests().iter().map(|r| r.status).collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// What checking a request found.
struct Verdict {
    violations: Vec<String>,
    /// The vendor's own refusal, when it would refuse.
    refusal: Option<(u16, String)>,
    events: Vec<Value>,
}

impl Verdict {
    fn new() -> Verdict {
        Verdict {
            violations: Vec::new(),
            refusal: None,
            events: Vec::new(),
        }
    }

    /// A problem the vendor answers with `status` and `body`.
    fn refuse(&mut self, status: u16, body: Value, why: String) {
        self.violations.push(why);
        if self.refusal.is_none() {
            self.refusal = Some((status, body.to_string()));
        }
    }

    /// A problem the vendor accepts with 2xx and then discards.
    fn discard(&mut self, why: String) {
        self.violations.push(why);
    }
}

async fn handle(
    request: Request<Incoming>,
    vendor: Arc<Vendor>,
    state: Arc<Mutex<State>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let at = Instant::now();
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let raw = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(_) => Vec::new(),
    };
    let mut received = Received {
        at,
        method,
        path,
        query,
        headers,
        body: raw,
        status: 0,
    };
    let mut verdict = Verdict::new();
    let body = decode_body(&vendor, &received, &mut verdict);
    if verdict.refusal.is_none() {
        match vendor.as_ref() {
            Vendor::Posthog { api_key } => check_posthog(api_key, &received, &body, &mut verdict),
            Vendor::Statsig { api_key } => check_statsig(api_key, &received, &body, &mut verdict),
            Vendor::Ga4 {
                measurement_id,
                api_secret,
            } => check_ga4(measurement_id, api_secret, &received, &body, &mut verdict),
            Vendor::Webhook {
                method,
                path,
                secret,
                headers,
            } => check_webhook(
                method,
                path,
                secret,
                headers,
                &received,
                &body,
                &mut verdict,
            ),
        }
    }

    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
    state.violations.extend(verdict.violations.iter().cloned());
    let scripted = state.script.pop_front().filter(|r| r.status.is_some());
    let (status, reply_headers, reply_body) = if let Some(reply) = scripted {
        (reply.status.unwrap_or(500), reply.headers, reply.body)
    } else if let Some((status, body)) = verdict.refusal {
        (status, Vec::new(), body)
    } else {
        if verdict.violations.is_empty() {
            state.events.extend(verdict.events);
        }
        let (status, body) = success(&vendor);
        (status, Vec::new(), body)
    };
    received.status = status;
    state.requests.push(received);
    drop(state);

    let mut response = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    if !reply_body.is_empty() {
        response = response.header("content-type", "application/json");
    }
    for (name, value) in reply_headers {
        response = response.header(name, value);
    }
    Ok(response
        .body(Full::new(Bytes::from(reply_body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

fn success(vendor: &Vendor) -> (u16, String) {
    match vendor {
        Vendor::Posthog { .. } => (200, json!({"status": "Ok"}).to_string()),
        Vendor::Statsig { .. } => (202, json!({"success": true}).to_string()),
        Vendor::Ga4 { .. } => (204, String::new()),
        Vendor::Webhook { .. } => (200, json!({"received": true}).to_string()),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The body as JSON; gzip is inflated where the vendor accepts it.
fn decode_body(vendor: &Vendor, request: &Received, verdict: &mut Verdict) -> Value {
    let mut bytes = request.body.clone();
    match request.header("content-encoding") {
        None | Some("identity") => {}
        Some("gzip") if matches!(vendor, Vendor::Posthog { .. }) => {
            let mut inflated = Vec::new();
            if flate2::read::GzDecoder::new(&bytes[..])
                .read_to_end(&mut inflated)
                .is_err()
            {
                verdict.refuse(
                    400,
                    json!({"detail": "bad gzip"}),
                    "broken gzip body".into(),
                );
                return Value::Null;
            }
            bytes = inflated;
        }
        Some(other) => {
            verdict.refuse(
                415,
                json!({"message": "unsupported encoding"}),
                format!("Content-Encoding {other} is not accepted"),
            );
            return Value::Null;
        }
    }
    let json_type = request
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/json"));
    if !json_type {
        verdict.refuse(
            400,
            json!({"message": "expected application/json"}),
            format!("Content-Type is {:?}", request.header("content-type")),
        );
    }
    match serde_json::from_slice(&bytes) {
        Ok(value) => value,
        Err(e) => {
            verdict.refuse(
                400,
                json!({"message": "malformed JSON"}),
                format!("body is not JSON: {e}"),
            );
            Value::Null
        }
    }
}

fn unknown_keys(object: &Map<String, Value>, allowed: &[&str]) -> Vec<String> {
    object
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .cloned()
        .collect()
}

fn check_endpoint(request: &Received, method: &str, paths: &[&str], verdict: &mut Verdict) -> bool {
    if !paths.contains(&request.path.as_str()) {
        verdict.refuse(
            404,
            json!({"message": "not found"}),
            format!("wrong path {}", request.path),
        );
        return false;
    }
    if request.method != method {
        verdict.refuse(
            405,
            json!({"message": "method not allowed"}),
            format!("wrong method {}", request.method),
        );
        return false;
    }
    true
}

// ---- PostHog -------------------------------------------------------------------------------------

fn check_posthog(api_key: &str, request: &Received, body: &Value, verdict: &mut Verdict) {
    if !check_endpoint(request, "POST", &["/batch/", "/batch"], verdict) {
        return;
    }
    if request.body.len() > 20 * 1024 * 1024 {
        verdict.refuse(
            413,
            json!({"detail": "payload too large"}),
            "over 20 MB".into(),
        );
        return;
    }
    let invalid = |detail: String| json!({"type": "validation_error", "code": "invalid_payload", "detail": detail});
    let Some(object) = body.as_object() else {
        verdict.refuse(
            400,
            invalid("not an object".into()),
            "body is not an object".into(),
        );
        return;
    };
    match object.get("api_key").and_then(Value::as_str) {
        Some(key) if key == api_key => {}
        Some(key) if !key.is_empty() => {
            verdict.refuse(
                401,
                json!({"type": "authentication_error", "code": "invalid_api_key",
                       "detail": "Project API key invalid. You can find your project API key in PostHog project settings."}),
                "wrong api_key".into(),
            );
            return;
        }
        _ => {
            verdict.refuse(
                401,
                json!({"type": "authentication_error", "code": "missing_api_key",
                       "detail": "API key not provided."}),
                "missing api_key".into(),
            );
            return;
        }
    }
    for key in unknown_keys(
        object,
        &["api_key", "batch", "sent_at", "historical_migration"],
    ) {
        verdict.discard(format!("unexpected top-level key `{key}`"));
    }
    if let Some(sent_at) = object.get("sent_at") {
        let valid = sent_at
            .as_str()
            .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok());
        if !valid {
            verdict.refuse(
                400,
                invalid("sent_at".into()),
                format!("bad sent_at {sent_at}"),
            );
        }
    }
    let Some(batch) = object
        .get("batch")
        .and_then(Value::as_array)
        .filter(|b| !b.is_empty())
    else {
        verdict.refuse(
            400,
            invalid("batch missing".into()),
            "batch missing or empty".into(),
        );
        return;
    };
    for (index, entry) in batch.iter().enumerate() {
        let mut problems = Vec::new();
        let properties = entry.get("properties");
        if properties.is_some_and(|p| !p.is_object()) {
            problems.push("properties is not an object".to_string());
        }
        if entry["event"].as_str().unwrap_or_default().is_empty() {
            problems.push("event missing".into());
        }
        let distinct = entry
            .get("distinct_id")
            .or_else(|| properties.and_then(|p| p.get("distinct_id")));
        if !distinct.is_some_and(|d| d.as_str().is_some_and(|s| !s.is_empty()) || d.is_number()) {
            problems.push("distinct_id missing".into());
        }
        if let Some(uuid) = entry.get("uuid") {
            if uuid::Uuid::parse_str(uuid.as_str().unwrap_or_default()).is_err() {
                problems.push(format!("uuid {uuid} is not a UUID"));
            }
        }
        if let Some(timestamp) = entry.get("timestamp") {
            if chrono::DateTime::parse_from_rfc3339(timestamp.as_str().unwrap_or_default()).is_err()
            {
                problems.push(format!("timestamp {timestamp} is not ISO-8601"));
            }
        }
        for key in unknown_keys(
            entry.as_object().unwrap_or(&Map::new()),
            &[
                "event",
                "distinct_id",
                "properties",
                "timestamp",
                "uuid",
                "type",
            ],
        ) {
            problems.push(format!("unexpected key `{key}`"));
        }
        if problems.is_empty() {
            verdict.events.push(entry.clone());
        } else {
            verdict.refuse(
                400,
                invalid(format!("batch[{index}]: {}", problems.join(", "))),
                format!("batch[{index}]: {}", problems.join(", ")),
            );
        }
    }
}

// ---- Statsig -------------------------------------------------------------------------------------

fn check_statsig(api_key: &str, request: &Received, body: &Value, verdict: &mut Verdict) {
    if !check_endpoint(request, "POST", &["/v1/log_event"], verdict) {
        return;
    }
    match request.header("statsig-api-key") {
        Some(key) if key == api_key => {}
        other => {
            verdict.refuse(
                401,
                json!({"message": "Unauthorized"}),
                format!(
                    "statsig-api-key {}",
                    if other.is_some() { "wrong" } else { "missing" }
                ),
            );
            return;
        }
    }
    let client_time = request
        .header("statsig-client-time")
        .and_then(|t| t.parse::<i64>().ok());
    let plausible = client_time.is_some_and(|t| (t - now_ms()).abs() < 86_400_000);
    if !plausible {
        verdict.refuse(
            400,
            json!({"message": "STATSIG-CLIENT-TIME missing or invalid"}),
            format!(
                "STATSIG-CLIENT-TIME is {:?}",
                request.header("statsig-client-time")
            ),
        );
    }
    let Some(object) = body.as_object() else {
        verdict.refuse(
            400,
            json!({"message": "invalid body"}),
            "body is not an object".into(),
        );
        return;
    };
    for key in unknown_keys(object, &["events", "statsigMetadata", "user"]) {
        verdict.discard(format!("unexpected top-level key `{key}`"));
    }
    let Some(events) = object
        .get("events")
        .and_then(Value::as_array)
        .filter(|e| !e.is_empty())
    else {
        verdict.refuse(
            400,
            json!({"message": "events required"}),
            "events missing".into(),
        );
        return;
    };
    for (index, event) in events.iter().enumerate() {
        let mut problems = Vec::new();
        if event["eventName"].as_str().unwrap_or_default().is_empty() {
            problems.push("eventName missing".to_string());
        }
        let user = &event["user"];
        let has_user_id = user["userID"].as_str().is_some_and(|u| !u.is_empty());
        let custom_ids = user["customIDs"].as_object();
        let has_custom = custom_ids.is_some_and(|ids| {
            !ids.is_empty()
                && ids
                    .values()
                    .all(|v| v.as_str().is_some_and(|s| !s.is_empty()))
        });
        if !user.is_object() || !(has_user_id || has_custom) {
            problems.push("user needs userID or customIDs".into());
        }
        if user.get("customIDs").is_some() && !has_custom {
            problems.push("customIDs must map names to non-empty strings".into());
        }
        if event["time"].as_i64().unwrap_or_default() <= 0 {
            problems.push(format!("time {} is not ms since the epoch", event["time"]));
        }
        if let Some(value) = event.get("value") {
            if !(value.is_number() || value.is_string()) {
                problems.push("value must be a string or a number".into());
            }
        }
        if let Some(metadata) = event.get("metadata") {
            let string_map = metadata
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_string));
            if !string_map {
                problems.push("metadata must be a map of strings".into());
            }
        }
        for key in unknown_keys(
            event.as_object().unwrap_or(&Map::new()),
            &["eventName", "user", "value", "time", "metadata"],
        ) {
            problems.push(format!("unexpected key `{key}`"));
        }
        if problems.is_empty() {
            verdict.events.push(event.clone());
        } else {
            let why = format!("events[{index}]: {}", problems.join(", "));
            verdict.refuse(400, json!({"message": why}), why.clone());
        }
    }
}

// ---- GA4 Measurement Protocol ----------------------------------------------------------------------

const GA4_RESERVED_EVENTS: &[&str] = &[
    "ad_activeview",
    "ad_click",
    "ad_exposure",
    "ad_impression",
    "ad_query",
    "ad_reward",
    "adunit_exposure",
    "app_background",
    "app_clear_data",
    "app_exception",
    "app_install",
    "app_remove",
    "app_store_refund",
    "app_update",
    "app_upgrade",
    "dynamic_link_app_open",
    "dynamic_link_app_update",
    "dynamic_link_first_open",
    "error",
    "firebase_campaign",
    "firebase_in_app_message_action",
    "firebase_in_app_message_dismiss",
    "firebase_in_app_message_impression",
    "first_open",
    "first_visit",
    "in_app_purchase",
    "notification_dismiss",
    "notification_foreground",
    "notification_open",
    "notification_receive",
    "os_update",
    "session_start",
    "session_start_with_rollout",
    "user_engagement",
];
const GA4_RESERVED_PREFIXES: &[&str] = &["_", "google_", "ga_", "firebase_"];

fn ga4_name_problem(name: &str, is_event: bool) -> Option<String> {
    let mut chars = name.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphabetic()) {
        return Some(format!("`{name}` does not start with a letter"));
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Some(format!(
            "`{name}` has characters other than letters, digits, _"
        ));
    }
    if name.len() > 40 {
        return Some(format!("`{name}` is longer than 40 characters"));
    }
    let lower = name.to_ascii_lowercase();
    if GA4_RESERVED_PREFIXES.iter().any(|p| lower.starts_with(p)) {
        return Some(format!("`{name}` uses a reserved prefix"));
    }
    if is_event && GA4_RESERVED_EVENTS.contains(&lower.as_str()) {
        return Some(format!("`{name}` is a reserved event name"));
    }
    None
}

fn ga4_value_limit(param: &str) -> usize {
    match param {
        "page_location" => 1000,
        "page_referrer" => 420,
        "page_title" => 300,
        _ => 100,
    }
}

fn ga4_timestamp_problem(value: &Value) -> Option<String> {
    let Some(micros) = value.as_i64() else {
        return Some(format!("timestamp_micros {value} is not an integer"));
    };
    let now = now_ms() * 1000;
    if micros > now + 60_000_000 {
        Some("timestamp_micros is in the future".into())
    } else if micros < now - 72 * 3600 * 1_000_000 {
        Some("timestamp_micros is more than 72 hours old".into())
    } else {
        None
    }
}

fn check_ga4(
    measurement_id: &str,
    api_secret: &str,
    request: &Received,
    body: &Value,
    verdict: &mut Verdict,
) {
    if !check_endpoint(request, "POST", &["/mp/collect"], verdict) {
        return;
    }
    let query: Vec<(String, String)> =
        reqwest::Url::parse(&format!("http://fake/?{}", request.query))
            .map(|url| {
                url.query_pairs()
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    // The real endpoint answers 2xx to all of these and drops the data.
    if param("measurement_id") != Some(measurement_id) {
        verdict.discard(format!("measurement_id is {:?}", param("measurement_id")));
    }
    if param("api_secret") != Some(api_secret) {
        verdict.discard("api_secret missing or wrong".into());
    }
    if request.body.len() > 130_000 {
        verdict.discard(format!(
            "body is {} bytes (limit 130 kB)",
            request.body.len()
        ));
    }
    let Some(object) = body.as_object() else {
        verdict.discard("body is not an object".into());
        return;
    };
    for key in unknown_keys(
        object,
        &[
            "client_id",
            "user_id",
            "timestamp_micros",
            "user_properties",
            "consent",
            "non_personalized_ads",
            "events",
            "user_data",
            "user_location",
            "ip_override",
            "device",
            "validation_behavior",
        ],
    ) {
        verdict.discard(format!("unknown top-level key `{key}`"));
    }
    if object["client_id"].as_str().unwrap_or_default().is_empty() {
        verdict.discard("client_id missing".into());
    }
    if let Some(user_id) = object.get("user_id") {
        if !user_id
            .as_str()
            .is_some_and(|u| !u.is_empty() && u.chars().count() <= 256)
        {
            verdict.discard(format!("user_id {user_id} invalid"));
        }
    }
    if let Some(problem) = object
        .get("timestamp_micros")
        .and_then(ga4_timestamp_problem)
    {
        verdict.discard(problem);
    }
    let events = object["events"].as_array().cloned().unwrap_or_default();
    if events.is_empty() || events.len() > 25 {
        verdict.discard(format!("{} events in one request (1 to 25)", events.len()));
    }
    for (index, event) in events.iter().enumerate() {
        let at = |what: String| format!("events[{index}]: {what}");
        for key in unknown_keys(
            event.as_object().unwrap_or(&Map::new()),
            &["name", "params", "timestamp_micros"],
        ) {
            verdict.discard(at(format!("unknown key `{key}`")));
        }
        let name = event["name"].as_str().unwrap_or_default();
        if let Some(problem) = ga4_name_problem(name, true) {
            verdict.discard(at(problem));
        }
        if let Some(problem) = event
            .get("timestamp_micros")
            .and_then(ga4_timestamp_problem)
        {
            verdict.discard(at(problem));
        }
        let params = match event.get("params") {
            None => Map::new(),
            Some(Value::Object(params)) => params.clone(),
            Some(other) => {
                verdict.discard(at(format!("params {other} is not an object")));
                Map::new()
            }
        };
        if params.len() > 25 {
            verdict.discard(at(format!("{} params (limit 25)", params.len())));
        }
        for (param, value) in &params {
            if let Some(problem) = ga4_name_problem(param, false) {
                verdict.discard(at(format!("param {problem}")));
            }
            match value {
                Value::String(s) if s.chars().count() > ga4_value_limit(param) => {
                    verdict.discard(at(format!("param `{param}` longer than its limit")))
                }
                Value::String(_) | Value::Number(_) | Value::Bool(_) => {}
                Value::Array(items) if param == "items" => {
                    if items.len() > 200 {
                        verdict.discard(at("more than 200 items".into()));
                    }
                    for item in items {
                        let flat = item.as_object().is_some_and(|fields| {
                            fields.iter().all(|(k, v)| {
                                ga4_name_problem(k, false).is_none()
                                    && (v.is_number()
                                        || v.as_str().is_some_and(|s| s.chars().count() <= 100))
                            })
                        });
                        if !flat {
                            verdict.discard(at(format!("item {item} is not a flat object")));
                        }
                    }
                }
                other => verdict.discard(at(format!("param `{param}` has nested value {other}"))),
            }
        }
        verdict.events.push(json!({
            "client_id": object.get("client_id"),
            "user_id": object.get("user_id"),
            "request_timestamp_micros": object.get("timestamp_micros"),
            "name": name,
            "params": params,
            "timestamp_micros": event.get("timestamp_micros"),
        }));
    }
}

// ---- Webhook -------------------------------------------------------------------------------------

#[allow(clippy::too_many_arguments)]
fn check_webhook(
    method: &str,
    path: &str,
    secret: &str,
    expected_headers: &[(String, String)],
    request: &Received,
    body: &Value,
    verdict: &mut Verdict,
) {
    if !check_endpoint(request, method, &[path], verdict) {
        return;
    }
    let unauthorized = json!({"error": "bad signature"});
    let Some(signature) = request.header("x-switchyard-signature") else {
        verdict.refuse(401, unauthorized, "X-Switchyard-Signature missing".into());
        return;
    };
    let mut timestamp = None;
    let mut v1 = None;
    for part in signature.split(',') {
        match part.split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", hex_digest)) => v1 = hex::decode(hex_digest).ok(),
            _ => {}
        }
    }
    let (Some(timestamp), Some(v1)) = (timestamp, v1) else {
        verdict.refuse(
            401,
            unauthorized,
            format!("malformed signature `{signature}`"),
        );
        return;
    };
    if (now_ms() / 1000 - timestamp).abs() > 300 {
        verdict.refuse(
            401,
            unauthorized,
            "signature timestamp outside 5 minutes".into(),
        );
        return;
    }
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return;
    };
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(&request.body);
    if mac.verify_slice(&v1).is_err() {
        verdict.refuse(
            401,
            unauthorized,
            "signature does not match the body".into(),
        );
        return;
    }
    for (name, value) in expected_headers {
        if request.header(name) != Some(value.as_str()) {
            verdict.refuse(
                400,
                json!({"error": "missing header"}),
                format!("header {name} is {:?}", request.header(name)),
            );
        }
    }
    let Some(events) = body
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.get("events"))
        .and_then(Value::as_array)
        .filter(|e| !e.is_empty())
    else {
        verdict.refuse(
            400,
            json!({"error": "expected {\"events\": [...]}"}),
            "envelope".into(),
        );
        return;
    };
    for event in events {
        let canonical = event["messageId"].as_str().is_some_and(|m| !m.is_empty())
            && event["type"].is_string()
            && event["receivedAt"].is_string()
            && event["source"].is_string();
        if canonical {
            verdict.events.push(event.clone());
        } else {
            verdict.refuse(
                400,
                json!({"error": "not a canonical event"}),
                format!("{event}"),
            );
        }
    }
}
