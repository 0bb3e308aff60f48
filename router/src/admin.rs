//! The admin API (bearer token): sink status, the rollout dial (persisted, audited), and config reload.
//!
//! Runtime rollout overrides are kept in `<data_dir>/rollout-overrides.json` together with the config's
//! rollout value at the time of the override. An override stays in force across restarts and reloads
//! until the config's own rollout value for that sink changes: editing the TOML wins from then on.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use switchyard_sinks::settings::{RolloutConfig, RolloutKey, RolloutMode};

use crate::app::App;
use crate::http::{json_response, ApiError, Body};

/// Largest admin request body.
const MAX_ADMIN_BODY: usize = 64 * 1024;

/// A runtime rollout override and the config value it was made against.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RolloutOverride {
    pub rollout: RolloutConfig,
    pub config_rollout: RolloutConfig,
}

fn overrides_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("rollout-overrides.json")
}

/// Reads the persisted overrides (missing file: none).
pub fn load_overrides(data_dir: &Path) -> BTreeMap<String, RolloutOverride> {
    std::fs::read(overrides_path(data_dir))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

fn save_overrides(
    data_dir: &Path,
    overrides: &BTreeMap<String, RolloutOverride>,
) -> std::io::Result<()> {
    let path = overrides_path(data_dir);
    let temporary = path.with_extension("json.tmp");
    std::fs::write(&temporary, serde_json::to_vec_pretty(overrides)?)?;
    std::fs::rename(temporary, path)
}

/// Applies persisted overrides whose config value is still the one they were made against, and forgets
/// the rest (the config changed since: it wins).
pub async fn apply_overrides(app: &App) {
    let runtime = app.runtime();
    let mut overrides = load_overrides(app.data_dir());
    let mut kept = BTreeMap::new();
    for (name, entry) in std::mem::take(&mut overrides) {
        let Some(settings) = runtime.config.sinks.get(&name) else {
            continue;
        };
        if settings.common.rollout != entry.config_rollout {
            tracing::info!(sink = %name, "config rollout changed since the runtime override: config wins");
            continue;
        }
        app.engine.set_rollout(&name, &entry.rollout).await;
        kept.insert(name, entry);
    }
    if let Err(error) = save_overrides(app.data_dir(), &kept) {
        tracing::error!(%error, "cannot save rollout overrides");
    }
}

fn audit(data_dir: &Path, record: serde_json::Value) {
    let result = (|| -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join("audit.ndjson"))?;
        let mut line = serde_json::to_vec(&record)?;
        line.push(b'\n');
        file.write_all(&line)?;
        file.sync_data()
    })();
    if let Err(error) = result {
        tracing::error!(%error, "cannot write the audit log");
    }
}

/// The newest `limit` audit records, newest first, read from at most the last 8 MiB of the log (the
/// log only grows; older records stay in the file). A torn line (a crash mid-write) is skipped.
fn read_audit(data_dir: &Path, limit: usize) -> std::io::Result<Vec<serde_json::Value>> {
    use std::io::{Read, Seek, SeekFrom};
    const TAIL_BYTES: u64 = 8 * 1024 * 1024;
    let mut file = match std::fs::File::open(data_dir.join("audit.ndjson")) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let length = file.metadata()?.len();
    file.seek(SeekFrom::Start(length.saturating_sub(TAIL_BYTES)))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    Ok(text
        .lines()
        .rev()
        .filter_map(|line| serde_json::from_str(line).ok())
        .take(limit)
        .collect())
}

pub(crate) fn authorize(app: &App, request: &Request<Incoming>) -> Result<(), ApiError> {
    let runtime = app.runtime();
    let Some(token) = runtime.config.admin.token.as_deref() else {
        return Err(ApiError::not_found(
            "the admin API is disabled: set [admin] token",
        ));
    };
    let presented = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let matches = presented.is_some_and(|p| {
        p.len() == token.len()
            && p.bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    if matches {
        Ok(())
    } else {
        Err(ApiError::unauthorized(
            "missing or wrong admin bearer token",
        ))
    }
}

fn caller(request: &Request<Incoming>) -> String {
    request
        .headers()
        .get("x-switchyard-caller")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(64).collect())
        .unwrap_or_else(|| "unknown".to_string())
}

/// The body of `PUT /admin/sinks/{name}/rollout`; omitted fields keep their current value.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RolloutChange {
    percent: Option<f64>,
    mode: Option<RolloutMode>,
    by: Option<RolloutKey>,
}

