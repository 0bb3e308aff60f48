//! The SQL of each KPI over the ClickHouse sink's `<table>_by_person` rollup (one row per event,
//! ordered by person and time, so per-person scans for sessions, funnels and retention read
//! sequentially), and the client-side funnel walk used where the server has no `windowFunnel`.
//!
//! Every query reads the table with `FINAL`, so a batch delivered twice counts once. Values from the
//! request reach SQL only as escaped string literals or as numbers and dates produced here.

use chrono::NaiveDate;

use super::request::{Grain, KpiRequest};

/// How the table stores time (see the ClickHouse sink's schema).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeLayout {
    /// `timestamp DateTime64(3, 'UTC')`.
    Modern,
    /// `timestamp DateTime('UTC')` plus `timestamp_ms UInt16`.
    Legacy,
}

impl TimeLayout {
    /// The event time in milliseconds since the epoch, as UInt64.
    fn millis(self) -> &'static str {
        match self {
            TimeLayout::Modern => "toUInt64(toUnixTimestamp64Milli(timestamp))",
            TimeLayout::Legacy => "(toUInt64(timestamp) * 1000 + timestamp_ms)",
        }
    }

    /// The event time in whole seconds as DateTime (what `windowFunnel` takes on every version).
    fn seconds(self) -> &'static str {
        match self {
            TimeLayout::Modern => "toDateTime(timestamp, 'UTC')",
            TimeLayout::Legacy => "timestamp",
        }
    }
}

/// A ClickHouse string literal: backslash and quote escaped.
pub fn literal(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('\'');
    for c in text.chars() {
        match c {
            '\\' => quoted.push_str("\\\\"),
            '\'' => quoted.push_str("\\'"),
            other => quoted.push(other),
        }
    }
    quoted.push('\'');
    quoted
}

fn date_literal(date: NaiveDate) -> String {
    format!("toDate('{}')", date.format("%Y-%m-%d"))
}

/// The bucket of `timestamp` for a grain, as a Date.
fn bucket(grain: Grain) -> &'static str {
    match grain {
        Grain::Day => "toDate(timestamp)",
        Grain::Week => "toMonday(timestamp)",
        Grain::Month => "toStartOfMonth(timestamp)",
    }
}

/// The bucket's ordinal, so that later minus earlier counts whole buckets.
fn ordinal(grain: Grain, date_expression: &str) -> String {
    match grain {
        Grain::Day => format!("toRelativeDayNum({date_expression})"),
        Grain::Week => format!("toRelativeWeekNum({date_expression})"),
        Grain::Month => format!("toRelativeMonthNum({date_expression})"),
    }
}

/// The KPI queries for one table.
#[derive(Debug, Clone)]
pub struct Queries {
    /// `` `db`.`table_by_person` ``.
    pub table: String,
    pub layout: TimeLayout,
}

impl Queries {
    /// Rows of the range (`toDate(timestamp)` within start..end) and the source filter; with
    /// `with_event`, the event filter too.
    fn filter(&self, request: &KpiRequest, with_event: bool) -> String {
        let mut filter = format!(
            "toDate(timestamp) >= {} AND toDate(timestamp) <= {} AND person_id != ''",
            date_literal(request.start),
            date_literal(request.end)
        );
        if let Some(source) = &request.source {
            filter.push_str(&format!(" AND source = {}", literal(source)));
        }
        if with_event {
            if let Some(event) = &request.event {
                filter.push_str(&format!(" AND event = {}", literal(event)));
            }
        }
        filter
    }

    /// `date, users`: distinct people per bucket.
    pub fn active_users(&self, request: &KpiRequest, grain: Grain) -> String {
        format!(
            "SELECT {bucket} AS bucket, uniqExact(person_id) FROM {table} FINAL WHERE {filter} \
             GROUP BY bucket ORDER BY bucket FORMAT TabSeparated",
            bucket = bucket(grain),
            table = self.table,
            filter = self.filter(request, true),
        )
    }

    /// `date, events`: events per day.
    pub fn events(&self, request: &KpiRequest) -> String {
        format!(
            "SELECT toDate(timestamp) AS day, count() FROM {table} FINAL WHERE {filter} \
             GROUP BY day ORDER BY day FORMAT TabSeparated",
            table = self.table,
            filter = self.filter(request, true),
        )
    }

