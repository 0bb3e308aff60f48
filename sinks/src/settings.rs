//! Per-sink configuration: the sink type's own settings plus the settings every sink shares
//! (batching, rollout, retries, circuit breaker, consent, per-sink sanitizers).
//!
//! Each struct's doc comments are its user documentation (the README's configuration reference
//! follows them).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use switchyard_sanitizers::SanitizerConfig;

pub use crate::ga4::Ga4SinkConfig;
pub use crate::posthog::PosthogSinkConfig;
pub use crate::statsig::StatsigSinkConfig;
pub use crate::webhook::{WebhookMethod, WebhookSinkConfig};

/// The sink types: a closed set, selected by `type = "..."` in `[sinks.<name>]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SinkKind {
    /// Newline-delimited JSON files on local disk, one file per hour.
    File(FileSinkConfig),
    /// Rows in a ClickHouse table, with rollups and managed schema.
    Clickhouse(ClickhouseSinkConfig),
    /// PostHog's capture API (`POST {url}/batch/`).
    Posthog(PosthogSinkConfig),
    /// Statsig's events API (`POST {url}/v1/log_event`).
    Statsig(StatsigSinkConfig),
    /// The GA4 Measurement Protocol, or a server-side GTM container (`POST {url}/mp/collect`).
    Ga4(Ga4SinkConfig),
    /// Any HTTP endpoint: each batch as one HMAC-signed JSON request.
    Webhook(WebhookSinkConfig),
}

impl SinkKind {
    /// The `type` name as written in the config.
    pub fn type_name(&self) -> &'static str {
        match self {
            SinkKind::File(_) => "file",
            SinkKind::Clickhouse(_) => "clickhouse",
            SinkKind::Posthog(_) => "posthog",
            SinkKind::Statsig(_) => "statsig",
            SinkKind::Ga4(_) => "ga4",
            SinkKind::Webhook(_) => "webhook",
        }
    }

    /// Problems with the type-specific settings, as (relative path, message) pairs.
    pub fn validate(&self) -> Vec<(String, String)> {
        match self {
            SinkKind::File(file) => file.validate(),
            SinkKind::Clickhouse(clickhouse) => clickhouse.validate(),
            SinkKind::Posthog(posthog) => posthog.validate(),
            SinkKind::Statsig(statsig) => statsig.validate(),
            SinkKind::Ga4(ga4) => ga4.validate(),
            SinkKind::Webhook(webhook) => webhook.validate(),
        }
    }

    /// The batch settings a sink of this type uses for the keys `[sinks.<name>.batch]` leaves out:
    /// ClickHouse wants few large inserts (about 10k rows or one per second); the other types use
    /// the shared [`BatchConfig::default`].
    pub fn default_batch(&self) -> BatchConfig {
        match self {
            SinkKind::Clickhouse(_) => ClickhouseSinkConfig::default_batch(),
            _ => BatchConfig::default(),
        }
    }
}

/// `type = "file"`: NDJSON, one file per hour (`events-YYYYMMDD-HH.ndjson`, hour of `receivedAt`, UTC),
/// appended in batches; readable by jq, clickhouse-local and DuckDB.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// Directory the hourly files are written to; created if missing.
    pub path: PathBuf,
    /// Flush written data to stable storage after every batch (slower; survives power loss).
    #[serde(default)]
    pub fsync: bool,
}

impl FileSinkConfig {
    fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if self.path.as_os_str().is_empty() {
            problems.push(("path".to_string(), "must not be empty".to_string()));
        }
        problems
    }
}

/// `type = "clickhouse"`: one row per event in a ClickHouse table, inserted in large RowBinary batches
/// (LZ4-compressed) over the HTTP interface, with daily and per-person rollups kept by materialized
/// views. See `docs/sinks/clickhouse.md` for the schema and example queries.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickhouseSinkConfig {
    /// Address of the server's HTTP interface, `http://host:8123` or `https://host:8443`.
    pub url: String,
    /// Database holding the tables; created if missing (with `create_schema = true`).
    #[serde(default = "ClickhouseSinkConfig::default_database")]
    pub database: String,
    /// The events table. Its rollups are `<table>_daily` and `<table>_by_person`.
    #[serde(default = "ClickhouseSinkConfig::default_table")]
    pub table: String,
    /// The user to connect as.
    #[serde(default = "ClickhouseSinkConfig::default_user")]
    pub user: String,
    /// The user's password; write `"${CLICKHOUSE_PASSWORD}"` rather than the secret itself. Never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// At start, create the database, tables and rollups if missing and apply pending migrations.
    /// With `false` the tables must exist (their columns are checked at start).
    #[serde(default = "ClickhouseSinkConfig::default_create_schema")]
    pub create_schema: bool,
    /// Drop events once their `timestamp` is this many days old (a table TTL, on servers that have
    /// TTL: 19.6 and later). Applied when the tables are created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
    /// Bound on every request to the server (an insert, a query, a health check), in seconds.
    #[serde(default = "ClickhouseSinkConfig::default_request_timeout_secs")]
    pub request_timeout_secs: u64,
}

