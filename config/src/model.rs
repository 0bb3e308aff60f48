//! The configuration model. Field doc comments are the user documentation of each key.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use switchyard_sanitizers::SanitizerConfig;
use switchyard_sinks::settings::SinkSettings;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Config {
    pub server: ServerConfig,
    /// `[sources.<name>]`; with none, ingest is open (a warning is logged) and events get source `default`.
    pub sources: BTreeMap<String, SourceConfig>,
    /// `[[sanitizers]]`: the global chain, applied in order to every event before it is logged.
    pub sanitizers: Vec<SanitizerConfig>,
    /// `[sinks.<name>]`.
    pub sinks: BTreeMap<String, SinkSettings>,
    pub delivery: DeliveryConfig,
    pub rollout: RolloutGlobalConfig,
    pub consent: ConsentSettings,
    pub admin: AdminConfig,
    /// `[tracking_plan]`: check every event against a tracking plan (off without the section).
    pub tracking_plan: Option<TrackingPlanConfig>,
    /// `[sessions]`: server-side sessions (off by default).
    pub sessions: SessionsConfig,
    pub limits: LimitsConfig,
    /// `[kpis]`: the product KPI API and the console's charts, read from a ClickHouse sink's tables.
    pub kpis: KpiConfig,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the ingest server listens on.
    pub listen: String,
    /// Largest request body accepted (compressed size, as sent); larger gets 413.
    pub max_body_bytes: usize,
    /// Largest single event; a larger one is rejected alone, the rest of its batch is accepted.
    pub max_event_bytes: usize,
    /// Largest body after decompression (guards against gzip bombs); larger gets 413.
    pub max_decompressed_bytes: usize,
    /// Where the ingest log, cursors, dead letters and runtime state live.
    pub data_dir: PathBuf,
    /// Peers (IPs or CIDR ranges) whose X-Forwarded-For header is trusted for the client IP.
    pub trusted_proxies: Vec<String>,
    /// Longest a graceful shutdown waits for sinks to flush.
    pub shutdown_timeout_secs: u64,
    /// Log format: `text` or `json`.
    pub log_format: LogFormat,
    /// Longest a client may take to send the request headers (slow-loris guard); 408 after.
    pub header_read_timeout_secs: u64,
    /// Longest a client may take to send the request body; 408 after.
    pub body_read_timeout_secs: u64,
    /// Most open client connections; further connections wait in the OS backlog.
    pub max_connections: usize,
    /// `[server.cors]`: browser SDKs.
    pub cors: CorsConfig,
    /// `[server.tls]`: terminate TLS here (for deployments without a proxy).
    pub tls: Option<TlsConfig>,
}

/// `[server.cors]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Origins allowed to call the ingest endpoints from a browser (`"*"` for any); empty disables CORS.
    pub allowed_origins: Vec<String>,
    /// How long browsers may cache a preflight answer.
    pub max_age_secs: u64,
}

/// `[server.tls]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_path: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: PathBuf,
}

