//! Criterion benches of every ingest stage on the shared corpus (`switchyard_benches::corpus`):
//! decode, enrich, the default sanitizer chain (and PII scan MB/s), rollout decisions, each sink's
//! encoding, the ingest-log append (disk and memory), and one whole request in-process.
//!
//! Every stage works on batches of 100 events (the corpus's 1,000 messages, ten batches in turn) and
//! reports its throughput in events, so criterion's time per iteration / 100 is the cost per event;
//! `benches/stage-table.sh` turns the results into the ns/event table of BENCHMARKS.md.
//!
//! Run: `cargo bench -p switchyard-benches --bench stages` (add `-- <filter>` for one group).

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use serde_json::Value;
use switchyard_benches::corpus;
use switchyard_router::dedupe::{digest, Deduper};
use switchyard_router::ingest::{decode_body, decode_scanned_body, normalize_all, RequestFacts};
use switchyard_router::limits::body_shape;
use switchyard_sanitizers::pii::PiiDetector;
use switchyard_sanitizers::{Chain, SanitizeReport, Verdict};
use switchyard_schemas::Event;
use switchyard_sinks::log::{IngestLog, LogOptions};
use switchyard_sinks::rollout::{RolloutState, SeededBuckets};
use switchyard_sinks::settings::{FileSinkConfig, RolloutConfig, RolloutKey, RolloutMode};
use switchyard_sinks::Sink;

// The allocator of the `switchyard` binary, with its settings, so stage costs are what the server
// pays (with glibc malloc, allocation costs ~1.5x more and frees on another thread contend for its
// arenas).
switchyard_router::switchyard_allocator!();

/// Events per request / per iteration.
const BATCH: usize = 100;
/// The router's default `max_event_bytes`.
const MAX_EVENT_BYTES: usize = 32 * 1024;

fn received_at() -> DateTime<Utc> {
    switchyard_schemas::time::parse_timestamp("2024-05-01T12:01:00.250Z").unwrap_or_default()
}

fn facts(received_at: DateTime<Utc>) -> RequestFacts<'static> {
    RequestFacts {
        implied_type: None,
        received_at,
        source: "web",
        request_id: "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
        ip: Some("203.0.113.7"),
        user_agent: Some("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15"),
    }
}

/// The corpus as request bodies of 100 messages each.
fn bodies(messages: &[Value]) -> Vec<Vec<u8>> {
    messages.chunks(BATCH).map(corpus::batch_body).collect()
}

/// The corpus decoded and normalised, in batches of 100 canonical events.
fn event_batches(messages: &[Value]) -> Vec<Vec<Event>> {
    let received_at = received_at();
    bodies(messages)
        .iter()
        .map(|body| match decode_body(body, None, MAX_EVENT_BYTES) {
            Ok(decoded) => normalize_all(decoded, &facts(received_at)).events,
            Err(error) => panic!("corpus body does not decode: {}", error.message),
        })
        .collect()
}

/// The global chain of the built-in default config (`[[sanitizers]] type = "pii"`).
fn default_chain() -> Chain {
    let config = switchyard_config::parse(switchyard_config::DEFAULT_CONFIG, &|_| None)
        .unwrap_or_else(|errors| panic!("default config: {errors}"));
    Chain::build(&config.sanitizers, "sanitizers", &|_| None)
        .unwrap_or_else(|_| panic!("default chain does not build"))
}

fn json_bytes(events: &[Event]) -> u64 {
    events
        .iter()
        .map(|e| serde_json::to_vec(e).map(|b| b.len() as u64).unwrap_or(0))
        .sum()
}

