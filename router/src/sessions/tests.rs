//! Tests of sessions: the split at the timeout, synthetic durations, client session ids, login,
//! eviction, the sweeper on tokio's paused clock, and persistence.

use super::*;
use switchyard_schemas::time::parse_timestamp;

fn at(text: &str) -> DateTime<Utc> {
    parse_timestamp(text).unwrap()
}

fn event(user: Option<&str>, anonymous: Option<&str>, time: DateTime<Utc>) -> Event {
    Event {
        kind: EventType::Track,
        message_id: uuid::Uuid::new_v4().to_string(),
        event: Some("Clicked".into()),
        name: None,
        user_id: user.map(str::to_string),
        anonymous_id: anonymous.map(str::to_string),
        group_id: None,
        previous_id: None,
        timestamp: time,
        original_timestamp: None,
        sent_at: None,
        received_at: time,
        properties: JsonMap::new(),
        traits: JsonMap::new(),
        context: JsonMap::new(),
        integrations: JsonMap::new(),
        source: "web".into(),
        request_id: "r".into(),
        ip: None,
        user_agent: None,
    }
}

fn settings(minutes: i64) -> SessionSettings {
    SessionSettings {
        timeout: chrono::TimeDelta::minutes(minutes),
        key: SessionKey::User,
        emit_events: true,
        max_sessions: 1000,
    }
}

fn session_of(event: &Event) -> (String, u64) {
    let session = &event.context[SESSION_CONTEXT_KEY];
    (
        session["id"].as_str().unwrap().to_string(),
        session["sequence"].as_u64().unwrap(),
    )
}

fn names(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.event.as_deref().unwrap()).collect()
}

#[test]
fn splits_after_the_timeout_and_reports_durations() {
    let mut tracker = SessionTracker::default();
    let settings = settings(30);
    let t0 = at("2024-05-01T12:00:00Z");
    let mut out = Vec::new();

    let mut first = event(Some("u1"), None, t0);
    tracker.observe(&mut first, &settings, t0, "r", &mut out);
    assert_eq!(names(&out), vec![SESSION_STARTED]);
    let started = &out[0];
    assert_eq!(started.timestamp, t0);
    assert_eq!(started.context[SYNTHETIC_KEY], Value::Bool(true));
    assert_eq!(started.user_id.as_deref(), Some("u1"));
    let (id, sequence) = session_of(&first);
    assert_eq!(sequence, 1);
    assert_eq!(started.properties["session_id"], json!(id));

    // Exactly the timeout later: still the same session.
    out.clear();
    let t1 = t0 + chrono::TimeDelta::minutes(30);
    let mut second = event(Some("u1"), None, t1);
    tracker.observe(&mut second, &settings, t1, "r", &mut out);
    assert!(out.is_empty());
    assert_eq!(session_of(&second), (id.clone(), 2));

    // One millisecond more than the timeout after the last event: a new session.
    let t2 = t1 + chrono::TimeDelta::minutes(30) + chrono::TimeDelta::milliseconds(1);
    let mut third = event(Some("u1"), None, t2);
    tracker.observe(&mut third, &settings, t2, "r", &mut out);
    assert_eq!(names(&out), vec![SESSION_ENDED, SESSION_STARTED]);
    let ended = &out[0];
    assert_eq!(ended.properties["session_id"], json!(id));
    assert_eq!(ended.properties["duration_ms"], json!(30 * 60 * 1000));
    assert_eq!(ended.properties["duration_seconds"], json!(1800.0));
    assert_eq!(ended.properties["events"], json!(2));
    assert_eq!(ended.properties["reason"], json!("timeout"));
    assert_eq!(ended.timestamp, t1, "a session ends at its last activity");
    assert_eq!(ended.context[SESSION_CONTEXT_KEY]["sequence"], json!(3));
    let (new_id, sequence) = session_of(&third);
    assert_ne!(new_id, id);
    assert_eq!(sequence, 1);
    assert_eq!(out[1].timestamp, t2);
    // Synthetic message ids are derived from the session: stable, distinct.
    assert_ne!(out[0].message_id, out[1].message_id);
    assert_eq!(tracker.len(), 1);
}

