//! The application state shared by every request: the config in force, the ingest log, the fan-out
//! engine, counters, and the start-up / reload / shutdown sequences.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Serialize;
use switchyard_config::{Config, ConfigErrors, Durability, IpNet};
use switchyard_sanitizers::Chain;
use switchyard_sinks::log::{IngestLog, LogOptions};

use crate::engine::{Engine, ReloadReport};

/// The parts of the config that the request path reads, prepared once per (re)load.
pub struct Runtime {
    pub config: Config,
    /// write key -> source name.
    pub write_keys: HashMap<String, String>,
    /// PostHog project token -> source name.
    pub posthog_tokens: HashMap<String, String>,
    pub global_chain: Chain,
    pub trusted_proxies: Vec<IpNet>,
    /// Lowercased opt-out header names.
    pub opt_out_headers: Vec<String>,
    pub limiters: crate::limits::Limiters,
    /// The tracking plan and each source's modes (None without `[tracking_plan]`).
    pub plan: Option<Arc<crate::plan_stage::PlanStage>>,
    /// The KPI API's service, or why it is off (no ClickHouse sink...). A reload starts it afresh
    /// (with an empty cache).
    pub kpis: Result<Arc<crate::kpis::KpiService>, String>,
}

impl Runtime {
    /// Prepares a validated config; fails when a sanitizer cannot be built (e.g. a missing salt).
    pub fn new(config: Config) -> Result<Runtime, Vec<String>> {
        let global_chain = Chain::build(&config.sanitizers, "sanitizers", &|name| {
            std::env::var(name).ok()
        })
        .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>())?;
        let mut write_keys = HashMap::new();
        let mut posthog_tokens = HashMap::new();
        for (source, settings) in &config.sources {
            for key in &settings.write_keys {
                write_keys.insert(key.clone(), source.clone());
            }
            for token in &settings.posthog_tokens {
                posthog_tokens.insert(token.clone(), source.clone());
            }
        }
        let trusted_proxies = config
            .server
            .trusted_proxies
            .iter()
            .filter_map(|p| IpNet::parse(p))
            .collect();
        let opt_out_headers = config
            .consent
            .opt_out_headers
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        let limiters = crate::limits::Limiters::new(&config.limits);
        let plan = crate::plan_stage::PlanStage::build(&config)?.map(Arc::new);
        let kpis = crate::kpis::service_for(&config);
        Ok(Runtime {
            kpis,
            config,
            write_keys,
            posthog_tokens,
            global_chain,
            trusted_proxies,
            opt_out_headers,
            limiters,
            plan,
        })
    }

    /// The source a write key belongs to. With no sources configured, ingest is open (`default`).
    pub fn authenticate(&self, key: Option<&str>) -> Option<String> {
        self.lookup(&self.write_keys, key)
    }

    /// The source a PostHog project token (`api_key` / `token` of a capture request) belongs to. With
    /// no sources configured, ingest is open (`default`).
    pub fn authenticate_posthog(&self, token: Option<&str>) -> Option<String> {
        self.lookup(&self.posthog_tokens, token)
    }

    fn lookup(&self, keys: &HashMap<String, String>, key: Option<&str>) -> Option<String> {
        if self.config.sources.is_empty() {
            return Some("default".to_string());
        }
        let key = key?;
        // Compare against every key without early exit so timing does not reveal near misses.
        let mut found = None;
        for (candidate, source) in keys {
            if constant_time_eq(candidate.as_bytes(), key.as_bytes()) {
                found = Some(source.clone());
            }
        }
        found
    }
}

/// Equality whose time depends only on the lengths.
fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    left.iter()
        .zip(right)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// Ingest counters of one source since start.
#[derive(Debug, Default)]
pub struct SourceCounters {
    pub received: AtomicU64,
    pub accepted: AtomicU64,
    pub rejected: Mutex<BTreeMap<&'static str, u64>>,
    pub dropped_opt_out: AtomicU64,
    pub dropped_sanitizer: AtomicU64,
    pub dropped_duplicate: AtomicU64,
    pub refused_full: AtomicU64,
}

/// A copy of [`SourceCounters`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceCountersSnapshot {
    pub received: u64,
    pub accepted: u64,
    pub rejected: BTreeMap<&'static str, u64>,
    pub dropped_opt_out: u64,
    pub dropped_sanitizer: u64,
    pub dropped_duplicate: u64,
    pub refused_full: u64,
}

impl SourceCounters {
    pub fn add(counter: &AtomicU64, amount: usize) {
        counter.fetch_add(amount as u64, Ordering::Relaxed);
    }

