//! Switchyard's TOML configuration: the model, loading with `${ENV_VAR}` substitution, and validation
//! that reports every problem at once with its path, before any network work.

mod env;
mod model;
mod tracking;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

pub use model::*;
use switchyard_sanitizers::SanitizerConfig;
use switchyard_sinks::settings::{CommonSinkSettings, SinkKind, SinkSettings};

/// The built-in configuration `switchyard run` uses without `--config`: listen on 127.0.0.1:8080 and
/// write every event to hourly NDJSON files under ./switchyard-data/events.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// One problem in a config, with the dotted path it is at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.0.len();
        write!(
            f,
            "invalid configuration ({count} problem{}):",
            if count == 1 { "" } else { "s" }
        )?;
        for problem in &self.0 {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    fn single(path: &str, message: impl Into<String>) -> ConfigErrors {
        ConfigErrors(vec![ConfigProblem {
            path: path.to_string(),
            message: message.into(),
        }])
    }
}

/// Reads and validates a config file, substituting `${VAR}` from the process environment.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        ConfigErrors::single("", format!("cannot read {}: {error}", path.display()))
    })?;
    parse(&text, &|name| std::env::var(name).ok())
}

/// Parses and validates config text; `lookup` resolves `${VAR}` references.
pub fn parse(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
    let mut table: toml::Table = toml::from_str(text).map_err(|error| {
        ConfigErrors::single("", format!("TOML syntax: {}", error.to_string().trim()))
    })?;
    let mut problems = Vec::new();
    env::substitute_table(&mut table, "", lookup, &mut problems);

    let mut config = Config::default();
    for (key, value) in table {
        match key.as_str() {
            "server" => section(&key, value, &mut problems, |v| config.server = v),
            "delivery" => section(&key, value, &mut problems, |v| config.delivery = v),
            "admin" => section(&key, value, &mut problems, |v| config.admin = v),
            "rollout" => section(&key, value, &mut problems, |v| config.rollout = v),
            "consent" => section(&key, value, &mut problems, |v| config.consent = v),
            "limits" => section(&key, value, &mut problems, |v| config.limits = v),
            "sources" => section(&key, value, &mut problems, |v| config.sources = v),
            "tracking_plan" => section(&key, value, &mut problems, |v| {
                config.tracking_plan = Some(v)
            }),
            "sessions" => section(&key, value, &mut problems, |v| config.sessions = v),
            "kpis" => section(&key, value, &mut problems, |v| config.kpis = v),
            "sanitizers" => {
                config.sanitizers = sanitizer_list("sanitizers", value, &mut problems);
            }
            "sinks" => match value {
                toml::Value::Table(sinks) => {
                    for (name, sink) in sinks {
                        if let Some(settings) = parse_sink(&name, sink, lookup, &mut problems) {
                            config.sinks.insert(name, settings);
                        }
                    }
                }
                other => problems.push(ConfigProblem {
                    path: "sinks".into(),
                    message: format!("expected a table of sinks, found {}", other.type_str()),
                }),
            },
            _ => problems.push(ConfigProblem {
                path: key.clone(),
                message: "unknown section: expected server, sources, sanitizers, sinks, delivery, rollout, consent, limits, tracking_plan, sessions, kpis or admin"
                    .into(),
            }),
        }
    }
    problems.extend(validate(&config));
    problems.extend(tracking::validate(&config));
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(problems))
    }
}

fn deserialize<T: serde::de::DeserializeOwned>(
    path: &str,
    value: toml::Value,
    problems: &mut Vec<ConfigProblem>,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(parsed) => Some(parsed),
        Err(error) => {
            let inner_path = error.path().to_string();
            let full_path = if inner_path == "." || inner_path.is_empty() {
                path.to_string()
            } else if path.is_empty() {
                inner_path
            } else {
                format!("{path}.{inner_path}")
            };
            let message = error.into_inner().to_string();
            // toml appends "\nin `key`" lines; the path already says where.
            let message = message
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string();
            problems.push(ConfigProblem {
                path: full_path,
                message,
            });
            None
        }
    }
}

fn section<T: serde::de::DeserializeOwned>(
    path: &str,
    value: toml::Value,
    problems: &mut Vec<ConfigProblem>,
    apply: impl FnOnce(T),
) {
    if let Some(parsed) = deserialize(path, value, problems) {
        apply(parsed);
    }
}

