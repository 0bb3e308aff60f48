//! Server-side sessions: every event with a person id gets `context.session = {id, started_at,
//! sequence}`; a session ends after `[sessions] timeout_minutes` without events, and synthetic
//! `Session Started` / `Session Ended` track events (`context.synthetic = true`) are routed like any
//! other event. Open sessions are bounded in number, swept when expired, and kept in
//! `<data_dir>/sessions.json` across restarts. See docs/sessions.md.
//!
//! Time: an event's activity time is its (skew-corrected) `timestamp`, never later than its
//! `receivedAt`. A new session starts when an event comes more than the timeout after the session's
//! last activity; out-of-order events join the open session. The sweeper ends sessions idle for the
//! timeout plus [`SWEEP_GRACE`] by the [`Clock`] (wall clock in production, tokio's clock in tests).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use switchyard_config::{SessionKey, SessionsConfig};
use switchyard_schemas::time::{format_timestamp, serde_millis};
use switchyard_schemas::{Event, EventType, JsonMap};

use crate::app::App;
use crate::plan_stage::{is_quarantined, is_synthetic, SYNTHETIC_KEY};

/// `context.session`.
pub const SESSION_CONTEXT_KEY: &str = "session";
/// A client's own session id in `context`.
pub const CLIENT_SESSION_CONTEXT_KEY: &str = "session_id";
/// A client's own session id in `properties` (PostHog).
pub const CLIENT_SESSION_PROPERTY: &str = "$session_id";
/// Name of the synthetic event that opens a session.
pub const SESSION_STARTED: &str = "Session Started";
/// Name of the synthetic event that closes a session.
pub const SESSION_ENDED: &str = "Session Ended";
/// How often the sweeper looks for expired sessions.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(5);
/// Extra idle time before the sweeper ends a session, so events delayed in transit still join it.
pub const SWEEP_GRACE: chrono::TimeDelta = chrono::TimeDelta::seconds(60);
/// The state file in the data dir.
pub const STATE_FILE: &str = "sessions.json";

/// Where "now" comes from for the sweeper.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that follows tokio's clock (which tests can pause and advance) from a fixed wall time.
pub struct TokioClock {
    wall: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn new(wall: DateTime<Utc>) -> TokioClock {
        TokioClock {
            wall,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now().duration_since(self.start);
        self.wall + chrono::TimeDelta::from_std(elapsed).unwrap_or(chrono::TimeDelta::zero())
    }
}

/// One open session (about 400 bytes in memory with 36-character ids, map overhead included).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenSession {
    pub id: String,
    #[serde(with = "serde_millis")]
    pub started_at: DateTime<Utc>,
    #[serde(with = "serde_millis")]
    pub last_at: DateTime<Utc>,
    /// Events so far (the last one's `sequence`).
    pub sequence: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_id: Option<String>,
    pub source: String,
}

/// The session settings in force (from `[sessions]`, re-read on every call so reloads apply).
#[derive(Debug, Clone, Copy)]
pub struct SessionSettings {
    pub timeout: chrono::TimeDelta,
    pub key: SessionKey,
    pub emit_events: bool,
    pub max_sessions: usize,
}

impl From<&SessionsConfig> for SessionSettings {
    fn from(config: &SessionsConfig) -> Self {
        SessionSettings {
            timeout: chrono::TimeDelta::minutes(
                i64::try_from(config.timeout_minutes).unwrap_or(30),
            ),
            key: config.key,
            emit_events: config.emit_events,
            max_sessions: config.max_sessions.max(1),
        }
    }
}

/// The open sessions by key; pure logic, time passed in.
#[derive(Debug, Default)]
pub struct SessionTracker {
    open: HashMap<String, OpenSession>,
}

fn session_key(event: &Event, key: SessionKey) -> Option<&str> {
    match key {
        SessionKey::User => event.user_id.as_deref().or(event.anonymous_id.as_deref()),
        SessionKey::AnonymousId => event.anonymous_id.as_deref().or(event.user_id.as_deref()),
    }
}

fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) if !text.is_empty() => Some(text.chars().take(128).collect()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// The client's own session id: `context.session_id`, else PostHog's `properties.$session_id`.
pub fn client_session_id(event: &Event) -> Option<String> {
    event
        .context
        .get(CLIENT_SESSION_CONTEXT_KEY)
        .and_then(id_text)
        .or_else(|| {
            event
                .properties
                .get(CLIENT_SESSION_PROPERTY)
                .and_then(id_text)
        })
}

fn session_context(session: &OpenSession, sequence: u64) -> Value {
    json!({
        "id": session.id,
        "started_at": format_timestamp(&session.started_at),
        "sequence": sequence,
    })
}

/// A synthetic track event about `session`; its messageId is derived from the session, so a re-emission
/// has the same id (destinations de-duplicate by messageId).
fn synthetic_event(
    session: &OpenSession,
    name: &str,
    timestamp: DateTime<Utc>,
    sequence: u64,
    properties: JsonMap,
    received_at: DateTime<Utc>,
    request_id: &str,
) -> Event {
    let seed = format!(
        "switchyard:session/{}/{}/{name}",
        session.id,
        session.started_at.timestamp_millis()
    );
    let mut context = JsonMap::new();
    context.insert(
        SESSION_CONTEXT_KEY.into(),
        session_context(session, sequence),
    );
    context.insert(SYNTHETIC_KEY.into(), Value::Bool(true));
    context.insert(
        "library".into(),
        json!({"name": "switchyard", "version": env!("CARGO_PKG_VERSION")}),
    );
    Event {
        kind: EventType::Track,
        message_id: uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, seed.as_bytes()).to_string(),
        event: Some(name.to_string()),
        name: None,
        user_id: session.user_id.clone(),
        anonymous_id: session.anonymous_id.clone(),
        group_id: None,
        previous_id: None,
        timestamp,
        original_timestamp: None,
        sent_at: None,
        received_at,
        properties,
        traits: JsonMap::new(),
        context,
        integrations: JsonMap::new(),
        source: session.source.clone(),
        request_id: request_id.to_string(),
        ip: None,
        user_agent: None,
    }
}

fn started_event(session: &OpenSession, received_at: DateTime<Utc>, request_id: &str) -> Event {
    let mut properties = JsonMap::new();
    properties.insert("session_id".into(), json!(session.id));
    properties.insert(
        "started_at".into(),
        json!(format_timestamp(&session.started_at)),
    );
    synthetic_event(
        session,
        SESSION_STARTED,
        session.started_at,
        0,
        properties,
        received_at,
        request_id,
    )
}

/// `Session Ended` with the session's duration (first to last activity) and event count.
fn ended_event(
    session: &OpenSession,
    reason: &str,
    received_at: DateTime<Utc>,
    request_id: &str,
) -> Event {
    let duration_ms = (session.last_at - session.started_at)
        .num_milliseconds()
        .max(0);
    let mut properties = JsonMap::new();
    properties.insert("session_id".into(), json!(session.id));
    properties.insert(
        "started_at".into(),
        json!(format_timestamp(&session.started_at)),
    );
    properties.insert("ended_at".into(), json!(format_timestamp(&session.last_at)));
    properties.insert("duration_ms".into(), json!(duration_ms));
    properties.insert(
        "duration_seconds".into(),
        json!(duration_ms as f64 / 1000.0),
    );
    properties.insert("events".into(), json!(session.sequence));
    properties.insert("reason".into(), json!(reason));
    synthetic_event(
        session,
        SESSION_ENDED,
        session.last_at,
        session.sequence + 1,
        properties,
        received_at,
        request_id,
    )
}

impl SessionTracker {
    /// Open sessions.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// The open session of a key.
    pub fn get(&self, key: &str) -> Option<&OpenSession> {
        self.open.get(key)
    }

    /// Assigns `event` to its session (ending the previous one and starting a new one when the
    /// timeout passed or the client's session id changed) and sets `context.session`. Synthetic
    /// events to route before `event` are pushed to `out`.
    pub fn observe(
        &mut self,
        event: &mut Event,
        settings: &SessionSettings,
        received_at: DateTime<Utc>,
        request_id: &str,
        out: &mut Vec<Event>,
    ) {
        let Some(key) = session_key(event, settings.key).map(str::to_string) else {
            return;
        };
        let at = event.timestamp.min(event.received_at);
        let client_id = client_session_id(event);
        if settings.key == SessionKey::User && !self.open.contains_key(&key) {
            // A login: the anonymous session carries on under the user id.
            if let (Some(_), Some(anonymous)) = (&event.user_id, &event.anonymous_id) {
                if let Some(session) = self.open.remove(anonymous.as_str()) {
                    self.open.insert(key.clone(), session);
                }
            }
        }
        let (continues, reason) = match self.open.get(&key) {
            None => (false, "timeout"),
            Some(open) => {
                let within = at <= open.last_at + settings.timeout;
                match &client_id {
                    Some(id) if *id == open.id => (true, "timeout"),
                    Some(_) => (false, if within { "new_session" } else { "timeout" }),
                    None => (within, "timeout"),
                }
            }
        };
        if !continues {
            if let Some(old) = self.open.remove(&key) {
                if settings.emit_events {
                    out.push(ended_event(&old, reason, received_at, request_id));
                }
            }
            while self.open.len() >= settings.max_sessions {
                self.evict(settings, received_at, request_id, out);
            }
            let session = OpenSession {
                id: client_id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
                started_at: at,
                last_at: at,
                sequence: 0,
                user_id: event.user_id.clone(),
                anonymous_id: event.anonymous_id.clone(),
                source: event.source.clone(),
            };
            if settings.emit_events {
                out.push(started_event(&session, received_at, request_id));
            }
            self.open.insert(key.clone(), session);
        }
        let Some(open) = self.open.get_mut(&key) else {
            return;
        };
        open.sequence += 1;
        if at > open.last_at {
            open.last_at = at;
        }
        if event.user_id.is_some() {
            open.user_id.clone_from(&event.user_id);
        }
        if event.anonymous_id.is_some() {
            open.anonymous_id.clone_from(&event.anonymous_id);
        }
        event.context.insert(
            SESSION_CONTEXT_KEY.into(),
            session_context(open, open.sequence),
        );
    }

