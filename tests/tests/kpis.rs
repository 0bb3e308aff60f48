//! End-to-end: the KPI API of the real switchyard process over a real ClickHouse server, fed the
//! seeded demo event set through the ingest API. Every KPI is compared with the value computed here,
//! independently, from the generated events; also the cache, CSV, auth and request checks, and the
//! client-side funnel fallback against `windowFunnel`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use chrono::{Datelike, NaiveDate};
use serde_json::Value;
use switchyard_router::demo::{generate, DemoSpec, FUNNEL};
use switchyard_tests::clickhouse::{number, query, shared, sink_section, wait_for_number};
use switchyard_tests::*;

const START: &str = "2024-04-27";
const END: &str = "2024-05-31";

fn date(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
}

/// One generated event, reduced to what the KPIs read.
#[derive(Debug, Clone)]
struct Seen {
    person: String,
    event: String,
    millis: i64,
    day: NaiveDate,
    session: Option<String>,
}

fn seen(messages: &[Value]) -> Vec<Seen> {
    messages
        .iter()
        .map(|m| {
            let time = chrono::DateTime::parse_from_rfc3339(m["timestamp"].as_str().unwrap())
                .unwrap()
                .with_timezone(&chrono::Utc);
            Seen {
                person: m["userId"]
                    .as_str()
                    .or(m["anonymousId"].as_str())
                    .unwrap()
                    .to_string(),
                event: m["event"].as_str().unwrap_or("").to_string(),
                millis: time.timestamp_millis(),
                day: time.date_naive(),
                session: m["context"]["sessionId"].as_str().map(str::to_string),
            }
        })
        .collect()
}

fn monday(day: NaiveDate) -> NaiveDate {
    day - chrono::Duration::days(i64::from(day.weekday().num_days_from_monday()))
}

fn month(day: NaiveDate) -> NaiveDate {
    NaiveDate::from_ymd_opt(day.year(), day.month(), 1).unwrap()
}

fn days(start: NaiveDate, end: NaiveDate) -> Vec<NaiveDate> {
    start.iter_days().take_while(|d| *d <= end).collect()
}

/// The (date, value) pairs of an answer.
fn series(answer: &Value) -> Vec<(String, Value)> {
    answer["series"]
        .as_array()
        .unwrap_or_else(|| panic!("no series: {answer}"))
        .iter()
        .map(|p| (p["date"].as_str().unwrap().to_string(), p["value"].clone()))
        .collect()
}

fn counts(expected: BTreeMap<NaiveDate, u64>) -> Vec<(String, Value)> {
    expected
        .into_iter()
        .map(|(d, n)| (d.to_string(), Value::from(n)))
        .collect()
}

/// Distinct people per bucket of `start..=end` (every bucket present).
fn active_people(
    events: &[Seen],
    start: NaiveDate,
    end: NaiveDate,
    bucket: fn(NaiveDate) -> NaiveDate,
) -> BTreeMap<NaiveDate, u64> {
    let mut people: BTreeMap<NaiveDate, BTreeSet<&str>> = days(start, end)
        .into_iter()
        .map(|d| (bucket(d), BTreeSet::new()))
        .collect();
    for e in events.iter().filter(|e| e.day >= start && e.day <= end) {
        people.entry(bucket(e.day)).or_default().insert(&e.person);
    }
    people
        .into_iter()
        .map(|(d, p)| (d, p.len() as u64))
        .collect()
}

/// Weekly retention: (cohort week, weeks later) -> people, where a cohort is the week of a person's
/// first event up to `end` and cohorts before `start`'s week are left out; also how many people had
/// events up to `end`.
fn weekly_retention(
    events: &[Seen],
    start: NaiveDate,
    end: NaiveDate,
) -> (BTreeMap<(NaiveDate, i64), u64>, u64) {
    let mut weeks: HashMap<&str, BTreeSet<NaiveDate>> = HashMap::new();
    for e in events.iter().filter(|e| e.day <= end) {
        weeks.entry(&e.person).or_default().insert(monday(e.day));
    }
    let mut table = BTreeMap::new();
    for active in weeks.values() {
        let cohort = *active.iter().next().unwrap();
        if cohort < monday(start) {
            continue;
        }
        for week in active {
            *table
                .entry((cohort, (*week - cohort).num_days() / 7))
                .or_default() += 1;
        }
    }
    (table, weeks.len() as u64)
}

