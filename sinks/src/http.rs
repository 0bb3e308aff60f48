//! The HTTP plumbing every vendor sink shares: one pooled `reqwest` client, the classifier that turns a
//! vendor's answer into a [`SendError`], config checks for URLs, and the bookkeeping that lets a sink
//! split one delivery batch into several vendor requests without re-sending the accepted ones on a retry.
//!
//! Error messages built here never contain request URLs (GA4 carries its secret in the query string)
//! and have every configured secret replaced by `[redacted]`.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashSet;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::stream::{FuturesUnordered, StreamExt};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;
use switchyard_schemas::Event;

use crate::sink::{SendError, SinkError};

/// The `User-Agent` of every vendor request.
pub const USER_AGENT: &str = concat!("switchyard/", env!("CARGO_PKG_VERSION"));

/// Longest vendor message kept in an error (characters).
pub const MAX_MESSAGE_CHARS: usize = 300;

/// Most bytes of an error body read from a vendor.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// Bounds on a sink's `timeout_ms`.
pub const TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u64> = 100..=120_000;

/// Default per-request timeout of the vendor sinks.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;

static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();

/// The one HTTP client all vendor sinks share: a connection pool per host, HTTP/2 when the server
/// offers it over TLS, gzip-compressed responses accepted, no redirects followed (a redirect would
/// re-send API keys to another host). Each request sets its own timeout.
pub fn shared_client() -> Result<reqwest::Client, SinkError> {
    if let Some(client) = CLIENT.get() {
        return Ok(client.clone());
    }
    let client = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_millis(*TIMEOUT_MS_RANGE.end()))
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(8)
        .tcp_keepalive(Duration::from_secs(30))
        .gzip(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| SinkError::Setup(format!("cannot build the HTTP client: {e}")))?;
    Ok(CLIENT.get_or_init(|| client).clone())
}

/// Checks a configured vendor URL: absolute `http` or `https` with a host, and (unless `allow_query`)
/// no query string or fragment. Returns the problem, if any.
pub fn check_url(value: &str, allow_query: bool) -> Option<String> {
    if value.trim().is_empty() {
        return Some("must not be empty".into());
    }
    let url = match reqwest::Url::parse(value) {
        Ok(url) => url,
        Err(e) => return Some(format!("`{value}` is not a URL: {e}")),
    };
    if !matches!(url.scheme(), "http" | "https") {
        return Some(format!(
            "`{value}` must use http:// or https://, not {}://",
            url.scheme()
        ));
    }
    if matches!(url.host_str(), None | Some("")) {
        return Some(format!("`{value}` has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Some("must not carry credentials; use the sink's own secret keys".into());
    }
    if !allow_query && (url.query().is_some() || url.fragment().is_some()) {
        return Some(format!(
            "`{value}` must be a base URL without ?query or #fragment"
        ));
    }
    None
}

/// Checks a configured secret (API key): present, and free of whitespace that an env var or a
/// copy-paste often adds.
pub fn check_secret(value: &str) -> Option<String> {
    if value.is_empty() {
        Some("must not be empty (is the environment variable set?)".into())
    } else if value.trim() != value || value.chars().any(char::is_control) {
        Some("must not contain leading/trailing whitespace or control characters".into())
    } else {
        None
    }
}

/// Joins a base URL and a path with exactly one `/` between them.
pub fn join_url(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// Replaces every secret (of 4 characters or more) in `text` by `[redacted]`.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut text = text.to_string();
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        if text.contains(secret) {
            text = text.replace(secret, "[redacted]");
        }
    }
    text
}

/// Cuts `text` to at most `max` characters (at a character boundary), marking the cut.
pub fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// Parses a `Retry-After` value: delay-seconds, or an HTTP-date (IMF-fixdate, as in RFC 9110) relative
/// to `now`. A date in the past means "now" (zero).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        when.with_timezone(&Utc)
            .signed_duration_since(now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, Utc::now())
}

