//! Criterion bench of tracking-plan validation: a 20-event plan (plus `_common.json`), batches of 100
//! events, valid and invalid, through `TrackingPlan::check_in_place` (what ingest runs) and the
//! router's plan stage; and, for comparison, serialising a whole event to a JSON value.
//!
//! Run: `cargo bench -p switchyard-benches --bench tracking_plan`. Throughput is in events.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use serde_json::{json, Value};
use switchyard_router::plan_stage::PlanStage;
use switchyard_schemas::plan::TrackingPlan;
use switchyard_schemas::segment::{InboundMessage, MessageDefaults};
use switchyard_schemas::{normalize_message, Event};

const EVENTS_IN_PLAN: usize = 20;
const BATCH: usize = 100;

fn event_name(index: usize) -> String {
    format!("Event {index:02}")
}

/// Writes a plan of 20 events, each with six typed properties (required, enum, pattern, bounds,
/// additionalProperties false) and a nested array, plus a `_common.json` on the context.
fn write_plan(root: &Path) {
    for index in 0..EVENTS_IN_PLAN {
        let folder = root.join(event_name(index));
        std::fs::create_dir_all(&folder).expect("plan folder");
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "event": {"const": event_name(index)},
                "properties": {
                    "type": "object",
                    "required": ["id", "amount", "currency", "category"],
                    "properties": {
                        "id": {"type": "string", "minLength": 1, "maxLength": 64},
                        "amount": {"type": "number", "minimum": 0},
                        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                        "category": {"enum": ["books", "games", "music", "tools", "toys"]},
                        "count": {"type": "integer", "minimum": 1},
                        "gift": {"type": "boolean"},
                        "items": {"type": "array", "items": {"type": "object",
                            "required": ["sku"], "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}}}}
                    },
                    "additionalProperties": false
                }
            }
        });
        std::fs::write(folder.join("v1.json"), schema.to_string()).expect("schema");
    }
    let common = json!({
        "type": "object",
        "required": ["context"],
        "properties": {"context": {"type": "object", "required": ["library"],
            "properties": {"library": {"type": "object", "required": ["name"]}}}}
    });
    std::fs::write(root.join("_common.json"), common.to_string()).expect("common");
}

fn message(index: usize, valid: bool) -> Value {
    json!({
        "type": "track",
        "event": event_name(index % EVENTS_IN_PLAN),
        "userId": format!("user-{}", index % 37),
        "messageId": format!("m-{index}"),
        "timestamp": "2024-05-01T12:00:00.000Z",
        "properties": {
            "id": format!("order-{index}"),
            "amount": if valid { json!(12.5 + index as f64) } else { json!("12.50") },
            "currency": "EUR",
            "category": "games",
            "count": 2,
            "items": [{"sku": "A-1", "qty": 1}, {"sku": "B-2", "qty": 3}]
        },
        "context": {
            "library": {"name": "analytics.js", "version": "5.2.0"},
            "page": {"path": "/checkout", "url": "https://shop.example/checkout"},
            "locale": "de-DE"
        }
    })
}

fn events(valid: bool) -> Vec<Event> {
    let received_at =
        switchyard_schemas::time::parse_timestamp("2024-05-01T12:01:00Z").expect("timestamp");
    let defaults = MessageDefaults {
        implied_type: None,
        received_at,
        batch_sent_at: None,
        batch_context: None,
        source: "web",
        request_id: "r",
        ip: Some("203.0.113.7"),
        user_agent: None,
    };
    (0..BATCH)
        .map(|index| {
            let text = message(index, valid).to_string();
            let inbound = InboundMessage::from_json(&text).expect("message");
            normalize_message(inbound, &defaults).expect("event")
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    write_plan(dir.path());
    let plan = TrackingPlan::load(dir.path()).expect("plan loads");
    let valid = events(true);
    let invalid = events(false);
    assert!(valid.iter().all(|event| plan.check(event).is_valid()));
    assert!(invalid.iter().all(|event| !plan.check(event).is_valid()));

    let config_text = format!(
        "[tracking_plan]\npath = \"{}\"\non_violation = \"tag\"\n",
        dir.path().display()
    );
    let config = switchyard_config::parse(&config_text, &|_| None).expect("config");
    let stage = PlanStage::build(&config)
        .expect("stage builds")
        .expect("plan configured");

    let mut group = c.benchmark_group("tracking_plan");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("serialize_only", |b| {
        b.iter(|| {
            for event in &valid {
                black_box(serde_json::to_value(event).ok());
            }
        })
    });
    for (name, batch) in [("check_valid", &valid), ("check_invalid", &invalid)] {
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || batch.clone(),
                |events| {
                    for event in events.iter_mut() {
                        black_box(plan.check_in_place(event));
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.bench_function("stage_apply_valid", |b| {
        b.iter_batched(
            || (valid.clone(), vec![true; BATCH], Vec::new()),
            |(mut events, mut ids, mut rejected)| {
                black_box(stage.apply(&mut events, &mut ids, &mut rejected));
                events
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
