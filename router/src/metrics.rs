//! `GET /metrics`: Prometheus text exposition (via `prometheus-client`), built at scrape time from
//! the ingest and sink counters. Every name is prefixed `switchyard_`.

use std::fmt::Write as _;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::app::App;

type Labels = Vec<(String, String)>;

/// A metric family read at scrape time: (name, help, one value per label set).
type Family<T> = (&'static str, &'static str, Vec<(Labels, T)>);

/// Counters and gauges read once per scrape.
#[derive(Debug, Default)]
struct Snapshot {
    counters: Vec<Family<u64>>,
    gauges: Vec<Family<i64>>,
    float_gauges: Vec<Family<f64>>,
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, series) in &self.counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (labels, value) in series {
                ConstCounter::new(*value).encode(family.encode_family(labels)?)?;
            }
        }
        for (name, help, series) in &self.gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (labels, value) in series {
                ConstGauge::new(*value).encode(family.encode_family(labels)?)?;
            }
        }
        for (name, help, series) in &self.float_gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (labels, value) in series {
                ConstGauge::new(*value).encode(family.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}

/// Renders every metric in the Prometheus text format.
pub async fn render(app: &App) -> Result<String, std::fmt::Error> {
    let mut snapshot = Snapshot::default();
    let ingest = app.stats.snapshot();
    snapshot.counters.push((
        "ingest_requests",
        "Ingest requests received.",
        vec![(Labels::new(), ingest.requests)],
    ));
    snapshot.counters.push((
        "ingest_unauthorized_requests",
        "Ingest requests refused for an unknown or missing write key.",
        vec![(Labels::new(), ingest.unauthorized)],
    ));
    snapshot.counters.push((
        "ingest_rate_limited_requests",
        "Requests refused with 429, by the per-IP or the per-source limit.",
        vec![
            (
                labels(&[("scope", "ip")]),
                app.stats
                    .rate_limited_ip
                    .load(std::sync::atomic::Ordering::Relaxed),
            ),
            (
                labels(&[("scope", "source")]),
                app.stats
                    .rate_limited_source
                    .load(std::sync::atomic::Ordering::Relaxed),
            ),
        ],
    ));
    let mut received = Vec::new();
    let mut accepted = Vec::new();
    let mut rejected = Vec::new();
    let mut dropped = Vec::new();
    for (source, counters) in app.stats.per_source() {
        let source_label = labels(&[("source", &source)]);
        received.push((source_label.clone(), counters.received));
        accepted.push((source_label.clone(), counters.accepted));
        for (reason, value) in counters.rejected {
            rejected.push((labels(&[("source", &source), ("reason", reason)]), value));
        }
        for (reason, value) in [
            ("opt_out", counters.dropped_opt_out),
            ("sanitizer", counters.dropped_sanitizer),
            ("duplicate", counters.dropped_duplicate),
            ("log_full", counters.refused_full),
        ] {
            dropped.push((labels(&[("source", &source), ("reason", reason)]), value));
        }
    }
    snapshot.counters.push((
        "ingest_events_received",
        "Events received, per source.",
        received,
    ));
    snapshot.counters.push((
        "ingest_events_accepted",
        "Events accepted, per source.",
        accepted,
    ));
    snapshot.counters.push((
        "ingest_events_rejected",
        "Events rejected, per source and reason.",
        rejected,
    ));
    snapshot.counters.push((
        "ingest_events_dropped",
        "Events dropped before any sink (or refused with 503 when the log was full), per source and reason.",
        dropped,
    ));
    snapshot.counters.push((
        "dedupe_early_rotations",
        "De-duplication generations started early because of volume (the window shrank).",
        vec![(
            Labels::new(),
            app.dedupe
                .early_rotations
                .load(std::sync::atomic::Ordering::Relaxed),
        )],
    ));

    let sinks = app.engine.status().await;
    let mut events = Vec::new();
    let mut failed = Vec::new();
    let mut retries = Vec::new();
    let mut batches = Vec::new();
    let mut opened = Vec::new();
    let mut breaker = Vec::new();
    let mut lag = Vec::new();
    let mut log_dropped = Vec::new();
    let mut percent = Vec::new();
    let mut shadow = Vec::new();
    for sink in &sinks {
        let name = sink.name.as_str();
        let counters = &sink.counters;
        for (outcome, value) in [
            ("offered", counters.offered),
            ("delivered", counters.delivered),
            ("dead_lettered", counters.dead_lettered),
            ("dropped_rollout", counters.dropped_rollout),
            ("dropped_consent", counters.dropped_consent),
            ("dropped_sanitizer", counters.dropped_sanitizer),
            ("dropped_shadow", counters.dropped_shadow),
        ] {
            events.push((labels(&[("sink", name), ("outcome", outcome)]), value));
        }
        let sink_label = labels(&[("sink", name), ("type", &sink.kind)]);
        failed.push((sink_label.clone(), counters.failed_attempts));
        retries.push((sink_label.clone(), counters.retries));
        batches.push((sink_label.clone(), counters.batches));
        opened.push((sink_label.clone(), counters.breaker_opened));
        breaker.push((sink_label.clone(), counters.breaker.as_gauge()));
        lag.push((sink_label.clone(), sink.lag_records as i64));
        log_dropped.push((sink_label.clone(), sink.log_dropped_records));
        percent.push((sink_label.clone(), sink.rollout.percent));
        shadow.push((
            sink_label,
            i64::from(sink.rollout.mode == switchyard_sinks::settings::RolloutMode::Shadow),
        ));
    }
    snapshot
        .counters
        .push(("sink_events", "Events per sink and outcome.", events));
    snapshot.counters.push((
        "sink_log_dropped_records",
        "Ingest-log records a shadow sink lost because the log was full (drop_oldest).",
        log_dropped,
    ));
    snapshot.counters.push((
        "sink_failed_attempts",
        "Failed send attempts per sink.",
        failed,
    ));
    snapshot
        .counters
        .push(("sink_retries", "Batches re-sent after a failure.", retries));
    snapshot
        .counters
        .push(("sink_batches", "Batches sent (first attempts).", batches));
    snapshot.counters.push((
        "sink_breaker_opened",
        "Times the sink's circuit breaker opened.",
        opened,
    ));
    snapshot.gauges.push((
        "sink_breaker_state",
        "Circuit breaker state: 0 closed, 1 open, 2 half-open.",
        breaker,
    ));
    snapshot.gauges.push((
        "sink_lag_records",
        "Ingest-log records not yet passed by the sink.",
        lag,
    ));
    snapshot.float_gauges.push((
        "sink_rollout_percent",
        "The sink's rollout percent.",
        percent,
    ));
    snapshot.gauges.push((
        "sink_rollout_shadow",
        "1 when the sink is in shadow mode.",
        shadow,
    ));
    snapshot.gauges.push((
        "log_used_bytes",
        "Bytes held by the ingest log (disk, or memory in memory mode).",
        vec![(Labels::new(), app.log.used_bytes() as i64)],
    ));
    snapshot.counters.push((
        "log_records",
        "Records appended to the ingest log (its head sequence number).",
        vec![(Labels::new(), app.log.head())],
    ));

    let mut registry = Registry::with_prefix("switchyard");
    registry.register_collector(Box::new(snapshot));
    for (name, stats) in app.engine.stats().await {
        let sub = registry.sub_registry_with_label(("sink".into(), name.into()));
        sub.register(
            "sink_send_seconds",
            "Seconds per send call.",
            stats.send_seconds.clone(),
        );
        sub.register(
            "sink_delivery_lag_seconds",
            "Seconds from receipt to delivery (oldest event of each delivered batch).",
            stats.delivery_lag_seconds.clone(),
        );
        sub.register(
            "sink_batch_events",
            "Events per sent batch.",
            stats.batch_events.clone(),
        );
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    if !text.ends_with('\n') {
        let _ = writeln!(text);
    }
    Ok(text)
}
