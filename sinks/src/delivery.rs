//! The delivery machinery shared by every sink: a runner per sink reads the ingest log from the sink's
//! own cursor, applies the rollout dial and the per-sink stage (consent, per-sink sanitizers), batches,
//! sends with retries (exponential backoff, full jitter, Retry-After honoured), dead-letters what is
//! refused, and commits the cursor only after the batch is delivered or dead-lettered.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use serde::Serialize;
use switchyard_schemas::Event;
use tokio::sync::{mpsc, oneshot, watch};

use crate::breaker::{Breaker, BreakerState, BreakerView};
use crate::dead_letter::DeadLetterStore;
use crate::log::{IngestLog, Record};
use crate::report::{Outcome, ReportDelta, SinkReport};
use crate::rollout::{RolloutState, SeededBuckets};
use crate::settings::CommonSinkSettings;
use crate::sink::{SendError, Sink};

/// Retries a shadow sink gets before its batch is dropped (and counted).
pub const SHADOW_MAX_ATTEMPTS: u32 = 3;

/// What the per-sink stage decided for one event.
pub enum StageOutcome {
    Keep(Arc<Event>),
    /// Dropped because the event's consent does not grant the sink's category.
    DropConsent,
    /// Dropped by a per-sink sanitizer.
    DropSanitizer,
    /// Not meant for this sink: quarantined for another sink (or, for the quarantine sink, not
    /// quarantined), or a synthetic session event the sink excludes. Counted in `skipped`.
    Skip,
}

/// The per-sink stage run on every event in the sink's rollout share. The flag is the event's
/// record's [`Record::routing_marks`]: false means the event has none.
pub type EventStage = Arc<dyn Fn(&Arc<Event>, bool) -> StageOutcome + Send + Sync>;

/// Counters of one sink, since start (the reconciliation report persists its own).
#[derive(Debug)]
pub struct SinkStats {
    /// Events in the sink's rollout share that passed its stage.
    pub offered: AtomicU64,
    pub delivered: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Events of a shadow sink given up after its bounded retries.
    pub dropped_shadow: AtomicU64,
    pub dropped_rollout: AtomicU64,
    pub dropped_consent: AtomicU64,
    pub dropped_sanitizer: AtomicU64,
    /// Events not meant for this sink (see [`StageOutcome::Skip`]).
    pub skipped: AtomicU64,
    /// Failed send attempts (each retry of a batch counts).
    pub failed_attempts: AtomicU64,
    pub batches: AtomicU64,
    /// Batches re-sent after a failure (each retry counts once).
    pub retries: AtomicU64,
    pub last_error: Mutex<Option<String>>,
    pub breaker: Arc<BreakerView>,
    /// Seconds one send took, successful or not.
    pub send_seconds: Histogram,
    /// Seconds from an event's receipt to its delivery (oldest event of each delivered batch).
    pub delivery_lag_seconds: Histogram,
    /// Events per sent batch.
    pub batch_events: Histogram,
}

impl Default for SinkStats {
    fn default() -> Self {
        SinkStats {
            offered: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            dropped_shadow: AtomicU64::new(0),
            dropped_rollout: AtomicU64::new(0),
            dropped_consent: AtomicU64::new(0),
            dropped_sanitizer: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            last_error: Mutex::new(None),
            breaker: Arc::new(BreakerView::default()),
            send_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 18)),
            delivery_lag_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 22)),
            batch_events: Histogram::new(exponential_buckets(1.0, 2.0, 18)),
        }
    }
}

/// A serialisable copy of [`SinkStats`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SinkStatsSnapshot {
    pub offered: u64,
    pub delivered: u64,
    pub dead_lettered: u64,
    pub dropped_shadow: u64,
    pub dropped_rollout: u64,
    pub dropped_consent: u64,
    pub dropped_sanitizer: u64,
    pub skipped: u64,
    pub failed_attempts: u64,
    pub batches: u64,
    pub retries: u64,
    pub breaker: BreakerState,
    pub breaker_opened: u64,
    pub last_error: Option<String>,
}

