//! Tests of the plan stage: modes, index bookkeeping, routing markers, replay preparation, and the
//! `plan check` / `plan test` commands.

use super::*;
use crate::ingest::{decode_body, normalize_all, RequestFacts};

/// `Order Completed` v1 needs a numeric total; `_common` needs nothing.
fn plan_dir(total_type: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("Order Completed");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join("v1.json"),
        json!({
            "type": "object",
            "properties": {"properties": {"type": "object", "required": ["total"],
                "properties": {"total": {"type": total_type}}}}
        })
        .to_string(),
    )
    .unwrap();
    dir
}

fn stage(dir: &Path, plan_keys: &str, sources: &str) -> PlanStage {
    let text = format!(
        r#"
[tracking_plan]
path = "{}"
{plan_keys}

{sources}

[sinks.main]
type = "file"
path = "/tmp/unused-main"

[sinks.quarantine]
type = "file"
path = "/tmp/unused-quarantine"
"#,
        dir.display()
    );
    let config = switchyard_config::parse(&text, &|_| None).unwrap();
    PlanStage::build(&config).unwrap().unwrap()
}

fn events(batch: Value) -> crate::ingest::Normalized {
    let body = json!({ "batch": batch }).to_string();
    let decoded = decode_body(body.as_bytes(), None, 10_000).unwrap();
    let facts = RequestFacts {
        implied_type: None,
        received_at: chrono::Utc::now(),
        source: "web",
        request_id: "r",
        ip: None,
        user_agent: None,
    };
    normalize_all(decoded, &facts)
}

fn batch() -> Value {
    json!([
        {"type": "track", "event": "Order Completed", "userId": "u", "messageId": "good", "properties": {"total": 5}},
        {"type": "track", "userId": "u"},
        {"type": "track", "event": "Order Completed", "userId": "u", "messageId": "bad", "properties": {"total": "five"}},
        {"type": "track", "event": "Mystery", "userId": "u", "messageId": "unknown"},
        {"type": "identify", "userId": "u", "messageId": "identify"}
    ])
}

#[test]
fn reject_mode_lists_violations_by_request_index() {
    let dir = plan_dir("number");
    let stage = stage(
        dir.path(),
        r#"on_violation = "reject"
unknown_events = "reject""#,
        "",
    );
    let mut normalized = events(batch());
    assert_eq!(normalized.rejected.len(), 1, "index 1 has no event name");
    let applied = stage.apply(
        &mut normalized.events,
        &mut normalized.client_message_ids,
        &mut normalized.rejected,
    );
    assert!(applied.quarantined.is_empty());
    let indexes: Vec<usize> = normalized.rejected.iter().map(|r| r.index).collect();
    assert_eq!(indexes, vec![1, 2, 3]);
    let bad = &normalized.rejected[1];
    assert_eq!(bad.code, "plan_violation");
    assert!(
        bad.reason
            .starts_with("tracking plan: Order Completed v1: /properties/total:"),
        "{}",
        bad.reason
    );
    assert_eq!(bad.violations[0].instance_path, "/properties/total");
    assert_eq!(
        bad.violations[0].schema_path,
        "/properties/properties/properties/total/type"
    );
    assert_eq!(normalized.rejected[2].code, "unknown_event");
    let kept: Vec<&str> = normalized
        .events
        .iter()
        .map(|e| e.message_id.as_str())
        .collect();
    assert_eq!(kept, vec!["good", "identify"]);
    assert_eq!(normalized.client_message_ids, vec![true, true]);
}