/// Sessions as (person, start ms, duration ms, contains `event`).
fn sessions(events: &[Seen], timeout_ms: i64, event: Option<&str>) -> Vec<(i64, i64)> {
    let mut groups: BTreeMap<(String, String), Vec<&Seen>> = BTreeMap::new();
    let mut loose: BTreeMap<String, Vec<&Seen>> = BTreeMap::new();
    for e in events {
        match &e.session {
            Some(id) => groups
                .entry((e.person.clone(), format!("id:{id}")))
                .or_default()
                .push(e),
            None => loose.entry(e.person.clone()).or_default().push(e),
        }
    }
    for (person, mut list) in loose {
        list.sort_by_key(|e| e.millis);
        let mut number = 0;
        let mut last = i64::MIN;
        for e in list {
            if last == i64::MIN || e.millis - last > timeout_ms {
                number += 1;
            }
            last = e.millis;
            groups
                .entry((person.clone(), format!("gap:{number}")))
                .or_default()
                .push(e);
        }
    }
    groups
        .values()
        .filter(|list| event.is_none_or(|name| list.iter().any(|e| e.event == name)))
        .map(|list| {
            let first = list.iter().map(|e| e.millis).min().unwrap();
            let last = list.iter().map(|e| e.millis).max().unwrap();
            (first, last - first)
        })
        .collect()
}

/// Furthest funnel step per person: the longest in-order chain starting at some first-step event
/// and ending within `window_secs` of it (times in whole seconds).
fn funnel_reached(events: &[Seen], steps: &[&str], window_secs: i64) -> Vec<u64> {
    let mut by_person: BTreeMap<&str, Vec<(i64, usize)>> = BTreeMap::new();
    for e in events {
        if let Some(step) = steps.iter().position(|s| *s == e.event) {
            by_person
                .entry(&e.person)
                .or_default()
                .push((e.millis.div_euclid(1000), step));
        }
    }
    let mut reached = vec![0u64; steps.len()];
    for (_, mut list) in by_person {
        list.sort();
        let mut best = 0;
        for (index, &(start, step)) in list.iter().enumerate() {
            if step != 0 {
                continue;
            }
            let mut level = 1;
            for &(time, step) in &list[index + 1..] {
                if time > start + window_secs {
                    break;
                }
                if step == level {
                    level += 1;
                }
            }
            best = best.max(level);
        }
        for slot in reached.iter_mut().take(best) {
            *slot += 1;
        }
    }
    reached
}

struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
    }

    async fn json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }
}

