//! The product KPI API, `GET /api/kpis/{active-users,events,sessions,funnel,retention}`: checks the
//! request, answers from a short-lived cache or by querying the ClickHouse sink's tables, and writes
//! the answer as JSON (`{"metric", "start", "end", "series": [{"date", "value", ...}]}`) or CSV.
//! Authenticated like the admin API. See docs/kpis.md for every definition.

pub mod request;
pub mod sql;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::{json, Map, Value};
use switchyard_config::Config;
use switchyard_config::{FunnelStrategy, KpiConfig};
use switchyard_sinks::settings::{ClickhouseSinkConfig, SinkKind};

use crate::app::App;
use crate::http::{json_response, ApiError, Body};
use request::{Grain, KpiRequest, Metric, SessionStat};
use sql::{walk_funnel, Queries, TimeLayout};

/// Most rows one KPI query may return.
const MAX_RESULT_ROWS: u64 = 5_000_000;

/// Header telling whether an answer came from the cache (`hit`) or was computed (`miss`).
pub const CACHE_HEADER: &str = "x-switchyard-cache";

/// Why a KPI could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum KpiError {
    #[error("ClickHouse at {url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("ClickHouse at {url} refused the query: {reason}")]
    Server { url: String, reason: String },
    #[error("the table {table} does not exist yet: the ClickHouse sink `{sink}` creates it when it starts")]
    NoTable { table: String, sink: String },
    #[error("unexpected answer from ClickHouse: {0}")]
    Parse(String),
}

/// One point of a series: a date, a value, and for some metrics more columns.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub date: String,
    pub value: Value,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A computed KPI.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub metric: &'static str,
    pub start: String,
    pub end: String,
    /// The parameters that shaped the answer (grain, steps, filters...).
    pub params: Map<String, Value>,
    pub series: Vec<Point>,
    /// Column order for CSV after `date` and `value`.
    #[serde(skip)]
    pub columns: Vec<&'static str>,
}

/// What the KPI service learnt about the server once.
#[derive(Debug, Clone, Copy)]
struct Probe {
    layout: TimeLayout,
    window_funnel: bool,
}

/// The KPI service of one configuration: where to query, the cache, the server's shape.
pub struct KpiService {
    sink: String,
    target: ClickhouseSinkConfig,
    settings: KpiConfig,
    queries_table: String,
    http: reqwest::Client,
    probe: tokio::sync::OnceCell<Probe>,
    cache: Mutex<HashMap<String, (Instant, Arc<Answer>)>>,
}

/// The KPI service for `config`, or why there is none.
pub fn service_for(config: &Config) -> Result<Arc<KpiService>, String> {
    let clickhouse: Vec<(&String, &ClickhouseSinkConfig)> = config
        .sinks
        .iter()
        .filter_map(|(name, sink)| match &sink.kind {
            SinkKind::Clickhouse(target) => Some((name, target)),
            _ => None,
        })
        .collect();
    let (sink, target) =
        match &config.kpis.sink {
            Some(name) => clickhouse
                .iter()
                .find(|(sink, _)| *sink == name)
                .copied()
                .ok_or_else(|| format!("kpis.sink `{name}` is not a ClickHouse sink"))?,
            None => match clickhouse.as_slice() {
                [only] => *only,
                [] => {
                    return Err(
                        "KPIs read a ClickHouse sink's tables and no ClickHouse sink is configured"
                            .to_string(),
                    )
                }
                _ => return Err(
                    "several ClickHouse sinks are configured: name one with [kpis] sink = \"...\""
                        .to_string(),
                ),
            },
        };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(config.kpis.query_timeout_secs))
        // Below ClickHouse's keep-alive (3 s on old servers, 10 s on new ones), so an idle
        // connection is dropped here before the server closes it under a new query.
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| format!("cannot build the ClickHouse client: {e}"))?;
    Ok(Arc::new(KpiService {
        sink: sink.clone(),
        queries_table: format!("`{}`.`{}_by_person`", target.database, target.table),
        target: target.clone(),
        settings: config.kpis.clone(),
        http,
        probe: tokio::sync::OnceCell::new(),
        cache: Mutex::new(HashMap::new()),
    }))
}

