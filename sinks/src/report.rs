//! Reconciliation counters: per sink and per hour (UTC hour of each event's `receivedAt`), how many
//! events were offered, delivered, failed, dead-lettered, and dropped by rollout or consent, plus the
//! delivered events binned by rollout bucket (100 bins of 1%), so the count a sink *would* have delivered
//! at any percent can be read off a reference sink. Persisted in `<data_dir>/report/<sink>.json`, so the
//! figures survive restarts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use switchyard_schemas::Event;

use crate::rollout::{rollout_key, SeededBuckets};
use crate::settings::RolloutKey;

/// Bins of the delivered-by-bucket histogram (one per percent).
pub const BINS: usize = 100;

/// The counts of one sink in one hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HourCounts {
    pub offered: u64,
    pub delivered: u64,
    /// Given up without a dead letter (shadow sinks).
    pub failed: u64,
    pub dead_lettered: u64,
    pub dropped_rollout: u64,
    pub dropped_consent: u64,
    pub dropped_sanitizer: u64,
    /// Delivered events by rollout bucket / 100.
    pub delivered_by_bin: Vec<u64>,
}

impl Default for HourCounts {
    fn default() -> Self {
        HourCounts {
            offered: 0,
            delivered: 0,
            failed: 0,
            dead_lettered: 0,
            dropped_rollout: 0,
            dropped_consent: 0,
            dropped_sanitizer: 0,
            delivered_by_bin: vec![0; BINS],
        }
    }
}

impl HourCounts {
    fn merge(&mut self, other: &HourCounts) {
        self.offered += other.offered;
        self.delivered += other.delivered;
        self.failed += other.failed;
        self.dead_lettered += other.dead_lettered;
        self.dropped_rollout += other.dropped_rollout;
        self.dropped_consent += other.dropped_consent;
        self.dropped_sanitizer += other.dropped_sanitizer;
        if self.delivered_by_bin.len() != BINS {
            self.delivered_by_bin.resize(BINS, 0);
        }
        for (mine, theirs) in self
            .delivered_by_bin
            .iter_mut()
            .zip(&other.delivered_by_bin)
        {
            *mine += theirs;
        }
    }

    /// Delivered events whose bucket is below `percent` (exact at whole percents; within a 1% bin the
    /// count is interpolated linearly).
    pub fn delivered_below(&self, percent: f64) -> f64 {
        let percent = percent.clamp(0.0, 100.0);
        let whole = percent.floor() as usize;
        let mut total: f64 = self
            .delivered_by_bin
            .iter()
            .take(whole)
            .map(|count| *count as f64)
            .sum();
        if whole < BINS {
            total += self.delivered_by_bin[whole] as f64 * (percent - whole as f64);
        }
        total
    }
}

/// What happened to an event, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Offered,
    DroppedRollout,
    DroppedConsent,
    DroppedSanitizer,
}

/// Counts accumulated by a runner between two flushes into the shared [`SinkReport`].
#[derive(Debug, Default)]
pub struct ReportDelta {
    hours: BTreeMap<i64, HourCounts>,
}

/// The start of `time`'s UTC hour, in seconds since the epoch (called for every event counted).
fn hour_of(time: &DateTime<Utc>) -> i64 {
    hour_floor(time.timestamp())
}

impl ReportDelta {
    fn hour(&mut self, event: &Event) -> &mut HourCounts {
        self.hours.entry(hour_of(&event.received_at)).or_default()
    }

    /// Counts one event's fate before delivery.
    pub fn count(&mut self, event: &Event, outcome: Outcome) {
        let hour = self.hour(event);
        match outcome {
            Outcome::Offered => hour.offered += 1,
            Outcome::DroppedRollout => hour.dropped_rollout += 1,
            Outcome::DroppedConsent => hour.dropped_consent += 1,
            Outcome::DroppedSanitizer => hour.dropped_sanitizer += 1,
        }
    }

    /// Counts a delivered batch, binned by each event's rollout bucket under the sink's seed.
    pub fn delivered(
        &mut self,
        buckets: &SeededBuckets,
        by: RolloutKey,
        batch: &[std::sync::Arc<Event>],
    ) {
        for event in batch {
            let bin = (buckets.bucket(rollout_key(event, by)) / 100) as usize;
            let hour = self.hour(event);
            hour.delivered += 1;
            if let Some(slot) = hour.delivered_by_bin.get_mut(bin) {
                *slot += 1;
            }
        }
    }