fn sanitizer_list(
    path: &str,
    value: toml::Value,
    problems: &mut Vec<ConfigProblem>,
) -> Vec<SanitizerConfig> {
    let toml::Value::Array(entries) = value else {
        problems.push(ConfigProblem {
            path: path.into(),
            message: "expected an array of tables ([[sanitizers]])".into(),
        });
        return Vec::new();
    };
    let mut parsed = Vec::new();
    for (index, entry) in entries.into_iter().enumerate() {
        let entry_path = format!("{path}[{index}]");
        if let Some(sanitizer) = deserialize::<SanitizerConfig>(&entry_path, entry, problems) {
            for (inner, message) in sanitizer.validate() {
                problems.push(ConfigProblem {
                    path: format!("{entry_path}.{inner}"),
                    message,
                });
            }
            parsed.push(sanitizer);
        }
    }
    parsed
}

/// A sink table holds the type's own keys and the shared ones; each part is parsed strictly on its own
/// so unknown keys are reported against the right part.
fn parse_sink(
    name: &str,
    value: toml::Value,
    _lookup: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<ConfigProblem>,
) -> Option<SinkSettings> {
    let path = format!("sinks.{name}");
    if !is_valid_name(name) {
        problems.push(ConfigProblem {
            path: path.clone(),
            message: "sink names may use only letters, digits, '_' and '-' (at most 64)".into(),
        });
    }
    let toml::Value::Table(mut table) = value else {
        problems.push(ConfigProblem {
            path,
            message: "expected a table".into(),
        });
        return None;
    };
    if !table.contains_key("type") {
        problems.push(ConfigProblem {
            path: format!("{path}.type"),
            message: "missing: every sink needs a type (file, clickhouse, posthog, statsig, ga4, webhook)".into(),
        });
        return None;
    }
    let mut common_table = toml::Table::new();
    for key in CommonSinkSettings::KEYS {
        if let Some(value) = table.remove(key) {
            common_table.insert(key.to_string(), value);
        }
    }
    let sanitizers = common_table
        .remove("sanitizers")
        .map(|value| sanitizer_list(&format!("{path}.sanitizers"), value, problems))
        .unwrap_or_default();
    let kind = deserialize::<SinkKind>(&path, toml::Value::Table(table), problems);
    if let Some(kind) = &kind {
        fill_batch_defaults(&mut common_table, kind);
    }
    let common =
        deserialize::<CommonSinkSettings>(&path, toml::Value::Table(common_table), problems);
    // Validate each part that parsed, so one bad part does not hide the other's problems.
    let kind_problems = kind.as_ref().map(SinkKind::validate).unwrap_or_default();
    let common_problems = common
        .as_ref()
        .map(CommonSinkSettings::validate)
        .unwrap_or_default();
    for (inner, message) in kind_problems.into_iter().chain(common_problems) {
        problems.push(ConfigProblem {
            path: format!("{path}.{inner}"),
            message,
        });
    }
    let (kind, mut common) = (kind?, common?);
    common.sanitizers = sanitizers;
    Some(SinkSettings { kind, common })
}