/// Sends a read-only query, and once more when the first attempt failed before any answer arrived: a
/// pooled keep-alive connection the server closed just as the query was written fails that way (the
/// pool drops that connection, so the second attempt takes another or a new one), and every query
/// sent here is a SELECT, safe to repeat. Timeouts are not repeated.
async fn send_read_query(
    request: impl Fn() -> reqwest::RequestBuilder,
) -> Result<reqwest::Response, reqwest::Error> {
    match request().send().await {
        Err(error) if !error.is_timeout() && (error.is_request() || error.is_connect()) => {
            tracing::debug!(error = %error.without_url(), "ClickHouse query failed before an answer: sending it again");
            request().send().await
        }
        outcome => outcome,
    }
}

impl KpiService {
    /// Runs one query and returns its TabSeparated rows split into fields.
    async fn query(&self, sql: &str) -> Result<Vec<Vec<String>>, KpiError> {
        let url = self.target.url.trim_end_matches('/');
        let request = || {
            self.http
                .post(format!("{url}/"))
                .query(&[
                    (
                        "max_execution_time",
                        self.settings.query_timeout_secs.to_string(),
                    ),
                    // Bounds what the router holds in memory (the client-side funnel reads one row
                    // per funnel event); beyond it the query fails with ClickHouse's own message.
                    ("max_result_rows", MAX_RESULT_ROWS.to_string()),
                    ("result_overflow_mode", "throw".to_string()),
                ])
                .basic_auth(&self.target.user, self.target.password.as_deref())
                .body(sql.to_string())
        };
        let response = send_read_query(request)
            .await
            .map_err(|e| KpiError::Unreachable {
                url: url.to_string(),
                reason: e.without_url().to_string(),
            })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| KpiError::Unreachable {
            url: url.to_string(),
            reason: e.without_url().to_string(),
        })?;
        if !status.is_success() {
            let reason: String = text
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(300)
                .collect();
            return Err(KpiError::Server {
                url: url.to_string(),
                reason: format!("HTTP {status}: {reason}"),
            });
        }
        Ok(text
            .lines()
            .filter(|line| !line.is_empty())
            .map(|line| line.split('\t').map(str::to_string).collect())
            .collect())
    }

    async fn probe(&self) -> Result<Probe, KpiError> {
        self.probe
            .get_or_try_init(|| async {
                let columns = self
                    .query(&format!(
                        "SELECT name FROM system.columns WHERE database = {} AND table = {} FORMAT TabSeparated",
                        sql::literal(&self.target.database),
                        sql::literal(&format!("{}_by_person", self.target.table)),
                    ))
                    .await?;
                if columns.is_empty() {
                    return Err(KpiError::NoTable {
                        table: self.queries_table.clone(),
                        sink: self.sink.clone(),
                    });
                }
                let legacy = columns.iter().any(|row| row[0] == "timestamp_ms");
                let functions = self
                    .query("SELECT count() FROM system.functions WHERE name = 'windowFunnel' FORMAT TabSeparated")
                    .await?;
                Ok(Probe {
                    layout: if legacy {
                        TimeLayout::Legacy
                    } else {
                        TimeLayout::Modern
                    },
                    window_funnel: functions.first().is_some_and(|row| row[0] != "0"),
                })
            })
            .await
            .copied()
    }

    /// The answer to `request`, from the cache when fresh; the bool says whether it was cached.
    pub async fn answer(&self, request: &KpiRequest) -> Result<(Arc<Answer>, bool), KpiError> {
        let key = request.cache_key();
        let ttl = Duration::from_secs(self.settings.cache_ttl_secs);
        if !ttl.is_zero() {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, answer)) = cache.get(&key) {
                if at.elapsed() < ttl {
                    return Ok((answer.clone(), true));
                }
            }
        }
        let answer = Arc::new(self.compute(request).await?);
        if !ttl.is_zero() {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= self.settings.cache_entries {
                cache.retain(|_, (at, _)| at.elapsed() < ttl);
            }
            if cache.len() >= self.settings.cache_entries {
                if let Some(oldest) = cache
                    .iter()
                    .min_by_key(|(_, (at, _))| *at)
                    .map(|(key, _)| key.clone())
                {
                    cache.remove(&oldest);
                }
            }
            cache.insert(key, (Instant::now(), answer.clone()));
        }
        Ok((answer, false))
    }

    async fn compute(&self, request: &KpiRequest) -> Result<Answer, KpiError> {
        let probe = self.probe().await?;
        let queries = Queries {
            table: self.queries_table.clone(),
            layout: probe.layout,
        };
        let mut params = Map::new();
        if let Some(event) = &request.event {
            params.insert("event".into(), json!(event));
        }
        if let Some(source) = &request.source {
            params.insert("source".into(), json!(source));
        }
        let mut columns = Vec::new();
        let series = match &request.metric {
            Metric::ActiveUsers { grain } => {
                params.insert("grain".into(), json!(grain.name()));
                let rows = self.query(&queries.active_users(request, *grain)).await?;
                counts_by_bucket(&rows, grain.buckets(request.start, request.end))?
            }
            Metric::Events => {
                let rows = self.query(&queries.events(request)).await?;
                counts_by_bucket(&rows, Grain::Day.buckets(request.start, request.end))?
            }
            Metric::Sessions { stat } => {
                let timeout_secs = u64::from(self.settings.session_timeout_minutes) * 60;
                params.insert("metric".into(), json!(stat.name()));
                params.insert("session_timeout_secs".into(), json!(timeout_secs));
                let rows = self.query(&queries.sessions(request, timeout_secs)).await?;
                sessions_series(&rows, *stat, request)?
            }
            Metric::Funnel { steps, window_secs } => {
                params.insert("steps".into(), json!(steps));
                params.insert("window_secs".into(), json!(window_secs));
                let use_window_funnel = match self.settings.funnel {
                    FunnelStrategy::Auto => probe.window_funnel,
                    FunnelStrategy::WindowFunnel => true,
                    FunnelStrategy::Client => false,
                };
                params.insert(
                    "computed_by".into(),
                    json!(if use_window_funnel {
                        "windowFunnel"
                    } else {
                        "client"
                    }),
                );
                let reached = if use_window_funnel {
                    let rows = self
                        .query(&queries.funnel_levels(request, steps, *window_secs))
                        .await?;
                    let mut exactly = vec![0u64; steps.len() + 1];
                    for row in &rows {
                        let level: usize = field(row, 0)?;
                        let people: u64 = field(row, 1)?;
                        if let Some(slot) = exactly.get_mut(level) {
                            *slot += people;
                        }
                    }
                    exactly
                } else {
                    let rows = self.query(&queries.funnel_events(request, steps)).await?;
                    client_funnel(&rows, steps.len(), *window_secs)?
                };
                columns = vec!["step", "conversion", "step_conversion"];
                funnel_series(steps, &reached, request.start)
            }
            Metric::Retention { cohort } => {
                params.insert("cohort".into(), json!(cohort.name()));
                let rows = self.query(&queries.retention(request, *cohort)).await?;
                columns = vec!["period", "cohort_size", "rate"];
                retention_series(&rows, *cohort, request)?
            }
        };
        Ok(Answer {
            metric: request.metric.name(),
            start: request.start.to_string(),
            end: request.end.to_string(),
            params,
            series,
            columns,
        })
    }
}