    /// Counts a batch given up on.
    pub fn given_up(&mut self, batch: &[std::sync::Arc<Event>], dead_lettered: bool) {
        for event in batch {
            let hour = self.hour(event);
            if dead_lettered {
                hour.dead_lettered += 1;
            } else {
                hour.failed += 1;
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.hours.is_empty()
    }
}

/// The persisted hourly counters of one sink.
#[derive(Debug)]
pub struct SinkReport {
    path: Option<PathBuf>,
    hours: Mutex<BTreeMap<i64, HourCounts>>,
    retention_hours: i64,
    /// Held across a persist: persists run one at a time (they share the temporary file), each
    /// with the counters as they are when it starts, so the file never goes back to older ones.
    persisting: Mutex<()>,
}

impl SinkReport {
    /// Loads the sink's counters from `dir` (None: memory only).
    pub fn open(dir: Option<&Path>, sink: &str, retention_hours: u64) -> SinkReport {
        let path = dir.map(|dir| dir.join(format!("{sink}.json")));
        let hours = path
            .as_ref()
            .and_then(|path| std::fs::read(path).ok())
            .and_then(|bytes| serde_json::from_slice::<BTreeMap<i64, HourCounts>>(&bytes).ok())
            .unwrap_or_default();
        SinkReport {
            path,
            hours: Mutex::new(hours),
            retention_hours: retention_hours.max(1) as i64,
            persisting: Mutex::new(()),
        }
    }

    /// Adds a runner's counts.
    pub fn merge(&self, delta: &mut ReportDelta) {
        if delta.is_empty() {
            return;
        }
        let mut hours = self.hours.lock().unwrap_or_else(|p| p.into_inner());
        for (hour, counts) in std::mem::take(&mut delta.hours) {
            hours.entry(hour).or_default().merge(&counts);
        }
        let oldest = Utc::now().timestamp() - self.retention_hours * 3600;
        hours.retain(|hour, _| *hour >= oldest);
    }

    /// Hours at or after `since` (epoch seconds).
    pub fn since(&self, since: i64) -> BTreeMap<i64, HourCounts> {
        let hours = self.hours.lock().unwrap_or_else(|p| p.into_inner());
        hours
            .range(hour_floor(since)..)
            .map(|(h, c)| (*h, c.clone()))
            .collect()
    }

    /// Writes the counters to disk (temp file + rename).
    pub fn persist(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let _one_at_a_time = self.persisting.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = {
            let hours = self.hours.lock().unwrap_or_else(|p| p.into_inner());
            serde_json::to_vec(&*hours)?
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let temporary = path.with_extension("json.tmp");
        std::fs::write(&temporary, bytes)?;
        std::fs::rename(temporary, path)
    }
}

fn hour_floor(seconds: i64) -> i64 {
    seconds - seconds.rem_euclid(3600)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::bucket;
    use std::sync::Arc;

    fn event(user: &str, received: &str) -> Arc<Event> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "type": "track", "event": "E", "messageId": format!("m-{user}"), "userId": user,
                "timestamp": received, "receivedAt": received, "source": "s"
            }))
            .unwrap(),
        )
    }

    #[test]
    fn an_events_hour_is_the_start_of_its_utc_hour() {
        use chrono::{Datelike, TimeZone, Timelike};
        for text in [
            "2024-03-10T07:59:59.999Z",
            "2024-03-10T08:00:00Z",
            "1969-12-31T23:30:00.5Z",
            "1900-01-01T00:00:01Z",
            "2262-04-11T23:47:16Z",
        ] {
            let time: DateTime<Utc> = text.parse().unwrap();
            let start = Utc
                .with_ymd_and_hms(time.year(), time.month(), time.day(), time.hour(), 0, 0)
                .unwrap();
            assert_eq!(hour_of(&time), start.timestamp(), "{text}");
        }
    }

    #[test]
    fn counts_per_hour_and_reads_shares_off_the_bins() {
        let dir = tempfile::tempdir().unwrap();
        let report = SinkReport::open(Some(dir.path()), "warehouse", 24 * 365 * 100);
        let mut delta = ReportDelta::default();
        let batch: Vec<Arc<Event>> = (0..2000)
            .map(|i| event(&format!("user-{i}"), "2024-05-01T10:15:00Z"))
            .collect();
        delta.delivered(&SeededBuckets::new("switchyard"), RolloutKey::User, &batch);
        delta.count(&batch[0], Outcome::DroppedConsent);
        delta.given_up(&[event("late", "2024-05-01T11:01:00Z")], true);
        report.merge(&mut delta);
        report.persist().unwrap();

        let reopened = SinkReport::open(Some(dir.path()), "warehouse", 24 * 365 * 100);
        let hours = reopened.since(0);
        assert_eq!(hours.len(), 2);
        let ten = &hours[&hour_of(&batch[0].received_at)];
        assert_eq!(ten.delivered, 2000);
        assert_eq!(ten.dropped_consent, 1);
        // The users a sink at 10% would get are exactly those with bucket < 1000.
        let expected_at_10 = batch
            .iter()
            .filter(|e| bucket("switchyard", e.user_id.as_deref().unwrap()) < 1000)
            .count();
        assert_eq!(ten.delivered_below(10.0), expected_at_10 as f64);
        assert_eq!(ten.delivered_below(100.0), 2000.0);
        let half_bin = ten.delivered_below(10.5);
        assert!(half_bin >= expected_at_10 as f64 && half_bin <= ten.delivered_below(11.0));
        assert_eq!(hours.values().nth(1).unwrap().dead_lettered, 1);
    }
}