fn config(url: &str, database: &str, funnel: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
data_dir = "{{dir}}/data"

[admin]
token = "${{ADMIN_TOKEN}}"

[kpis]
funnel = "{funnel}"
cache_ttl_secs = 300
{}"#,
        sink_section("warehouse", url, database)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kpis_match_values_computed_from_the_demo_events() {
    let clickhouse = shared();
    let url = clickhouse.url();
    let database = format!("kpis_{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let switchyard = Switchyard::start(dir.path(), &config(&url, &database, "auto"));
    let api = Api {
        base: switchyard.base_url.clone(),
        client: client(),
    };

    let messages = generate(&DemoSpec {
        seed: 11,
        users: 160,
        days: 35,
        end: date(END),
    });
    for chunk in messages.chunks(500) {
        let response = api
            .client
            .post(switchyard.url("/v1/batch"))
            .json(&serde_json::json!({ "batch": chunk }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }
    let table = format!("`{database}`.`events_by_person`");
    let stored = wait_for_number(
        &url,
        &format!("SELECT count() FROM {table} FINAL"),
        messages.len() as u64,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(stored, messages.len() as u64, "{}", switchyard.logs());
    // A batch delivered twice (a retry after a lost answer) must not count twice: copy rows in as a
    // second insert, as a re-sent batch would land.
    query(
        &url,
        &format!("INSERT INTO {table} SELECT * FROM {table} WHERE event = 'Search' LIMIT 100"),
    )
    .await;
    assert!(number(&url, &format!("SELECT count() FROM {table}")).await > messages.len() as u64);

    let events = seen(&messages);
    let (start, end) = (date(START), date(END));
    let range = format!("start={START}&end={END}");

    // Events per day, all and filtered.
    let mut per_day: BTreeMap<NaiveDate, u64> =
        days(start, end).into_iter().map(|d| (d, 0)).collect();
    let mut searches = per_day.clone();
    for e in &events {
        *per_day.get_mut(&e.day).unwrap() += 1;
        if e.event == "Search" {
            *searches.get_mut(&e.day).unwrap() += 1;
        }
    }
    let answer = api.json(&format!("/api/kpis/events?{range}")).await;
    assert_eq!(answer["metric"], "events");
    assert_eq!(answer["start"], START);
    assert_eq!(answer["end"], END);
    assert_eq!(series(&answer), counts(per_day));
    let answer = api
        .json(&format!("/api/kpis/events?{range}&event=Search"))
        .await;
    assert_eq!(series(&answer), counts(searches));

    // Active users by day, week and month.
    for (grain, bucket) in [
        ("day", (|d| d) as fn(NaiveDate) -> NaiveDate),
        ("week", monday),
        ("month", month),
    ] {
        let expected = active_people(&events, start, end, bucket);
        let answer = api
            .json(&format!("/api/kpis/active-users?{range}&grain={grain}"))
            .await;
        assert_eq!(series(&answer), counts(expected), "grain {grain}");
    }
    let activated: BTreeSet<&str> = events
        .iter()
        .filter(|e| e.event == FUNNEL[1] && e.day == date("2024-05-20"))
        .map(|e| e.person.as_str())
        .collect();
    let answer = api
        .json("/api/kpis/active-users?start=2024-05-20&end=2024-05-20&event=Activated")
        .await;
    assert_eq!(
        series(&answer),
        vec![("2024-05-20".to_string(), Value::from(activated.len()))]
    );

    // Sessions: count, average, p50, p95 per start day.
    for (filter, event) in [("", None), ("&event=Activated", Some(FUNNEL[1]))] {
        let list = sessions(&events, 30 * 60 * 1000, event);
        let mut by_day: BTreeMap<NaiveDate, Vec<i64>> = BTreeMap::new();
        for (started, duration) in &list {
            let day = chrono::DateTime::from_timestamp_millis(*started)
                .unwrap()
                .date_naive();
            by_day.entry(day).or_default().push(*duration);
        }
        let count = api
            .json(&format!("/api/kpis/sessions?{range}&metric=count{filter}"))
            .await;
        let avg = api
            .json(&format!("/api/kpis/sessions?{range}&metric=avg{filter}"))
            .await;
        let p50 = api
            .json(&format!("/api/kpis/sessions?{range}&metric=p50{filter}"))
            .await;
        let p95 = api
            .json(&format!("/api/kpis/sessions?{range}&metric=p95{filter}"))
            .await;
        for (index, day) in days(start, end).into_iter().enumerate() {
            let mut durations = by_day.get(&day).cloned().unwrap_or_default();
            durations.sort();
            let at = |q: f64| {
                durations[((q * durations.len() as f64) as usize).min(durations.len() - 1)] as f64
                    / 1000.0
            };
            assert_eq!(count["series"][index]["date"], day.to_string());
            assert_eq!(
                count["series"][index]["value"],
                Value::from(durations.len()),
                "{day}{filter}"
            );
            if durations.is_empty() {
                assert!(avg["series"][index]["value"].is_null());
                continue;
            }
            let mean = durations.iter().sum::<i64>() as f64 / durations.len() as f64 / 1000.0;
            let got = avg["series"][index]["value"].as_f64().unwrap();
            assert!(
                (got - mean).abs() < 1e-6,
                "avg {day}{filter}: {got} vs {mean}"
            );
            assert_eq!(
                p50["series"][index]["value"].as_f64().unwrap(),
                at(0.5),
                "p50 {day}{filter}"
            );
            assert_eq!(
                p95["series"][index]["value"].as_f64().unwrap(),
                at(0.95),
                "p95 {day}{filter}"
            );
        }
        assert!(!list.is_empty());
    }

    // Funnel, with windowFunnel (this server has it) at two windows.
    check_funnels(&api, &range, &events, "windowFunnel").await;
    // Late purchases exist, so a longer window converts more people.
    assert!(
        funnel_reached(&events, &FUNNEL, 14 * 86_400)[2]
            > funnel_reached(&events, &FUNNEL, 86_400)[2]
    );

    // Weekly retention: cohort = week of first event; value = people of the cohort active k weeks on.
    let (table, _) = weekly_retention(&events, start, end);
    let answer = api
        .json(&format!("/api/kpis/retention?{range}&cohort=week"))
        .await;
    let last_week = monday(end);
    let mut rows = 0;
    for point in answer["series"].as_array().unwrap() {
        let cohort = date(point["date"].as_str().unwrap());
        let period = point["period"].as_i64().unwrap();
        let size = table[&(cohort, 0)];
        assert_eq!(point["cohort_size"], Value::from(size));
        assert_eq!(
            point["value"],
            Value::from(table.get(&(cohort, period)).copied().unwrap_or(0)),
            "{cohort} +{period}"
        );
        assert!(cohort + chrono::Duration::days(7 * period) <= last_week);
        rows += 1;
    }
    let cohorts: BTreeSet<NaiveDate> = table.keys().map(|(c, _)| *c).collect();
    let expected_rows: i64 = cohorts
        .iter()
        .map(|c| (last_week - *c).num_days() / 7 + 1)
        .sum();
    assert_eq!(rows, expected_rows);

    // Cache: the same question again is served from memory; CSV shares the entry.
    let path = format!("/api/kpis/events?{range}");
    assert_eq!(api.get(&path).await.headers()["x-switchyard-cache"], "hit");
    let csv = api.get(&format!("{path}&format=csv")).await;
    assert_eq!(csv.headers()["x-switchyard-cache"], "hit");
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = csv.text().await.unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("date,value"));
    assert_eq!(lines.count(), days(start, end).len());
    let funnel_csv = api
        .get(&format!(
            "/api/kpis/funnel?{range}&steps=Signed%20Up,Activated&format=csv"
        ))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        funnel_csv.starts_with("date,value,step,conversion,step_conversion\n"),
        "{funnel_csv}"
    );

    // Source filter: with no [sources], every event has source `default`.
    let answer = api
        .json(&format!("/api/kpis/events?{range}&source=default"))
        .await;
    assert_eq!(
        answer["series"][10]["value"],
        api.json(&path).await["series"][10]["value"]
    );
    let answer = api
        .json(&format!("/api/kpis/events?{range}&source=ios"))
        .await;
    assert!(series(&answer).iter().all(|(_, v)| v.as_u64() == Some(0)));

    // Bad requests: every problem at once; auth; unknown metric.
    let response = api
        .get("/api/kpis/sessions?start=2024-02-30&metric=p99&color=red")
        .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("start") && message.contains("p99") && message.contains("color"),
        "{message}"
    );
    let response = api
        .get("/api/kpis/events?start=2020-01-01&end=2024-01-01")
        .await;
    assert_eq!(response.status(), 400);
    assert_eq!(api.get("/api/kpis/revenue").await.status(), 404);
    let anonymous = api.client.get(switchyard.url(&path)).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);

    // Edges: a range starting mid-week, after many people's first events.
    let (sub_start, sub_end) = (date("2024-05-08"), date("2024-05-20"));
    let sub_range = format!("start={sub_start}&end={sub_end}");
    let inside: Vec<Seen> = events
        .iter()
        .filter(|e| e.day >= sub_start && e.day <= sub_end)
        .cloned()
        .collect();
    // Weekly active users count only the days inside the range.
    let expected = active_people(&events, sub_start, sub_end, monday);
    let answer = api
        .json(&format!("/api/kpis/active-users?{sub_range}&grain=week"))
        .await;
    assert_eq!(series(&answer), counts(expected), "weekly, mid-week start");
    // Sessions are built from the range's events only.
    let mut per_day: BTreeMap<NaiveDate, u64> = days(sub_start, sub_end)
        .into_iter()
        .map(|d| (d, 0))
        .collect();
    for (started, _) in sessions(&inside, 30 * 60 * 1000, None) {
        let day = chrono::DateTime::from_timestamp_millis(started)
            .unwrap()
            .date_naive();
        *per_day.get_mut(&day).unwrap() += 1;
    }
    let answer = api
        .json(&format!("/api/kpis/sessions?{sub_range}&metric=count"))
        .await;
    assert_eq!(series(&answer), counts(per_day));
    // Retention: cohorts come from first events before the range too; earlier cohorts are left out.
    let (table, people_up_to_end) = weekly_retention(&events, sub_start, sub_end);
    let answer = api.json(&format!("/api/kpis/retention?{sub_range}")).await;
    let got: BTreeMap<(NaiveDate, i64), u64> = answer["series"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["value"].as_u64().unwrap() > 0)
        .map(|p| {
            (
                (
                    date(p["date"].as_str().unwrap()),
                    p["period"].as_i64().unwrap(),
                ),
                p["value"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, table, "retention over {sub_range}");
    // Some people were first seen before the range: their cohorts are not listed.
    let included: u64 = table
        .iter()
        .filter(|((_, period), _)| *period == 0)
        .map(|(_, people)| people)
        .sum();
    assert!(people_up_to_end > included);

    // The client-side funnel (servers without windowFunnel) gives the same answer.
    std::fs::write(
        &switchyard.config_path,
        config(&url, &database, "client").replace("{dir}", &dir.path().display().to_string()),
    )
    .unwrap();
    let reload = api
        .client
        .post(switchyard.url("/admin/reload"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), 200, "{}", reload.text().await.unwrap());
    check_funnels(&api, &range, &events, "client").await;
}

/// The demo funnel at a one-day and a two-week window against [`funnel_reached`], computed the way
/// `computed_by` names.
async fn check_funnels(api: &Api, range: &str, events: &[Seen], computed_by: &str) {
    for (window, secs) in [("1d", 86_400), ("14d", 14 * 86_400)] {
        let expected = funnel_reached(events, &FUNNEL, secs);
        let answer = api
            .json(&format!(
                "/api/kpis/funnel?{range}&steps=Signed%20Up,Activated,Purchased&window={window}"
            ))
            .await;
        assert_eq!(answer["params"]["computed_by"], computed_by);
        let values: Vec<u64> = answer["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["value"].as_u64().unwrap())
            .collect();
        assert_eq!(values, expected, "{computed_by}, window {window}");
        assert_eq!(answer["series"][2]["step"], "Purchased");
        assert_eq!(
            answer["series"][2]["conversion"].as_f64().unwrap(),
            expected[2] as f64 / expected[0] as f64
        );
        assert!(expected[0] > expected[1] && expected[1] > expected[2] && expected[2] > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kpis_explain_why_they_are_off_or_failing() {
    // No ClickHouse sink: the API says so.
    let dir = tempfile::tempdir().unwrap();
    let switchyard = Switchyard::start(dir.path(), FILE_SINK_WITH_ADMIN);
    let response = client()
        .get(switchyard.url("/api/kpis/events"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "kpis_disabled");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("ClickHouse"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kpis_answer_502_naming_the_server_when_clickhouse_is_down() {
    use switchyard_tests::clickhouse::{LocalClickhouse, PASSWORD_USER};
    let mut clickhouse = LocalClickhouse::start().expect("start a ClickHouse server");
    let url = clickhouse.url();
    let (user, password) = PASSWORD_USER;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"
data_dir = "{{dir}}/data"
[admin]
token = "${{ADMIN_TOKEN}}"
[sinks.warehouse]
type = "clickhouse"
url = "{url}"
database = "down"
user = "{user}"
password = "{password}"
"#
    );
    let switchyard = Switchyard::start(dir.path(), &config);
    let get = |path: &str| {
        client()
            .get(switchyard.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
    };
    // Up: an empty range answers zeros (and the password works for queries too).
    let up = get("/api/kpis/events?start=2024-05-01&end=2024-05-02")
        .await
        .unwrap();
    assert_eq!(up.status(), 200, "{}", up.text().await.unwrap());
    clickhouse.stop();
    // Down: 502, the server named, the password nowhere.
    let down = get("/api/kpis/events?start=2024-05-03&end=2024-05-04")
        .await
        .unwrap();
    assert_eq!(down.status(), 502);
    let body: Value = down.json().await.unwrap();
    assert_eq!(body["error"]["code"], "kpi_query_failed");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(&url), "{message}");
    assert!(!message.contains(password), "{message}");
    assert!(!switchyard.logs().contains(password));
    // An answer computed before is still served from the cache while the server is down.
    let cached = get("/api/kpis/events?start=2024-05-01&end=2024-05-02")
        .await
        .unwrap();
    assert_eq!(cached.status(), 200);
    assert_eq!(cached.headers()["x-switchyard-cache"], "hit");
}