fn field<T: std::str::FromStr>(row: &[String], index: usize) -> Result<T, KpiError> {
    row.get(index)
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| KpiError::Parse(format!("column {index} of {row:?}")))
}

fn date_field(row: &[String], index: usize) -> Result<NaiveDate, KpiError> {
    row.get(index)
        .and_then(|text| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok())
        .ok_or_else(|| KpiError::Parse(format!("date in column {index} of {row:?}")))
}

fn point(date: NaiveDate, value: Value) -> Point {
    Point {
        date: date.to_string(),
        value,
        extra: Map::new(),
    }
}

/// `bucket, count` rows spread over every bucket, zero where the server had no row.
fn counts_by_bucket(rows: &[Vec<String>], buckets: Vec<NaiveDate>) -> Result<Vec<Point>, KpiError> {
    let mut counts: HashMap<NaiveDate, u64> = HashMap::new();
    for row in rows {
        counts.insert(date_field(row, 0)?, field(row, 1)?);
    }
    Ok(buckets
        .into_iter()
        .map(|bucket| point(bucket, json!(counts.get(&bucket).copied().unwrap_or(0))))
        .collect())
}

fn sessions_series(
    rows: &[Vec<String>],
    stat: SessionStat,
    request: &KpiRequest,
) -> Result<Vec<Point>, KpiError> {
    let mut by_day: HashMap<NaiveDate, Value> = HashMap::new();
    for row in rows {
        let value = match stat {
            SessionStat::Count => json!(field::<u64>(row, 1)?),
            SessionStat::Avg => json!(field::<f64>(row, 2)?),
            SessionStat::P50 => json!(field::<f64>(row, 3)?),
            SessionStat::P95 => json!(field::<f64>(row, 4)?),
        };
        by_day.insert(date_field(row, 0)?, value);
    }
    let empty = match stat {
        SessionStat::Count => json!(0),
        // No session that day: there is no duration to report.
        _ => Value::Null,
    };
    Ok(Grain::Day
        .buckets(request.start, request.end)
        .into_iter()
        .map(|day| point(day, by_day.get(&day).cloned().unwrap_or(empty.clone())))
        .collect())
}