    /// `date, sessions, avg, p50, p95` (seconds) per day a session started. A session is a person's
    /// events sharing a `session_id`; events without one are split wherever the person was inactive
    /// for more than `timeout_secs`. With an event filter, only sessions containing that event count.
    pub fn sessions(&self, request: &KpiRequest, timeout_secs: u64) -> String {
        let millis = self.layout.millis();
        let hit = match &request.event {
            Some(event) => format!("toUInt8(event = {})", literal(event)),
            None => "toUInt8(1)".to_string(),
        };
        let filter = self.filter(request, false);
        let timeout_ms = timeout_secs * 1000;
        let having = if request.event.is_some() {
            " HAVING has_event = 1"
        } else {
            ""
        };
        format!(
            "SELECT toDate(toDateTime(intDiv(started, 1000), 'UTC')) AS day, count(), \
             avg(duration) / 1000, quantileExact(0.5)(duration) / 1000, quantileExact(0.95)(duration) / 1000 \
             FROM (\
               SELECT person_id, session_key, min(ts) AS started, max(ts) - min(ts) AS duration, max(hit) AS has_event \
               FROM (\
                 SELECT person_id, concat('gap:', toString(number)) AS session_key, point.1 AS ts, point.2 AS hit \
                 FROM (\
                   SELECT person_id, arraySort(p -> p.1, groupArray(({millis}, {hit}))) AS points, \
                     arrayMap(p -> p.1, points) AS times, \
                     arrayCumSum(arrayMap((t, i) -> (i = 1 OR t - times[i - 1] > {timeout_ms}) ? 1 : 0, times, arrayEnumerate(times))) AS numbers \
                   FROM {table} FINAL WHERE {filter} AND session_id IS NULL GROUP BY person_id\
                 ) ARRAY JOIN points AS point, numbers AS number \
                 UNION ALL \
                 SELECT person_id, concat('id:', assumeNotNull(session_id)) AS session_key, {millis} AS ts, {hit} AS hit \
                 FROM {table} FINAL WHERE {filter} AND session_id IS NOT NULL\
               ) GROUP BY person_id, session_key{having}\
             ) GROUP BY day ORDER BY day FORMAT TabSeparated",
            table = self.table,
        )
    }

    /// `level, people`: how many people got exactly that far through `steps` (level 0 never appears:
    /// people without the first step are not in the funnel).
    pub fn funnel_levels(
        &self,
        request: &KpiRequest,
        steps: &[String],
        window_secs: u64,
    ) -> String {
        let conditions = steps
            .iter()
            .map(|step| format!("event = {}", literal(step)))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "SELECT level, count() FROM (\
               SELECT person_id, windowFunnel({window_secs})({seconds}, {conditions}) AS level \
               FROM {table} FINAL WHERE {filter} AND event IN ({names}) GROUP BY person_id\
             ) WHERE level > 0 GROUP BY level ORDER BY level FORMAT TabSeparated",
            seconds = self.layout.seconds(),
            table = self.table,
            filter = self.filter(request, false),
            names = step_list(steps),
        )
    }

    /// `person, seconds, step` (1-based) for every funnel event, in person then time order: the input
    /// of [`walk_funnel`]. Events of the same second come in step order, as `windowFunnel` sorts them
    /// on servers that order ties at all, so a step and the step before it in one second connect.
    pub fn funnel_events(&self, request: &KpiRequest, steps: &[String]) -> String {
        format!(
            "SELECT person_id, toUInt32({seconds}) AS seconds, indexOf([{names}], event) AS step \
             FROM {table} FINAL WHERE {filter} AND event IN ({names}) \
             ORDER BY person_id, seconds, step FORMAT TabSeparated",
            seconds = self.layout.seconds(),
            table = self.table,
            filter = self.filter(request, false),
            names = step_list(steps),
        )
    }

    /// `cohort, period, people`: each person's cohort is the bucket of their first event ever (up to
    /// `end`); cohorts starting before `start` are left out, so every cohort is people new in range.
    pub fn retention(&self, request: &KpiRequest, cohort: Grain) -> String {
        let mut filter = format!(
            "toDate(timestamp) <= {} AND person_id != ''",
            date_literal(request.end)
        );
        if let Some(source) = &request.source {
            filter.push_str(&format!(" AND source = {}", literal(source)));
        }
        if let Some(event) = &request.event {
            filter.push_str(&format!(" AND event = {}", literal(event)));
        }
        format!(
            "SELECT cohort, {period} AS period, count() FROM (\
               SELECT person_id, groupUniqArray({bucket}) AS buckets, arrayReduce('min', buckets) AS cohort \
               FROM {table} FINAL WHERE {filter} GROUP BY person_id\
             ) ARRAY JOIN buckets AS active \
             WHERE cohort >= {first} GROUP BY cohort, period ORDER BY cohort, period FORMAT TabSeparated",
            period = format_args!("{} - {}", ordinal(cohort, "active"), ordinal(cohort, "cohort")),
            bucket = bucket(cohort),
            table = self.table,
            first = date_literal(cohort.bucket_start(request.start)),
        )
    }
}