fn decode(c: &mut Criterion) {
    let messages = corpus::standard();
    let bodies = bodies(&messages);
    let received_at = received_at();
    let canonical: Vec<Event> = event_batches(&messages).into_iter().flatten().collect();
    eprintln!(
        "corpus: {} messages, {} bytes each on average as sent, {} bytes as canonical events; load average {}",
        messages.len(),
        corpus::average_bytes(&messages),
        json_bytes(&canonical) / canonical.len().max(1) as u64,
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut turn = 0usize;
    group.bench_function("decode_body", |b| {
        b.iter(|| {
            turn += 1;
            let body = &bodies[turn % bodies.len()];
            black_box(decode_body(black_box(body), None, MAX_EVENT_BYTES).ok())
        })
    });
    // The same scan, then each message decoded alone: the path a batch with a bad message takes
    // (and, before the one-pass decode, every batch).
    group.bench_function("decode_body_message_by_message", |b| {
        b.iter(|| {
            turn += 1;
            let body = &bodies[turn % bodies.len()];
            let mut shape = body_shape(black_box(body));
            shape.batch_elements = None;
            black_box(decode_scanned_body(body, &shape, None, MAX_EVENT_BYTES).ok())
        })
    });
    group.bench_function("decode_body+normalize_all", |b| {
        b.iter(|| {
            turn += 1;
            let body = &bodies[turn % bodies.len()];
            let decoded = match decode_body(black_box(body), None, MAX_EVENT_BYTES) {
                Ok(decoded) => decoded,
                Err(_) => return 0,
            };
            black_box(normalize_all(decoded, &facts(received_at)).events.len())
        })
    });
    group.finish();
}

/// Server-side steps after normalisation: strip routing keys, then de-duplicate client messageIds.
fn enrich(c: &mut Criterion) {
    let batches = event_batches(&corpus::standard());
    let deduper = Deduper::new(Duration::from_secs(600), 1_000_000);
    let mut group = c.benchmark_group("enrich");
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut next_id = 0u64;
    let mut turn = 0usize;
    group.bench_function("strip_server_keys+dedupe", |b| {
        b.iter_batched_ref(
            || {
                turn += 1;
                let mut events = batches[turn % batches.len()].clone();
                for event in &mut events {
                    next_id += 1;
                    event.message_id = format!("ajs-next-{next_id:032}");
                }
                events
            },
            |events| {
                switchyard_router::plan_stage::strip_server_keys(events);
                let digests: Vec<u64> = events
                    .iter()
                    .map(|e| digest("web", &e.message_id))
                    .collect();
                black_box(deduper.claim(&digests))
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn sanitize(c: &mut Criterion) {
    let batches = event_batches(&corpus::standard());
    let chain = default_chain();
    let mut group = c.benchmark_group("sanitize");
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut turn = 0usize;
    group.bench_function("default_chain_pii", |b| {
        b.iter_batched_ref(
            || {
                turn += 1;
                batches[turn % batches.len()].clone()
            },
            |events| apply_chain(&chain, events),
            BatchSize::SmallInput,
        )
    });
    // The same events with every string made unique (the worst case for the pii sanitizer's memory
    // of clean strings, which then only costs: it rests after a window of misses).
    let mut unique_turn = 0u64;
    group.bench_function("default_chain_pii_unique_strings", |b| {
        b.iter_batched_ref(
            || {
                turn += 1;
                let mut events = batches[turn % batches.len()].clone();
                for event in &mut events {
                    unique_turn += 1;
                    for map in [&mut event.properties, &mut event.context, &mut event.traits] {
                        for value in map.values_mut() {
                            make_strings_unique(value, unique_turn);
                        }
                    }
                }
                events
            },
            |events| apply_chain(&chain, events),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// Runs the chain over every event of a batch, as the ingest handler does.
fn apply_chain(chain: &Chain, events: &mut [Event]) -> SanitizeReport {
    let mut report = SanitizeReport::default();
    for event in events.iter_mut() {
        black_box(chain.apply(event, &mut report));
    }
    report
}

/// Appends ` #<turn>` to every string in `value`.
fn make_strings_unique(value: &mut Value, turn: u64) {
    match value {
        Value::String(text) => text.push_str(&format!(" #{turn}")),
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| make_strings_unique(item, turn)),
        Value::Object(map) => map
            .values_mut()
            .for_each(|item| make_strings_unique(item, turn)),
        _ => {}
    }
}

/// PII scanning throughput in bytes of event JSON (issue 5: >= 200 MB/s without PII, >= 50 MB/s dense).
fn pii_scan(c: &mut Criterion) {
    let chain = default_chain();
    let detector = PiiDetector::default();
    // Typical events that carry no PII (the common case): the corpus minus the events with a finding.
    let clean: Vec<Event> = event_batches(&corpus::standard())
        .into_iter()
        .flatten()
        .filter(|event| {
            let mut copy = event.clone();
            let mut report = SanitizeReport::default();
            chain.apply(&mut copy, &mut report);
            report.counts.is_empty()
        })
        .take(BATCH)
        .collect();
    let dense: Vec<Event> = event_batches(&corpus::dense_pii_messages(BATCH, 11))
        .into_iter()
        .flatten()
        .collect();
    let mut group = c.benchmark_group("pii_scan");
    for (name, events) in [("no_pii", &clean), ("dense_pii", &dense)] {
        group.throughput(Throughput::Bytes(json_bytes(events)));
        group.bench_function(format!("chain/{name}"), |b| {
            b.iter_batched_ref(
                || events.clone(),
                |events| {
                    let mut report = SanitizeReport::default();
                    for event in events.iter_mut() {
                        if let Verdict::Drop(_) = chain.apply(event, &mut report) {
                            black_box(());
                        }
                    }
                    report
                },
                BatchSize::SmallInput,
            )
        });
        let texts: Vec<String> = events
            .iter()
            .map(|e| serde_json::to_string(e).unwrap_or_default())
            .collect();
        let bytes: u64 = texts.iter().map(|t| t.len() as u64).sum();
        group.throughput(Throughput::Bytes(bytes));
        group.bench_function(format!("detector_on_json_text/{name}"), |b| {
            b.iter(|| {
                let mut found = 0usize;
                for text in &texts {
                    found += detector.find(black_box(text)).len();
                }
                black_box(found)
            })
        });
    }
    group.finish();
}

fn rollout(c: &mut Criterion) {
    let events: Vec<Arc<Event>> = event_batches(&corpus::standard())
        .into_iter()
        .flatten()
        .map(Arc::new)
        .collect();
    let mut group = c.benchmark_group("rollout");
    group.throughput(Throughput::Elements(events.len() as u64));
    for percent in [100.0, 10.0] {
        let state = RolloutState::new(&RolloutConfig {
            percent,
            mode: RolloutMode::Live,
            by: RolloutKey::User,
        });
        let buckets = SeededBuckets::new("switchyard");
        group.bench_function(format!("admits_{percent}pct"), |b| {
            b.iter(|| {
                let mut admitted = 0usize;
                for event in &events {
                    admitted += usize::from(state.admits(&buckets, event));
                }
                black_box(admitted)
            })
        });
    }
    group.finish();
}

/// Each sink's translation and encoding of a batch (no network: the sinks' public mapping functions,
/// and the same envelope their `send` builds).
fn encode(c: &mut Criterion) {
    let batches: Vec<Vec<Arc<Event>>> = event_batches(&corpus::standard())
        .into_iter()
        .map(|batch| batch.into_iter().map(Arc::new).collect())
        .collect();
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut turn = 0usize;

    // File sink: NDJSON into one buffer per hourly file, as FileSink::send does before writing.
    group.bench_function("file_ndjson", |b| {
        b.iter(|| {
            turn += 1;
            let batch = &batches[turn % batches.len()];
            let mut by_file: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
            for event in batch {
                let buffer = by_file
                    .entry(switchyard_sinks::file::FileSink::file_name(event))
                    .or_default();
                switchyard_schemas::json_writer::write_event(buffer, event);
                buffer.push(b'\n');
            }
            black_box(by_file)
        })
    });

    // The canonical JSON every event is encoded into once (the ingest log's record): Switchyard's
    // writer against serde_json's, which writes the same bytes.
    group.bench_function("event_json_writer", |b| {
        let mut buffer = Vec::with_capacity(BATCH * 1024);
        b.iter(|| {
            turn += 1;
            buffer.clear();
            for event in &batches[turn % batches.len()] {
                switchyard_schemas::json_writer::write_event(&mut buffer, event);
            }
            black_box(buffer.len())
        })
    });
    group.bench_function("event_json_serde", |b| {
        let mut buffer = Vec::with_capacity(BATCH * 1024);
        b.iter(|| {
            turn += 1;
            buffer.clear();
            for event in &batches[turn % batches.len()] {
                let _ = serde_json::to_writer(&mut buffer, event.as_ref());
            }
            black_box(buffer.len())
        })
    });

    // ClickHouse: the row of each event (lifted columns, JSON text of the maps). RowBinary + LZ4
    // happen inside the clickhouse crate's insert, which has no public encoder to call alone.
    group.bench_function("clickhouse_rows_modern", |b| {
        b.iter(|| {
            turn += 1;
            let batch = &batches[turn % batches.len()];
            for event in batch {
                black_box(switchyard_sinks::clickhouse::rows::ModernRow::of(event));
            }
        })
    });
    group.bench_function("clickhouse_rows_legacy", |b| {
        b.iter(|| {
            turn += 1;
            let batch = &batches[turn % batches.len()];
            for event in batch {
                black_box(switchyard_sinks::clickhouse::rows::LegacyRow::of(event));
            }
        })
    });

    group.bench_function("posthog", |b| {
        b.iter(|| {
            turn += 1;
            let batch = &batches[turn % batches.len()];
            let entries: Vec<_> = batch
                .iter()
                .filter_map(|event| switchyard_sinks::posthog::map_event(event, "company"))
                .collect();
            black_box(switchyard_sinks::posthog::batch_body(
                "phc_bench",
                entries.iter().collect(),
                "2024-05-01T12:01:00.000Z",
            ))
        })
    });

    group.bench_function("statsig", |b| {
        b.iter(|| {
            turn += 1;
            let batch = &batches[turn % batches.len()];
            let events: Vec<_> = batch
                .iter()
                .filter_map(|event| switchyard_sinks::statsig::map_event(event, "value"))
                .collect();
            black_box(switchyard_sinks::statsig::log_event_body(
                events.iter().collect(),
            ))
        })
    });

    let now = received_at();
    group.bench_function("ga4", |b| {
        b.iter(|| {
            turn += 1;
            let batch = &batches[turn % batches.len()];
            let mut adjustments = switchyard_sinks::ga4::Adjustments::default();
            let mapped: Vec<_> = batch
                .iter()
                .filter_map(|event| {
                    switchyard_sinks::ga4::map_event(event, now, &mut adjustments)
                        .map(|m| (event.as_ref(), m))
                })
                .collect();
            let requests = switchyard_sinks::ga4::plan_requests(mapped, 25, &mut adjustments);
            for planned in &requests {
                black_box(planned.body.1.is_ok());
            }
            black_box(requests.len())
        })
    });

    group.bench_function("webhook", |b| {
        b.iter(|| {
            turn += 1;
            let batch = &batches[turn % batches.len()];
            // The same bytes as the sink's derived `{"events": [...]}` envelope.
            let mut body = Vec::with_capacity(batch.len() * 1024);
            body.extend_from_slice(b"{\"events\":[");
            for (index, event) in batch.iter().enumerate() {
                if index > 0 {
                    body.push(b',');
                }
                let _ = serde_json::to_writer(&mut body, event.as_ref());
            }
            body.extend_from_slice(b"]}");
            black_box(switchyard_sinks::webhook::signature(
                "whsec_0123456789abcdef",
                1_714_564_800,
                &body,
            ))
        })
    });

    // The whole file sink: encode and append to the hourly file (page cache, no fsync).
    let dir = tempdir();
    let path = dir.path().join("events");
    let sink = switchyard_sinks::file::FileSink::new(
        "bench",
        FileSinkConfig {
            path: path.clone(),
            fsync: false,
        },
    );
    let runtime = runtime();
    if let Err(error) = runtime.block_on(sink.start()) {
        panic!("file sink: {error}");
    }
    group.bench_function("file_send_disk", |b| {
        b.iter_custom(|iterations| {
            let mut spent = Duration::ZERO;
            for iteration in 0..iterations {
                turn += 1;
                let batch = &batches[turn % batches.len()];
                let started = Instant::now();
                let result = runtime.block_on(sink.send(batch));
                spent += started.elapsed();
                black_box(result.is_ok());
                if iteration % 500 == 499 {
                    clear_dir(&path);
                }
            }
            clear_dir(&path);
            spent
        })
    });
    group.finish();
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|error| panic!("tempdir: {error}"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|error| panic!("tokio runtime: {error}"))
}

fn clear_dir(path: &Path) {
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// One append per request of 100 events, as the ingest handler does (disk: written to the OS, fsync
/// left to the 1 s syncer; memory: kept in memory). Garbage collection runs outside the timing.
fn log_append(c: &mut Criterion) {
    let batches = event_batches(&corpus::standard());
    let mut group = c.benchmark_group("log_append");
    group.throughput(Throughput::Elements(BATCH as u64));
    let dir = tempdir();
    for (name, log_dir) in [("memory", None), ("disk", Some(dir.path().join("log")))] {
        let log = IngestLog::open(LogOptions {
            dir: log_dir,
            segment_bytes: 16 * 1024 * 1024,
            retention: Duration::ZERO,
            ..LogOptions::default()
        })
        .unwrap_or_else(|error| panic!("log: {error}"));
        let mut turn = 0usize;
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                let mut spent = Duration::ZERO;
                for iteration in 0..iterations {
                    turn += 1;
                    let events = batches[turn % batches.len()].clone();
                    let started = Instant::now();
                    let appended = log.append(events);
                    spent += started.elapsed();
                    black_box(appended.is_ok());
                    if iteration % 200 == 199 {
                        let _ = log.collect_garbage();
                    }
                }
                let _ = log.collect_garbage();
                spent
            })
        });
    }
    group.finish();
}

/// One whole request in-process, without HTTP: decode, normalise, strip, de-duplicate, the default
/// chain, and the log append (memory).
fn pipeline(c: &mut Criterion) {
    let messages = corpus::standard();
    let bodies = bodies(&messages);
    let chain = default_chain();
    let deduper = Deduper::new(Duration::from_secs(600), 1_000_000);
    let log = IngestLog::open(LogOptions::default()).unwrap_or_else(|e| panic!("log: {e}"));
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut turn = 0usize;
    group.bench_function("request_memory_log", |b| {
        b.iter(|| {
            turn += 1;
            let body = &bodies[turn % bodies.len()];
            let Ok(decoded) = decode_body(body, None, MAX_EVENT_BYTES) else {
                return;
            };
            let mut events = normalize_all(decoded, &facts(Utc::now())).events;
            switchyard_router::plan_stage::strip_server_keys(&mut events);
            let digests: Vec<u64> = events
                .iter()
                .map(|e| digest("web", &e.message_id))
                .collect();
            black_box(deduper.claim(&digests));
            let mut report = SanitizeReport::default();
            events.retain_mut(|event| chain.apply(event, &mut report) == Verdict::Keep);
            black_box(log.append(events).is_ok());
            if turn.is_multiple_of(200) {
                let _ = log.collect_garbage();
            }
        })
    });
    group.finish();
}

criterion_group! {
    name = stages;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = decode, enrich, sanitize, pii_scan, rollout, encode, log_append, pipeline
}
criterion_main!(stages);
