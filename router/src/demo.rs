//! The seeded synthetic event set behind `switchyard demo` and the KPI tests: users who sign up,
//! come back on later days in sessions (some with an explicit session id, some only separated by
//! inactivity), browse, and go through a Signed Up -> Activated -> Purchased funnel, some too slowly
//! for a one-day window. The same seed always gives the same events.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde_json::{json, Value};

/// The funnel the demo users walk, in order.
pub const FUNNEL: [&str; 3] = ["Signed Up", "Activated", "Purchased"];
/// Events of an ordinary session.
const BROWSING: [&str; 4] = ["Product Viewed", "Search", "Product Added", "Video Played"];
/// Every event is at least this far from the inactivity timeout, so 30-minute sessionisation of
/// the demo is unambiguous: gaps inside a session are at most 12 minutes, between sessions at
/// least 45.
const MAX_GAP_IN_SESSION_SECS: i64 = 12 * 60;
const MIN_GAP_BETWEEN_SESSIONS_SECS: i64 = 45 * 60;

/// What to generate.
#[derive(Debug, Clone)]
pub struct DemoSpec {
    pub seed: u64,
    pub users: usize,
    /// Days of history, ending with `end` (inclusive).
    pub days: u32,
    pub end: NaiveDate,
}

/// splitmix64: a small, well-mixed, seedable generator (the demo needs repeatability, not crypto).
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `low..=high`.
    fn between(&mut self, low: i64, high: i64) -> i64 {
        let span = (high - low + 1).max(1) as u64;
        low + (self.next() % span) as i64
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

struct Person {
    user_id: Option<String>,
    anonymous_id: String,
    explicit_sessions: bool,
    source_index: usize,
}

/// The sources demo events are tagged with (`context.source` is informational; the ingest write key
/// decides the real source).
fn message(
    person: &Person,
    kind: &str,
    name: &str,
    time: DateTime<Utc>,
    id: &str,
    session: Option<&str>,
) -> Value {
    let locale = ["en-GB", "de-DE", "ja-JP"][person.source_index % 3];
    let mut context = json!({
        "library": {"name": "switchyard-demo", "version": "1"},
        "page": {"path": format!("/{}", name.to_lowercase().replace(' ', "-"))},
        "locale": locale,
    });
    if let Some(session) = session {
        context["sessionId"] = json!(session);
    }
    let mut message = json!({
        "type": kind,
        "messageId": id,
        "anonymousId": person.anonymous_id,
        "timestamp": switchyard_schemas::time::format_timestamp(&time),
        "context": context,
    });
    if let Some(user_id) = &person.user_id {
        message["userId"] = json!(user_id);
    }
    if kind == "track" {
        message["event"] = json!(name);
        message["properties"] = json!({"demo": true});
    } else {
        message["name"] = json!(name);
    }
    message
}

/// The demo's events, in no particular order, every one inside the `days` ending with `end`.
pub fn generate(spec: &DemoSpec) -> Vec<Value> {
    let mut random = Random(spec.seed);
    // (Capped so that date arithmetic cannot overflow: about 27 years of history.)
    let days = i64::from(spec.days.clamp(1, 10_000));
    let first_day = spec
        .end
        .checked_sub_signed(Duration::days(days - 1))
        .unwrap_or(NaiveDate::MIN);
    let midnight = |day: NaiveDate| day.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    let mut events = Vec::new();
    for index in 0..spec.users {
        let person = Person {
            // One in five never logs in: known only by an anonymous id.
            user_id: (!random.chance(20)).then(|| format!("user-{}-{index}", spec.seed)),
            anonymous_id: format!("anon-{}-{index}", spec.seed),
            explicit_sessions: random.chance(50),
            source_index: index,
        };
        let signup_day = random.between(0, days - 1);
        // Loyalty: the chance of coming back on any later day.
        let loyalty = [10, 25, 45][index % 3];
        let mut session_number = 0;
        let mut funnel_done = false;
        for day in signup_day..days {
            if day != signup_day && !random.chance(loyalty) {
                continue;
            }
            let Some(day_start) = midnight(first_day + Duration::days(day)) else {
                continue;
            };
            // Sessions start between 06:00 and 19:00, and end before 23:00 (never on the next day).
            let mut clock = day_start + Duration::seconds(random.between(6 * 3600, 10 * 3600));
            let sessions = random.between(1, 3);
            for _ in 0..sessions {
                if clock > day_start + Duration::hours(19) {
                    break;
                }
                session_number += 1;
                let session_id = format!("sess-{}-{index}-{session_number}", spec.seed);
                let session = person.explicit_sessions.then_some(session_id.as_str());
                let mut names: Vec<(&str, &str)> = Vec::new();
                if day == signup_day && session_number == 1 {
                    names.push(("track", FUNNEL[0]));
                }
                names.push(("page", "Home"));
                for _ in 0..random.between(0, 4) {
                    names.push(("track", BROWSING[(random.next() % 4) as usize]));
                }
                if !funnel_done && day == signup_day && session_number == 1 {
                    if random.chance(65) {
                        names.push(("track", FUNNEL[1]));
                        if random.chance(55) {
                            names.push(("track", FUNNEL[2]));
                        }
                    }
                    funnel_done = true;
                } else if day > signup_day && random.chance(8) {
                    // A purchase on a later visit: usually beyond a one-day funnel window.
                    names.push(("track", FUNNEL[2]));
                }
                for (position, (kind, name)) in names.iter().enumerate() {
                    if position > 0 {
                        clock += Duration::milliseconds(
                            random.between(20_000, MAX_GAP_IN_SESSION_SECS * 1000),
                        );
                    }
                    let id = format!("demo-{}-{index}-{}", spec.seed, events.len());
                    events.push(message(&person, kind, name, clock, &id, session));
                }
                clock += Duration::seconds(random.between(MIN_GAP_BETWEEN_SESSIONS_SECS, 3 * 3600))
                    + Duration::milliseconds(random.between(0, 999));
            }
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(seed: u64) -> DemoSpec {
        DemoSpec {
            seed,
            users: 50,
            days: 21,
            end: NaiveDate::from_ymd_opt(2024, 5, 21).unwrap(),
        }
    }

    #[test]
    fn same_seed_same_events() {
        assert_eq!(generate(&spec(7)), generate(&spec(7)));
        assert_ne!(generate(&spec(7)), generate(&spec(8)));
    }

    #[test]
    fn events_stay_in_range_and_normalise() {
        let events = generate(&spec(3));
        assert!(events.len() > 100);
        let received = Utc::now();
        for message in &events {
            let time =
                switchyard_schemas::time::parse_timestamp(message["timestamp"].as_str().unwrap())
                    .unwrap();
            let day = time.date_naive();
            assert!(day >= NaiveDate::from_ymd_opt(2024, 5, 1).unwrap());
            assert!(day <= NaiveDate::from_ymd_opt(2024, 5, 21).unwrap());
            let defaults = switchyard_schemas::segment::MessageDefaults {
                implied_type: None,
                received_at: received,
                batch_sent_at: None,
                batch_context: None,
                source: "demo",
                request_id: "r",
                ip: None,
                user_agent: None,
            };
            let inbound =
                switchyard_schemas::segment::InboundMessage::from_json(&message.to_string())
                    .unwrap();
            let event = switchyard_schemas::segment::normalize_message(inbound, &defaults)
                .unwrap_or_else(|e| panic!("{message}: {e}"));
            // No sentAt: the client's timestamp is kept as the event time.
            assert_eq!(event.timestamp, time);
        }
        assert!(events.iter().any(|e| e["event"] == FUNNEL[2]));
        assert!(events.iter().any(|e| e.get("userId").is_none()));
        assert!(events
            .iter()
            .any(|e| e["context"].get("sessionId").is_some()));
    }
}