    /// Counts rejections by their reason code.
    pub fn add_rejected(&self, codes: impl Iterator<Item = &'static str>) {
        let mut rejected = self.rejected.lock().unwrap_or_else(|p| p.into_inner());
        for code in codes {
            *rejected.entry(code).or_default() += 1;
        }
    }

    fn snapshot(&self) -> SourceCountersSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SourceCountersSnapshot {
            received: load(&self.received),
            accepted: load(&self.accepted),
            rejected: self
                .rejected
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            dropped_opt_out: load(&self.dropped_opt_out),
            dropped_sanitizer: load(&self.dropped_sanitizer),
            dropped_duplicate: load(&self.dropped_duplicate),
            refused_full: load(&self.refused_full),
        }
    }
}

/// Ingest counters since start.
#[derive(Debug, Default)]
pub struct IngestStats {
    pub requests: AtomicU64,
    pub unauthorized: AtomicU64,
    /// Requests refused with 429 by the per-IP limit.
    pub rate_limited_ip: AtomicU64,
    /// Requests refused with 429 by the per-source event limit.
    pub rate_limited_source: AtomicU64,
    sources: RwLock<HashMap<String, Arc<SourceCounters>>>,
}

/// A copy of [`IngestStats`] for responses.
#[derive(Debug, Serialize)]
pub struct IngestStatsSnapshot {
    pub requests: u64,
    pub unauthorized: u64,
    pub sources: BTreeMap<String, SourceCountersSnapshot>,
}

impl IngestStats {
    /// The counters of one source (created on first use).
    pub fn source(&self, name: &str) -> Arc<SourceCounters> {
        if let Some(counters) = self
            .sources
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return counters.clone();
        }
        let mut sources = self.sources.write().unwrap_or_else(|p| p.into_inner());
        sources.entry(name.to_string()).or_default().clone()
    }

    /// Every source's counters.
    pub fn per_source(&self) -> BTreeMap<String, SourceCountersSnapshot> {
        let sources = self.sources.read().unwrap_or_else(|p| p.into_inner());
        sources
            .iter()
            .map(|(name, counters)| (name.clone(), counters.snapshot()))
            .collect()
    }

    pub fn snapshot(&self) -> IngestStatsSnapshot {
        IngestStatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            unauthorized: self.unauthorized.load(Ordering::Relaxed),
            sources: self.per_source(),
        }
    }
}

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("cannot start:\n  - {}", .0.join("\n  - "))]
    Setup(Vec<String>),
}

/// Everything a request handler needs.
pub struct App {
    runtime: RwLock<Arc<Runtime>>,
    pub log: Arc<IngestLog>,
    pub engine: Engine,
    pub stats: IngestStats,
    pub dedupe: crate::dedupe::Deduper,
    /// People whose events are dropped at ingest (privacy erasure requests).
    pub suppressions: crate::privacy::Suppressions,
    /// Server-side sessions (kept across reloads; saved in the data dir).
    pub sessions: crate::sessions::Sessions,
    pub config_path: Option<PathBuf>,
    data_dir: PathBuf,
    ready: AtomicBool,
    syncer: Option<tokio::task::JoinHandle<()>>,
    reload_lock: tokio::sync::Mutex<()>,
}

