//! The tracking-plan stage of ingest (each event checked against the plan, then rejected, quarantined
//! or tagged per its source's modes), the routing markers every sink's stage reads (quarantined and
//! synthetic events), the replay of quarantined events (`POST /admin/quarantine/replay`), and the
//! `switchyard plan check|test|replay` commands.
//!
//! Markers, all in `context` and set only by Switchyard (removed from every incoming event):
//! - `violations`: the plan violations of a tagged or quarantined event.
//! - `quarantine`: `{"sink", "reason", "schema"}` on a quarantined event; it is delivered to that
//!   sink only, and the quarantine sink receives nothing else.
//! - `synthetic`: `true` on the `Session Started` / `Session Ended` events of server-side sessions.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, RwLock};

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use switchyard_config::{Config, OnViolation, UnknownEvents};
use switchyard_schemas::plan::{lookup_name, Checked, TrackingPlan, Violation};
use switchyard_schemas::segment::{InboundMessage, MessageDefaults};
use switchyard_schemas::{normalize_message, Event};

use crate::app::App;
use crate::http::{json_response, ApiError, Body};
use crate::ingest::Rejection;

/// `context.violations`: the violations of a tagged or quarantined event.
pub const VIOLATIONS_KEY: &str = "violations";
pub use switchyard_schemas::event::{QUARANTINE_KEY, SYNTHETIC_KEY};
/// Context keys only Switchyard sets; clients' values are removed at ingest.
pub const SERVER_CONTEXT_KEYS: [&str; 3] = [VIOLATIONS_KEY, QUARANTINE_KEY, SYNTHETIC_KEY];

/// Largest body of `POST /admin/quarantine/replay`.
const MAX_REPLAY_BODY: usize = 16 * 1024 * 1024;
/// `switchyard plan replay` sends at most this many bytes of events per request.
const REPLAY_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// Removes the server-owned context keys a client may have sent (they steer routing).
pub fn strip_server_keys(events: &mut [Event]) {
    for event in events {
        // One pass over the keys finds the rare event that has one: a removal per key searched the
        // map three times for every event (1.5% of ingest's instructions).
        let has_one = event
            .context
            .keys()
            .any(|key| SERVER_CONTEXT_KEYS.contains(&key.as_str()));
        if has_one {
            for key in SERVER_CONTEXT_KEYS {
                event.context.remove(key);
            }
        }
    }
}

/// Whether an event is a synthetic session event.
pub fn is_synthetic(event: &Event) -> bool {
    event.context.get(SYNTHETIC_KEY) == Some(&Value::Bool(true))
}

/// Whether an event carries the quarantine marker.
pub fn is_quarantined(event: &Event) -> bool {
    event.context.contains_key(QUARANTINE_KEY)
}

/// The quarantine sink in force, shared by every sink's stage (it changes on reload).
pub type QuarantineTarget = Arc<RwLock<Option<String>>>;

/// Whether sink `sink` must skip `event`: a quarantined event goes only to the sink its marker names;
/// the quarantine sink in force receives nothing but quarantined events; a synthetic event skips
/// sinks with `exclude_synthetic`. `may_be_marked`: false when the event's log record has no event
/// with routing marks ([`Event::has_routing_marks`]); its context is then not searched (a sink's
/// runner meets the event long after ingest, and the search touched memory no longer in cache).
pub fn skips(
    sink: &str,
    quarantine: &QuarantineTarget,
    exclude_synthetic: bool,
    event: &Event,
    may_be_marked: bool,
) -> bool {
    if may_be_marked {
        if let Some(marker) = event.context.get(QUARANTINE_KEY) {
            return marker.get("sink").and_then(Value::as_str) != Some(sink);
        }
        if exclude_synthetic && is_synthetic(event) {
            return true;
        }
    }
    quarantine
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .as_deref()
        == Some(sink)
}

/// The quarantine sink a config names (`[tracking_plan] quarantine_sink`).
pub fn quarantine_sink(config: &Config) -> Option<String> {
    config
        .tracking_plan
        .as_ref()
        .and_then(|plan| plan.quarantine_sink.clone())
}

/// The modes one source's events are checked with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Modes {
    pub enabled: bool,
    pub unknown_events: UnknownEvents,
    pub on_violation: OnViolation,
}