#[test]
fn out_of_order_events_join_and_other_keys_are_separate() {
    let mut tracker = SessionTracker::default();
    let settings = settings(30);
    let t0 = at("2024-05-01T12:00:00Z");
    let mut out = Vec::new();
    let mut late = event(Some("u1"), None, t0 + chrono::TimeDelta::minutes(20));
    tracker.observe(&mut late, &settings, t0, "r", &mut out);
    let mut early = event(Some("u1"), None, t0);
    tracker.observe(&mut early, &settings, t0, "r", &mut out);
    assert_eq!(session_of(&late).0, session_of(&early).0);
    let mut other = event(Some("u2"), None, t0);
    tracker.observe(&mut other, &settings, t0, "r", &mut out);
    assert_ne!(session_of(&other).0, session_of(&late).0);
    let mut nobody = event(None, None, t0);
    tracker.observe(&mut nobody, &settings, t0, "r", &mut out);
    assert!(!nobody.context.contains_key(SESSION_CONTEXT_KEY));
    assert_eq!(tracker.len(), 2);
}

#[test]
fn client_session_ids_win() {
    let mut tracker = SessionTracker::default();
    let settings = settings(30);
    let t0 = at("2024-05-01T12:00:00Z");
    let mut out = Vec::new();
    let mut first = event(Some("u1"), None, t0);
    first
        .context
        .insert(CLIENT_SESSION_CONTEXT_KEY.into(), json!("client-abc"));
    tracker.observe(&mut first, &settings, t0, "r", &mut out);
    assert_eq!(session_of(&first), ("client-abc".to_string(), 1));

    // The same client id continues the session even after the timeout.
    let later = t0 + chrono::TimeDelta::hours(2);
    let mut second = event(Some("u1"), None, later);
    second
        .properties
        .insert(CLIENT_SESSION_PROPERTY.into(), json!("client-abc"));
    out.clear();
    tracker.observe(&mut second, &settings, later, "r", &mut out);
    assert!(out.is_empty());
    assert_eq!(session_of(&second), ("client-abc".to_string(), 2));

    // A new client id ends the session at once.
    let mut third = event(Some("u1"), None, later);
    third
        .properties
        .insert(CLIENT_SESSION_PROPERTY.into(), json!(12345));
    tracker.observe(&mut third, &settings, later, "r", &mut out);
    assert_eq!(names(&out), vec![SESSION_ENDED, SESSION_STARTED]);
    assert_eq!(out[0].properties["reason"], json!("new_session"));
    assert_eq!(session_of(&third), ("12345".to_string(), 1));
}

#[test]
fn login_continues_the_anonymous_session() {
    let mut tracker = SessionTracker::default();
    let settings = settings(30);
    let t0 = at("2024-05-01T12:00:00Z");
    let mut out = Vec::new();
    let mut anonymous = event(None, Some("anon-1"), t0);
    tracker.observe(&mut anonymous, &settings, t0, "r", &mut out);
    let mut identified = event(
        Some("u1"),
        Some("anon-1"),
        t0 + chrono::TimeDelta::minutes(1),
    );
    tracker.observe(&mut identified, &settings, t0, "r", &mut out);
    assert_eq!(session_of(&identified), (session_of(&anonymous).0, 2));
    assert!(tracker.get("u1").is_some() && tracker.get("anon-1").is_none());
}