/// Batch keys the user did not set take the sink type's defaults (ClickHouse wants far larger batches
/// than a vendor API).
fn fill_batch_defaults(common: &mut toml::Table, kind: &SinkKind) {
    let Ok(toml::Value::Table(defaults)) = toml::Value::try_from(kind.default_batch()) else {
        return;
    };
    let batch = common
        .entry("batch".to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(batch) = batch {
        for (key, value) in defaults {
            batch.entry(key).or_insert(value);
        }
    }
}

fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Checks `[kpis]`: a named sink must exist and be a ClickHouse sink; the bounds must be positive.
fn validate_kpis(config: &Config, push: &mut impl FnMut(&str, String)) {
    let kpis = &config.kpis;
    if let Some(name) = &kpis.sink {
        match config.sinks.get(name) {
            None => push("kpis.sink", format!("no sink named `{name}`")),
            Some(sink) if !matches!(sink.kind, SinkKind::Clickhouse(_)) => push(
                "kpis.sink",
                format!(
                    "sink `{name}` is a {} sink; KPIs read a clickhouse sink's tables",
                    sink.kind.type_name()
                ),
            ),
            Some(_) => {}
        }
    }
    for (path, value) in [
        ("kpis.max_range_days", u64::from(kpis.max_range_days)),
        (
            "kpis.session_timeout_minutes",
            u64::from(kpis.session_timeout_minutes),
        ),
        ("kpis.query_timeout_secs", kpis.query_timeout_secs),
        ("kpis.cache_entries", kpis.cache_entries as u64),
    ] {
        if value == 0 {
            push(path, "must be > 0".into());
        }
    }
}

/// Checks values across sections.
fn validate(config: &Config) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    let mut push = |path: &str, message: String| {
        problems.push(ConfigProblem {
            path: path.into(),
            message,
        })
    };
    let server = &config.server;
    if server.listen.parse::<std::net::SocketAddr>().is_err() {
        push(
            "server.listen",
            format!("`{}` is not an address like 127.0.0.1:8080", server.listen),
        );
    }
    if server.max_body_bytes == 0 {
        push("server.max_body_bytes", "must be > 0".into());
    }
    if server.max_event_bytes == 0 {
        push("server.max_event_bytes", "must be > 0".into());
    } else if server.max_event_bytes > server.max_body_bytes {
        push(
            "server.max_event_bytes",
            "must be <= server.max_body_bytes".into(),
        );
    }
    if server.max_decompressed_bytes < server.max_body_bytes {
        push(
            "server.max_decompressed_bytes",
            "must be >= server.max_body_bytes".into(),
        );
    }
    if server.data_dir.as_os_str().is_empty() {
        push("server.data_dir", "must not be empty".into());
    }
    for (index, proxy) in server.trusted_proxies.iter().enumerate() {
        if model::IpNet::parse(proxy).is_none() {
            push(
                &format!("server.trusted_proxies[{index}]"),
                format!("`{proxy}` is not an IP address or CIDR range"),
            );
        }
    }
    if server.shutdown_timeout_secs == 0 {
        push("server.shutdown_timeout_secs", "must be > 0".into());
    }
    let mut owners: BTreeMap<&str, &str> = BTreeMap::new();
    let mut token_owners: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, source) in &config.sources {
        if !is_valid_name(name) {
            push(
                &format!("sources.{name}"),
                "source names may use only letters, digits, '_' and '-'".into(),
            );
        }
        if source.write_keys.is_empty() && source.posthog_tokens.is_empty() {
            push(
                &format!("sources.{name}.write_keys"),
                "must list at least one key (or set posthog_tokens)".into(),
            );
        }
        for (index, key) in source.write_keys.iter().enumerate() {
            let path = format!("sources.{name}.write_keys[{index}]");
            if key.trim().is_empty() {
                push(&path, "must not be empty".into());
            } else if let Some(other) = owners.insert(key, name) {
                push(
                    &path,
                    format!("the same key is also listed for source `{other}`"),
                );
            }
        }
        for (index, token) in source.posthog_tokens.iter().enumerate() {
            let path = format!("sources.{name}.posthog_tokens[{index}]");
            if token.trim().is_empty() {
                push(&path, "must not be empty".into());
            } else if token.starts_with("phx_") {
                push(
                    &path,
                    "a personal API key (phx_...) cannot capture: use the project API key (phc_...)"
                        .into(),
                );
            } else if let Some(other) = token_owners.insert(token, name) {
                push(
                    &path,
                    format!("the same token is also listed for source `{other}`"),
                );
            }
        }
    }
    let delivery = &config.delivery;
    if delivery.max_disk_bytes < 1024 * 1024 {
        push(
            "delivery.max_disk_bytes",
            "must be >= 1048576 (1 MiB)".into(),
        );
    }
    if delivery.segment_bytes < 4096 {
        push("delivery.segment_bytes", "must be >= 4096".into());
    }
    if !(1..=1024 * 1024).contains(&delivery.cache_mb) {
        push("delivery.cache_mb", "must be 1..=1048576".into());
    }
    if config.rollout.seed.is_empty() {
        push("rollout.seed", "must not be empty".into());
    }
    if let Some(token) = &config.admin.token {
        if token.len() < 16 {
            push("admin.token", "must be at least 16 characters".into());
        }
    }
    for (name, sink) in &config.sinks {
        if let Some(reference) = &sink.common.compare_with {
            if reference == name {
                push(
                    &format!("sinks.{name}.compare_with"),
                    "a sink cannot be its own reference".into(),
                );
            } else if !config.sinks.contains_key(reference) {
                push(
                    &format!("sinks.{name}.compare_with"),
                    format!("no sink named `{reference}`"),
                );
            }
        }
    }
    validate_kpis(config, &mut push);
    if let Some(listen) = &config.admin.listen {
        if listen.parse::<std::net::SocketAddr>().is_err() {
            push(
                "admin.listen",
                format!("`{listen}` is not an address like 127.0.0.1:9090"),
            );
        }
    }
    problems
}

#[cfg(test)]
mod tests;