/// What the stage decided for one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Valid (or the source is not checked).
    Pass,
    /// Let through with these violations attached.
    Tag(Vec<Violation>),
    /// Routed only to the quarantine sink.
    Quarantine {
        reason: &'static str,
        schema: Option<String>,
        violations: Vec<Violation>,
    },
    /// Refused with this reason.
    Reject {
        code: &'static str,
        reason: String,
        violations: Vec<Violation>,
    },
}

/// The loaded plan and the modes of every source; rebuilt on every (re)load of the config.
pub struct PlanStage {
    plan: Arc<TrackingPlan>,
    default: Modes,
    per_source: HashMap<String, Modes>,
    quarantine_sink: Option<String>,
}

/// What the stage did to a request's events.
#[derive(Debug, Default)]
pub struct Applied {
    /// Quarantined events, marked; they skip de-duplication and sessions.
    pub quarantined: Vec<Event>,
    /// Events let through with `context.violations`.
    pub tagged: usize,
}

fn unknown_violation(name: &str) -> Violation {
    Violation {
        schema: String::new(),
        instance_path: String::new(),
        schema_path: String::new(),
        keyword: "unknown_event".into(),
        message: format!("`{name}` is not in the tracking plan"),
    }
}

impl PlanStage {
    /// Loads the plan of `[tracking_plan]`; None without the section.
    pub fn build(config: &Config) -> Result<Option<PlanStage>, Vec<String>> {
        let Some(settings) = &config.tracking_plan else {
            return Ok(None);
        };
        let plan = TrackingPlan::load(&settings.path).map_err(|errors| {
            errors
                .0
                .iter()
                .map(|problem| format!("tracking_plan.path: {problem}"))
                .collect::<Vec<_>>()
        })?;
        let default = Modes {
            enabled: true,
            unknown_events: settings.unknown_events,
            on_violation: settings.on_violation,
        };
        let per_source = config
            .sources
            .iter()
            .filter_map(|(name, source)| {
                let own = source.tracking_plan.as_ref()?;
                Some((
                    name.clone(),
                    Modes {
                        enabled: own.enabled,
                        unknown_events: own.unknown_events.unwrap_or(default.unknown_events),
                        on_violation: own.on_violation.unwrap_or(default.on_violation),
                    },
                ))
            })
            .collect();
        let events = plan.event_versions();
        tracing::info!(
            path = %settings.path.display(),
            events = events.len(),
            schemas = events.iter().map(|(_, v)| v.len()).sum::<usize>(),
            common = plan.has_common(),
            "tracking plan loaded"
        );
        Ok(Some(PlanStage {
            plan: Arc::new(plan),
            default,
            per_source,
            quarantine_sink: settings.quarantine_sink.clone(),
        }))
    }

    /// The plan in force.
    pub fn plan(&self) -> &TrackingPlan {
        &self.plan
    }

    /// The modes of a source.
    pub fn modes(&self, source: &str) -> Modes {
        self.per_source.get(source).copied().unwrap_or(self.default)
    }

    /// Checks one event and decides its fate by its source's modes (the event is lent to the
    /// validator and comes back unchanged).
    pub fn decide(&self, event: &mut Event) -> Decision {
        let modes = self.modes(&event.source);
        if !modes.enabled {
            return Decision::Pass;
        }
        let checked = self.plan.check_in_place(event);
        decide_checked(event, &checked, modes, self.quarantine_sink.is_some())
    }