/// `[limits]`: protection against floods and hostile input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Requests per second one client IP may make (token bucket); 0 = unlimited. Excess: 429.
    pub requests_per_second_per_ip: u32,
    /// Bucket size for `requests_per_second_per_ip` (default: one second's worth).
    pub burst_per_ip: Option<u32>,
    /// Events per second one source may send; 0 = unlimited. Excess: 429 for the whole request.
    pub events_per_second_per_source: u32,
    /// Bucket size for `events_per_second_per_source` (default: one second's worth).
    pub burst_per_source: Option<u32>,
    /// Most messages in one batch; more is a 400.
    pub max_events_per_batch: usize,
    /// Deepest JSON nesting in one event; deeper events are rejected alone.
    pub max_json_depth: usize,
    /// Most object members (at any depth) in one event; more are rejected alone.
    pub max_properties: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            requests_per_second_per_ip: 0,
            burst_per_ip: None,
            events_per_second_per_source: 0,
            burst_per_source: None,
            max_events_per_batch: 10_000,
            max_json_depth: 32,
            max_properties: 2_000,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 524_288,
            max_event_bytes: 32_768,
            max_decompressed_bytes: 4 * 1024 * 1024,
            data_dir: PathBuf::from("./switchyard-data"),
            trusted_proxies: Vec::new(),
            shutdown_timeout_secs: 30,
            log_format: LogFormat::Text,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 30,
            max_connections: 10_000,
            cors: CorsConfig {
                allowed_origins: Vec::new(),
                max_age_secs: 600,
            },
            tls: None,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[sources.<name>]`: who may send events, and under which source name they are stored.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Write keys of this source: the HTTP Basic username, or `writeKey` in the body.
    #[serde(default)]
    pub write_keys: Vec<String>,
    /// PostHog project API keys (`phc_...`) of this source: the `api_key` / `token` PostHog SDKs send
    /// to the capture endpoints (`/batch/`, `/i/v0/e/`, `/e/`, `/capture/`, `/track/`).
    #[serde(default)]
    pub posthog_tokens: Vec<String>,
    /// `tracking_plan = { on_violation = "reject", unknown_events = "allow", enabled = true }`: this
    /// source's own tracking-plan modes (each key optional; the `[tracking_plan]` value otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_plan: Option<SourcePlanConfig>,
}

/// Whether accepted events survive a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Appended to the on-disk ingest log before the 2xx.
    #[default]
    Disk,
    /// Kept in memory only: fastest, lost on a crash.
    Memory,
}

/// `[delivery]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// `disk` or `memory`.
    pub durability: Durability,
    /// How often the log is flushed to stable storage; 0 = on every write. Power loss can lose
    /// up to this much; a killed process loses nothing.
    pub fsync_interval_ms: u64,
    /// Most bytes the ingest log may use; when full, ingest answers 503 until sinks catch up.
    pub max_disk_bytes: u64,
    /// Size at which a log segment is closed and a new one started.
    pub segment_bytes: u64,
    /// Memory (MiB) for records kept decoded until every sink has delivered them (`disk`
    /// durability). A sink that falls further behind reads its records back from disk and decodes
    /// them again, at about three times the CPU, and holds nothing in the cache until it catches up;
    /// a sink with large batches (ClickHouse) needs room for about two of its batches (roughly 5 KB
    /// per event).
    pub cache_mb: u64,
    /// How long delivered log segments are kept for replay.
    pub retention_hours: u64,
    /// Window in which a re-sent messageId (same source) is accepted but not routed again; 0 turns
    /// de-duplication off.
    pub dedupe_window_secs: u64,
    /// Most messageIds remembered per generation (memory bound: about 40 bytes each, two generations).
    pub dedupe_max_entries: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            durability: Durability::Disk,
            fsync_interval_ms: 1000,
            max_disk_bytes: 10 * 1024 * 1024 * 1024,
            segment_bytes: 64 * 1024 * 1024,
            cache_mb: 128,
            retention_hours: 168,
            dedupe_window_secs: 600,
            dedupe_max_entries: 1_000_000,
        }
    }
}

/// `[rollout]`: settings shared by every sink's rollout dial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutGlobalConfig {
    /// Seed of the bucket hash. The same on every instance so they agree; changing it reshuffles users.
    pub seed: String,
}

impl Default for RolloutGlobalConfig {
    fn default() -> Self {
        RolloutGlobalConfig {
            seed: "switchyard".into(),
        }
    }
}

/// `[consent]`: opt-out headers and the default for events without consent preferences.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsentSettings {
    /// Request headers that, set to `1`, drop the request's events before any sink.
    pub opt_out_headers: Vec<String>,
    /// Whether a sink with `consent = "<category>"` receives events that carry no preferences.
    pub default_granted: bool,
    /// Drop every event (analytics switched off entirely).
    pub disabled: bool,
}

impl Default for ConsentSettings {
    fn default() -> Self {
        ConsentSettings {
            opt_out_headers: vec!["X-Analytics-Opt-Out".into(), "DNT".into(), "Sec-GPC".into()],
            default_granted: false,
            disabled: false,
        }
    }
}

/// `[admin]`: the admin API (disabled without a token).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Bearer token for the admin API; at least 16 characters. Use `${SWITCHYARD_ADMIN_TOKEN}`.
    pub token: Option<String>,
    /// Separate address for the admin API; by default it is served on `server.listen`.
    pub listen: Option<String>,
}

/// An IP address or CIDR range, as used in `server.trusted_proxies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    pub address: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    /// Parses `10.0.0.0/8`, `::1/128` or a bare address.
    pub fn parse(text: &str) -> Option<IpNet> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix.parse::<u8>().ok()?)),
            None => (text, None),
        };
        let address: IpAddr = address.trim().parse().ok()?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(IpNet { address, prefix })
    }

    /// Whether `ip` is inside the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.address, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            _ => ip,
        };
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix)
                };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix)
                };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// What happens to an event that violates its schema in the tracking plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnViolation {
    /// Refused: listed in the response's `rejected` with the schema path and message.
    Reject,
    /// Accepted, but routed only to `quarantine_sink` with `context.violations` attached; replayable
    /// with `switchyard plan replay` once the plan (or the app) is fixed.
    Quarantine,
    /// Accepted and routed as usual, with `context.violations` attached.
    #[default]
    Tag,
}