/// `reached_exactly[level]` (people whose furthest step is `level`) from the funnel events of each
/// person, walked in order.
fn client_funnel(
    rows: &[Vec<String>],
    step_count: usize,
    window_secs: u64,
) -> Result<Vec<u64>, KpiError> {
    let mut exactly = vec![0u64; step_count + 1];
    let mut person: Option<&str> = None;
    let mut events: Vec<(u32, usize)> = Vec::new();
    let mut finish = |events: &mut Vec<(u32, usize)>| {
        let level = walk_funnel(events, step_count, window_secs);
        exactly[level] += 1;
        events.clear();
    };
    for row in rows {
        let id = row.first().map(String::as_str).unwrap_or("");
        if person.is_some_and(|p| p != id) {
            finish(&mut events);
        }
        person = Some(id);
        events.push((field(row, 1)?, field(row, 2)?));
    }
    if person.is_some() {
        finish(&mut events);
    }
    // Level 0 is people without a first step: not in the funnel.
    exactly[0] = 0;
    Ok(exactly)
}

fn ratio(part: u64, whole: u64) -> Value {
    if whole == 0 {
        Value::Null
    } else {
        json!(part as f64 / whole as f64)
    }
}

fn funnel_series(steps: &[String], reached_exactly: &[u64], start: NaiveDate) -> Vec<Point> {
    // People reaching step k = people whose furthest step is k or later.
    let reached: Vec<u64> = (1..=steps.len())
        .map(|level| reached_exactly.iter().skip(level).sum())
        .collect();
    steps
        .iter()
        .enumerate()
        .map(|(index, step)| {
            let mut extra = Map::new();
            extra.insert("step".into(), json!(step));
            extra.insert("conversion".into(), ratio(reached[index], reached[0]));
            let previous = if index == 0 {
                reached[0]
            } else {
                reached[index - 1]
            };
            extra.insert("step_conversion".into(), ratio(reached[index], previous));
            Point {
                date: start.to_string(),
                value: json!(reached[index]),
                extra,
            }
        })
        .collect()
}