impl SinkStats {
    pub fn snapshot(&self) -> SinkStatsSnapshot {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        SinkStatsSnapshot {
            offered: load(&self.offered),
            delivered: load(&self.delivered),
            dead_lettered: load(&self.dead_lettered),
            dropped_shadow: load(&self.dropped_shadow),
            dropped_rollout: load(&self.dropped_rollout),
            dropped_consent: load(&self.dropped_consent),
            dropped_sanitizer: load(&self.dropped_sanitizer),
            skipped: load(&self.skipped),
            failed_attempts: load(&self.failed_attempts),
            batches: load(&self.batches),
            retries: load(&self.retries),
            breaker: self.breaker.state(),
            breaker_opened: load(&self.breaker.opened),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    fn add(counter: &AtomicU64, amount: usize) {
        counter.fetch_add(amount as u64, Ordering::Relaxed);
    }
}

/// How a runner should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerSignal {
    Run,
    /// Deliver the batch in hand, commit, and exit; the rest stays in the log.
    Shutdown,
    /// Deliver everything appended so far, then exit (a sink removed by a reload).
    Drain,
}

/// Everything a runner needs.
pub struct RunnerParts {
    pub name: String,
    pub sink: Arc<dyn Sink>,
    pub settings: CommonSinkSettings,
    pub rollout: Arc<RolloutState>,
    pub rollout_seed: String,
    pub stage: EventStage,
    pub stats: Arc<SinkStats>,
    pub log: Arc<IngestLog>,
    pub dead_letters: Arc<DeadLetterStore>,
    /// Hourly reconciliation counters.
    pub report: Arc<SinkReport>,
}

/// A request to a running sink's runner.
pub enum RunnerCommand {
    /// Re-deliver retained log records from `seq` on (replay, backfill).
    Rewind { seq: u64 },
    /// Re-send dead letters after a fix; the reply counts what was delivered and dead-lettered again.
    ResendDeadLetters {
        events: Vec<Arc<Event>>,
        reply: oneshot::Sender<ResendOutcome>,
    },
}

/// The result of re-sending dead letters.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ResendOutcome {
    pub delivered: u64,
    pub dead_lettered_again: u64,
}

/// A running sink: its task and the means to talk to it.
pub struct RunnerHandle {
    signal: watch::Sender<RunnerSignal>,
    commands: mpsc::Sender<RunnerCommand>,
    task: tokio::task::JoinHandle<()>,
}

impl RunnerHandle {
    /// Starts the runner task.
    pub fn spawn(parts: RunnerParts) -> RunnerHandle {
        let (signal, receiver) = watch::channel(RunnerSignal::Run);
        let (commands, command_receiver) = mpsc::channel(16);
        let task = tokio::spawn(Runner::new(parts, receiver, command_receiver).run());
        RunnerHandle {
            signal,
            commands,
            task,
        }
    }

    /// Sends a command; false when the runner has stopped.
    pub async fn command(&self, command: RunnerCommand) -> bool {
        self.commands.send(command).await.is_ok()
    }

    /// Asks the runner to stop (see [`RunnerSignal`]) and waits at most `timeout` for it.
    pub async fn stop(self, how: RunnerSignal, timeout: Duration) -> bool {
        self.signal.send_replace(how);
        let mut task = self.task;
        match tokio::time::timeout(timeout, &mut task).await {
            Ok(_) => true,
            Err(_) => {
                task.abort();
                false
            }
        }
    }
}

struct Runner {
    parts: RunnerParts,
    signal: watch::Receiver<RunnerSignal>,
    commands: mpsc::Receiver<RunnerCommand>,
    breaker: Breaker,
    /// The rollout buckets under `parts.rollout_seed` (the seed hashed once).
    buckets: SeededBuckets,
    jitter_state: u64,
    /// Everything before this sequence number is delivered (or dead-lettered / filtered out).
    committed: u64,
    /// Report counts not yet merged into the shared report.
    report_delta: ReportDelta,
    last_report_persist: Instant,
    /// Whether the log was told this sink is failing (see [`IngestLog::set_stalled`]).
    stalled: bool,
}