#[test]
fn quarantine_and_tag_modes_mark_events() {
    let dir = plan_dir("number");
    let stage = stage(
        dir.path(),
        r#"on_violation = "quarantine"
unknown_events = "quarantine"
quarantine_sink = "quarantine""#,
        r#"[sources.ios]
write_keys = ["k"]
tracking_plan = { on_violation = "tag", unknown_events = "allow" }"#,
    );
    let mut normalized = events(batch());
    let applied = stage.apply(
        &mut normalized.events,
        &mut normalized.client_message_ids,
        &mut normalized.rejected,
    );
    assert_eq!(normalized.rejected.len(), 1);
    let quarantined: Vec<&str> = applied
        .quarantined
        .iter()
        .map(|e| e.message_id.as_str())
        .collect();
    assert_eq!(quarantined, vec!["bad", "unknown"]);
    let bad = &applied.quarantined[0];
    assert_eq!(
        bad.context[QUARANTINE_KEY],
        json!({"sink": "quarantine", "reason": "violation", "schema": "Order Completed v1"})
    );
    assert_eq!(
        bad.context[VIOLATIONS_KEY][0]["instance_path"],
        "/properties/total"
    );
    assert_eq!(
        applied.quarantined[1].context[QUARANTINE_KEY]["reason"],
        "unknown_event"
    );
    assert_eq!(normalized.events.len(), 2);
    assert_eq!(normalized.client_message_ids.len(), 2);

    // The ios source tags instead, and lets unknown events through.
    let mut ios = events(batch());
    for event in &mut ios.events {
        event.source = "ios".into();
    }
    let applied = stage.apply(
        &mut ios.events,
        &mut ios.client_message_ids,
        &mut ios.rejected,
    );
    assert!(applied.quarantined.is_empty());
    assert_eq!(applied.tagged, 1);
    assert_eq!(ios.events.len(), 4);
    let tagged = ios.events.iter().find(|e| e.message_id == "bad").unwrap();
    assert!(tagged.context.contains_key(VIOLATIONS_KEY));
    assert!(!tagged.context.contains_key(QUARANTINE_KEY));
}

#[test]
fn disabled_source_is_not_checked() {
    let dir = plan_dir("number");
    let stage = stage(
        dir.path(),
        r#"on_violation = "reject""#,
        r#"[sources.web]
write_keys = ["k"]
tracking_plan = { enabled = false }"#,
    );
    let mut normalized = events(batch());
    stage.apply(
        &mut normalized.events,
        &mut normalized.client_message_ids,
        &mut normalized.rejected,
    );
    assert_eq!(normalized.events.len(), 4);
    assert_eq!(normalized.rejected.len(), 1);
}

fn bare_event(context: Value) -> Event {
    let mut normalized =
        events(json!([{"type": "track", "event": "x", "userId": "u", "context": context}]));
    normalized.events.remove(0)
}

#[test]
fn markers_route_events_and_clients_cannot_set_them() {
    let target: QuarantineTarget = Arc::new(RwLock::new(Some("quarantine".into())));
    let normal = bare_event(json!({}));
    let quarantined = bare_event(json!({"quarantine": {"sink": "quarantine"}}));
    let synthetic = bare_event(json!({"synthetic": true}));
    // As a sink's stage calls it: told whether the event's log record has marked events.
    let skips = |sink: &str, exclude_synthetic: bool, event: &Event| {
        let marked = event.has_routing_marks();
        let answer = skips(sink, &target, exclude_synthetic, event, marked);
        if !marked {
            // In a record with marked events, an unmarked one gets the same answer.
            assert_eq!(skips(sink, &target, exclude_synthetic, event, true), answer);
        }
        answer
    };
    assert!(!normal.has_routing_marks());
    assert!(quarantined.has_routing_marks() && synthetic.has_routing_marks());
    assert!(!skips("main", false, &normal));
    assert!(skips("quarantine", false, &normal));
    assert!(skips("main", false, &quarantined));
    assert!(!skips("quarantine", false, &quarantined));
    assert!(!skips("main", false, &synthetic));
    assert!(skips("main", true, &synthetic));
    *target.write().unwrap() = None;
    assert!(!skips("quarantine", false, &normal));

    let mut sent = vec![bare_event(
        json!({"quarantine": {"sink": "x"}, "violations": [], "synthetic": true, "locale": "de"}),
    )];
    strip_server_keys(&mut sent);
    assert_eq!(
        sent[0].context,
        json!({"locale": "de"}).as_object().unwrap().clone()
    );
    for key in SERVER_CONTEXT_KEYS {
        let mut sent = vec![bare_event(json!({key: 1, "locale": "de"}))];
        strip_server_keys(&mut sent);
        assert_eq!(
            sent[0].context,
            json!({"locale": "de"}).as_object().unwrap().clone(),
            "{key} alone"
        );
    }
}