fn retention_series(
    rows: &[Vec<String>],
    grain: Grain,
    request: &KpiRequest,
) -> Result<Vec<Point>, KpiError> {
    let mut people: HashMap<(NaiveDate, usize), u64> = HashMap::new();
    for row in rows {
        people.insert((date_field(row, 0)?, field(row, 1)?), field(row, 2)?);
    }
    let buckets = grain.buckets(request.start, request.end);
    let mut series = Vec::new();
    for (index, cohort) in buckets.iter().enumerate() {
        let size = people.get(&(*cohort, 0)).copied().unwrap_or(0);
        if size == 0 {
            continue;
        }
        for period in 0..buckets.len() - index {
            let retained = people.get(&(*cohort, period)).copied().unwrap_or(0);
            let mut extra = Map::new();
            extra.insert("period".into(), json!(period));
            extra.insert("cohort_size".into(), json!(size));
            extra.insert("rate".into(), ratio(retained, size));
            series.push(Point {
                date: cohort.to_string(),
                value: json!(retained),
                extra,
            });
        }
    }
    Ok(series)
}

/// One CSV field, quoted when it holds a comma, quote or line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

fn csv_value(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => csv_field(text),
        other => other.to_string(),
    }
}

/// The answer as CSV: a header row, then one row per point.
pub fn to_csv(answer: &Answer) -> String {
    let mut text = String::from("date,value");
    for column in &answer.columns {
        text.push(',');
        text.push_str(column);
    }
    text.push('\n');
    for point in &answer.series {
        text.push_str(&point.date);
        text.push(',');
        text.push_str(&csv_value(&point.value));
        for column in &answer.columns {
            text.push(',');
            text.push_str(&csv_value(point.extra.get(*column).unwrap_or(&Value::Null)));
        }
        text.push('\n');
    }
    text
}

