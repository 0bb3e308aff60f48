//! The fan-out engine: one delivery runner per configured sink, all reading the same ingest log at
//! their own cursors, and the reload logic that adds, removes (after draining) and changes sinks
//! without touching the unchanged ones.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use switchyard_config::ConsentSettings;
use switchyard_sanitizers::{Chain, SanitizeReport, Verdict};
use switchyard_sinks::dead_letter::DeadLetterStore;
use switchyard_sinks::delivery::{
    EventStage, ResendOutcome, RunnerCommand, RunnerHandle, RunnerParts, RunnerSignal, SinkStats,
    SinkStatsSnapshot, StageOutcome,
};
use switchyard_sinks::log::IngestLog;
use switchyard_sinks::report::SinkReport;
use switchyard_sinks::rollout::RolloutState;
use switchyard_sinks::settings::{RolloutConfig, SinkSettings};
use switchyard_sinks::{build_sink, Sink};

/// How long a removed sink may take to deliver what it still has.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// One running sink.
pub struct SinkEntry {
    pub settings: SinkSettings,
    pub rollout: Arc<RolloutState>,
    pub stats: Arc<SinkStats>,
    pub dead_letters: Arc<DeadLetterStore>,
    pub report: Arc<SinkReport>,
    pub sink: Arc<dyn Sink>,
    runner: RunnerHandle,
}

/// What a reload changed.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub unchanged: Vec<String>,
}

/// A sink as shown by `/admin/sinks`.
#[derive(Debug, Clone, Serialize)]
pub struct SinkStatus {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub rollout: RolloutConfig,
    /// Next log record the sink will read.
    pub cursor: u64,
    /// Records appended but not yet passed by the sink.
    pub lag_records: u64,
    /// Log records this (shadow) sink lost because the log was full.
    pub log_dropped_records: u64,
    pub counters: SinkStatsSnapshot,
}

/// The fan-out engine.
pub struct Engine {
    log: Arc<IngestLog>,
    seed: String,
    dead_letter_dir: Option<PathBuf>,
    report_dir: Option<PathBuf>,
    retention_hours: u64,
    sinks: tokio::sync::Mutex<BTreeMap<String, SinkEntry>>,
    /// The tracking plan's quarantine sink, read by every sink's stage.
    quarantine: crate::plan_stage::QuarantineTarget,
}