enum Delivery {
    Done,
    /// Stopped by a shutdown before the batch was delivered: do not commit it.
    Interrupted,
}

/// The batch being assembled.
struct Pending {
    events: Vec<Arc<Event>>,
    /// Each event's JSON from the log, where the stage left the event as logged.
    json: Vec<Option<Bytes>>,
    bytes: usize,
    started: Option<Instant>,
}

/// A batch to deliver: the events and, where known, their JSON as logged.
struct Batch {
    events: Vec<Arc<Event>>,
    json: Vec<Option<Bytes>>,
}

impl Pending {
    fn take(&mut self) -> Batch {
        self.bytes = 0;
        self.started = None;
        Batch {
            events: std::mem::take(&mut self.events),
            json: std::mem::take(&mut self.json),
        }
    }
}

impl Runner {
    fn new(
        parts: RunnerParts,
        signal: watch::Receiver<RunnerSignal>,
        commands: mpsc::Receiver<RunnerCommand>,
    ) -> Runner {
        let seed = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(1) as u64 | 1;
        let breaker = Breaker::new(&parts.settings.circuit_breaker, parts.stats.breaker.clone());
        let buckets = SeededBuckets::new(&parts.rollout_seed);
        Runner {
            parts,
            signal,
            commands,
            breaker,
            buckets,
            jitter_state: seed,
            committed: 0,
            report_delta: ReportDelta::default(),
            last_report_persist: Instant::now(),
            stalled: false,
        }
    }

    fn record_error(&self, message: &str) {
        *self
            .parts
            .stats
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(message.to_string());
    }