/// The failure a non-2xx status means: 429 and 503 are rate limits (with the Retry-After delay when
/// given); 408 (the server timed out reading the request) and other 5xx are retryable; 3xx (redirects
/// are not followed) and other 4xx are permanent.
pub fn classify_status(
    status: StatusCode,
    retry_after: Option<Duration>,
    message: String,
) -> SendError {
    match status.as_u16() {
        429 | 503 => SendError::RateLimited {
            retry_after,
            message,
        },
        408 | 500..=599 => SendError::Retryable(message),
        _ => SendError::Permanent(message),
    }
}

/// Turns a vendor's answer into `Ok` (2xx) or the classified error, keeping the vendor's message
/// (whitespace collapsed, secrets redacted, cut to [`MAX_MESSAGE_CHARS`]).
pub async fn check_response(
    vendor: &str,
    response: reqwest::Response,
    secrets: &[&str],
) -> Result<(), SendError> {
    let status = response.status();
    if status.is_success() {
        // Read the (small) body so the connection goes back to the pool.
        let _ = read_limited(response).await;
        return Ok(());
    }
    let delay = retry_after(response.headers());
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = read_limited(response).await;
    let mut message = format!("{vendor} answered HTTP {status}");
    let text = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if !text.is_empty() {
        message.push_str(": ");
        message.push_str(&truncate_chars(&redact(&text, secrets), MAX_MESSAGE_CHARS));
    }
    if status.is_redirection() {
        let target = location
            .map(|l| truncate_chars(&redact(&l, secrets), 200))
            .unwrap_or_default();
        message.push_str(&format!(
            " (redirect to `{target}` not followed: configure the final URL)"
        ));
    }
    Err(classify_status(status, delay, message))
}