/// The password stays out of debug output.
impl std::fmt::Debug for ClickhouseSinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickhouseSinkConfig")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("table", &self.table)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("create_schema", &self.create_schema)
            .field("retention_days", &self.retention_days)
            .field("request_timeout_secs", &self.request_timeout_secs)
            .finish()
    }
}

impl ClickhouseSinkConfig {
    fn default_database() -> String {
        "switchyard".to_string()
    }

    fn default_table() -> String {
        "events".to_string()
    }

    fn default_user() -> String {
        "default".to_string()
    }

    fn default_create_schema() -> bool {
        true
    }

    fn default_request_timeout_secs() -> u64 {
        30
    }

    /// About 10k rows or one insert per second, as ClickHouse recommends.
    pub fn default_batch() -> BatchConfig {
        BatchConfig {
            max_events: 10_000,
            max_bytes: 16 * 1024 * 1024,
            max_wait_ms: 1000,
            ..BatchConfig::default()
        }
    }

    fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if let Err(message) = check_http_url(&self.url) {
            problems.push(("url".to_string(), message));
        }
        for (key, value) in [("database", &self.database), ("table", &self.table)] {
            if !is_sql_identifier(value) {
                problems.push((
                    key.to_string(),
                    "must be 1 to 48 letters, digits or '_', not starting with a digit".to_string(),
                ));
            }
        }
        if self.user.trim().is_empty() {
            problems.push(("user".to_string(), "must not be empty".to_string()));
        }
        if self.retention_days == Some(0) {
            problems.push(("retention_days".to_string(), "must be > 0".to_string()));
        }
        if self.request_timeout_secs == 0 {
            problems.push((
                "request_timeout_secs".to_string(),
                "must be > 0".to_string(),
            ));
        }
        problems
    }
}

/// An `http://` or `https://` address with a host and nothing after the path (credentials belong in
/// `user` / `password`, the database in `database`).
fn check_http_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| "must start with http:// or https://".to_string())?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err("must not contain credentials: use `user` and `password`".to_string());
    }
    if authority.is_empty() || authority.starts_with(':') {
        return Err("must name a host".to_string());
    }
    if rest.contains('?') || rest.contains('#') {
        return Err(
            "must not have a query or fragment: use `database` for the database".to_string(),
        );
    }
    if rest.chars().any(char::is_whitespace) {
        return Err("must not contain spaces".to_string());
    }
    Ok(())
}

/// A plain SQL identifier, short enough for the derived rollup names.
fn is_sql_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(first) if first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 48
}

/// `[sinks.<name>.batch]`: how events are grouped before a send. A batch is sent when it reaches
/// `max_events` or `max_bytes`, or `max_wait_ms` after its first event, whichever comes first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Most events in one send.
    pub max_events: usize,
    /// Most bytes (of canonical JSON) in one send.
    pub max_bytes: usize,
    /// Longest time the first event of a batch waits for more.
    pub max_wait_ms: u64,
    /// Most requests of one batch in flight at once, for sinks that split a batch into several
    /// requests (PostHog, Statsig, GA4): one at a time, a vendor's round trip caps the sink at a few
    /// requests per second.
    pub max_concurrent_requests: usize,
}

impl BatchConfig {
    /// The upper bound of `max_concurrent_requests`.
    pub const MAX_CONCURRENT_REQUESTS: usize = 64;
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_events: 1000,
            max_bytes: 4 * 1024 * 1024,
            max_wait_ms: 500,
            max_concurrent_requests: 4,
        }
    }
}

/// Whether a sink's share of traffic is delivered with full guarantees or best effort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutMode {
    /// Full delivery guarantees: retried until delivered or dead-lettered.
    Live,
    /// Best effort: bounded retries; drops are counted, never block anything.
    Shadow,
}

/// Which id decides whether an event is in a sink's rollout share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutKey {
    /// `userId`, falling back to `anonymousId`: a person is wholly in or out.
    User,
    /// `anonymousId`, falling back to `userId`.
    AnonymousId,
    /// `messageId`: an independent draw per event.
    MessageId,
}

/// `[sinks.<name>.rollout]`: the share of events this sink receives.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutConfig {
    /// Share of keys routed to the sink, 0 to 100 with at most two decimals. 0 stops the sink.
    pub percent: f64,
    /// `live` or `shadow`.
    pub mode: RolloutMode,
    /// `user`, `anonymous_id` or `message_id`.
    pub by: RolloutKey,
}

impl Default for RolloutConfig {
    fn default() -> Self {
        RolloutConfig {
            percent: 100.0,
            mode: RolloutMode::Live,
            by: RolloutKey::User,
        }
    }
}

impl RolloutConfig {
    /// The percent in basis points (hundredths of a percent), 0..=10_000.
    pub fn basis_points(&self) -> u32 {
        (self.percent * 100.0).round().clamp(0.0, 10_000.0) as u32
    }

    /// Problems with the values, as (relative path, message) pairs.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if !(0.0..=100.0).contains(&self.percent) || self.percent.is_nan() {
            problems.push(("percent".into(), "must be between 0 and 100".into()));
        } else if ((self.percent * 100.0).round() - self.percent * 100.0).abs() > 1e-6 {
            problems.push(("percent".into(), "must have at most two decimals".into()));
        }
        problems
    }
}