/// The body of `POST /admin/sinks/{name}/replay`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    since: String,
}

/// The body of `POST /admin/privacy/erase`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ErasureRequest {
    #[serde(default, rename = "userId")]
    user_id: Option<String>,
    #[serde(default, rename = "anonymousId")]
    anonymous_id: Option<String>,
}

/// Routes `/admin/...`.
pub async fn route(
    app: Arc<App>,
    request: Request<Incoming>,
    path: &str,
) -> Result<Response<Body>, ApiError> {
    authorize(&app, &request)?;
    let method = request.method().clone();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (segments.as_slice(), &method) {
        (["admin", "sinks"], &Method::GET) => {
            let sinks = app.engine.status().await;
            Ok(json_response(
                StatusCode::OK,
                &serde_json::json!({
                    "sinks": sinks,
                    "log": {"head": app.log.head(), "used_bytes": app.log.used_bytes(), "durable": app.log.is_durable()},
                    "ingest": app.stats.snapshot(),
                }),
            ))
        }
        (["admin", "sinks", name, "rollout"], &Method::PUT) => {
            let name = name.to_string();
            let who = caller(&request);
            let body = crate::body::read_limited(request.into_body(), MAX_ADMIN_BODY).await?;
            let change: RolloutChange = serde_json::from_slice(&body).map_err(|e| {
                ApiError::bad_request("invalid_rollout", format!("invalid rollout body: {e}"))
            })?;
            set_rollout(&app, &name, change, &who).await
        }
        (["admin", "report"], &Method::GET) => {
            let query = request.uri().query().unwrap_or("");
            let mut since = chrono::Utc::now() - chrono::Duration::hours(24);
            let mut sink = None;
            for (key, value) in query.split('&').filter_map(|pair| pair.split_once('=')) {
                let value = percent_decode(value);
                match key {
                    "since" => {
                        since =
                            switchyard_schemas::time::parse_timestamp(&value).ok_or_else(|| {
                                ApiError::bad_request(
                                    "invalid_since",
                                    format!("since: invalid timestamp `{value}`"),
                                )
                            })?
                    }
                    "sink" => sink = Some(value),
                    _ => {}
                }
            }
            if let Some(name) = &sink {
                if !app.runtime().config.sinks.contains_key(name) {
                    return Err(ApiError::not_found(format!("no sink named `{name}`")));
                }
            }
            let sinks = crate::report::build(&app, since.timestamp(), sink.as_deref()).await;
            Ok(json_response(
                StatusCode::OK,
                &serde_json::json!({"since": switchyard_schemas::time::format_timestamp(&since), "sinks": sinks}),
            ))
        }
        (["admin", "audit"], &Method::GET) => {
            let mut limit = 100usize;
            for (key, value) in
                form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
            {
                if key == "limit" {
                    limit = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=10_000).contains(n))
                        .ok_or_else(|| {
                            ApiError::bad_request("invalid_limit", "limit must be 1 to 10000")
                        })?;
                }
            }
            let records = read_audit(app.data_dir(), limit).map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "read_failed",
                    format!("cannot read the audit log: {e}"),
                )
            })?;
            Ok(json_response(
                StatusCode::OK,
                &serde_json::json!({"records": records}),
            ))
        }
        (["admin", "quarantine", "replay"], &Method::POST) => {
            crate::plan_stage::replay(app, request).await
        }
        (["admin", "privacy", "erase"], &Method::POST) => {
            let who = caller(&request);
            let body = crate::body::read_limited(request.into_body(), MAX_ADMIN_BODY).await?;
            let erase: ErasureRequest = serde_json::from_slice(&body).map_err(|e| {
                ApiError::bad_request(
                    "invalid_erasure",
                    format!("expected {{\"userId\": \"...\"}}: {e}"),
                )
            })?;
            let ids: Vec<String> = erase
                .user_id
                .into_iter()
                .chain(erase.anonymous_id)
                .filter(|id| !id.is_empty())
                .collect();
            if ids.is_empty() {
                return Err(ApiError::bad_request(
                    "invalid_erasure",
                    "give userId and/or anonymousId",
                ));
            }
            let mut sinks = Vec::new();
            for id in &ids {
                app.suppressions.add(id).map_err(|e| {
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "persist_failed",
                        format!("cannot save the suppression list: {e}"),
                    )
                })?;
                sinks.extend(app.engine.erase_person(id).await);
            }
            // The ids themselves are personal data: the audit log keeps a keyed digest, not the id.
            let digests: Vec<String> = ids
                .iter()
                .map(|id| crate::dedupe::stable_digest("privacy", id).to_string())
                .collect();
            audit(
                app.data_dir(),
                serde_json::json!({"time": now(), "action": "privacy_erase", "id_digests": digests, "sinks": sinks, "caller": who}),
            );
            Ok(json_response(
                StatusCode::OK,
                &serde_json::json!({"suppressed": true, "sinks": sinks}),
            ))
        }
        (["admin", "privacy", "export"], &Method::GET) => {
            let query = request.uri().query().unwrap_or("");
            let mut id = None;
            let mut limit = 100_000usize;
            for (key, value) in query.split('&').filter_map(|pair| pair.split_once('=')) {
                match key {
                    "userId" | "anonymousId" => id = Some(percent_decode(value)),
                    "limit" => {
                        limit = value.parse().map_err(|_| {
                            ApiError::bad_request(
                                "invalid_limit",
                                "limit must be a positive number",
                            )
                        })?
                    }
                    _ => {}
                }
            }
            let Some(id) = id.filter(|id| !id.is_empty()) else {
                return Err(ApiError::bad_request("invalid_export", "give ?userId=..."));
            };
            let exported = app
                .engine
                .export_person(&id, limit)
                .await
                .map_err(|message| {
                    ApiError::new(StatusCode::BAD_GATEWAY, "export_failed", message)
                })?;
            let mut text = Vec::new();
            for (sink, events) in exported {
                for event in events {
                    let line = serde_json::json!({"sink": sink, "event": event});
                    let _ = serde_json::to_writer(&mut text, &line);
                    text.push(b'\n');
                }
            }
            audit(
                app.data_dir(),
                serde_json::json!({"time": now(), "action": "privacy_export", "id_digest": crate::dedupe::stable_digest("privacy", &id).to_string(), "caller": caller(&request)}),
            );
            let mut response =
                hyper::Response::new(crate::http::Body::new(bytes::Bytes::from(text)));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/x-ndjson"),
            );
            Ok(response)
        }
        (["admin", "reload"], &Method::POST) => match app.reload().await {
            Ok(report) => {
                apply_overrides(&app).await;
                audit(
                    app.data_dir(),
                    serde_json::json!({"time": now(), "action": "reload", "changes": report, "caller": caller(&request)}),
                );
                Ok(json_response(
                    StatusCode::OK,
                    &serde_json::json!({"reloaded": true, "changes": report}),
                ))
            }
            Err(problems) => Ok(json_response(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({"error": {"code": "invalid_config", "message": "configuration not applied; the previous one keeps running", "problems": problems}}),
            )),
        },
        (["admin", "sinks", name, "replay"], &Method::POST) => {
            let name = name.to_string();
            let who = caller(&request);
            let body = crate::body::read_limited(request.into_body(), MAX_ADMIN_BODY).await?;
            let replay: ReplayRequest = serde_json::from_slice(&body).map_err(|e| {
                ApiError::bad_request(
                    "invalid_replay",
                    format!("expected {{\"since\": RFC3339}}: {e}"),
                )
            })?;
            let since =
                switchyard_schemas::time::parse_timestamp(&replay.since).ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_replay",
                        format!("since: invalid timestamp `{}`", replay.since),
                    )
                })?;
            match app.engine.replay(&name, since.timestamp_millis()).await {
                Ok(Some(seq)) => {
                    let oldest = app.log.first_retained_seq();
                    audit(
                        app.data_dir(),
                        serde_json::json!({"time": now(), "action": "replay", "sink": name, "since": replay.since, "from_seq": seq, "caller": who}),
                    );
                    Ok(json_response(
                        StatusCode::OK,
                        &serde_json::json!({"sink": name, "from_seq": seq, "head": app.log.head(), "oldest_retained_seq": oldest}),
                    ))
                }
                Ok(None) => Err(ApiError::not_found(format!("no sink named `{name}`"))),
                Err(message) => Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "replay_failed",
                    message,
                )),
            }
        }
        (["admin", "sinks", name, "dead-letters"], &Method::GET) => {
            match app.engine.dead_letters(name).await {
                Some(Ok(letters)) => Ok(json_response(
                    StatusCode::OK,
                    &serde_json::json!({"sink": name, "count": letters.len(), "dead_letters": letters}),
                )),
                Some(Err(error)) => Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "read_failed",
                    error.to_string(),
                )),
                None => Err(ApiError::not_found(format!("no sink named `{name}`"))),
            }
        }
        (["admin", "sinks", name, "dead-letters", "replay"], &Method::POST) => {
            let name = name.to_string();
            match app.engine.resend_dead_letters(&name).await {
                Ok(Some(outcome)) => {
                    audit(
                        app.data_dir(),
                        serde_json::json!({"time": now(), "action": "dead_letter_replay", "sink": name, "outcome": outcome, "caller": caller(&request)}),
                    );
                    Ok(json_response(
                        StatusCode::OK,
                        &serde_json::json!({"sink": name, "outcome": outcome}),
                    ))
                }
                Ok(None) => Err(ApiError::not_found(format!("no sink named `{name}`"))),
                Err(message) => Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "replay_failed",
                    message,
                )),
            }
        }
        (["admin", "sinks"], _) => Err(method_not_allowed("GET")),
        (["admin", "sinks", _, "rollout"], _) => Err(method_not_allowed("PUT")),
        (["admin", "reload"], _) => Err(method_not_allowed("POST")),
        _ => Err(ApiError::not_found(format!("no admin endpoint at {path}"))),
    }
}

