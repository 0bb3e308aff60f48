//! The reconciliation report (`GET /admin/report`, `switchyard report`): per sink and per hour, events
//! offered (in its rollout share), delivered, failed, dead-lettered, and dropped by rollout, consent or
//! sanitizer; and for a sink below 100% or in shadow mode, its delivered count against the count
//! expected from its reference sink at the same percent, with the relative difference.
//!
//! The expected count is read off the reference sink's delivered events binned by rollout bucket
//! (1% bins, interpolated within a bin for fractional percents) at the sink's *current* percent, so it
//! is exact for hours in which the dial did not move. The reference must itself receive at least that
//! share (normally it is live at 100%).

use std::collections::BTreeMap;

use serde::Serialize;
use switchyard_sinks::report::HourCounts;
use switchyard_sinks::settings::{RolloutConfig, RolloutMode};

use crate::app::App;

/// One hour of one sink.
#[derive(Debug, Clone, Serialize)]
pub struct HourRow {
    /// Start of the hour (UTC, RFC 3339).
    pub hour: String,
    pub offered: u64,
    pub delivered: u64,
    pub failed: u64,
    pub dead_lettered: u64,
    pub dropped_rollout: u64,
    pub dropped_consent: u64,
    pub dropped_sanitizer: u64,
    /// Delivered events the reference sink had in this sink's share (absent without a comparison).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<f64>,
    /// (delivered - expected) / expected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relative_difference: Option<f64>,
}

/// One sink's report.
#[derive(Debug, Clone, Serialize)]
pub struct SinkReportView {
    pub name: String,
    pub rollout: RolloutConfig,
    /// The sink compared against, when there is a comparison.
    pub reference: Option<String>,
    pub hours: Vec<HourRow>,
    pub totals: HourRow,
}

fn hour_label(hour: i64) -> String {
    chrono::DateTime::from_timestamp(hour, 0)
        .map(|time| switchyard_schemas::time::format_timestamp(&time))
        .unwrap_or_default()
}

fn row(hour: String, counts: &HourCounts, expected: Option<f64>) -> HourRow {
    let relative_difference = expected
        .filter(|e| *e > 0.0)
        .map(|e| (counts.delivered as f64 - e) / e);
    HourRow {
        hour,
        offered: counts.offered,
        delivered: counts.delivered,
        failed: counts.failed,
        dead_lettered: counts.dead_lettered,
        dropped_rollout: counts.dropped_rollout,
        dropped_consent: counts.dropped_consent,
        dropped_sanitizer: counts.dropped_sanitizer,
        expected,
        relative_difference,
    }
}

/// Builds the report for hours at or after `since` (epoch seconds), for one sink or all.
pub async fn build(app: &App, since: i64, only: Option<&str>) -> Vec<SinkReportView> {
    let runtime = app.runtime();
    let status: BTreeMap<String, RolloutConfig> = app
        .engine
        .status()
        .await
        .into_iter()
        .map(|s| (s.name, s.rollout))
        .collect();
    let reports: BTreeMap<String, BTreeMap<i64, HourCounts>> = app
        .engine
        .reports()
        .await
        .into_iter()
        .map(|(name, report)| (name, report.since(since)))
        .collect();
    let default_reference = status
        .iter()
        .find(|(_, rollout)| rollout.mode == RolloutMode::Live && rollout.percent >= 100.0)
        .map(|(name, _)| name.clone());
    let mut views = Vec::new();
    for (name, hours) in &reports {
        if only.is_some_and(|only| only != name) {
            continue;
        }
        let Some(rollout) = status.get(name).copied() else {
            continue;
        };
        let compared = rollout.mode == RolloutMode::Shadow || rollout.percent < 100.0;
        let reference = if compared {
            runtime
                .config
                .sinks
                .get(name)
                .and_then(|settings| settings.common.compare_with.clone())
                .or_else(|| {
                    default_reference
                        .clone()
                        .filter(|reference| reference != name)
                })
        } else {
            None
        };
        let reference_hours = reference
            .as_ref()
            .and_then(|reference| reports.get(reference));
        let mut totals = HourCounts::default();
        let mut expected_total = reference_hours.map(|_| 0.0);
        let mut rows = Vec::new();
        for (hour, counts) in hours {
            let expected = reference_hours.map(|reference| {
                reference
                    .get(hour)
                    .map(|r| r.delivered_below(rollout.percent))
                    .unwrap_or(0.0)
            });
            if let (Some(total), Some(value)) = (expected_total.as_mut(), expected) {
                *total += value;
            }
            totals.offered += counts.offered;
            totals.delivered += counts.delivered;
            totals.failed += counts.failed;
            totals.dead_lettered += counts.dead_lettered;
            totals.dropped_rollout += counts.dropped_rollout;
            totals.dropped_consent += counts.dropped_consent;
            totals.dropped_sanitizer += counts.dropped_sanitizer;
            rows.push(row(hour_label(*hour), counts, expected));
        }
        views.push(SinkReportView {
            name: name.clone(),
            rollout,
            reference,
            hours: rows,
            totals: row("total".into(), &totals, expected_total),
        });
    }
    views
}

/// Renders the report as text for `switchyard report`.
pub fn render_text(report: &serde_json::Value) -> String {
    let mut lines = Vec::new();
    for sink in report["sinks"].as_array().into_iter().flatten() {
        let reference = sink["reference"]
            .as_str()
            .map(|r| format!(" vs {r}"))
            .unwrap_or_default();
        lines.push(format!(
            "{} ({}% {}){}",
            sink["name"].as_str().unwrap_or("?"),
            sink["rollout"]["percent"],
            sink["rollout"]["mode"].as_str().unwrap_or("?"),
            reference
        ));
        lines.push(format!(
            "  {:<26} {:>10} {:>10} {:>8} {:>8} {:>10} {:>10} {:>12} {:>9}",
            "hour",
            "offered",
            "delivered",
            "failed",
            "dead",
            "rollout",
            "consent",
            "expected",
            "diff"
        ));
        let hours = sink["hours"].as_array().cloned().unwrap_or_default();
        for row in hours.iter().chain(std::iter::once(&sink["totals"])) {
            let expected = row["expected"]
                .as_f64()
                .map(|e| format!("{e:.0}"))
                .unwrap_or_else(|| "-".into());
            let diff = row["relative_difference"]
                .as_f64()
                .map(|d| format!("{:+.2}%", d * 100.0))
                .unwrap_or_else(|| "-".into());
            lines.push(format!(
                "  {:<26} {:>10} {:>10} {:>8} {:>8} {:>10} {:>10} {:>12} {:>9}",
                row["hour"].as_str().unwrap_or("?"),
                row["offered"],
                row["delivered"],
                row["failed"],
                row["dead_lettered"],
                row["dropped_rollout"],
                row["dropped_consent"],
                expected,
                diff
            ));
        }
    }
    lines.join("\n")
}