    /// Runs the stage on a request's normalised events. Rejected events leave `events` (and their
    /// entry in `client_message_ids`) for `rejected`, by their index in the request; quarantined ones
    /// leave for [`Applied::quarantined`], marked; tagged ones stay with `context.violations`.
    pub fn apply(
        &self,
        events: &mut Vec<Event>,
        client_message_ids: &mut Vec<bool>,
        rejected: &mut Vec<Rejection>,
    ) -> Applied {
        let total = events.len() + rejected.len();
        let already: HashSet<usize> = rejected.iter().map(|r| r.index).collect();
        let mut indexes = (0..total).filter(|index| !already.contains(index));
        let mut applied = Applied::default();
        let mut kept = Vec::with_capacity(events.len());
        let mut kept_ids = Vec::with_capacity(events.len());
        let mut newly_rejected = false;
        let ids = std::mem::take(client_message_ids);
        let mut ids = ids.into_iter();
        for mut event in events.drain(..) {
            let index = indexes.next().unwrap_or(total);
            let client_id = ids.next().unwrap_or(false);
            match self.decide(&mut event) {
                Decision::Pass => {
                    kept.push(event);
                    kept_ids.push(client_id);
                }
                Decision::Tag(violations) => {
                    event
                        .context
                        .insert(VIOLATIONS_KEY.into(), json!(violations));
                    applied.tagged += 1;
                    kept.push(event);
                    kept_ids.push(client_id);
                }
                Decision::Quarantine {
                    reason,
                    schema,
                    violations,
                } => {
                    let sink = self.quarantine_sink.clone().unwrap_or_default();
                    event
                        .context
                        .insert(VIOLATIONS_KEY.into(), json!(violations));
                    event.context.insert(
                        QUARANTINE_KEY.into(),
                        json!({"sink": sink, "reason": reason, "schema": schema}),
                    );
                    applied.quarantined.push(event);
                }
                Decision::Reject {
                    code,
                    reason,
                    violations,
                } => {
                    newly_rejected = true;
                    rejected.push(Rejection {
                        index,
                        reason,
                        code,
                        violations,
                    });
                }
            }
        }
        *events = kept;
        *client_message_ids = kept_ids;
        if newly_rejected {
            rejected.sort_by_key(|r| r.index);
        }
        if applied.tagged > 0 || !applied.quarantined.is_empty() || newly_rejected {
            tracing::debug!(
                tagged = applied.tagged,
                quarantined = applied.quarantined.len(),
                "tracking plan violations"
            );
        }
        applied
    }
}

/// The decision for a checked event under `modes`. Without a quarantine sink, quarantine falls back to
/// reject (config validation makes that impossible; this keeps the stage total).
fn decide_checked(
    event: &Event,
    checked: &Checked,
    modes: Modes,
    has_quarantine: bool,
) -> Decision {
    let schema = checked
        .schema
        .as_ref()
        .map(|(name, version)| format!("{name} v{version}"));
    if checked.unknown {
        let name = lookup_name(event).unwrap_or_default().to_string();
        match modes.unknown_events {
            UnknownEvents::Allow => {}
            UnknownEvents::Reject => {
                return Decision::Reject {
                    code: "unknown_event",
                    reason: format!("tracking plan: unknown event `{name}`"),
                    violations: vec![unknown_violation(&name)],
                }
            }
            UnknownEvents::Quarantine if has_quarantine => {
                let mut violations = vec![unknown_violation(&name)];
                violations.extend(checked.violations.iter().cloned());
                return Decision::Quarantine {
                    reason: "unknown_event",
                    schema: None,
                    violations,
                };
            }
            UnknownEvents::Quarantine => {
                return Decision::Reject {
                    code: "unknown_event",
                    reason: format!(
                        "tracking plan: unknown event `{name}` (no quarantine sink configured)"
                    ),
                    violations: vec![unknown_violation(&name)],
                }
            }
        }
    }
    if checked.violations.is_empty() {
        return Decision::Pass;
    }
    let violations = checked.violations.clone();
    match modes.on_violation {
        OnViolation::Tag => Decision::Tag(violations),
        OnViolation::Quarantine if has_quarantine => Decision::Quarantine {
            reason: "violation",
            schema,
            violations,
        },
        OnViolation::Quarantine | OnViolation::Reject => Decision::Reject {
            code: "plan_violation",
            reason: format!("tracking plan: {}", checked.describe()),
            violations,
        },
    }
}

/// The body of `POST /admin/quarantine/replay`: events as the quarantine sink stored them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    events: Vec<Value>,
}

/// One event a replay did not append.
#[derive(Debug, Serialize)]
pub struct NotReplayed {
    /// Position in the request's `events`.
    pub index: usize,
    #[serde(rename = "messageId", skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    pub reason: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<Violation>,
}

/// The answer of `POST /admin/quarantine/replay`.
#[derive(Debug, Default, Serialize)]
pub struct ReplayOutcome {
    /// Events that now pass the plan (or are tagged) and were appended to the log.
    pub replayed: usize,
    /// Events still refused by the plan; they stay where they are (nothing is deleted).
    pub still_failing: Vec<NotReplayed>,
    /// Entries that are not quarantined events.
    pub invalid: Vec<NotReplayed>,
}