async fn read_limited(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = MAX_ERROR_BODY_BYTES.saturating_sub(bytes.len());
        bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if bytes.len() >= MAX_ERROR_BODY_BYTES {
            break;
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A request that never got an HTTP answer (connect, TLS, timeout, body): retryable, described without
/// the URL. A request that could not even be built is permanent.
pub fn transport_error(vendor: &str, error: &reqwest::Error, secrets: &[&str]) -> SendError {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    let message = truncate_chars(
        &redact(&format!("{vendor} {kind}{detail}"), secrets),
        MAX_MESSAGE_CHARS,
    );
    if error.is_builder() {
        SendError::Permanent(message)
    } else {
        SendError::Retryable(message)
    }
}

/// Posts a body and classifies the answer: the whole request/response cycle of one vendor request.
pub async fn execute(
    vendor: &str,
    request: reqwest::RequestBuilder,
    secrets: &[&str],
) -> Result<(), SendError> {
    match request.send().await {
        Ok(response) => check_response(vendor, response, secrets).await,
        Err(error) => Err(transport_error(vendor, &error, secrets)),
    }
}

/// A stable fingerprint of a list of events (their ids and receive times), used to recognise the same
/// batch, or the same request, when the delivery runner retries.
pub fn fingerprint<'a>(events: impl IntoIterator<Item = &'a Event>) -> u64 {
    let mut hasher = DefaultHasher::new();
    for event in events {
        event.message_id.hash(&mut hasher);
        event.received_at.timestamp_millis().hash(&mut hasher);
    }
    hasher.finish()
}

/// One vendor request planned from a batch.
pub struct Planned<T> {
    /// [`fingerprint`] of the events the request carries.
    pub key: u64,
    /// How many events it carries.
    pub events: usize,
    pub body: T,
}

/// Which requests of the batch in hand a vendor already accepted. The delivery runner retries a failed
/// batch as a whole; a sink that split it into several requests uses this to re-send only the ones
/// that were not accepted, so a retry does not duplicate events at vendors that do not de-duplicate.
pub struct RequestProgress {
    state: Mutex<Option<(u64, HashSet<u64>)>>,
    /// Most requests of one batch in flight at once (`batch.max_concurrent_requests`).
    max_concurrent: usize,
}

impl RequestProgress {
    pub fn new(max_concurrent: usize) -> RequestProgress {
        RequestProgress {
            state: Mutex::new(None),
            max_concurrent: max_concurrent.max(1),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Option<(u64, HashSet<u64>)>) -> R) -> R {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    fn accepted(&self, batch: u64, request: u64) -> bool {
        self.with(|state| match state {
            Some((current, done)) if *current == batch => done.contains(&request),
            _ => {
                *state = Some((batch, HashSet::new()));
                false
            }
        })
    }

    fn mark(&self, batch: u64, request: u64) {
        self.with(|state| {
            if let Some((current, done)) = state {
                if *current == batch {
                    done.insert(request);
                }
            }
        })
    }

    fn clear(&self) {
        self.with(|state| *state = None)
    }

    /// Sends the planned requests, up to `max_concurrent` at once and started in order, skipping
    /// those already accepted in an earlier attempt at the same batch. After a failure no further
    /// request is started; the ones in flight finish (and count as accepted if they were). The error
    /// returned says which request failed: a rate limit if any request was rate-limited (the
    /// longest `Retry-After`, so the retry waits as the vendor asked), else the first failure in
    /// plan order.
    pub async fn send_all<T, F, Fut>(
        &self,
        batch_key: u64,
        requests: Vec<Planned<T>>,
        mut send: F,
    ) -> Result<(), SendError>
    where
        F: FnMut(T) -> Fut,
        Fut: Future<Output = Result<(), SendError>>,
    {
        let total = requests.len();
        let mut pending = requests
            .into_iter()
            .enumerate()
            .filter(|(_, request)| !self.accepted(batch_key, request.key));
        let mut in_flight = FuturesUnordered::new();
        // The failure to report: (index in the plan, events it carried, error).
        let mut reported_failure: Option<(usize, usize, SendError)> = None;
        loop {
            while reported_failure.is_none() && in_flight.len() < self.max_concurrent {
                let Some((index, request)) = pending.next() else {
                    break;
                };
                let (key, events) = (request.key, request.events);
                let response = send(request.body);
                in_flight.push(async move { (index, key, events, response.await) });
            }
            let Some((index, key, events, result)) = in_flight.next().await else {
                break;
            };
            match result {
                Ok(()) => self.mark(batch_key, key),
                Err(error) => {
                    if reported_failure
                        .as_ref()
                        .is_none_or(|(reported_index, _, reported)| {
                            reports_before(&error, index, reported, *reported_index)
                        })
                    {
                        reported_failure = Some((index, events, error));
                    }
                }
            }
        }
        let Some((index, events, error)) = reported_failure else {
            self.clear();
            return Ok(());
        };
        let context = |message: String| {
            if total == 1 {
                message
            } else {
                format!(
                    "request {} of {total} ({events} events; requests already accepted are not sent again): {message}",
                    index + 1
                )
            }
        };
        Err(match error {
            SendError::Permanent(message) => {
                self.clear();
                SendError::Permanent(context(message))
            }
            SendError::Retryable(message) => SendError::Retryable(context(message)),
            SendError::RateLimited {
                retry_after,
                message,
            } => SendError::RateLimited {
                retry_after,
                message: context(message),
            },
        })
    }
}

/// Whether failure `error` of request `index` is the one to report rather than `reported` (of
/// request `reported_index`): rate limits first (the longest wait), then plan order.
fn reports_before(
    error: &SendError,
    index: usize,
    reported: &SendError,
    reported_index: usize,
) -> bool {
    let wait = |error: &SendError| match error {
        SendError::RateLimited { retry_after, .. } => Some(retry_after.unwrap_or_default()),
        _ => None,
    };
    match (wait(error), wait(reported)) {
        (Some(this), Some(that)) => this > that || (this == that && index < reported_index),
        (Some(_), None) => true,
        (None, Some(_)) => false,
        (None, None) => index < reported_index,
    }
}

/// Reads a string-or-number JSON value as a string, for ids that clients send as numbers.
pub fn json_string(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Asserts that `value` serialises to exactly the bytes of the same data as a `serde_json::Value`
/// (keys sorted at every level): the vendor payloads that borrow from events derive their writers
/// and must send what the `Value`-built payloads sent.
#[cfg(test)]
pub(crate) fn assert_writes_like_a_json_object(value: &impl serde::Serialize) {
    let direct = serde_json::to_vec(value).unwrap();
    let via_value = serde_json::to_vec(&serde_json::to_value(value).unwrap()).unwrap();
    assert_eq!(
        String::from_utf8(direct).unwrap(),
        String::from_utf8(via_value).unwrap()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn statuses_are_classified() {
        let m = || "m".to_string();
        assert!(matches!(
            classify_status(StatusCode::TOO_MANY_REQUESTS, Some(Duration::from_secs(2)), m()),
            SendError::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(2)
        ));
        assert!(matches!(
            classify_status(StatusCode::SERVICE_UNAVAILABLE, None, m()),
            SendError::RateLimited {
                retry_after: None,
                ..
            }
        ));
        for code in [500, 502, 504, 408] {
            let status = StatusCode::from_u16(code).unwrap();
            assert!(matches!(
                classify_status(status, None, m()),
                SendError::Retryable(_)
            ));
        }
        for code in [400, 401, 403, 404, 413, 422, 301] {
            let status = StatusCode::from_u16(code).unwrap();
            assert!(
                matches!(classify_status(status, None, m()), SendError::Permanent(_)),
                "{code}"
            );
        }
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now = Utc.with_ymd_and_hms(2015, 10, 21, 7, 28, 0).unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn urls_and_secrets_are_checked() {
        assert_eq!(check_url("https://us.i.posthog.com", false), None);
        assert_eq!(check_url("http://127.0.0.1:9000/", false), None);
        assert!(check_url("ftp://example.com", false).is_some());
        assert!(check_url("us.i.posthog.com", false).is_some());
        assert!(check_url("", false).is_some());
        assert!(check_url("https://example.com/?a=1", false).is_some());
        assert_eq!(check_url("https://example.com/hook?a=1", true), None);
        assert!(check_url("https://user:pw@example.com/", true).is_some());
        assert!(check_secret("").is_some());
        assert!(check_secret(" key").is_some());
        assert_eq!(check_secret("phc_abc"), None);
        assert_eq!(
            join_url("https://h.example/", "/batch/"),
            "https://h.example/batch/"
        );
    }

    #[test]
    fn secrets_are_redacted_and_messages_cut() {
        assert_eq!(
            redact("bad key phc_secret1 here", &["phc_secret1", ""]),
            "bad key [redacted] here"
        );
        assert_eq!(truncate_chars("ééééé", 3), "ééé…");
        assert_eq!(truncate_chars("abc", 3), "abc");
    }

    fn event(id: &str) -> Event {
        serde_json::from_value(serde_json::json!({
            "type": "track", "event": "E", "messageId": id, "userId": "u",
            "timestamp": "2024-05-01T12:00:00.000Z", "receivedAt": "2024-05-01T12:00:00.000Z",
            "source": "web"
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn a_retry_resends_only_the_requests_not_yet_accepted() {
        let events: Vec<Event> = (0..3).map(|i| event(&format!("m{i}"))).collect();
        let batch_key = fingerprint(&events);
        let plan = || {
            events
                .iter()
                .map(|e| Planned {
                    key: fingerprint([e]),
                    events: 1,
                    body: e.message_id.clone(),
                })
                .collect::<Vec<_>>()
        };
        let progress = RequestProgress::new(1);
        let sent = Mutex::new(Vec::new());
        let calls = AtomicUsize::new(0);
        let send = |body: String| {
            let attempt = calls.fetch_add(1, Ordering::SeqCst);
            sent.lock().unwrap().push(body);
            async move {
                if attempt == 1 {
                    Err(SendError::Retryable("boom".into()))
                } else {
                    Ok(())
                }
            }
        };
        let first = progress.send_all(batch_key, plan(), send).await;
        match first {
            Err(SendError::Retryable(message)) => assert!(message.starts_with("request 2 of 3")),
            other => panic!("unexpected {other:?}"),
        }
        progress.send_all(batch_key, plan(), send).await.unwrap();
        assert_eq!(*sent.lock().unwrap(), vec!["m0", "m1", "m1", "m2"]);
        // A different batch starts from scratch.
        progress
            .send_all(batch_key ^ 1, plan(), send)
            .await
            .unwrap();
        assert_eq!(sent.lock().unwrap().len(), 7);

        // Sent three at a time, the third is already on its way when the second fails; the retry
        // sends only the second.
        let progress = RequestProgress::new(3);
        sent.lock().unwrap().clear();
        calls.store(0, Ordering::SeqCst);
        let first = progress.send_all(batch_key, plan(), send).await;
        assert!(matches!(first, Err(SendError::Retryable(m)) if m.starts_with("request 2 of 3")));
        progress.send_all(batch_key, plan(), send).await.unwrap();
        assert_eq!(*sent.lock().unwrap(), vec!["m0", "m1", "m2", "m1"]);
    }

    #[test]
    fn a_rate_limit_is_reported_before_other_failures_and_the_longest_wait_wins() {
        let limited = |secs| SendError::RateLimited {
            retry_after: Some(Duration::from_secs(secs)),
            message: "429".into(),
        };
        let retryable = SendError::Retryable("503".into());
        assert!(reports_before(&limited(1), 5, &retryable, 0));
        assert!(!reports_before(&retryable, 0, &limited(1), 5));
        assert!(reports_before(&limited(30), 5, &limited(1), 0));
        assert!(!reports_before(&limited(1), 0, &limited(30), 5));
        assert!(reports_before(
            &retryable,
            0,
            &SendError::Permanent("400".into()),
            1
        ));
    }

    #[tokio::test]
    async fn requests_of_a_batch_overlap_up_to_the_limit() {
        let events: Vec<Event> = (0..10).map(|i| event(&format!("m{i}"))).collect();
        for limit in [1, 4, 32] {
            let plan = events
                .iter()
                .map(|e| Planned {
                    key: fingerprint([e]),
                    events: 1,
                    body: (),
                })
                .collect::<Vec<_>>();
            let now = AtomicUsize::new(0);
            let most = AtomicUsize::new(0);
            let send = |()| {
                let (now, most) = (&now, &most);
                async move {
                    let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(running, Ordering::SeqCst);
                    for _ in 0..3 {
                        tokio::task::yield_now().await;
                    }
                    now.fetch_sub(1, Ordering::SeqCst);
                    Ok(())
                }
            };
            RequestProgress::new(limit)
                .send_all(fingerprint(&events), plan, send)
                .await
                .unwrap();
            assert_eq!(
                most.load(Ordering::SeqCst),
                limit.min(events.len()),
                "limit {limit}"
            );
        }
    }

    #[tokio::test]
    async fn the_reported_failure_in_plan_order_is_reported_and_nothing_more_is_started() {
        let events: Vec<Event> = (0..6).map(|i| event(&format!("m{i}"))).collect();
        let plan = || {
            events
                .iter()
                .enumerate()
                .map(|(index, e)| Planned {
                    key: fingerprint([e]),
                    events: 1,
                    body: index,
                })
                .collect::<Vec<_>>()
        };
        let started = Mutex::new(Vec::new());
        // Request 3 fails at once, request 2 fails later: 2 is the first in plan order.
        let send = |index: usize| {
            started.lock().unwrap().push(index);
            async move {
                if index != 2 {
                    for _ in 0..5 {
                        tokio::task::yield_now().await;
                    }
                }
                match index {
                    1 => Err(SendError::Permanent("second".into())),
                    2 => Err(SendError::Retryable("third".into())),
                    _ => Ok(()),
                }
            }
        };
        let progress = RequestProgress::new(3);
        let result = progress.send_all(7, plan(), send).await;
        match result {
            Err(SendError::Permanent(message)) => {
                assert!(message.starts_with("request 2 of 6"), "{message}")
            }
            other => panic!("unexpected {other:?}"),
        }
        // The failure came back before anything else finished: nothing was started after it.
        assert_eq!(*started.lock().unwrap(), vec![0, 1, 2]);
    }
}