/// `[sinks.<name>.retry]`: how failed sends are retried (exponential backoff with full jitter).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Most attempts per batch; 0 means retry until `max_retry_duration_secs` has passed.
    pub max_attempts: u32,
    /// Longest time a batch is retried before it goes to the dead-letter store.
    pub max_retry_duration_secs: u64,
    /// Backoff before the first retry.
    pub initial_backoff_ms: u64,
    /// Cap on the backoff between retries.
    pub max_backoff_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 0,
            max_retry_duration_secs: 86_400,
            initial_backoff_ms: 200,
            max_backoff_ms: 60_000,
        }
    }
}

/// `[sinks.<name>.circuit_breaker]`: when to stop calling a failing sink for a while.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreakerConfig {
    /// Open after this many failures in a row.
    pub consecutive_failures: u32,
    /// Or open when this share of calls in the window failed (0 to 1).
    pub failure_rate: f64,
    /// The window the failure rate is measured over.
    pub window_secs: u64,
    /// First wait before a probe; doubles with each failed probe.
    pub open_secs: u64,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig {
            consecutive_failures: 5,
            failure_rate: 0.5,
            window_secs: 30,
            open_secs: 10,
        }
    }
}

/// `[sinks.<name>]`: one configured sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SinkSettings {
    /// The sink type and its own settings.
    #[serde(flatten)]
    pub kind: SinkKind,
    /// Settings every sink shares.
    #[serde(flatten)]
    pub common: CommonSinkSettings,
}

/// The settings every sink type shares.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommonSinkSettings {
    pub batch: BatchConfig,
    pub rollout: RolloutConfig,
    pub retry: RetryConfig,
    pub circuit_breaker: CircuitBreakerConfig,
    /// Only events whose consent grants this category reach the sink.
    pub consent: Option<String>,
    /// Sanitizers applied for this sink only, after the global chain.
    pub sanitizers: Vec<SanitizerConfig>,
    /// The trusted sink this one is compared with in the reconciliation report (default: the first
    /// live sink at 100%, by name).
    pub compare_with: Option<String>,
    /// Skip the synthetic `Session Started` / `Session Ended` events of server-side sessions
    /// (`context.synthetic = true`), e.g. for vendors that compute their own sessions.
    pub exclude_synthetic: bool,
}

impl CommonSinkSettings {
    /// The keys of `[sinks.<name>]` that belong to the shared settings, not to the sink type.
    pub const KEYS: [&'static str; 8] = [
        "batch",
        "rollout",
        "retry",
        "circuit_breaker",
        "consent",
        "sanitizers",
        "compare_with",
        "exclude_synthetic",
    ];

    /// Problems with the values, as (relative path, message) pairs.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if self.batch.max_events == 0 {
            problems.push(("batch.max_events".into(), "must be > 0".into()));
        }
        if self.batch.max_bytes < 1024 {
            problems.push(("batch.max_bytes".into(), "must be >= 1024".into()));
        }
        if self.batch.max_wait_ms == 0 {
            problems.push(("batch.max_wait_ms".into(), "must be > 0".into()));
        }
        if !(1..=BatchConfig::MAX_CONCURRENT_REQUESTS).contains(&self.batch.max_concurrent_requests)
        {
            problems.push((
                "batch.max_concurrent_requests".into(),
                format!("must be 1..={}", BatchConfig::MAX_CONCURRENT_REQUESTS),
            ));
        }
        for (path, message) in self.rollout.validate() {
            problems.push((format!("rollout.{path}"), message));
        }
        if self.retry.initial_backoff_ms == 0 {
            problems.push(("retry.initial_backoff_ms".into(), "must be > 0".into()));
        }
        if self.retry.max_backoff_ms < self.retry.initial_backoff_ms {
            problems.push((
                "retry.max_backoff_ms".into(),
                "must be >= initial_backoff_ms".into(),
            ));
        }
        if self.retry.max_attempts == 0 && self.retry.max_retry_duration_secs == 0 {
            problems.push((
                "retry.max_retry_duration_secs".into(),
                "must be > 0 when max_attempts = 0".into(),
            ));
        }
        let breaker = &self.circuit_breaker;
        if breaker.consecutive_failures == 0 {
            problems.push((
                "circuit_breaker.consecutive_failures".into(),
                "must be > 0".into(),
            ));
        }
        if !(0.0..=1.0).contains(&breaker.failure_rate) || breaker.failure_rate.is_nan() {
            problems.push((
                "circuit_breaker.failure_rate".into(),
                "must be between 0 and 1".into(),
            ));
        }
        if breaker.window_secs == 0 {
            problems.push(("circuit_breaker.window_secs".into(), "must be > 0".into()));
        }
        if breaker.open_secs == 0 {
            problems.push(("circuit_breaker.open_secs".into(), "must be > 0".into()));
        }
        if let Some(category) = &self.consent {
            if category.trim().is_empty() {
                problems.push(("consent".into(), "must not be empty".into()));
            }
        }
        problems
    }
}
