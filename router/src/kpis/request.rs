//! KPI requests: the query string of `/api/kpis/{metric}` parsed and checked, every problem reported
//! at once, into a [`KpiRequest`] whose canonical form is also the cache key.

use chrono::{Duration, NaiveDate, Utc};

/// The longest event, step or source name accepted in a filter.
const MAX_NAME_CHARS: usize = 200;
/// The most steps a funnel may have (`windowFunnel` takes up to 32 conditions; charts need fewer).
pub const MAX_FUNNEL_STEPS: usize = 10;
/// Days in the default range (`end` = today, `start` = 27 days before).
const DEFAULT_RANGE_DAYS: i64 = 28;

/// A calendar bucket: a day, an ISO week (from Monday) or a month.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    Day,
    Week,
    Month,
}

impl Grain {
    fn parse(text: &str) -> Option<Grain> {
        match text {
            "day" => Some(Grain::Day),
            "week" => Some(Grain::Week),
            "month" => Some(Grain::Month),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Grain::Day => "day",
            Grain::Week => "week",
            Grain::Month => "month",
        }
    }

    /// The first day of the bucket holding `date`.
    pub fn bucket_start(self, date: NaiveDate) -> NaiveDate {
        use chrono::Datelike;
        match self {
            Grain::Day => date,
            Grain::Week => date - Duration::days(i64::from(date.weekday().num_days_from_monday())),
            Grain::Month => date.with_day(1).unwrap_or(date),
        }
    }

    /// The first day of the bucket after the one starting at `start`.
    pub fn next(self, start: NaiveDate) -> NaiveDate {
        match self {
            Grain::Day => start + Duration::days(1),
            Grain::Week => start + Duration::days(7),
            Grain::Month => start
                .checked_add_months(chrono::Months::new(1))
                .unwrap_or(NaiveDate::MAX),
        }
    }

    /// The bucket starts from the one holding `start` to the one holding `end`.
    pub fn buckets(self, start: NaiveDate, end: NaiveDate) -> Vec<NaiveDate> {
        let mut buckets = Vec::new();
        let mut bucket = self.bucket_start(start);
        while bucket <= end {
            buckets.push(bucket);
            bucket = self.next(bucket);
        }
        buckets
    }
}

/// The session statistic asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStat {
    Count,
    Avg,
    P50,
    P95,
}

impl SessionStat {
    fn parse(text: &str) -> Option<SessionStat> {
        match text {
            "count" => Some(SessionStat::Count),
            "avg" => Some(SessionStat::Avg),
            "p50" => Some(SessionStat::P50),
            "p95" => Some(SessionStat::P95),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SessionStat::Count => "count",
            SessionStat::Avg => "avg",
            SessionStat::P50 => "p50",
            SessionStat::P95 => "p95",
        }
    }
}

/// Which KPI, with its own parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Metric {
    ActiveUsers {
        grain: Grain,
    },
    Events,
    Sessions {
        stat: SessionStat,
    },
    Funnel {
        steps: Vec<String>,
        window_secs: u64,
    },
    Retention {
        cohort: Grain,
    },
}

impl Metric {
    /// The path name (`active-users`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Metric::ActiveUsers { .. } => "active-users",
            Metric::Events => "events",
            Metric::Sessions { .. } => "sessions",
            Metric::Funnel { .. } => "funnel",
            Metric::Retention { .. } => "retention",
        }
    }
}

/// The names of the metrics, for error messages and the index endpoint.
pub const METRICS: [&str; 5] = ["active-users", "events", "sessions", "funnel", "retention"];

/// A checked KPI request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KpiRequest {
    pub metric: Metric,
    pub start: NaiveDate,
    pub end: NaiveDate,
    pub event: Option<String>,
    pub source: Option<String>,
    pub csv: bool,
}

impl KpiRequest {
    /// A stable text of everything that decides the answer (not the output format): the cache key.
    pub fn cache_key(&self) -> String {
        format!(
            "{:?}|{}|{}|{:?}|{:?}",
            self.metric, self.start, self.end, self.event, self.source
        )
    }
}

/// Parses `window` values such as `1d`, `12h`, `30m`, `90s` (a bare number is seconds).
pub fn parse_window(text: &str) -> Option<u64> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, "s"),
    };
    let number: u64 = number.parse().ok()?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    let seconds = number.checked_mul(factor)?;
    // windowFunnel's window is a UInt32 number of seconds on every server version.
    (seconds > 0 && seconds <= u64::from(u32::MAX)).then_some(seconds)
}

fn check_name(what: &str, value: &str, problems: &mut Vec<String>) -> Option<String> {
    if value.is_empty() {
        problems.push(format!("{what}: must not be empty"));
        None
    } else if value.chars().count() > MAX_NAME_CHARS {
        problems.push(format!("{what}: longer than {MAX_NAME_CHARS} characters"));
        None
    } else if value.chars().any(char::is_control) {
        problems.push(format!("{what}: control characters are not allowed"));
        None
    } else {
        Some(value.to_string())
    }
}

