//! The webhook sink: each batch of canonical events as one signed JSON request to any HTTP endpoint
//! (`{"events": [...]}` with `X-Switchyard-Signature: t=<unix>,v1=<hex HMAC-SHA256>`; see
//! docs/sinks/webhook.md for how a receiver verifies it).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use switchyard_schemas::Event;

use crate::http;
use crate::sink::{SendError, Sink, SinkError};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "X-Switchyard-Signature";

/// Shortest accepted signing secret (characters).
pub const MIN_SECRET_CHARS: usize = 16;

/// Headers Switchyard sets itself (or HTTP owns), which `headers` may not override.
const RESERVED_HEADERS: [&str; 7] = [
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "host",
    "connection",
    "x-switchyard-signature",
];

/// The HTTP method of a webhook request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum WebhookMethod {
    #[default]
    Post,
    Put,
    Patch,
}

/// `type = "webhook"`: every batch as one signed JSON request.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSinkConfig {
    /// The endpoint (http:// or https://; a query string is allowed).
    pub url: String,
    /// The HMAC-SHA256 signing key, at least 16 characters. Use `${HOOK_SECRET}`.
    pub secret: String,
    /// `POST` (default), `PUT` or `PATCH`.
    #[serde(default)]
    pub method: WebhookMethod,
    /// Extra request headers, e.g. `{ "X-Team" = "growth" }`; values may use `${VAR}`. Content-Type,
    /// Content-Length, Host and the signature header cannot be overridden.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Timeout of one request in milliseconds, 100 to 120000 (default 10000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    http::DEFAULT_TIMEOUT_MS
}

impl fmt::Debug for WebhookSinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&String> = self.headers.keys().collect();
        f.debug_struct("WebhookSinkConfig")
            .field("url", &self.url)
            .field("secret", &"[redacted]")
            .field("method", &self.method)
            .field("headers", &header_names)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

impl WebhookSinkConfig {
    /// Problems with the values, as (relative path, message) pairs.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if let Some(problem) = http::check_url(&self.url, true) {
            problems.push(("url".into(), problem));
        }
        if let Some(problem) = http::check_secret(&self.secret) {
            problems.push(("secret".into(), problem));
        } else if self.secret.chars().count() < MIN_SECRET_CHARS {
            problems.push((
                "secret".into(),
                format!("must be at least {MIN_SECRET_CHARS} characters"),
            ));
        }
        for (name, value) in &self.headers {
            let path = format!("headers.{name}");
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                problems.push((path, "is not a valid HTTP header name".into()));
            } else if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                problems.push((path, "is set by Switchyard and cannot be overridden".into()));
            } else if HeaderValue::from_str(value).is_err() {
                problems.push((
                    path,
                    "is not a valid header value (visible ASCII only)".into(),
                ));
            }
        }
        if !http::TIMEOUT_MS_RANGE.contains(&self.timeout_ms) {
            problems.push(("timeout_ms".into(), "must be between 100 and 120000".into()));
        }
        problems
    }
}

/// The `X-Switchyard-Signature` value for `body` sent at `timestamp` (unix seconds):
/// `t=<timestamp>,v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length; the error arm cannot happen.
    let digest = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    };
    format!("t={timestamp},v1={digest}")
}

/// Posts every batch, signed, to the configured endpoint.
pub struct WebhookSink {
    name: String,
    config: WebhookSinkConfig,
    headers: HeaderMap,
    method: reqwest::Method,
    client: reqwest::Client,
}

impl WebhookSink {
    pub fn new(name: &str, config: WebhookSinkConfig) -> Result<WebhookSink, SinkError> {
        let mut headers = HeaderMap::new();
        for (key, value) in &config.headers {
            let header = HeaderName::from_bytes(key.as_bytes()).map_err(|_| {
                SinkError::Setup(format!("sinks.{name}.headers.{key}: invalid name"))
            })?;
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                SinkError::Setup(format!("sinks.{name}.headers.{key}: invalid value"))
            })?;
            value.set_sensitive(true);
            headers.insert(header, value);
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let method = match config.method {
            WebhookMethod::Post => reqwest::Method::POST,
            WebhookMethod::Put => reqwest::Method::PUT,
            WebhookMethod::Patch => reqwest::Method::PATCH,
        };
        Ok(WebhookSink {
            name: name.to_string(),
            headers,
            method,
            client: http::shared_client()?,
            config,
        })
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    events: Vec<&'a Event>,
}

#[async_trait]
impl Sink for WebhookSink {
    async fn send(&self, batch: &[Arc<Event>]) -> Result<(), SendError> {
        let body = serde_json::to_vec(&Envelope {
            events: batch.iter().map(|e| e.as_ref()).collect(),
        })
        .map_err(|e| SendError::Permanent(format!("cannot encode the webhook body: {e}")))?;
        let timestamp = chrono::Utc::now().timestamp();
        let signed = signature(&self.config.secret, timestamp, &body);
        let request = self
            .client
            .request(self.method.clone(), &self.config.url)
            .timeout(Duration::from_millis(self.config.timeout_ms))
            .headers(self.headers.clone())
            .header(SIGNATURE_HEADER, signed)
            .body(body);
        tracing::debug!(sink = %self.name, events = batch.len(), "sending to webhook");
        let mut secrets: Vec<&str> = vec![&self.config.secret];
        secrets.extend(self.config.headers.values().map(String::as_str));
        http::execute("webhook", request, &secrets).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Reference computed independently with Python:
        // hmac.new(b"whsec_0123456789abcdef", b'1714564800.{"events":[]}', hashlib.sha256).hexdigest()
        let value = signature("whsec_0123456789abcdef", 1_714_564_800, br#"{"events":[]}"#);
        assert_eq!(
            value,
            "t=1714564800,v1=7009dcfc3febda2cb8af0aa10f87f702022280982f7692f32bf758c17e0e0aa6"
        );
        assert_ne!(
            value,
            signature("whsec_0123456789abcdef", 1_714_564_801, br#"{"events":[]}"#)
        );
    }

    #[test]
    fn config_is_validated_and_debug_hides_secrets() {
        let config: WebhookSinkConfig = serde_json::from_value(json!({
            "url": "mailto:x@example.com", "secret": "short",
            "headers": {"Content-Type": "text/plain", "bad header": "x", "X-Ok": "line\nbreak"},
            "timeout_ms": 0
        }))
        .unwrap();
        let paths: Vec<String> = config.validate().into_iter().map(|p| p.0).collect();
        assert_eq!(
            paths,
            [
                "url",
                "secret",
                "headers.Content-Type",
                "headers.X-Ok",
                "headers.bad header",
                "timeout_ms"
            ]
        );
        let config: WebhookSinkConfig = serde_json::from_value(json!({
            "url": "https://hooks.example.com/analytics?team=growth",
            "secret": "whsec_0123456789abcdef", "method": "PUT",
            "headers": {"Authorization": "Bearer tok_abcdef"}
        }))
        .unwrap();
        assert!(config.validate().is_empty());
        assert_eq!(config.method, WebhookMethod::Put);
        let debug = format!("{config:?}");
        assert!(!debug.contains("whsec_") && !debug.contains("tok_abcdef"));
        assert!(serde_json::from_value::<WebhookSinkConfig>(
            json!({"url": "https://x.example", "secret": "whsec_0123456789abcdef", "method": "GET"})
        )
        .is_err());
    }
}