#[test]
fn replay_rechecks_against_the_current_plan() {
    let strict = plan_dir("number");
    let stage_strict = stage(
        strict.path(),
        r#"on_violation = "quarantine"
quarantine_sink = "quarantine""#,
        "",
    );
    let mut normalized = events(batch());
    let applied = stage_strict.apply(
        &mut normalized.events,
        &mut normalized.client_message_ids,
        &mut normalized.rejected,
    );
    let stored: Vec<Value> = applied
        .quarantined
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    assert_eq!(stored.len(), 1, "unknown events are allowed by default");

    // Same plan: still failing, nothing to append.
    let (appended, outcome) = prepare_replay(Some(&stage_strict), stored.clone());
    assert!(appended.is_empty());
    assert_eq!(outcome.still_failing.len(), 1);
    assert_eq!(outcome.still_failing[0].message_id.as_deref(), Some("bad"));

    // The plan is fixed (total may be a string): the event passes, without its markers.
    let fixed = plan_dir("string");
    let stage_fixed = stage(
        fixed.path(),
        r#"on_violation = "quarantine"
quarantine_sink = "quarantine""#,
        "",
    );
    let mut records = stored;
    records.push(json!({"not": "an event"}));
    records.push(serde_json::to_value(&normalized.events[0]).unwrap());
    let (appended, outcome) = prepare_replay(Some(&stage_fixed), records);
    assert_eq!(outcome.replayed, 1);
    assert_eq!(appended[0].message_id, "bad");
    assert!(!appended[0].context.contains_key(QUARANTINE_KEY));
    assert!(!appended[0].context.contains_key(VIOLATIONS_KEY));
    assert_eq!(appended[0].source, "web");
    let invalid: Vec<usize> = outcome.invalid.iter().map(|n| n.index).collect();
    assert_eq!(
        invalid,
        vec![1, 2],
        "a non-event and an event never quarantined"
    );
}

#[test]
fn plan_commands_report_and_exit() {
    let dir = plan_dir("number");
    let input = [
        json!({"type": "track", "event": "Order Completed", "userId": "u", "properties": {"total": 1}}),
        json!({"type": "track", "event": "Order Completed", "userId": "u", "properties": {}}),
        json!({"type": "track", "event": "Mystery", "userId": "u"}),
        json!({"type": "track", "userId": "u"}),
    ]
    .iter()
    .map(Value::to_string)
    .collect::<Vec<_>>()
    .join("\n");
    let mut out = Vec::new();
    let code = test_command(dir.path(), false, false, &mut input.as_bytes(), &mut out);
    let text = String::from_utf8(out).unwrap();
    assert_eq!(code, ExitCode::FAILURE);
    assert!(text.contains("line 1: pass [Order Completed v1]"), "{text}");
    assert!(text.contains("line 2: fail [Order Completed v1]"), "{text}");
    assert!(
        text.contains("`total` is a required property")
            || text.contains("\"total\" is a required property"),
        "{text}"
    );
    assert!(
        text.contains("line 3: unknown: `Mystery` is not in the tracking plan"),
        "{text}"
    );
    assert!(text.contains("line 4: fail: not a valid event"), "{text}");
    assert!(
        text.contains("plan test: 1 pass, 2 fail, 1 unknown (of 4 events)"),
        "{text}"
    );

    let only_good = json!({"type": "track", "event": "Order Completed", "userId": "u", "properties": {"total": 1}}).to_string();
    let mut out = Vec::new();
    assert_eq!(
        test_command(dir.path(), true, true, &mut only_good.as_bytes(), &mut out),
        ExitCode::SUCCESS
    );
    let first: Value = serde_json::from_slice(out.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(first["status"], "pass");

    let mut out = Vec::new();
    assert_eq!(check_command(dir.path(), true, &mut out), ExitCode::SUCCESS);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("Order Completed: v1"), "{text}");
    std::fs::write(
        dir.path().join("Order Completed/v2.json"),
        r#"{"type": "strng"}"#,
    )
    .unwrap();
    let mut out = Vec::new();
    assert_eq!(
        check_command(dir.path(), false, &mut out),
        ExitCode::FAILURE
    );
    assert!(String::from_utf8(out)
        .unwrap()
        .contains("v2.json: does not compile"));
}
