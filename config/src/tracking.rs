//! Validation of `[tracking_plan]` (the plan must load, the quarantine sink must exist and be able to
//! keep everything) and of `[sessions]`.

use switchyard_schemas::plan::TrackingPlan;
use switchyard_sinks::settings::RolloutMode;

use crate::model::{Config, OnViolation, UnknownEvents};
use crate::ConfigProblem;

/// Longest session timeout accepted: a week.
const MAX_TIMEOUT_MINUTES: u64 = 7 * 24 * 60;

/// Problems with `[tracking_plan]`, the sources' `tracking_plan` overrides, and `[sessions]`.
pub(crate) fn validate(config: &Config) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    let mut push = |path: &str, message: String| {
        problems.push(ConfigProblem {
            path: path.to_string(),
            message,
        })
    };
    match &config.tracking_plan {
        None => {
            for (name, source) in &config.sources {
                if source.tracking_plan.is_some() {
                    push(
                        &format!("sources.{name}.tracking_plan"),
                        "there is no [tracking_plan] section to override".into(),
                    );
                }
            }
        }
        Some(plan) => {
            if plan.path.as_os_str().is_empty() {
                push("tracking_plan.path", "must not be empty".into());
            } else if let Err(errors) = TrackingPlan::load(&plan.path) {
                for problem in errors.0 {
                    push("tracking_plan.path", problem.to_string());
                }
            }
            let quarantines = |unknown: UnknownEvents, violation: OnViolation| {
                unknown == UnknownEvents::Quarantine || violation == OnViolation::Quarantine
            };
            let mut users = Vec::new();
            if quarantines(plan.unknown_events, plan.on_violation) {
                users.push("tracking_plan".to_string());
            }
            for (name, source) in &config.sources {
                if let Some(own) = &source.tracking_plan {
                    let unknown = own.unknown_events.unwrap_or(plan.unknown_events);
                    let violation = own.on_violation.unwrap_or(plan.on_violation);
                    if own.enabled && quarantines(unknown, violation) {
                        users.push(format!("sources.{name}.tracking_plan"));
                    }
                }
            }
            match &plan.quarantine_sink {
                None if !users.is_empty() => push(
                    "tracking_plan.quarantine_sink",
                    format!(
                        "required: {} quarantine events; name the sink that keeps them",
                        users.join(", ")
                    ),
                ),
                None => {}
                Some(sink) => match config.sinks.get(sink) {
                    None => push(
                        "tracking_plan.quarantine_sink",
                        format!("no sink named `{sink}` in [sinks]"),
                    ),
                    Some(settings) => {
                        let rollout = &settings.common.rollout;
                        if rollout.basis_points() != 10_000 || rollout.mode != RolloutMode::Live {
                            push(
                                "tracking_plan.quarantine_sink",
                                format!(
                                    "sink `{sink}` must take 100% live (quarantined events exist nowhere else)"
                                ),
                            );
                        }
                        if settings.common.consent.is_some() {
                            push(
                                "tracking_plan.quarantine_sink",
                                format!(
                                    "sink `{sink}` must not have a consent category (events it refused would be lost)"
                                ),
                            );
                        }
                    }
                },
            }
        }
    }
    let sessions = &config.sessions;
    if sessions.timeout_minutes == 0 || sessions.timeout_minutes > MAX_TIMEOUT_MINUTES {
        push(
            "sessions.timeout_minutes",
            format!("must be between 1 and {MAX_TIMEOUT_MINUTES} (a week)"),
        );
    }
    if sessions.max_sessions == 0 {
        push("sessions.max_sessions", "must be > 0".into());
    }
    if sessions.persist_interval_secs == 0 {
        push("sessions.persist_interval_secs", "must be > 0".into());
    }
    problems
}

#[cfg(test)]
mod tests {
    use crate::{parse, OnViolation, SessionKey, UnknownEvents};

    fn plan_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("Signed Up")).unwrap();
        std::fs::write(
            dir.path().join("Signed Up/v1.json"),
            r#"{"type": "object"}"#,
        )
        .unwrap();
        dir
    }

    fn problems(text: &str) -> Vec<String> {
        match parse(text, &|_| None) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
        }
    }

    const SINKS: &str = r#"
