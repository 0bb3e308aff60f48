//! The command-line side of the admin API: `switchyard rollout|replay|dead-letters|report` talk to a
//! running switchyard over HTTP with the admin bearer token.

use std::time::Duration;

use serde_json::Value;

/// Where the admin API is and how to authenticate.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminTarget {
    /// Base URL of the admin API (server.listen, or admin.listen when set).
    #[arg(
        long,
        env = "SWITCHYARD_ADMIN_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    /// The admin bearer token.
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
    pub token: String,
}

/// An admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminCallError {
    #[error("cannot reach {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("HTTP {status}: {body}")]
    Refused { status: u16, body: String },
}

fn caller() -> String {
    std::env::var("USER").unwrap_or_else(|_| "cli".to_string())
}

/// Calls the admin API and returns the JSON answer.
pub async fn call(
    target: &AdminTarget,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, AdminCallError> {
    let url = format!("{}{}", target.url.trim_end_matches('/'), path);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| AdminCallError::Unreachable {
            url: url.clone(),
            message: e.to_string(),
        })?;
    let mut request = client
        .request(method, &url)
        .bearer_auth(&target.token)
        .header("x-switchyard-caller", caller());
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .map_err(|e| AdminCallError::Unreachable {
            url: url.clone(),
            message: e.to_string(),
        })?;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    if !(200..300).contains(&status) {
        return Err(AdminCallError::Refused { status, body: text });
    }
    serde_json::from_str(&text).map_err(|e| AdminCallError::Refused {
        status,
        body: format!("not JSON ({e}): {text}"),
    })
}

/// Renders `/admin/sinks` as a table.
pub fn sinks_table(status: &Value) -> String {
    let mut lines = vec![format!(
        "{:<16} {:<11} {:>8} {:<7} {:<9} {:>10} {:>12} {:>10} {:>10}",
        "SINK", "TYPE", "PERCENT", "MODE", "BREAKER", "LAG", "DELIVERED", "DEAD", "DROPPED"
    )];
    for sink in status["sinks"].as_array().into_iter().flatten() {
        let counters = &sink["counters"];
        let dropped = [
            "dropped_rollout",
            "dropped_consent",
            "dropped_sanitizer",
            "dropped_shadow",
        ]
        .iter()
        .map(|key| counters[*key].as_u64().unwrap_or(0))
        .sum::<u64>();
        lines.push(format!(
            "{:<16} {:<11} {:>8} {:<7} {:<9} {:>10} {:>12} {:>10} {:>10}",
            sink["name"].as_str().unwrap_or("?"),
            sink["type"].as_str().unwrap_or("?"),
            sink["rollout"]["percent"]
                .as_f64()
                .map(|p| format!("{p:.2}"))
                .unwrap_or_default(),
            sink["rollout"]["mode"].as_str().unwrap_or("?"),
            counters["breaker"].as_str().unwrap_or("?"),
            sink["lag_records"].as_u64().unwrap_or(0),
            counters["delivered"].as_u64().unwrap_or(0),
            counters["dead_lettered"].as_u64().unwrap_or(0),
            dropped,
        ));
    }
    lines.join("\n")
}