    /// Ends the least recently active 1% (at least one) of the sessions, to make room.
    fn evict(
        &mut self,
        settings: &SessionSettings,
        received_at: DateTime<Utc>,
        request_id: &str,
        out: &mut Vec<Event>,
    ) {
        let count = (settings.max_sessions / 100).clamp(1, self.open.len().max(1));
        let mut by_age: Vec<(DateTime<Utc>, &String)> = self
            .open
            .iter()
            .map(|(key, session)| (session.last_at, key))
            .collect();
        if by_age.is_empty() {
            return;
        }
        let count = count.min(by_age.len());
        by_age.select_nth_unstable(count - 1);
        let oldest: Vec<String> = by_age[..count]
            .iter()
            .map(|(_, key)| (*key).clone())
            .collect();
        for key in oldest {
            if let Some(session) = self.open.remove(&key) {
                if settings.emit_events {
                    out.push(ended_event(&session, "evicted", received_at, request_id));
                }
            }
        }
        tracing::warn!(
            evicted = count,
            max_sessions = settings.max_sessions,
            "sessions.max_sessions reached: the least recently active sessions were ended early"
        );
    }

    /// Ends (and forgets) every session idle for longer than the timeout plus [`SWEEP_GRACE`] at `now`;
    /// returns their `Session Ended` events (none with `emit_events = false`).
    pub fn sweep(&mut self, settings: &SessionSettings, now: DateTime<Utc>) -> Vec<Event> {
        let limit = settings.timeout + SWEEP_GRACE;
        let expired: Vec<String> = self
            .open
            .iter()
            .filter(|(_, session)| now - session.last_at > limit)
            .map(|(key, _)| key.clone())
            .collect();
        let mut ended = Vec::new();
        for key in expired {
            if let Some(session) = self.open.remove(&key) {
                if settings.emit_events {
                    ended.push(ended_event(&session, "timeout", now, ""));
                }
            }
        }
        ended
    }
}

/// The persisted form of the open sessions.
#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    #[serde(with = "serde_millis")]
    saved_at: DateTime<Utc>,
    sessions: HashMap<String, OpenSession>,
}

/// Most synthetic events kept while the log refuses them (a full log); more are dropped, counted.
const MAX_PENDING: usize = 100_000;

/// The sessions of a running switchyard: the tracker behind a lock, the clock, the state file, and
/// synthetic events waiting for the log.
pub struct Sessions {
    tracker: Mutex<SessionTracker>,
    clock: Arc<dyn Clock>,
    path: PathBuf,
    pending: Mutex<Vec<Event>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Held across a save: saves run one at a time (they share the temporary file).
    persisting: Mutex<()>,
}