fn parse_date(what: &str, value: &str, problems: &mut Vec<String>) -> Option<NaiveDate> {
    match NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        Ok(date) if value.len() == 10 => Some(date),
        _ => {
            problems.push(format!(
                "{what}: `{value}` is not a UTC date like 2024-05-01"
            ));
            None
        }
    }
}

/// Parses the query string of `/api/kpis/{metric_name}`. `today` is the default `end`. Returns every
/// problem found when the request is not valid.
pub fn parse(
    metric_name: &str,
    query: &str,
    max_range_days: u32,
    today: NaiveDate,
) -> Result<KpiRequest, Vec<String>> {
    let mut problems = Vec::new();
    if !METRICS.contains(&metric_name) {
        return Err(vec![format!(
            "no KPI named `{metric_name}`: expected one of {}",
            METRICS.join(", ")
        )]);
    }
    let allowed: &[&str] = match metric_name {
        "active-users" => &["grain"],
        "sessions" => &["metric"],
        "funnel" => &["steps", "window"],
        "retention" => &["cohort"],
        _ => &[],
    };
    let mut values: Vec<(String, String)> = Vec::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let key = key.into_owned();
        let common = ["start", "end", "event", "source", "format"].contains(&key.as_str());
        if key == "event" && metric_name == "funnel" {
            problems.push("event: a funnel takes its events from `steps`".to_string());
        } else if !common && !allowed.contains(&key.as_str()) {
            let mut known: Vec<&str> = vec!["start", "end", "source", "format"];
            if metric_name != "funnel" {
                known.push("event");
            }
            known.extend(allowed);
            problems.push(format!(
                "unknown parameter `{key}` for {metric_name}: expected {}",
                known.join(", ")
            ));
        } else if values.iter().any(|(seen, _)| *seen == key) {
            problems.push(format!("{key}: given more than once"));
        } else {
            values.push((key, value.into_owned()));
        }
    }
    let get = |key: &str| {
        values
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };

    let end = match get("end") {
        Some(value) => parse_date("end", value, &mut problems),
        None => Some(today),
    };
    let start = match get("start") {
        Some(value) => parse_date("start", value, &mut problems),
        None => end.map(|end| {
            let days = DEFAULT_RANGE_DAYS.min(i64::from(max_range_days.max(1)));
            end - Duration::days(days - 1)
        }),
    };
    if let (Some(start), Some(end)) = (start, end) {
        if start > end {
            problems.push(format!("start ({start}) is after end ({end})"));
        } else if (end - start).num_days() + 1 > i64::from(max_range_days) {
            problems.push(format!(
                "the range {start}..{end} is {} days; the most is {max_range_days} (kpis.max_range_days)",
                (end - start).num_days() + 1
            ));
        }
    }
    let event = get("event").and_then(|v| check_name("event", v, &mut problems));
    let source = get("source").and_then(|v| check_name("source", v, &mut problems));
    let csv = match get("format") {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            problems.push(format!("format: `{other}` is not json or csv"));
            false
        }
    };

    let metric = match metric_name {
        "active-users" => {
            let grain = get("grain").unwrap_or("day");
            Grain::parse(grain)
                .map(|grain| Metric::ActiveUsers { grain })
                .or_else(|| {
                    problems.push(format!("grain: `{grain}` is not day, week or month"));
                    None
                })
        }
        "events" => Some(Metric::Events),
        "sessions" => {
            let stat = get("metric").unwrap_or("count");
            SessionStat::parse(stat)
                .map(|stat| Metric::Sessions { stat })
                .or_else(|| {
                    problems.push(format!("metric: `{stat}` is not count, avg, p50 or p95"));
                    None
                })
        }
        "funnel" => funnel(get("steps"), get("window"), &mut problems),
        _ => {
            let cohort = get("cohort").unwrap_or("week");
            Grain::parse(cohort)
                .map(|cohort| Metric::Retention { cohort })
                .or_else(|| {
                    problems.push(format!("cohort: `{cohort}` is not day, week or month"));
                    None
                })
        }
    };
    match (metric, start, end) {
        (Some(metric), Some(start), Some(end)) if problems.is_empty() => Ok(KpiRequest {
            metric,
            start,
            end,
            event,
            source,
            csv,
        }),
        _ => Err(problems),
    }
}