/// Builds the per-sink stage: consent category check, then the sink's own sanitizer chain.
fn build_stage(
    name: &str,
    settings: &SinkSettings,
    consent: &ConsentSettings,
    quarantine: &crate::plan_stage::QuarantineTarget,
) -> Result<EventStage, String> {
    let chain = Chain::build(
        &settings.common.sanitizers,
        &format!("sinks.{name}.sanitizers"),
        &|variable| std::env::var(variable).ok(),
    )
    .map_err(|errors| {
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let category = settings.common.consent.clone();
    let default_granted = consent.default_granted;
    let quarantine = quarantine.clone();
    let exclude_synthetic = settings.common.exclude_synthetic;
    let sink_name = name.to_string();
    Ok(Arc::new(move |event, may_be_marked| {
        // Quarantined events go to the quarantine sink only; excluded synthetic events nowhere.
        if crate::plan_stage::skips(
            &sink_name,
            &quarantine,
            exclude_synthetic,
            event,
            may_be_marked,
        ) {
            return StageOutcome::Skip;
        }
        if let Some(category) = &category {
            if !switchyard_sanitizers::consent::allows(event, category, default_granted) {
                return StageOutcome::DropConsent;
            }
        }
        if chain.is_empty() {
            return StageOutcome::Keep(event.clone());
        }
        let mut copy = switchyard_schemas::Event::clone(event);
        let mut report = SanitizeReport::default();
        match chain.apply(&mut copy, &mut report) {
            Verdict::Keep => StageOutcome::Keep(Arc::new(copy)),
            Verdict::Drop(_) => StageOutcome::DropSanitizer,
        }
    }))
}

impl Engine {
    /// An engine with no sinks yet.
    /// An engine with no sinks yet. `state_dir` (the data dir, when durable) holds dead letters
    /// (`dead-letters/`) and reconciliation counters (`report/`), kept `retention_hours`.
    pub fn new(
        log: Arc<IngestLog>,
        seed: String,
        state_dir: Option<PathBuf>,
        retention_hours: u64,
    ) -> Engine {
        Engine {
            log,
            seed,
            dead_letter_dir: state_dir.as_ref().map(|dir| dir.join("dead-letters")),
            report_dir: state_dir.as_ref().map(|dir| dir.join("report")),
            retention_hours,
            sinks: tokio::sync::Mutex::new(BTreeMap::new()),
            quarantine: Default::default(),
        }
    }

    /// Each sink's hourly reconciliation counters.
    pub async fn reports(&self) -> Vec<(String, Arc<SinkReport>)> {
        let sinks = self.sinks.lock().await;
        sinks
            .iter()
            .map(|(name, entry)| (name.clone(), entry.report.clone()))
            .collect()
    }

    /// The ingest log every sink reads.
    pub fn log(&self) -> &Arc<IngestLog> {
        &self.log
    }

    /// Sets the tracking plan's quarantine sink (it then receives only quarantined events); returns
    /// the previous one. Takes effect at once for every sink.
    pub fn set_quarantine_sink(&self, sink: Option<String>) -> Option<String> {
        let mut current = self.quarantine.write().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *current, sink)
    }

    /// Builds and starts (health-checks) a sink without running it yet.
    async fn prepare(
        &self,
        name: &str,
        settings: &SinkSettings,
        consent: &ConsentSettings,
    ) -> Result<(Arc<dyn Sink>, EventStage), String> {
        let stage = build_stage(name, settings, consent, &self.quarantine)?;
        let sink = build_sink(name, &settings.kind, &settings.common.batch)
            .map_err(|e| format!("sinks.{name}: {e}"))?;
        sink.start()
            .await
            .map_err(|e| format!("sinks.{name}: {e}"))?;
        Ok((sink, stage))
    }

    fn launch(
        &self,
        name: &str,
        settings: SinkSettings,
        sink: Arc<dyn Sink>,
        stage: EventStage,
    ) -> SinkEntry {
        let rollout = Arc::new(RolloutState::new(&settings.common.rollout));
        let stats = Arc::new(SinkStats::default());
        let dead_letters = Arc::new(DeadLetterStore::new(self.dead_letter_dir.as_deref(), name));
        let report = Arc::new(SinkReport::open(
            self.report_dir.as_deref(),
            name,
            self.retention_hours,
        ));
        if let Err(error) = dead_letters.recover() {
            tracing::error!(sink = %name, %error, "cannot recover dead letters of an interrupted re-send");
        }
        let runner = RunnerHandle::spawn(RunnerParts {
            name: name.to_string(),
            sink: sink.clone(),
            settings: settings.common.clone(),
            rollout: rollout.clone(),
            rollout_seed: self.seed.clone(),
            stage,
            stats: stats.clone(),
            log: self.log.clone(),
            dead_letters: dead_letters.clone(),
            report: report.clone(),
        });
        SinkEntry {
            settings,
            rollout,
            stats,
            dead_letters,
            report,
            sink,
            runner,
        }
    }

    /// Brings the running sinks in line with `wanted`. Every new or changed sink is built and started
    /// first; if any fails, nothing changes and every failure is returned.
    pub async fn apply(
        &self,
        wanted: &BTreeMap<String, SinkSettings>,
        consent: &ConsentSettings,
    ) -> Result<ReloadReport, Vec<String>> {
        let mut sinks = self.sinks.lock().await;
        let mut report = ReloadReport::default();
        let mut prepared = BTreeMap::new();
        let mut failures = Vec::new();
        for (name, settings) in wanted {
            match sinks.get(name) {
                Some(entry) if entry.settings == *settings => report.unchanged.push(name.clone()),
                existing => {
                    if existing.is_some() {
                        report.changed.push(name.clone());
                    } else {
                        report.added.push(name.clone());
                    }
                    match self.prepare(name, settings, consent).await {
                        Ok(parts) => {
                            prepared.insert(name.clone(), parts);
                        }
                        Err(error) => failures.push(error),
                    }
                }
            }
        }
        if !failures.is_empty() {
            return Err(failures);
        }
        report.removed = sinks
            .keys()
            .filter(|name| !wanted.contains_key(*name))
            .cloned()
            .collect();

        for name in &report.removed {
            if let Some(entry) = sinks.remove(name) {
                let drained = entry.runner.stop(RunnerSignal::Drain, DRAIN_TIMEOUT).await;
                if !drained {
                    tracing::warn!(sink = %name, "removed sink did not drain in time; its undelivered events stay in the log");
                }
                if let Err(error) = self.log.remove_consumer(name) {
                    tracing::error!(sink = %name, %error, "cannot remove the sink's cursor");
                }
                tracing::info!(sink = %name, drained, "sink removed");
            }
        }
        for name in &report.changed {
            if let Some(entry) = sinks.remove(name) {
                // Its cursor stays: the new settings resume where the old ones stopped.
                entry
                    .runner
                    .stop(RunnerSignal::Shutdown, DRAIN_TIMEOUT)
                    .await;
            }
        }
        for (name, (sink, stage)) in prepared {
            let settings = wanted
                .get(&name)
                .cloned()
                .ok_or_else(|| vec![format!("sinks.{name}: vanished")])?;
            let entry = self.launch(&name, settings, sink, stage);
            sinks.insert(name.clone(), entry);
            tracing::info!(sink = %name, "sink started");
        }
        Ok(report)
    }

    /// Sets a sink's rollout at once; returns the previous one, or None for an unknown sink.
    pub async fn set_rollout(&self, name: &str, rollout: &RolloutConfig) -> Option<RolloutConfig> {
        let sinks = self.sinks.lock().await;
        let entry = sinks.get(name)?;
        let previous = entry.rollout.get();
        entry.rollout.set(rollout);
        Some(previous)
    }

    /// Re-delivers retained log records appended at or after `since_ms` to one sink (backfill or replay).
    /// Returns the sequence number it restarts from, or None for an unknown sink.
    pub async fn replay(&self, name: &str, since_ms: i64) -> Result<Option<u64>, String> {
        let sinks = self.sinks.lock().await;
        let Some(entry) = sinks.get(name) else {
            return Ok(None);
        };
        let log = self.log.clone();
        let seq = tokio::task::spawn_blocking(move || log.first_seq_since(since_ms))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if !entry.runner.command(RunnerCommand::Rewind { seq }).await {
            return Err(format!("sink `{name}` is not running"));
        }
        Ok(Some(seq))
    }

    /// Re-sends a sink's dead letters through its runner (retries, breaker, dead letters again on a
    /// permanent error). None for an unknown sink.
    pub async fn resend_dead_letters(&self, name: &str) -> Result<Option<ResendOutcome>, String> {
        let (store, receiver) = {
            let sinks = self.sinks.lock().await;
            let Some(entry) = sinks.get(name) else {
                return Ok(None);
            };
            let letters = entry
                .dead_letters
                .take_all()
                .map_err(|e| format!("cannot read dead letters: {e}"))?;
            if letters.is_empty() {
                return Ok(Some(ResendOutcome::default()));
            }
            let events = letters
                .into_iter()
                .map(|letter| Arc::new(letter.event))
                .collect();
            let (reply, receiver) = tokio::sync::oneshot::channel();
            if !entry
                .runner
                .command(RunnerCommand::ResendDeadLetters { events, reply })
                .await
            {
                // Nothing was sent: the leftover file is put back by recover().
                let _ = entry.dead_letters.recover();
                return Err(format!("sink `{name}` is not running"));
            }
            (entry.dead_letters.clone(), receiver)
        };
        let outcome = receiver
            .await
            .map_err(|_| "the sink stopped during the re-send".to_string())?;
        store
            .finish_take()
            .map_err(|e| format!("cannot clear re-sent dead letters: {e}"))?;
        Ok(Some(outcome))
    }

    /// A sink's dead letters (oldest first), or None for an unknown sink.
    pub async fn dead_letters(
        &self,
        name: &str,
    ) -> Option<std::io::Result<Vec<switchyard_sinks::dead_letter::DeadLetter>>> {
        let sinks = self.sinks.lock().await;
        sinks.get(name).map(|entry| entry.dead_letters.list())
    }

    /// Every running sink, by name (the lock is not held while they are called).
    async fn sink_handles(&self) -> Vec<(String, Arc<dyn Sink>)> {
        let sinks = self.sinks.lock().await;
        sinks
            .iter()
            .map(|(name, entry)| (name.clone(), entry.sink.clone()))
            .collect()
    }

    /// Erases a person from every sink that keeps a queryable store.
    pub async fn erase_person(&self, id: &str) -> Vec<crate::privacy::SinkErasure> {
        let sinks = self.sink_handles().await;
        let mut outcomes = Vec::new();
        for (name, sink) in sinks {
            let (outcome, detail) = match sink.erase_person(id).await {
                Ok(Some(detail)) => ("erased", detail),
                Ok(None) => (
                    "not_stored",
                    "this sink keeps no queryable store; ask the vendor (see docs/privacy.md)"
                        .to_string(),
                ),
                Err(error) => ("failed", error.to_string()),
            };
            outcomes.push(crate::privacy::SinkErasure {
                sink: name,
                outcome,
                detail,
            });
        }
        outcomes
    }

    /// A person's stored events from every sink that can export them, as (sink, events).
    pub async fn export_person(
        &self,
        id: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<serde_json::Value>)>, String> {
        let sinks = self.sink_handles().await;
        let mut exported = Vec::new();
        for (name, sink) in sinks {
            match sink.export_person(id, limit).await {
                Ok(Some(events)) => exported.push((name, events)),
                Ok(None) => {}
                Err(error) => return Err(format!("sinks.{name}: {error}")),
            }
        }
        Ok(exported)
    }

    /// Every sink's live counters and histograms.
    pub async fn stats(&self) -> Vec<(String, Arc<SinkStats>)> {
        let sinks = self.sinks.lock().await;
        sinks
            .iter()
            .map(|(name, entry)| (name.clone(), entry.stats.clone()))
            .collect()
    }

    /// Every sink's status.
    pub async fn status(&self) -> Vec<SinkStatus> {
        let sinks = self.sinks.lock().await;
        let cursors = self.log.cursors();
        let head = self.log.head();
        sinks
            .iter()
            .map(|(name, entry)| {
                let cursor = cursors.get(name).copied().unwrap_or(head);
                SinkStatus {
                    name: name.clone(),
                    kind: entry.settings.kind.type_name().to_string(),
                    rollout: entry.rollout.get(),
                    cursor,
                    lag_records: head.saturating_sub(cursor),
                    log_dropped_records: self.log.dropped_records(name),
                    counters: entry.stats.snapshot(),
                }
            })
            .collect()
    }

    /// Runs every sink's health check; returns the failures.
    pub async fn health(&self) -> Vec<String> {
        let sinks = self.sink_handles().await;
        let mut failures = Vec::new();
        for (name, sink) in sinks {
            if let Err(error) = sink.health().await {
                failures.push(format!("sinks.{name}: {error}"));
            }
        }
        failures
    }

    /// Stops every runner: each delivers the batch in hand and persists its cursor. In memory mode
    /// runners first drain everything accepted, since nothing survives the exit.
    pub async fn shutdown(&self, timeout: Duration) {
        let mut sinks = self.sinks.lock().await;
        let how = if self.log.is_durable() {
            RunnerSignal::Shutdown
        } else {
            RunnerSignal::Drain
        };
        let stops: Vec<_> = std::mem::take(&mut *sinks)
            .into_iter()
            .map(|(name, entry)| async move {
                let stopped = entry.runner.stop(how, timeout).await;
                if !stopped {
                    tracing::warn!(sink = %name, "sink did not stop in time");
                }
            })
            .collect();
        futures_util::future::join_all(stops).await;
    }
}