[sinks.main]
type = "file"
path = "/tmp/main"

[sinks.quarantine]
type = "file"
path = "/tmp/quarantine"
"#;

    #[test]
    fn tracking_plan_and_sessions_parse() {
        let dir = plan_dir();
        let text = format!(
            r#"
[tracking_plan]
path = "{}"
unknown_events = "quarantine"
on_violation = "reject"
quarantine_sink = "quarantine"

[sources.web]
write_keys = ["k1"]
tracking_plan = {{ on_violation = "tag" }}

[sessions]
enabled = true
timeout_minutes = 45
key = "anonymous_id"
{SINKS}"#,
            dir.path().display()
        );
        let config = parse(&text, &|_| None).unwrap();
        let plan = config.tracking_plan.as_ref().unwrap();
        assert_eq!(plan.unknown_events, UnknownEvents::Quarantine);
        assert_eq!(plan.on_violation, OnViolation::Reject);
        let own = config.sources["web"].tracking_plan.as_ref().unwrap();
        assert_eq!(own.on_violation, Some(OnViolation::Tag));
        assert!(own.enabled);
        assert!(config.sessions.enabled);
        assert_eq!(config.sessions.timeout_minutes, 45);
        assert_eq!(config.sessions.key, SessionKey::AnonymousId);
    }

    #[test]
    fn problems_name_their_paths() {
        let dir = plan_dir();
        std::fs::write(dir.path().join("Signed Up/v2.json"), r#"{"type": 5}"#).unwrap();
        let found = problems(&format!(
            r#"
[tracking_plan]
path = "{}"
on_violation = "quarantine"
colour = "red"
"#,
            dir.path().display()
        ));
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("tracking_plan.colour: unknown field")),
            "{found:?}"
        );
        let found = problems(&format!(
            r#"
[tracking_plan]
path = "{}"
on_violation = "quarantine"

[sessions]
timeout_minutes = 0
max_sessions = 0
{SINKS}"#,
            dir.path().display()
        ));
        let expected = [
            "tracking_plan.path: ",
            "tracking_plan.quarantine_sink: required: tracking_plan quarantine events",
            "sessions.timeout_minutes: must be between 1",
            "sessions.max_sessions: must be > 0",
        ];
        for prefix in expected {
            assert!(
                found.iter().any(|p| p.starts_with(prefix)),
                "{prefix} in {found:?}"
            );
        }
        let compile = found
            .iter()
            .find(|p| p.starts_with("tracking_plan.path: "))
            .unwrap();
        assert!(
            compile.contains("Signed Up/v2.json: does not compile"),
            "{compile}"
        );
    }

    #[test]
    fn the_quarantine_sink_must_exist_and_keep_everything() {
        let dir = plan_dir();
        let found = problems(&format!(
            r#"
[tracking_plan]
path = "{}"
quarantine_sink = "nowhere"

[sources.ios]
write_keys = ["k"]
tracking_plan = {{ unknown_events = "quarantine" }}
{SINKS}"#,
            dir.path().display()
        ));
        assert_eq!(
            found,
            vec!["tracking_plan.quarantine_sink: no sink named `nowhere` in [sinks]"]
        );
        let found = problems(&format!(
            r#"
[tracking_plan]
path = "{}"
quarantine_sink = "quarantine"
{SINKS}
[sinks.quarantine.rollout]
percent = 50
"#,
            dir.path().display()
        ));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("must take 100% live"), "{found:?}");
        let found = problems(&format!(
            "[tracking_plan]\npath = \"{}/missing\"\n",
            dir.path().display()
        ));
        assert!(
            found[0].contains("cannot read the plan folder"),
            "{found:?}"
        );
        let found =
            problems("[sources.web]\nwrite_keys = [\"k\"]\ntracking_plan = { enabled = false }\n");
        assert_eq!(
            found,
            vec!["sources.web.tracking_plan: there is no [tracking_plan] section to override"]
        );
        let found = problems("[trackingplan]\npath = \"x\"\n");
        assert!(found[0].contains("tracking_plan, sessions"), "{found:?}");
    }
}