fn funnel(steps: Option<&str>, window: Option<&str>, problems: &mut Vec<String>) -> Option<Metric> {
    let window_secs = match window {
        None => Some(86_400),
        Some(text) => parse_window(text).or_else(|| {
            problems.push(format!(
                "window: `{text}` is not a duration like 30m, 12h or 1d (at most 49710d)"
            ));
            None
        }),
    };
    let Some(steps) = steps else {
        problems.push("steps: required, e.g. steps=Signed%20Up,Activated,Purchased".to_string());
        return None;
    };
    let mut names: Vec<String> = Vec::new();
    for (index, step) in steps.split(',').enumerate() {
        let step = step.trim();
        let Some(step) = check_name(&format!("steps[{index}]"), step, problems) else {
            continue;
        };
        if names.contains(&step) {
            problems.push(format!(
                "steps[{index}]: `{step}` is listed twice (each step must be a different event)"
            ));
        } else {
            names.push(step);
        }
    }
    if !(2..=MAX_FUNNEL_STEPS).contains(&steps.split(',').count()) {
        problems.push(format!(
            "steps: a funnel has 2 to {MAX_FUNNEL_STEPS} steps, separated by commas"
        ));
    }
    Some(Metric::Funnel {
        steps: names,
        window_secs: window_secs?,
    })
}

/// Today's UTC date.
pub fn today() -> NaiveDate {
    Utc::now().date_naive()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn defaults_are_the_last_28_days_by_day() {
        let request = parse("active-users", "", 400, date("2024-05-28")).unwrap();
        assert_eq!(request.start, date("2024-05-01"));
        assert_eq!(request.end, date("2024-05-28"));
        assert_eq!(request.metric, Metric::ActiveUsers { grain: Grain::Day });
        assert!(!request.csv);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let problems = parse(
            "sessions",
            "start=2024-13-01&end=yesterday&metric=p99&format=xml&bogus=1",
            400,
            date("2024-05-28"),
        )
        .unwrap_err();
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("bogus")));
        assert!(problems.iter().any(|p| p.starts_with("start:")));
        assert!(problems.iter().any(|p| p.starts_with("end:")));
        assert!(problems.iter().any(|p| p.contains("p99")));
        assert!(problems.iter().any(|p| p.contains("xml")));
    }

    #[test]
    fn range_is_bounded_and_ordered() {
        let today = date("2024-05-28");
        let too_long = parse("events", "start=2023-01-01&end=2024-05-01", 400, today);
        assert!(too_long.unwrap_err()[0].contains("kpis.max_range_days"));
        let reversed = parse("events", "start=2024-05-02&end=2024-05-01", 400, today);
        assert!(reversed.unwrap_err()[0].contains("after"));
        assert!(parse("events", "start=2024-05-01&end=2024-05-01", 1, today).is_ok());
        // The default range shrinks to the configured maximum.
        let short = parse("events", "", 7, today).unwrap();
        assert_eq!(short.start, date("2024-05-22"));
    }

    #[test]
    fn funnel_steps_and_window() {
        let today = date("2024-05-28");
        let request = parse(
            "funnel",
            "steps=Signed%20Up,Activated,+Purchased&window=2h",
            400,
            today,
        )
        .unwrap();
        assert_eq!(
            request.metric,
            Metric::Funnel {
                steps: vec!["Signed Up".into(), "Activated".into(), "Purchased".into()],
                window_secs: 7200
            }
        );
        assert!(parse("funnel", "steps=a", 400, today).is_err());
        assert!(parse("funnel", "steps=a,a", 400, today).is_err());
        assert!(parse("funnel", "steps=a,,b", 400, today).is_err());
        assert!(parse("funnel", "steps=a,b&event=a", 400, today).is_err());
        assert!(parse("funnel", "steps=a,b&window=0d", 400, today).is_err());
        assert!(parse("funnel", "window=1d", 400, today).is_err());
    }

    #[test]
    fn windows() {
        assert_eq!(parse_window("1d"), Some(86_400));
        assert_eq!(parse_window("30m"), Some(1800));
        assert_eq!(parse_window("45"), Some(45));
        assert_eq!(parse_window("1y"), None);
        assert_eq!(parse_window("99999999999d"), None);
        assert_eq!(parse_window(""), None);
    }

    #[test]
    fn buckets_cover_the_range() {
        let weeks = Grain::Week.buckets(date("2024-05-01"), date("2024-05-14"));
        assert_eq!(
            weeks,
            vec![date("2024-04-29"), date("2024-05-06"), date("2024-05-13")]
        );
        let months = Grain::Month.buckets(date("2024-01-31"), date("2024-03-01"));
        assert_eq!(
            months,
            vec![date("2024-01-01"), date("2024-02-01"), date("2024-03-01")]
        );
    }

    #[test]
    fn unknown_metric() {
        let problems = parse("revenue", "", 400, date("2024-05-28")).unwrap_err();
        assert!(problems[0].contains("active-users"));
    }

    #[test]
    fn cache_key_ignores_the_format() {
        let today = date("2024-05-28");
        let json = parse("events", "event=A", 400, today).unwrap();
        let csv = parse("events", "event=A&format=csv", 400, today).unwrap();
        assert_eq!(json.cache_key(), csv.cache_key());
        let other = parse("events", "event=B", 400, today).unwrap();
        assert_ne!(json.cache_key(), other.cache_key());
    }
}