/// What happens to an event whose name the tracking plan does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownEvents {
    /// Accepted (still checked against `_common.json`).
    #[default]
    Allow,
    /// Refused, listed in the response's `rejected`.
    Reject,
    /// Accepted, routed only to `quarantine_sink`.
    Quarantine,
}

/// `[tracking_plan]`: the plan every event is checked against, after normalisation and before the
/// global sanitizer chain. Reloading the config reloads the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackingPlanConfig {
    /// The plan folder (`<event name>/v<N>.json` plus an optional `_common.json`); relative paths are
    /// resolved from the working directory, like every other path.
    pub path: PathBuf,
    /// `allow`, `reject` or `quarantine`.
    #[serde(default)]
    pub unknown_events: UnknownEvents,
    /// `reject`, `quarantine` or `tag`.
    #[serde(default)]
    pub on_violation: OnViolation,
    /// The sink that receives quarantined events, and only them; required when any mode is
    /// `quarantine`. It must take 100% live and have no consent category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine_sink: Option<String>,
}

/// `[sources.<name>] tracking_plan = {...}`: one source's own tracking-plan modes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourcePlanConfig {
    /// `false`: this source's events are not checked at all.
    pub enabled: bool,
    /// Overrides `[tracking_plan] unknown_events` for this source.
    pub unknown_events: Option<UnknownEvents>,
    /// Overrides `[tracking_plan] on_violation` for this source.
    pub on_violation: Option<OnViolation>,
}

impl Default for SourcePlanConfig {
    fn default() -> Self {
        SourcePlanConfig {
            enabled: true,
            unknown_events: None,
            on_violation: None,
        }
    }
}

/// Which id a server-side session follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionKey {
    /// `userId`, else `anonymousId` (an anonymous session carries on when the user logs in).
    #[default]
    User,
    /// `anonymousId`, else `userId`: one session per device or browser.
    AnonymousId,
}

/// `[sessions]`: server-side sessions. Each event gets `context.session = {id, started_at, sequence}`;
/// a session ends after `timeout_minutes` without events. See docs/sessions.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConfig {
    pub enabled: bool,
    /// Inactivity after which a session ends.
    pub timeout_minutes: u64,
    /// `user` or `anonymous_id`.
    pub key: SessionKey,
    /// Emit synthetic `Session Started` / `Session Ended` track events (`context.synthetic = true`;
    /// sinks with `exclude_synthetic = true` do not receive them).
    pub emit_events: bool,
    /// Most open sessions kept; beyond it the least recently active are ended early (about 300 bytes
    /// each).
    pub max_sessions: usize,
    /// How often open sessions are written to `<data_dir>/sessions.json` (also on shutdown).
    pub persist_interval_secs: u64,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            enabled: false,
            timeout_minutes: 30,
            key: SessionKey::User,
            emit_events: true,
            max_sessions: 1_000_000,
            persist_interval_secs: 30,
        }
    }
}

/// How the funnel KPI is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FunnelStrategy {
    /// ClickHouse's `windowFunnel` when the server has it, otherwise `client`.
    #[default]
    Auto,
    /// Always `windowFunnel` (fails on servers without it).
    WindowFunnel,
    /// Each person's funnel events are fetched in time order and walked by Switchyard, with the same
    /// rules as `windowFunnel`.
    Client,
}

/// `[kpis]`: the KPI API (`/api/kpis/...`) over a ClickHouse sink's tables. On by default when exactly
/// one ClickHouse sink is configured. See docs/kpis.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KpiConfig {
    /// The ClickHouse sink whose tables are read; may be omitted when there is exactly one.
    pub sink: Option<String>,
    /// How long a computed answer is served from memory (0 disables the cache).
    pub cache_ttl_secs: u64,
    /// Longest `start`..`end` range a request may ask for, in days.
    pub max_range_days: u32,
    /// Inactivity that ends a session for events without a session id.
    pub session_timeout_minutes: u32,
    /// `auto`, `window_funnel` or `client`.
    pub funnel: FunnelStrategy,
    /// Bound on each query to ClickHouse.
    pub query_timeout_secs: u64,
    /// Most answers kept in the cache.
    pub cache_entries: usize,
}

impl Default for KpiConfig {
    fn default() -> Self {
        KpiConfig {
            sink: None,
            cache_ttl_secs: 60,
            max_range_days: 400,
            session_timeout_minutes: 30,
            funnel: FunnelStrategy::Auto,
            query_timeout_secs: 30,
            cache_entries: 512,
        }
    }
}