/// Turns replayed quarantine records into events for the log: each must be a canonical event with the
/// quarantine marker; the marker and violations are removed and the event is checked against the plan
/// in force (with its source's modes). Passing and tagged events are returned for appending.
pub fn prepare_replay(
    stage: Option<&PlanStage>,
    records: Vec<Value>,
) -> (Vec<Event>, ReplayOutcome) {
    let mut outcome = ReplayOutcome::default();
    let mut events = Vec::new();
    for (index, record) in records.into_iter().enumerate() {
        let message_id = record
            .get("messageId")
            .and_then(Value::as_str)
            .map(str::to_string);
        let mut event: Event = match serde_json::from_value(record) {
            Ok(event) => event,
            Err(error) => {
                outcome.invalid.push(NotReplayed {
                    index,
                    message_id,
                    reason: format!("not a stored event: {error}"),
                    violations: Vec::new(),
                });
                continue;
            }
        };
        if !is_quarantined(&event) {
            outcome.invalid.push(NotReplayed {
                index,
                message_id,
                reason: "not a quarantined event (no context.quarantine)".into(),
                violations: Vec::new(),
            });
            continue;
        }
        strip_server_keys(std::slice::from_mut(&mut event));
        let decision = stage.map_or(Decision::Pass, |stage| stage.decide(&mut event));
        match decision {
            Decision::Pass => events.push(event),
            Decision::Tag(violations) => {
                event
                    .context
                    .insert(VIOLATIONS_KEY.into(), json!(violations));
                events.push(event);
            }
            Decision::Quarantine { violations, .. } => outcome.still_failing.push(NotReplayed {
                index,
                message_id,
                reason: "still violates the tracking plan".into(),
                violations,
            }),
            Decision::Reject {
                reason, violations, ..
            } => outcome.still_failing.push(NotReplayed {
                index,
                message_id,
                reason,
                violations,
            }),
        }
    }
    outcome.replayed = events.len();
    (events, outcome)
}

/// `POST /admin/quarantine/replay` (admin token checked by the caller): re-checks quarantined events
/// against the plan in force and appends the ones that pass to the ingest log, so every sink (but the
/// quarantine sink) receives them. They keep their messageId, timestamps, source and receivedAt; the
/// global sanitizer chain already ran on them when they were quarantined and is not run again, and
/// they skip de-duplication and sessions.
pub async fn replay(app: Arc<App>, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let body = crate::body::read_limited(request.into_body(), MAX_REPLAY_BODY).await?;
    let parsed: ReplayRequest = serde_json::from_slice(&body).map_err(|error| {
        ApiError::bad_request(
            "invalid_body",
            format!("expected {{\"events\": [stored events...]}}: {error}"),
        )
    })?;
    let runtime = app.runtime();
    let (events, outcome) = prepare_replay(runtime.plan.as_deref(), parsed.events);
    if !events.is_empty() {
        crate::http::append_to_log(&app, events).await?;
    }
    tracing::info!(
        replayed = outcome.replayed,
        still_failing = outcome.still_failing.len(),
        invalid = outcome.invalid.len(),
        "quarantine replay"
    );
    Ok(json_response(StatusCode::OK, &outcome))
}