impl Sessions {
    /// Restores the sessions saved in `data_dir` (none when the file is missing or unreadable).
    pub fn restore(data_dir: &Path, clock: Arc<dyn Clock>) -> Sessions {
        let path = data_dir.join(STATE_FILE);
        let open = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<StateFile>(&bytes) {
                Ok(state) => {
                    tracing::info!(
                        sessions = state.sessions.len(),
                        saved_at = %format_timestamp(&state.saved_at),
                        "open sessions restored"
                    );
                    state.sessions
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "cannot read the saved sessions: starting without");
                    HashMap::new()
                }
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot read the saved sessions: starting without");
                HashMap::new()
            }
        };
        Sessions {
            tracker: Mutex::new(SessionTracker { open }),
            clock,
            path,
            pending: Mutex::new(Vec::new()),
            task: Mutex::new(None),
            persisting: Mutex::new(()),
        }
    }

    fn tracker(&self) -> std::sync::MutexGuard<'_, SessionTracker> {
        self.tracker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Open sessions now.
    pub fn open_count(&self) -> usize {
        self.tracker().len()
    }

    /// A copy of one key's open session.
    pub fn get(&self, key: &str) -> Option<OpenSession> {
        self.tracker().get(key).cloned()
    }

    /// Assigns sessions to a request's events (quarantined and synthetic ones are left alone) and
    /// inserts the synthetic events before the events that caused them. Returns how many were added.
    pub fn assign(
        &self,
        config: &SessionsConfig,
        events: &mut Vec<Event>,
        received_at: DateTime<Utc>,
        request_id: &str,
    ) -> usize {
        let settings = SessionSettings::from(config);
        let mut output = Vec::with_capacity(events.len() + 2);
        let mut added = 0;
        let mut tracker = self.tracker();
        for mut event in events.drain(..) {
            if !is_quarantined(&event) && !is_synthetic(&event) {
                let before = output.len();
                tracker.observe(&mut event, &settings, received_at, request_id, &mut output);
                added += output.len() - before;
            }
            output.push(event);
        }
        drop(tracker);
        *events = output;
        added
    }

    /// Ends expired sessions by the clock; returns their `Session Ended` events.
    pub fn sweep(&self, config: &SessionsConfig) -> Vec<Event> {
        let now = self.clock.now();
        self.tracker().sweep(&SessionSettings::from(config), now)
    }

    /// Whether there is anything to save: sessions are on, some are open, or an older file would
    /// otherwise stay behind.
    fn has_state(&self, enabled: bool) -> bool {
        enabled || self.open_count() > 0 || self.path.exists()
    }

    /// Writes the open sessions to `<data_dir>/sessions.json` (temp file + rename); returns how many.
    pub fn persist(&self) -> std::io::Result<usize> {
        let _one_at_a_time = self.persisting.lock().unwrap_or_else(|p| p.into_inner());
        let sessions = self.tracker().open.clone();
        let count = sessions.len();
        let state = StateFile {
            version: 1,
            saved_at: self.clock.now(),
            sessions,
        };
        let temporary = self.path.with_extension("json.tmp");
        std::fs::write(&temporary, serde_json::to_vec(&state)?)?;
        std::fs::rename(&temporary, &self.path)?;
        Ok(count)
    }

    /// Appends synthetic events (and any left over from before) to the ingest log; what the log
    /// refuses is kept for the next try, up to [`MAX_PENDING`].
    async fn append(&self, app: &App, events: Vec<Event>) {
        let mut batch =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        batch.extend(events);
        if batch.is_empty() {
            return;
        }
        let log = app.log.clone();
        let copy = batch.clone();
        let appended = tokio::task::spawn_blocking(move || log.append(copy)).await;
        let error = match appended {
            Ok(Ok(_)) => return,
            Ok(Err(error)) => error.to_string(),
            Err(error) => error.to_string(),
        };
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let dropped = batch.len().saturating_sub(MAX_PENDING);
        batch.truncate(MAX_PENDING);
        *pending = batch;
        tracing::warn!(%error, kept = pending.len(), dropped, "synthetic session events not appended yet");
    }

    /// Starts the sweeper: every [`SWEEP_INTERVAL`] it ends expired sessions (appending their
    /// `Session Ended` events to the log), and every `persist_interval_secs` it saves the open ones.
    pub fn spawn_sweeper(app: &Arc<App>) {
        let weak: Weak<App> = Arc::downgrade(app);
        let handle = tokio::spawn(async move {
            let mut last_persist = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(SWEEP_INTERVAL).await;
                let Some(app) = weak.upgrade() else {
                    break;
                };
                let runtime = app.runtime();
                let config = &runtime.config.sessions;
                let ended = app.sessions.sweep(config);
                if !ended.is_empty() {
                    tracing::debug!(ended = ended.len(), "sessions ended by inactivity");
                }
                app.sessions.append(&app, ended).await;
                let interval = Duration::from_secs(config.persist_interval_secs.max(1));
                if last_persist.elapsed() >= interval && app.sessions.has_state(config.enabled) {
                    last_persist = tokio::time::Instant::now();
                    // On the blocking pool: up to `max_sessions` to encode and a file's write and
                    // rename, on a thread that also serves ingest requests.
                    let saver = app.clone();
                    match tokio::task::spawn_blocking(move || saver.sessions.persist()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => tracing::error!(%error, "cannot save the open sessions"),
                        Err(error) => tracing::error!(%error, "saving the open sessions failed"),
                    }
                }
            }
        });
        *app.sessions.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
    }

    /// Stops the sweeper, appends what is pending, and saves the open sessions (they stay open: a
    /// restart within the timeout continues them).
    pub async fn shutdown(&self, app: &App) {
        if let Some(task) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
        self.append(app, Vec::new()).await;
        if !self.has_state(app.runtime().config.sessions.enabled) {
            return;
        }
        match self.persist() {
            Ok(count) => tracing::info!(sessions = count, "open sessions saved"),
            Err(error) => tracing::error!(%error, "cannot save the open sessions"),
        }
    }
}

#[cfg(test)]
mod tests;