/// Decodes `%XX` escapes and `+` in a query value.
pub fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut output = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte == b'+' {
            output.push(b' ');
            index += 1;
            continue;
        }
        if byte == b'%' {
            let decoded = bytes
                .get(index + 1..index + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok());
            if let Some(decoded) = decoded {
                output.push(decoded);
                index += 3;
                continue;
            }
        }
        output.push(byte);
        index += 1;
    }
    String::from_utf8_lossy(&output).into_owned()
}

fn method_not_allowed(allow: &'static str) -> ApiError {
    let mut error = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("this endpoint accepts {allow}"),
    );
    error.allow = Some(allow);
    error
}

fn now() -> String {
    switchyard_schemas::time::format_timestamp(&chrono::Utc::now())
}

async fn set_rollout(
    app: &App,
    name: &str,
    change: RolloutChange,
    who: &str,
) -> Result<Response<Body>, ApiError> {
    let runtime = app.runtime();
    let Some(settings) = runtime.config.sinks.get(name) else {
        return Err(ApiError::not_found(format!("no sink named `{name}`")));
    };
    let current = app
        .engine
        .status()
        .await
        .into_iter()
        .find(|s| s.name == name)
        .map(|s| s.rollout)
        .ok_or_else(|| ApiError::not_found(format!("no sink named `{name}`")))?;
    let wanted = RolloutConfig {
        percent: change.percent.unwrap_or(current.percent),
        mode: change.mode.unwrap_or(current.mode),
        by: change.by.unwrap_or(current.by),
    };
    let problems = wanted.validate();
    if !problems.is_empty() {
        let message = problems
            .iter()
            .map(|(path, m)| format!("{path}: {m}"))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(ApiError::bad_request("invalid_rollout", message));
    }
    let previous = app
        .engine
        .set_rollout(name, &wanted)
        .await
        .ok_or_else(|| ApiError::not_found(format!("no sink named `{name}`")))?;
    let mut overrides = load_overrides(app.data_dir());
    overrides.insert(
        name.to_string(),
        RolloutOverride {
            rollout: wanted,
            config_rollout: settings.common.rollout,
        },
    );
    save_overrides(app.data_dir(), &overrides).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "persist_failed",
            format!("rollout applied but not persisted: {e}"),
        )
    })?;
    audit(
        app.data_dir(),
        serde_json::json!({"time": now(), "action": "rollout", "sink": name, "old": previous, "new": wanted, "caller": who}),
    );
    tracing::info!(sink = %name, old_percent = previous.percent, new_percent = wanted.percent, caller = %who, "rollout changed");
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({"sink": name, "old": previous, "new": wanted}),
    ))
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn decodes_query_values() {
        assert_eq!(
            percent_decode("2024-05-01T10%3A00%3A00%2B02%3A00"),
            "2024-05-01T10:00:00+02:00"
        );
        assert_eq!(percent_decode("a+b%2"), "a b%2");
        assert_eq!(percent_decode("%zz%"), "%zz%");
    }
}