fn step_list(steps: &[String]) -> String {
    steps
        .iter()
        .map(|step| literal(step))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How far one person got through a funnel of `step_count` steps, given their funnel events as
/// (seconds, 1-based step) in time order. The rules are `windowFunnel`'s: a first-step event
/// (re)starts the chain at its time; an event of step k advances it when step k-1 was reached by a
/// chain that started at most `window_secs` earlier.
pub fn walk_funnel(events: &[(u32, usize)], step_count: usize, window_secs: u64) -> usize {
    // chain_start[k]: the start time of the latest chain that reached step k+1.
    let mut chain_start: Vec<Option<u32>> = vec![None; step_count];
    for &(time, step) in events {
        if step == 0 || step > step_count {
            continue;
        }
        let index = step - 1;
        if index == 0 {
            chain_start[0] = Some(time);
        } else if let Some(start) = chain_start[index - 1] {
            if u64::from(time) <= u64::from(start) + window_secs {
                chain_start[index] = Some(start);
                if step == step_count {
                    return step_count;
                }
            }
        }
    }
    chain_start
        .iter()
        .rposition(Option::is_some)
        .map_or(0, |index| index + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_escape_quotes_and_backslashes() {
        assert_eq!(literal("it's"), "'it\\'s'");
        assert_eq!(literal("a\\'; DROP"), "'a\\\\\\'; DROP'");
        assert_eq!(literal("ünï"), "'ünï'");
    }

    #[test]
    fn funnel_walk_follows_window_funnel_rules() {
        // In order within the window: all three.
        assert_eq!(walk_funnel(&[(0, 1), (10, 2), (20, 3)], 3, 100), 3);
        // Out of order: the later step does not count before the earlier one.
        assert_eq!(walk_funnel(&[(0, 1), (10, 3), (20, 2)], 3, 100), 2);
        // Beyond the window: stops at step 2.
        assert_eq!(walk_funnel(&[(0, 1), (10, 2), (200, 3)], 3, 100), 2);
        // A later first step restarts the chain, which then completes in its own window.
        assert_eq!(
            walk_funnel(&[(0, 1), (150, 1), (160, 2), (170, 3)], 3, 100),
            3
        );
        // The window's edge is inclusive.
        assert_eq!(walk_funnel(&[(0, 1), (100, 2)], 2, 100), 2);
        // Never started.
        assert_eq!(walk_funnel(&[(0, 2), (10, 3)], 3, 100), 0);
    }

    #[test]
    fn queries_carry_filters_as_literals() {
        let queries = Queries {
            table: "`db`.`events_by_person`".into(),
            layout: TimeLayout::Legacy,
        };
        let request = crate::kpis::request::parse(
            "events",
            "start=2024-05-01&end=2024-05-07&event=it%27s&source=web",
            400,
            NaiveDate::from_ymd_opt(2024, 5, 7).unwrap(),
        )
        .unwrap();
        let sql = queries.events(&request);
        assert!(sql.contains("event = 'it\\'s'"), "{sql}");
        assert!(sql.contains("source = 'web'"));
        assert!(sql.contains("toDate('2024-05-01')"));
        assert!(sql.contains("FINAL"));
    }

    #[test]
    fn time_expressions_follow_the_layout() {
        let request = crate::kpis::request::parse(
            "sessions",
            "start=2024-05-01&end=2024-05-07",
            400,
            NaiveDate::from_ymd_opt(2024, 5, 7).unwrap(),
        )
        .unwrap();
        let steps = ["a".to_string(), "b".to_string()];
        let modern = Queries {
            table: "t".into(),
            layout: TimeLayout::Modern,
        };
        let legacy = Queries {
            table: "t".into(),
            layout: TimeLayout::Legacy,
        };
        // DateTime64 has its milliseconds inside; windowFunnel takes whole-second DateTime.
        assert!(modern
            .sessions(&request, 1800)
            .contains("toUnixTimestamp64Milli(timestamp)"));
        assert!(!modern.sessions(&request, 1800).contains("timestamp_ms"));
        assert!(modern
            .funnel_levels(&request, &steps, 60)
            .contains("windowFunnel(60)(toDateTime(timestamp, 'UTC'), event = 'a', event = 'b')"));
        assert!(legacy
            .sessions(&request, 1800)
            .contains("toUInt64(timestamp) * 1000 + timestamp_ms"));
        assert!(legacy
            .funnel_levels(&request, &steps, 60)
            .contains("windowFunnel(60)(timestamp, "));
        assert!(legacy
            .funnel_events(&request, &steps)
            .contains("ORDER BY person_id, seconds, step"));
    }

    #[test]
    fn same_second_steps_connect_in_step_order() {
        // Step 2 and step 1 in the same second arrive sorted by step, so the chain forms.
        assert_eq!(walk_funnel(&[(5, 1), (5, 2)], 2, 60), 2);
    }
}