/// `switchyard plan ...`.
#[derive(Debug, clap::Subcommand)]
pub enum PlanAction {
    /// Load and compile every schema; list events and versions and the breaking changes between
    /// consecutive versions. Exit 1 on any problem (with --strict, also on a breaking change).
    Check {
        #[arg(long)]
        plan: PathBuf,
        /// Also fail when a version is a breaking change from the previous one.
        #[arg(long)]
        strict: bool,
    },
    /// Check NDJSON events from stdin against the plan: which pass, which fail and why.
    Test {
        #[arg(long)]
        plan: PathBuf,
        /// Events whose name is not in the plan count as passing.
        #[arg(long)]
        allow_unknown: bool,
        /// One JSON object per event instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Send quarantined events (a file, or a folder of *.ndjson such as the quarantine file sink's) to
    /// a running switchyard; those that now pass its plan are routed to every sink.
    Replay {
        #[arg(long)]
        from: PathBuf,
        #[command(flatten)]
        target: crate::admin_client::AdminTarget,
    },
}

/// Runs a `switchyard plan` command.
pub fn run_command(action: PlanAction) -> ExitCode {
    match action {
        PlanAction::Check { plan, strict } => {
            check_command(&plan, strict, &mut std::io::stdout().lock())
        }
        PlanAction::Test {
            plan,
            allow_unknown,
            json,
        } => test_command(
            &plan,
            allow_unknown,
            json,
            &mut std::io::stdin().lock(),
            &mut std::io::stdout().lock(),
        ),
        PlanAction::Replay { from, target } => replay_command(&from, &target),
    }
}

/// `switchyard plan check --plan DIR [--strict]`: 0 when the plan loads (and, with `strict`, has no
/// breaking change), 1 otherwise.
pub fn check_command(dir: &Path, strict: bool, out: &mut dyn Write) -> ExitCode {
    let plan = match TrackingPlan::load(dir) {
        Ok(plan) => plan,
        Err(errors) => {
            let _ = writeln!(out, "{errors}");
            return ExitCode::FAILURE;
        }
    };
    let events = plan.event_versions();
    let _ = writeln!(
        out,
        "{}: {} event{}{}",
        dir.display(),
        events.len(),
        if events.len() == 1 { "" } else { "s" },
        if plan.has_common() {
            ", with _common.json"
        } else {
            ""
        }
    );
    for (name, versions) in &events {
        let list: Vec<String> = versions.iter().map(|v| format!("v{v}")).collect();
        let _ = writeln!(out, "  {name}: {}", list.join(", "));
    }
    let breaking = plan.breaking_changes();
    if breaking.is_empty() {
        let _ = writeln!(out, "no breaking changes between versions");
        return ExitCode::SUCCESS;
    }
    let _ = writeln!(out, "breaking changes ({}):", breaking.len());
    for change in &breaking {
        let _ = writeln!(out, "  {change}");
    }
    if strict {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// One event's result in `switchyard plan test --json`.
#[derive(Debug, Serialize)]
struct TestLine {
    line: usize,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    schema: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    violations: Vec<Violation>,
}

/// `switchyard plan test --plan DIR < events.ndjson`: each line (a Segment-spec message, or a stored
/// event) is normalised like ingest does and checked against the plan; prints pass / fail / unknown
/// per line and a summary. Exit 0 when every event passes (unknown events pass with
/// `allow_unknown`), 1 otherwise, 2 when the plan does not load.
pub fn test_command(
    dir: &Path,
    allow_unknown: bool,
    as_json: bool,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> ExitCode {
    let plan = match TrackingPlan::load(dir) {
        Ok(plan) => plan,
        Err(errors) => {
            let _ = writeln!(out, "{errors}");
            return ExitCode::from(2);
        }
    };
    let received_at = chrono::Utc::now();
    let defaults = MessageDefaults {
        implied_type: None,
        received_at,
        batch_sent_at: None,
        batch_context: None,
        source: "plan-test",
        request_id: "",
        ip: None,
        user_agent: None,
    };
    let (mut passed, mut failed, mut unknown) = (0usize, 0usize, 0usize);
    let mut line_number = 0;
    let mut text = String::new();
    loop {
        text.clear();
        match input.read_line(&mut text) {
            Ok(0) => break,
            Ok(_) => {}
            Err(error) => {
                let _ = writeln!(out, "cannot read the input: {error}");
                return ExitCode::from(2);
            }
        }
        line_number += 1;
        let trimmed = text.trim();
        if trimmed.is_empty() {
            continue;
        }
        let normalized =
            InboundMessage::from_json(trimmed).and_then(|m| normalize_message(m, &defaults));
        let result = match normalized {
            Err(error) => TestLine {
                line: line_number,
                status: "fail",
                schema: None,
                reason: Some(format!("not a valid event: {error}")),
                violations: Vec::new(),
            },
            Ok(mut event) => {
                strip_server_keys(std::slice::from_mut(&mut event));
                let checked = plan.check(&event);
                let schema = checked
                    .schema
                    .as_ref()
                    .map(|(name, version)| format!("{name} v{version}"));
                let status = if !checked.violations.is_empty() {
                    "fail"
                } else if checked.unknown {
                    "unknown"
                } else {
                    "pass"
                };
                let reason = if checked.unknown {
                    Some(format!(
                        "`{}` is not in the tracking plan",
                        lookup_name(&event).unwrap_or_default()
                    ))
                } else {
                    None
                };
                TestLine {
                    line: line_number,
                    status,
                    schema,
                    reason,
                    violations: checked.violations,
                }
            }
        };
        match result.status {
            "pass" => passed += 1,
            "unknown" => unknown += 1,
            _ => failed += 1,
        }
        if as_json {
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string(&result).unwrap_or_default()
            );
        } else {
            let mut line = format!("line {}: {}", result.line, result.status);
            if let Some(schema) = &result.schema {
                line.push_str(&format!(" [{schema}]"));
            }
            if let Some(reason) = &result.reason {
                line.push_str(&format!(": {reason}"));
            }
            let _ = writeln!(out, "{line}");
            for violation in &result.violations {
                let _ = writeln!(out, "    {violation}");
            }
        }
    }
    let _ = writeln!(
        out,
        "plan test: {passed} pass, {failed} fail, {unknown} unknown (of {} events)",
        passed + failed + unknown
    );
    if failed > 0 || (unknown > 0 && !allow_unknown) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The NDJSON files to replay: `path` itself, or every `*.ndjson` in it (sorted).
pub fn replay_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "ndjson"))
        .collect();
    files.sort();
    Ok(files)
}

/// Reads stored events from NDJSON files and groups them into request bodies of at most
/// [`REPLAY_CHUNK_BYTES`]. Lines that are not JSON are an error naming the file and line.
pub fn replay_chunks(files: &[PathBuf]) -> Result<Vec<Vec<Value>>, String> {
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for file in files {
        let text = std::fs::read_to_string(file)
            .map_err(|error| format!("{}: {error}", file.display()))?;
        for (number, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(line)
                .map_err(|error| format!("{}:{}: {error}", file.display(), number + 1))?;
            if size + line.len() > REPLAY_CHUNK_BYTES && !current.is_empty() {
                chunks.push(std::mem::take(&mut current));
                size = 0;
            }
            size += line.len();
            current.push(value);
        }
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    Ok(chunks)
}

/// `switchyard plan replay --from PATH`: sends the quarantined events in PATH (a file, or a folder of
/// `*.ndjson` such as the quarantine file sink's) to the running switchyard, which appends those that
/// now pass. Prints the totals and every event still failing; exit 1 when any still fails.
pub fn replay_command(from: &Path, target: &crate::admin_client::AdminTarget) -> ExitCode {
    let chunks = match replay_files(from)
        .map_err(|error| format!("{}: {error}", from.display()))
        .and_then(|files| replay_chunks(&files))
    {
        Ok(chunks) => chunks,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let (mut replayed, mut failing, mut invalid) = (0u64, 0u64, 0u64);
    for chunk in chunks {
        let answer = runtime.block_on(crate::admin_client::call(
            target,
            reqwest::Method::POST,
            "/admin/quarantine/replay",
            Some(json!({"events": chunk})),
        ));
        let answer = match answer {
            Ok(answer) => answer,
            Err(error) => {
                eprintln!("{error}");
                eprintln!("replayed so far: {replayed}");
                return ExitCode::FAILURE;
            }
        };
        replayed += answer["replayed"].as_u64().unwrap_or(0);
        for (kind, counter) in [("still_failing", &mut failing), ("invalid", &mut invalid)] {
            for entry in answer[kind].as_array().into_iter().flatten() {
                *counter += 1;
                println!(
                    "{kind}: {} {}",
                    entry["messageId"].as_str().unwrap_or("-"),
                    entry["reason"].as_str().unwrap_or_default()
                );
                for violation in entry["violations"].as_array().into_iter().flatten() {
                    println!(
                        "    {}: {} ({}#{})",
                        violation["instance_path"].as_str().unwrap_or_default(),
                        violation["message"].as_str().unwrap_or_default(),
                        violation["schema"].as_str().unwrap_or_default(),
                        violation["schema_path"].as_str().unwrap_or_default()
                    );
                }
            }
        }
    }
    println!("replayed {replayed}, still failing {failing}, invalid {invalid}");
    if failing > 0 || invalid > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests;