#[test]
fn capacity_evicts_the_least_recently_active() {
    let mut tracker = SessionTracker::default();
    let mut settings = settings(30);
    settings.max_sessions = 3;
    let t0 = at("2024-05-01T12:00:00Z");
    let mut out = Vec::new();
    for (index, user) in ["a", "b", "c", "d"].iter().enumerate() {
        let time = t0 + chrono::TimeDelta::seconds(index as i64);
        tracker.observe(
            &mut event(Some(user), None, time),
            &settings,
            time,
            "r",
            &mut out,
        );
    }
    assert_eq!(tracker.len(), 3);
    assert!(tracker.get("a").is_none(), "the oldest was ended");
    let evicted: Vec<&Event> = out
        .iter()
        .filter(|e| e.event.as_deref() == Some(SESSION_ENDED))
        .collect();
    assert_eq!(evicted.len(), 1);
    assert_eq!(evicted[0].properties["reason"], json!("evicted"));
    assert_eq!(evicted[0].user_id.as_deref(), Some("a"));
}

fn config(minutes: u64) -> SessionsConfig {
    SessionsConfig {
        enabled: true,
        timeout_minutes: minutes,
        ..SessionsConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn sweeper_ends_sessions_on_the_paused_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(TokioClock::new(at("2024-05-01T12:00:00Z")));
    let sessions = Sessions::restore(dir.path(), clock.clone());
    let config = config(30);

    let mut first = vec![event(Some("u1"), None, clock.now())];
    assert_eq!(sessions.assign(&config, &mut first, clock.now(), "r"), 1);
    assert_eq!(names(&first), vec![SESSION_STARTED, "Clicked"]);
    tokio::time::advance(Duration::from_secs(10 * 60)).await;
    let mut second = vec![event(Some("u1"), None, clock.now())];
    assert_eq!(sessions.assign(&config, &mut second, clock.now(), "r"), 0);

    // 30 minutes after the last event (plus the grace minute) nothing is swept yet ...
    tokio::time::advance(Duration::from_secs(31 * 60)).await;
    assert!(sessions.sweep(&config).is_empty());
    assert_eq!(sessions.open_count(), 1);
    // ... one second later the session ends, with the 10 minutes between its events as duration.
    tokio::time::advance(Duration::from_secs(1)).await;
    let ended = sessions.sweep(&config);
    assert_eq!(names(&ended), vec![SESSION_ENDED]);
    assert_eq!(ended[0].properties["duration_ms"], json!(600_000));
    assert_eq!(ended[0].properties["events"], json!(2));
    assert_eq!(ended[0].received_at, clock.now());
    assert_eq!(sessions.open_count(), 0);

    // The next event starts a new session.
    let mut third = vec![event(Some("u1"), None, clock.now())];
    assert_eq!(sessions.assign(&config, &mut third, clock.now(), "r"), 1);
    assert_ne!(session_of(&third[1]).0, session_of(&first[1]).0);
}

#[tokio::test(start_paused = true)]
async fn open_sessions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(TokioClock::new(at("2024-05-01T12:00:00Z")));
    let config = config(30);
    let sessions = Sessions::restore(dir.path(), clock.clone());
    let mut first = vec![event(Some("u1"), None, clock.now())];
    sessions.assign(&config, &mut first, clock.now(), "r");
    assert_eq!(sessions.persist().unwrap(), 1);
    drop(sessions);

    tokio::time::advance(Duration::from_secs(5 * 60)).await;
    let restored = Sessions::restore(dir.path(), clock.clone());
    assert_eq!(restored.open_count(), 1);
    let mut second = vec![event(Some("u1"), None, clock.now())];
    assert_eq!(restored.assign(&config, &mut second, clock.now(), "r"), 0);
    assert_eq!(session_of(&second[0]), (session_of(&first[1]).0, 2));

    // Quarantined and synthetic events are left alone.
    let mut quarantined = event(Some("u1"), None, clock.now());
    quarantined.context.insert(
        crate::plan_stage::QUARANTINE_KEY.into(),
        json!({"sink": "q"}),
    );
    let mut batch = vec![quarantined];
    assert_eq!(restored.assign(&config, &mut batch, clock.now(), "r"), 0);
    assert!(!batch[0].context.contains_key(SESSION_CONTEXT_KEY));

    // A corrupt state file is ignored.
    std::fs::write(dir.path().join(STATE_FILE), b"{not json").unwrap();
    assert_eq!(Sessions::restore(dir.path(), clock).open_count(), 0);
}
