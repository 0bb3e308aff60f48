//! `switchyard sanitize`: a dry run of the sanitizer chains. Reads canonical or Segment-spec events as
//! NDJSON, applies the global chain and (with `--sink`) that sink's consent category and chain, and
//! writes exactly what the sink would receive; a summary of what was masked or dropped goes to stderr.

use std::io::{BufRead, Write};

use switchyard_config::Config;
use switchyard_sanitizers::{Chain, SanitizeReport, Verdict};
use switchyard_schemas::segment::{InboundMessage, MessageDefaults};
use switchyard_schemas::{normalize_message, Event};

/// What a dry run saw.
#[derive(Debug, Default)]
pub struct DryRunSummary {
    pub read: u64,
    pub written: u64,
    pub invalid: u64,
    pub dropped_consent: u64,
    pub report: SanitizeReport,
}

/// A dry run could not start.
#[derive(Debug, thiserror::Error)]
pub enum DryRunError {
    #[error("no sink named `{0}` in the config")]
    UnknownSink(String),
    #[error("{0}")]
    Chain(String),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Parses a line as a canonical event, or as a Segment-spec message normalised as ingest would.
fn parse_line(line: &str) -> Result<Event, String> {
    if let Ok(event) = serde_json::from_str::<Event>(line) {
        return Ok(event);
    }
    let message = InboundMessage::from_json(line).map_err(|e| e.to_string())?;
    let defaults = MessageDefaults {
        implied_type: None,
        received_at: chrono::Utc::now(),
        batch_sent_at: None,
        batch_context: None,
        source: "dry-run",
        request_id: "dry-run",
        ip: None,
        user_agent: None,
    };
    normalize_message(message, &defaults).map_err(|e| e.to_string())
}

fn build_chain(
    configs: &[switchyard_sanitizers::SanitizerConfig],
    path: &str,
) -> Result<Chain, DryRunError> {
    Chain::build(configs, path, &|name| std::env::var(name).ok()).map_err(|errors| {
        DryRunError::Chain(
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    })
}

/// Runs the chains over every line of `input`, writing survivors to `output`.
pub fn run(
    config: &Config,
    sink: Option<&str>,
    input: impl BufRead,
    mut output: impl Write,
    mut errors: impl Write,
) -> Result<DryRunSummary, DryRunError> {
    let global = build_chain(&config.sanitizers, "sanitizers")?;
    let (sink_chain, category) = match sink {
        Some(name) => {
            let settings = config
                .sinks
                .get(name)
                .ok_or_else(|| DryRunError::UnknownSink(name.to_string()))?;
            let chain = build_chain(
                &settings.common.sanitizers,
                &format!("sinks.{name}.sanitizers"),
            )?;
            (Some(chain), settings.common.consent.clone())
        }
        None => (None, None),
    };
    let mut summary = DryRunSummary::default();
    for (number, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        summary.read += 1;
        let mut event = match parse_line(&line) {
            Ok(event) => event,
            Err(reason) => {
                summary.invalid += 1;
                writeln!(errors, "line {}: rejected: {reason}", number + 1)?;
                continue;
            }
        };
        if let Verdict::Drop(_) = global.apply(&mut event, &mut summary.report) {
            continue;
        }
        if let Some(category) = &category {
            if !switchyard_sanitizers::consent::allows(
                &event,
                category,
                config.consent.default_granted,
            ) {
                summary.dropped_consent += 1;
                continue;
            }
        }
        if let Some(chain) = &sink_chain {
            if let Verdict::Drop(_) = chain.apply(&mut event, &mut summary.report) {
                continue;
            }
        }
        serde_json::to_writer(&mut output, &event).map_err(std::io::Error::other)?;
        output.write_all(b"\n")?;
        summary.written += 1;
    }
    Ok(summary)
}

/// The stderr summary.
pub fn describe(summary: &DryRunSummary) -> String {
    let mut lines = vec![format!(
        "read {} events: {} written, {} invalid, {} dropped for consent",
        summary.read, summary.written, summary.invalid, summary.dropped_consent
    )];
    for (kind, count) in &summary.report.counts {
        lines.push(format!("  {kind}: {count}"));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
        [[sanitizers]]
        type = "pii"
        [[sanitizers]]
        type = "fields"
        deny = ["properties.password"]

        [sinks.ga4]
        type = "file"
        path = "x"
        consent = "marketing"
        [[sinks.ga4.sanitizers]]
        type = "hash_ids"
        fields = ["userId"]
        salt_env = "DRY_RUN_TEST_SALT"
    "#;

    #[test]
    fn shows_what_a_sink_would_receive() {
        std::env::set_var("DRY_RUN_TEST_SALT", "pepper");
        let config = switchyard_config::parse(CONFIG, &|name| std::env::var(name).ok()).unwrap();
        let input = [
            r#"{"type":"track","event":"Signed Up","userId":"u1","properties":{"email":"a@example.com","password":"x","plan":"pro"},"context":{"consent":{"categoryPreferences":{"marketing":true}}}}"#,
            r#"{"type":"track","event":"Signed Up","userId":"u2","context":{"consent":{"categoryPreferences":{"marketing":false}}}}"#,
            r#"{"type":"track","event":"No id"}"#,
            "",
        ]
        .join("\n");
        let mut output = Vec::new();
        let mut errors = Vec::new();
        let summary = run(
            &config,
            Some("ga4"),
            input.as_bytes(),
            &mut output,
            &mut errors,
        )
        .unwrap();
        assert_eq!(
            (
                summary.read,
                summary.written,
                summary.invalid,
                summary.dropped_consent
            ),
            (3, 1, 1, 1)
        );
        let written: Event =
            serde_json::from_slice(output.split(|b| *b == b'\n').next().unwrap()).unwrap();
        assert_eq!(written.properties["email"], "[REDACTED:email]");
        assert!(!written.properties.contains_key("password"));
        assert_eq!(written.properties["plan"], "pro");
        assert_ne!(written.user_id.as_deref(), Some("u1"));
        assert_eq!(written.user_id.as_ref().unwrap().len(), 32);
        assert!(String::from_utf8(errors)
            .unwrap()
            .contains("line 3: rejected"));
        let text = describe(&summary);
        assert!(text.contains("pii.email: 1"), "{text}");
        assert!(text.contains("fields.deny: 1"), "{text}");
        // Without --sink: only the global chain.
        let mut output = Vec::new();
        let summary = run(
            &config,
            None,
            input.as_bytes(),
            &mut output,
            std::io::sink(),
        )
        .unwrap();
        assert_eq!(summary.written, 2);
        assert!(matches!(
            run(
                &config,
                Some("nope"),
                "".as_bytes(),
                std::io::sink(),
                std::io::sink()
            ),
            Err(DryRunError::UnknownSink(_))
        ));
    }
}