    async fn run(mut self) {
        let name = self.parts.name.clone();
        // A runner replaced on reload may have left the sink marked as failing.
        self.parts.log.set_stalled(&name, false);
        let log = self.parts.log.clone();
        let mut read_position = match log.register_consumer(&name) {
            Ok(start) => start,
            Err(error) => {
                tracing::error!(sink = %name, %error, "cannot register the sink's log cursor");
                return;
            }
        };
        self.committed = read_position;
        let mut head = log.subscribe();
        let max_events = self.parts.settings.batch.max_events;
        let max_bytes = self.parts.settings.batch.max_bytes;
        let max_wait = Duration::from_millis(self.parts.settings.batch.max_wait_ms);
        let mut pending = Pending {
            events: Vec::with_capacity(max_events.min(100_000)),
            json: Vec::with_capacity(max_events.min(100_000)),
            bytes: 0,
            started: None,
        };
        let mut last_commit_at = Instant::now();
        let mut droppable = None;
        tracing::info!(sink = %name, cursor = read_position, "sink runner started");

        loop {
            while let Ok(command) = self.commands.try_recv() {
                if let Some(position) = self.handle_command(command, &mut pending).await {
                    read_position = position;
                }
            }
            // A shadow sink's oldest records may be dropped when the log is full; a live one's never.
            let shadow = self.parts.rollout.is_shadow();
            if droppable != Some(shadow) {
                log.set_droppable(&name, shadow);
                droppable = Some(shadow);
            }
            if let Some(cursor) = log.cursor(&name) {
                if cursor > self.committed {
                    // Moved ahead by the full-log policy: skip what was dropped.
                    self.committed = cursor;
                    read_position = read_position.max(cursor);
                }
            }
            let signal = *self.signal.borrow();
            let caught_up = read_position >= log.head();
            if signal == RunnerSignal::Shutdown || (signal == RunnerSignal::Drain && caught_up) {
                if !pending.events.is_empty() {
                    let batch = pending.take();
                    if let Delivery::Done = self.deliver(batch).await {
                        self.commit(read_position);
                    }
                } else {
                    self.commit(read_position);
                }
                break;
            }

            // Only what the batch has room for: records read beyond it would stay in memory,
            // outside the cache's budget, until this sink got to them (a slow sink, for seconds).
            let room = max_events.saturating_sub(pending.events.len()).max(1);
            let records = match self.read(read_position, room).await {
                Ok(records) => records,
                Err(message) => {
                    self.record_error(&message);
                    tracing::error!(sink = %name, error = %message, "cannot read the ingest log");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };

            if records.is_empty() {
                let deadline = pending.started.map(|started| started + max_wait);
                let timed_out = tokio::select! {
                    _ = head.changed() => false,
                    _ = self.signal.changed() => false,
                    command = self.commands.recv() => {
                        if let Some(command) = command {
                            if let Some(position) = self.handle_command(command, &mut pending).await {
                                read_position = position;
                            }
                        }
                        false
                    }
                    _ = sleep_until_opt(deadline) => true,
                };
                if timed_out && !pending.events.is_empty() {
                    let batch = pending.take();
                    if let Delivery::Done = self.deliver(batch).await {
                        self.commit(read_position);
                        last_commit_at = Instant::now();
                    }
                }
                continue;
            }

            for record in records {
                let per_event_bytes = record.bytes / record.events.len().max(1);
                let count = record.events.len();
                for (index, event) in record.events.iter().enumerate() {
                    if !self.parts.rollout.admits(&self.buckets, event) {
                        SinkStats::add(&self.parts.stats.dropped_rollout, 1);
                        self.report_delta.count(event, Outcome::DroppedRollout);
                        continue;
                    }
                    match (self.parts.stage)(event, record.routing_marks) {
                        StageOutcome::Keep(kept) => {
                            SinkStats::add(&self.parts.stats.offered, 1);
                            self.report_delta.count(event, Outcome::Offered);
                            // The same Arc back means the stage did not touch the event, so the
                            // log's JSON of it is still exact.
                            let json = if Arc::ptr_eq(&kept, event) {
                                record.json.get(index).cloned()
                            } else {
                                None
                            };
                            pending.json.push(json);
                            pending.events.push(kept);
                            pending.bytes += per_event_bytes;
                            pending.started.get_or_insert_with(Instant::now);
                        }
                        StageOutcome::DropConsent => {
                            SinkStats::add(&self.parts.stats.dropped_consent, 1);
                            self.report_delta.count(event, Outcome::DroppedConsent);
                        }
                        StageOutcome::DropSanitizer => {
                            SinkStats::add(&self.parts.stats.dropped_sanitizer, 1);
                            self.report_delta.count(event, Outcome::DroppedSanitizer);
                        }
                        StageOutcome::Skip => SinkStats::add(&self.parts.stats.skipped, 1),
                    }
                    if pending.events.len() >= max_events || pending.bytes >= max_bytes {
                        // Mid-record, only the records before this one are wholly delivered.
                        let commit_to = if index + 1 == count {
                            record.seq + 1
                        } else {
                            record.seq
                        };
                        let batch = pending.take();
                        match self.deliver(batch).await {
                            Delivery::Done => {
                                self.commit(commit_to);
                                last_commit_at = Instant::now();
                            }
                            Delivery::Interrupted => return,
                        }
                    }
                }
                // Everything before here is now delivered, filtered out, or in `pending`.
                read_position = record.seq + 1;
            }
            if pending.events.is_empty() {
                if last_commit_at.elapsed() >= Duration::from_secs(1) {
                    // Everything read was filtered out: move the cursor now and then, not per record.
                    self.commit(read_position);
                    last_commit_at = Instant::now();
                }
            } else if pending
                .started
                .is_some_and(|started| started.elapsed() >= max_wait)
            {
                let batch = pending.take();
                match self.deliver(batch).await {
                    Delivery::Done => {
                        self.commit(read_position);
                        last_commit_at = Instant::now();
                    }
                    Delivery::Interrupted => return,
                }
            }
        }
        self.flush_report(true);
        tracing::info!(sink = %name, "sink runner stopped");
    }

    /// Merges the runner's counts into the shared report; persists it every 10 s on the blocking
    /// pool (a file's write and rename can wait tens of milliseconds for the filesystem's journal
    /// while the disk is busy, and this thread also serves ingest requests), and here when asked.
    fn flush_report(&mut self, persist_now: bool) {
        self.parts.report.merge(&mut self.report_delta);
        if !persist_now && self.last_report_persist.elapsed() < Duration::from_secs(10) {
            return;
        }
        self.last_report_persist = Instant::now();
        let report = self.parts.report.clone();
        let name = self.parts.name.clone();
        let persist = move || {
            if let Err(error) = report.persist() {
                tracing::error!(sink = %name, %error, "cannot persist the reconciliation report");
            }
        };
        if persist_now {
            persist();
        } else {
            tokio::task::spawn_blocking(persist);
        }
    }

    /// Handles a command; returns the new read position after a rewind.
    async fn handle_command(
        &mut self,
        command: RunnerCommand,
        pending: &mut Pending,
    ) -> Option<u64> {
        match command {
            RunnerCommand::Rewind { seq } => {
                // The pending batch is re-read from the log, so drop it rather than send it twice.
                let _ = pending.take();
                let target = seq.min(self.committed);
                if let Err(error) = self.parts.log.rewind(&self.parts.name, target) {
                    tracing::error!(sink = %self.parts.name, %error, "cannot rewind the cursor");
                    return None;
                }
                self.committed = target;
                tracing::info!(sink = %self.parts.name, seq = target, "replaying from the log");
                Some(target)
            }
            RunnerCommand::ResendDeadLetters { events, reply } => {
                let before = self.parts.stats.dead_lettered.load(Ordering::Relaxed);
                let total = events.len() as u64;
                for chunk in events.chunks(self.parts.settings.batch.max_events.max(1)) {
                    let batch = Batch {
                        events: chunk.to_vec(),
                        json: Vec::new(),
                    };
                    if let Delivery::Interrupted = self.deliver(batch).await {
                        // Shutting down: what was not re-sent goes back to the store.
                        let _ = self.parts.dead_letters.put(
                            chunk,
                            "re-send interrupted by shutdown",
                            0,
                        );
                        break;
                    }
                }
                let again = self.parts.stats.dead_lettered.load(Ordering::Relaxed) - before;
                let _ = reply.send(ResendOutcome {
                    delivered: total.saturating_sub(again),
                    dead_lettered_again: again,
                });
                None
            }
        }
    }

    /// Records from `from` on holding up to `max_events` events (see [`IngestLog::read`]).
    async fn read(&self, from: u64, max_events: usize) -> Result<Vec<Record>, String> {
        let log = self.parts.log.clone();
        if from >= log.head() {
            return Ok(Vec::new());
        }
        // From memory without a thread hop (one per record read for a sink that keeps up); only a
        // read from disk goes to the blocking pool.
        if let Some(records) = log.read_cached(from, max_events) {
            return Ok(records);
        }
        tokio::task::spawn_blocking(move || log.read(from, max_events))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    fn commit(&mut self, next_seq: u64) {
        self.flush_report(false);
        if next_seq <= self.committed {
            return;
        }
        match self.parts.log.commit(&self.parts.name, next_seq) {
            Ok(()) => self.committed = next_seq,
            Err(error) => {
                tracing::error!(sink = %self.parts.name, %error, "cannot persist the sink's cursor")
            }
        }
    }

    fn next_jitter(&mut self) -> u64 {
        // xorshift64*: jitter needs spread, not cryptographic quality.
        let mut x = self.jitter_state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.jitter_state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Full-jitter exponential backoff: uniform in [0, min(cap, initial * 2^(attempt-1))].
    fn backoff(&mut self, attempt: u32) -> Duration {
        let retry = &self.parts.settings.retry;
        let exponent = attempt.saturating_sub(1).min(30);
        let ceiling = retry
            .initial_backoff_ms
            .saturating_mul(1u64 << exponent)
            .min(retry.max_backoff_ms)
            .max(1);
        Duration::from_millis(self.next_jitter() % (ceiling + 1))
    }

    /// Waits out an open breaker; false when a shutdown came first.
    async fn wait_for_breaker(&mut self) -> bool {
        while let Some(until) = self.breaker.blocked_until() {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = wait_for_shutdown(&mut self.signal) => return false,
            }
        }
        true
    }

    async fn deliver(&mut self, batch: Batch) -> Delivery {
        let Batch {
            events: batch,
            json,
        } = batch;
        let size = batch.len();
        let started = Instant::now();
        let shadow = self.parts.rollout.is_shadow();
        let retry = self.parts.settings.retry.clone();
        let max_attempts = if shadow {
            SHADOW_MAX_ATTEMPTS
        } else {
            retry.max_attempts
        };
        let max_duration = Duration::from_secs(retry.max_retry_duration_secs);
        let mut attempts = 0u32;
        SinkStats::add(&self.parts.stats.batches, 1);
        self.parts.stats.batch_events.observe(size as f64);
        loop {
            if !self.wait_for_breaker().await {
                return Delivery::Interrupted;
            }
            attempts += 1;
            let send_started = Instant::now();
            let outcome = self.parts.sink.send_with_json(&batch, &json).await;
            self.parts
                .stats
                .send_seconds
                .observe(send_started.elapsed().as_secs_f64());
            let error = match outcome {
                Ok(()) => {
                    self.breaker.on_success();
                    self.set_stalled(false);
                    SinkStats::add(&self.parts.stats.delivered, size);
                    let by = self.parts.rollout.get().by;
                    self.report_delta.delivered(&self.buckets, by, &batch);
                    if let Some(oldest) = batch.iter().map(|e| e.received_at).min() {
                        let lag =
                            (chrono::Utc::now() - oldest).num_milliseconds().max(0) as f64 / 1000.0;
                        self.parts.stats.delivery_lag_seconds.observe(lag);
                    }
                    return Delivery::Done;
                }
                Err(error) => error,
            };
            SinkStats::add(&self.parts.stats.failed_attempts, 1);
            let message = error.to_string();
            self.record_error(&message);
            let permanent = matches!(error, SendError::Permanent(_));
            if permanent {
                self.breaker.on_success(); // it answered: reachable, just refusing this batch
            } else {
                self.breaker.on_failure();
            }
            let give_up = permanent
                || (max_attempts > 0 && attempts >= max_attempts)
                || (max_attempts == 0 && started.elapsed() >= max_duration);
            if give_up {
                self.report_delta.given_up(&batch, !shadow);
                if shadow {
                    SinkStats::add(&self.parts.stats.dropped_shadow, size);
                    tracing::warn!(sink = %self.parts.name, events = size, attempts, error = %message, "shadow sink: batch dropped");
                } else {
                    self.dead_letter(&batch, &message, attempts);
                }
                return Delivery::Done;
            }
            SinkStats::add(&self.parts.stats.retries, 1);
            self.set_stalled(true);
            let wait = match &error {
                SendError::RateLimited {
                    retry_after: Some(after),
                    ..
                } => (*after).min(Duration::from_millis(retry.max_backoff_ms.max(1000))),
                _ => self.backoff(attempts),
            };
            tracing::warn!(sink = %self.parts.name, events = size, attempts, wait_ms = wait.as_millis() as u64, error = %message, "send failed; retrying");
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = wait_for_shutdown(&mut self.signal) => return Delivery::Interrupted,
            }
        }
    }

    /// Tells the log whether this sink is failing, so the log's cache is not spent on it meanwhile.
    fn set_stalled(&mut self, stalled: bool) {
        if self.stalled != stalled {
            self.stalled = stalled;
            self.parts.log.set_stalled(&self.parts.name, stalled);
        }
    }

    fn dead_letter(&self, batch: &[Arc<Event>], message: &str, attempts: u32) {
        SinkStats::add(&self.parts.stats.dead_lettered, batch.len());
        tracing::error!(sink = %self.parts.name, events = batch.len(), attempts, error = %message, "batch dead-lettered");
        if let Err(error) = self.parts.dead_letters.put(batch, message, attempts) {
            tracing::error!(sink = %self.parts.name, %error, "cannot write dead letters");
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

async fn wait_for_shutdown(signal: &mut watch::Receiver<RunnerSignal>) {
    loop {
        if *signal.borrow() == RunnerSignal::Shutdown {
            return;
        }
        if signal.changed().await.is_err() {
            return;
        }
    }
}
