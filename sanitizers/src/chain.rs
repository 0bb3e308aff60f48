//! The `Sanitizer` trait and the chain that applies configured sanitizers in order.

use switchyard_schemas::Event;

use crate::config::SanitizerConfig;

/// What a sanitizer decided about an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Drop the event before any sink (e.g. opt-out); the reason is counted, never the payload.
    Drop(&'static str),
}

/// Counts of what a chain changed, by kind (e.g. `pii.email`, `fields.deny`), for metrics and the
/// dry-run summary.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SanitizeReport {
    pub counts: std::collections::BTreeMap<String, u64>,
}

impl SanitizeReport {
    /// Adds `amount` to the count of `kind`.
    pub fn add(&mut self, kind: &str, amount: u64) {
        if let Some(count) = self.counts.get_mut(kind) {
            *count += amount;
        } else {
            self.counts.insert(kind.to_string(), amount);
        }
    }

    /// Adds another report's counts.
    pub fn merge(&mut self, other: &SanitizeReport) {
        for (kind, count) in &other.counts {
            self.add(kind, *count);
        }
    }
}

/// One step of a chain: inspects and rewrites an event in place, or drops it.
pub trait Sanitizer: Send + Sync {
    /// The config `type` name, for logs and reports.
    fn name(&self) -> &'static str;

    /// Sanitizes `event` in place.
    fn apply(&self, event: &mut Event, report: &mut SanitizeReport) -> Verdict;
}

/// A sanitizer could not be built from its config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct BuildError {
    pub path: String,
    pub message: String,
}

/// Sanitizers applied in configured order.
#[derive(Default)]
pub struct Chain {
    steps: Vec<Box<dyn Sanitizer>>,
}

impl Chain {
    /// Builds a chain; `path` prefixes error paths (`sanitizers`, `sinks.ga4.sanitizers`), `lookup` reads
    /// secrets (salts, keys) from the environment.
    pub fn build(
        configs: &[SanitizerConfig],
        path: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Chain, Vec<BuildError>> {
        let mut steps: Vec<Box<dyn Sanitizer>> = Vec::new();
        let mut errors = Vec::new();
        for (index, config) in configs.iter().enumerate() {
            let step_path = format!("{path}[{index}]");
            match crate::build_sanitizer(config, &step_path, lookup) {
                Ok(Some(step)) => steps.push(step),
                Ok(None) => {}
                Err(error) => errors.push(error),
            }
        }
        if errors.is_empty() {
            Ok(Chain { steps })
        } else {
            Err(errors)
        }
    }

    /// Whether the chain has no steps (events pass untouched).
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Runs every step in order; stops at the first drop.
    pub fn apply(&self, event: &mut Event, report: &mut SanitizeReport) -> Verdict {
        for step in &self.steps {
            if let Verdict::Drop(reason) = step.apply(event, report) {
                report.add(&format!("dropped.{reason}"), 1);
                return Verdict::Drop(reason);
            }
        }
        Verdict::Keep
    }
}