impl App {
    /// Opens the log, starts every sink, and returns the running app.
    pub async fn start(
        config: Config,
        config_path: Option<PathBuf>,
    ) -> Result<Arc<App>, StartError> {
        let runtime = Runtime::new(config.clone()).map_err(StartError::Setup)?;
        let data_dir = config.server.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|e| {
            StartError::Setup(vec![format!(
                "server.data_dir = {}: {e}",
                data_dir.display()
            )])
        })?;
        let delivery = &config.delivery;
        let durable = delivery.durability == Durability::Disk;
        let log = IngestLog::open(LogOptions {
            dir: durable.then(|| data_dir.join("log")),
            fsync_interval: Duration::from_millis(delivery.fsync_interval_ms),
            segment_bytes: delivery.segment_bytes,
            max_bytes: delivery.max_disk_bytes,
            retention: Duration::from_secs(delivery.retention_hours * 3600),
            cache_bytes: usize::try_from(delivery.cache_mb.saturating_mul(1024 * 1024))
                .unwrap_or(usize::MAX),
        })
        .map_err(|e| StartError::Setup(vec![e.to_string()]))?;
        let recovery = log.recovery().clone();
        tracing::info!(
            durable,
            segments = recovery.segments,
            records = recovery.records,
            torn_bytes = recovery.torn_bytes,
            head = log.head(),
            "ingest log opened"
        );
        let engine = Engine::new(
            log.clone(),
            config.rollout.seed.clone(),
            durable.then(|| data_dir.clone()),
            delivery.retention_hours,
        );
        engine.set_quarantine_sink(crate::plan_stage::quarantine_sink(&config));
        engine
            .apply(&config.sinks, &config.consent)
            .await
            .map_err(StartError::Setup)?;
        if config.sources.is_empty() {
            tracing::warn!("no [sources] configured: ingest is open to any client");
        }
        let syncer = switchyard_sinks::log::spawn_syncer(
            log.clone(),
            Duration::from_millis(delivery.fsync_interval_ms.max(1)),
        );
        let sessions =
            crate::sessions::Sessions::restore(&data_dir, Arc::new(crate::sessions::SystemClock));
        let app = Arc::new(App {
            runtime: RwLock::new(Arc::new(runtime)),
            log,
            engine,
            stats: IngestStats::default(),
            dedupe: crate::dedupe::Deduper::new(
                Duration::from_secs(config.delivery.dedupe_window_secs),
                config.delivery.dedupe_max_entries,
            ),
            suppressions: crate::privacy::Suppressions::open(&data_dir),
            config_path,
            data_dir,
            ready: AtomicBool::new(true),
            syncer,
            reload_lock: tokio::sync::Mutex::new(()),
            sessions,
        });
        crate::sessions::Sessions::spawn_sweeper(&app);
        Ok(app)
    }

    /// The config-derived state in force now.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the data dir is writable and the sinks started.
    pub fn readiness(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.ready.load(Ordering::Relaxed) {
            problems.push("shutting down".to_string());
        }
        let probe = self.data_dir.join(".ready-probe");
        if let Err(error) = std::fs::write(&probe, b"ok").and_then(|_| std::fs::remove_file(&probe))
        {
            problems.push(format!(
                "data dir {} is not writable: {error}",
                self.data_dir.display()
            ));
        }
        problems
    }

    /// Re-reads the config file and applies it. An invalid config changes nothing.
    pub async fn reload(&self) -> Result<ReloadReport, Vec<String>> {
        let _guard = self.reload_lock.lock().await;
        let Some(path) = &self.config_path else {
            return Err(vec![
                "running on the built-in config: there is no file to reload".into(),
            ]);
        };
        let config = switchyard_config::load_file(path)
            .map_err(|errors| errors.0.iter().map(ToString::to_string).collect::<Vec<_>>())?;
        self.apply_config(config).await
    }

    /// Applies a validated config: sinks first (all or nothing), then the request-path state.
    pub async fn apply_config(&self, config: Config) -> Result<ReloadReport, Vec<String>> {
        let current = self.runtime();
        let mut problems = Vec::new();
        for (key, old, new) in [(
            "server.listen",
            &current.config.server.listen,
            &config.server.listen,
        )] {
            if old != new {
                problems.push(format!("{key}: changing it needs a restart"));
            }
        }
        if current.config.server.data_dir != config.server.data_dir {
            problems.push("server.data_dir: changing it needs a restart".into());
        }
        if current.config.delivery != config.delivery {
            problems.push("delivery: changing it needs a restart".into());
        }
        if current.config.rollout != config.rollout {
            problems.push("rollout.seed: changing it needs a restart".into());
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let runtime = Runtime::new(config.clone())?;
        let previous = self
            .engine
            .set_quarantine_sink(crate::plan_stage::quarantine_sink(&config));
        let report = match self.engine.apply(&config.sinks, &config.consent).await {
            Ok(report) => report,
            Err(problems) => {
                self.engine.set_quarantine_sink(previous);
                return Err(problems);
            }
        };
        *self.runtime.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(runtime);
        tracing::info!(?report, "configuration reloaded");
        Ok(report)
    }

    /// Graceful stop of the delivery side: every sink flushes and persists its cursor, the log syncs.
    pub async fn shutdown(&self) {
        self.ready.store(false, Ordering::Relaxed);
        self.sessions.shutdown(self).await;
        let timeout = Duration::from_secs(self.runtime().config.server.shutdown_timeout_secs);
        self.engine.shutdown(timeout).await;
        if let Some(syncer) = &self.syncer {
            syncer.abort();
        }
        if let Err(error) = self.log.sync() {
            tracing::error!(%error, "final ingest log sync failed");
        }
    }

    /// Where runtime state lives.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}