/// Routes `/api/kpis` and `/api/kpis/{metric}`.
pub async fn route(
    app: Arc<App>,
    request: Request<Incoming>,
    path: &str,
) -> Result<Response<Body>, ApiError> {
    crate::admin::authorize(&app, &request)?;
    if request.method() != Method::GET {
        return Err(ApiError::method_not_allowed("GET"));
    }
    let runtime = app.runtime();
    let service = runtime
        .kpis
        .as_ref()
        .map_err(|reason| ApiError::new(StatusCode::NOT_FOUND, "kpis_disabled", reason.clone()))?;
    let name = path.trim_start_matches("/api/kpis").trim_start_matches('/');
    if name.is_empty() {
        return Ok(json_response(
            StatusCode::OK,
            &json!({"sink": service.sink, "metrics": request::METRICS, "cache_ttl_secs": service.settings.cache_ttl_secs, "max_range_days": service.settings.max_range_days}),
        ));
    }
    let query = request.uri().query().unwrap_or("");
    let kpi = request::parse(
        name,
        query,
        service.settings.max_range_days,
        request::today(),
    )
    .map_err(|problems| {
        if problems.len() == 1 && problems[0].starts_with("no KPI named") {
            ApiError::not_found(problems[0].clone())
        } else {
            ApiError::bad_request("invalid_kpi_request", problems.join("; "))
        }
    })?;
    let (answer, cached) = service.answer(&kpi).await.map_err(|error| {
        tracing::warn!(metric = name, %error, "KPI query failed");
        let code = match error {
            KpiError::NoTable { .. } => "kpi_table_missing",
            _ => "kpi_query_failed",
        };
        ApiError::new(StatusCode::BAD_GATEWAY, code, error.to_string())
    })?;
    let mut response = if kpi.csv {
        let mut response = Response::new(Body::new(bytes::Bytes::from(to_csv(&answer))));
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        );
        let file = format!(
            "attachment; filename=\"switchyard-{}-{}-{}.csv\"",
            answer.metric, answer.start, answer.end
        );
        if let Ok(value) = HeaderValue::from_str(&file) {
            response.headers_mut().insert(CONTENT_DISPOSITION, value);
        }
        response
    } else {
        json_response(StatusCode::OK, &*answer)
    };
    let headers = response.headers_mut();
    headers.insert(
        CACHE_HEADER,
        HeaderValue::from_static(if cached { "hit" } else { "miss" }),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(text: &str) -> Vec<Vec<String>> {
        text.lines()
            .map(|line| line.split('\t').map(str::to_string).collect())
            .collect()
    }

    #[test]
    fn client_funnel_groups_by_person() {
        let events = rows("a\t0\t1\na\t10\t2\nb\t0\t1\nc\t0\t2\nd\t5\t1\nd\t6\t2\nd\t7\t3");
        let exactly = client_funnel(&events, 3, 100).unwrap();
        // a: 2, b: 1, c: never started, d: 3.
        assert_eq!(exactly, vec![0, 1, 1, 1]);
        let series = funnel_series(
            &["x".into(), "y".into(), "z".into()],
            &exactly,
            NaiveDate::from_ymd_opt(2024, 5, 1).unwrap(),
        );
        let values: Vec<Value> = series.iter().map(|p| p.value.clone()).collect();
        assert_eq!(values, vec![json!(3), json!(2), json!(1)]);
        assert_eq!(series[2].extra["conversion"], json!(1.0 / 3.0));
        assert_eq!(series[2].extra["step_conversion"], json!(0.5));
    }

    #[test]
    fn csv_quotes_and_orders_columns() {
        let answer = Answer {
            metric: "funnel",
            start: "2024-05-01".into(),
            end: "2024-05-02".into(),
            params: Map::new(),
            series: vec![Point {
                date: "2024-05-01".into(),
                value: json!(4),
                extra: [
                    ("step".to_string(), json!("Signed \"Up\", now")),
                    ("conversion".to_string(), Value::Null),
                    ("step_conversion".to_string(), json!(0.5)),
                ]
                .into_iter()
                .collect(),
            }],
            columns: vec!["step", "conversion", "step_conversion"],
        };
        assert_eq!(
            to_csv(&answer),
            "date,value,step,conversion,step_conversion\n2024-05-01,4,\"Signed \"\"Up\"\", now\",,0.5\n"
        );
    }

    /// A server that answers the first request on each connection with keep-alive, then reads the
    /// next request on that connection and closes it unanswered, as ClickHouse does when its
    /// keep-alive timeout fires while a query is being written.
    async fn closes_reused_connections(
    ) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut answered = false;
                    let mut buffer = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Ok(read) = socket.read(&mut chunk).await else {
                            return;
                        };
                        if read == 0 {
                            return;
                        }
                        buffer.extend_from_slice(&chunk[..read]);
                        let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        buffer.drain(..end + 4);
                        if answered {
                            return; // closes the connection with the request unanswered
                        }
                        answered = true;
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n1\t2\n";
                        if socket.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (address, connections)
    }

    #[tokio::test]
    async fn a_query_on_a_connection_the_server_closed_is_sent_again() {
        let (address, connections) = closes_reused_connections().await;
        let http = reqwest::Client::new();
        let url = format!("http://{address}/");
        for attempt in 0..3 {
            let response = send_read_query(|| http.get(&url))
                .await
                .unwrap_or_else(|e| panic!("query {attempt} failed: {e}"));
            assert_eq!(response.text().await.unwrap(), "1\t2\n");
        }
        // Each query after the first found its pooled connection closed and used a new one.
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[test]
    fn missing_days_count_zero() {
        let start = NaiveDate::from_ymd_opt(2024, 5, 1).unwrap();
        let end = NaiveDate::from_ymd_opt(2024, 5, 3).unwrap();
        let series =
            counts_by_bucket(&rows("2024-05-02\t7"), Grain::Day.buckets(start, end)).unwrap();
        let values: Vec<Value> = series.iter().map(|p| p.value.clone()).collect();
        assert_eq!(values, vec![json!(0), json!(7), json!(0)]);
        assert!(counts_by_bucket(&rows("garbage"), vec![start]).is_err());
    }
}
