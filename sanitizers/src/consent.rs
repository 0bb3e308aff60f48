//! Consent: reading Segment's `context.consent.categoryPreferences`, and the sanitizer that drops events
//! whose preferences deny a required category.

use switchyard_schemas::Event;

use crate::chain::{SanitizeReport, Sanitizer, Verdict};

/// Whether the event's consent grants `category`: `Some(bool)` when the event carries preferences
/// for it (a non-boolean counts as denied), `None` when it carries none for that category.
pub fn category_granted(event: &Event, category: &str) -> Option<bool> {
    let preferences = event
        .context
        .get("consent")?
        .as_object()?
        .get("categoryPreferences")?
        .as_object()?;
    match preferences.get(category) {
        Some(value) => Some(value.as_bool().unwrap_or(false)),
        // Preferences present but silent on this category: not granted.
        None => Some(false),
    }
}

/// Whether the event may go where `category` is required; `default_granted` applies when the event
/// carries no preferences at all.
pub fn allows(event: &Event, category: &str, default_granted: bool) -> bool {
    category_granted(event, category).unwrap_or(default_granted)
}

/// Drops events that do not grant a category required everywhere.
pub struct RequireConsent {
    category: String,
    default_granted: bool,
}

impl RequireConsent {
    pub fn new(category: String, default_granted: bool) -> RequireConsent {
        RequireConsent {
            category,
            default_granted,
        }
    }
}

impl Sanitizer for RequireConsent {
    fn name(&self) -> &'static str {
        "consent"
    }

    fn apply(&self, event: &mut Event, _report: &mut SanitizeReport) -> Verdict {
        if allows(event, &self.category, self.default_granted) {
            Verdict::Keep
        } else {
            Verdict::Drop("consent")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(context: serde_json::Value) -> Event {
        serde_json::from_value(serde_json::json!({
            "type": "track", "event": "E", "messageId": "m", "userId": "u",
            "timestamp": "2024-01-01T00:00:00Z", "receivedAt": "2024-01-01T00:00:00Z",
            "source": "s", "context": context
        }))
        .unwrap()
    }

    #[test]
    fn reads_segment_category_preferences() {
        let granted = event(
            serde_json::json!({"consent": {"categoryPreferences": {"marketing": true, "ads": false}}}),
        );
        assert!(allows(&granted, "marketing", false));
        assert!(!allows(&granted, "ads", true));
        assert!(
            !allows(&granted, "analytics", true),
            "preferences present but silent deny"
        );
        let none = event(serde_json::json!({"page": {"path": "/"}}));
        assert!(allows(&none, "marketing", true));
        assert!(!allows(&none, "marketing", false));
    }

    #[test]
    fn require_consent_drops_denied_events() {
        let step = RequireConsent::new("analytics".into(), true);
        let mut report = SanitizeReport::default();
        let mut denied =
            event(serde_json::json!({"consent": {"categoryPreferences": {"analytics": false}}}));
        assert_eq!(
            step.apply(&mut denied, &mut report),
            Verdict::Drop("consent")
        );
        let mut silent = event(serde_json::json!({}));
        assert_eq!(step.apply(&mut silent, &mut report), Verdict::Keep);
    }
}
