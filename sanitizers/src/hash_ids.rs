//! `hash_ids`: pseudonymises id fields with a keyed HMAC-SHA256 whose salt can rotate daily, weekly or
//! monthly (by the event's `receivedAt`), so ids stay joinable within a period but not across.

use chrono::Datelike;
use switchyard_schemas::Event;

use crate::chain::{BuildError, SanitizeReport, Sanitizer, Verdict};
use crate::config::{HashIdsConfig, SaltRotation};

/// Hex characters kept of the HMAC (128 bits).
const HASH_HEX_CHARS: usize = 32;

pub struct HashIds {
    fields: Vec<String>,
    salt: Vec<u8>,
    rotation: SaltRotation,
}

impl HashIds {
    pub fn new(
        config: &HashIdsConfig,
        path: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<HashIds, BuildError> {
        let salt = crate::secret_from_env(&config.salt_env, &format!("{path}.salt_env"), lookup)?;
        Ok(HashIds {
            fields: config.fields.clone(),
            salt,
            rotation: config.rotation,
        })
    }

    /// The salt in force for an event: the configured salt plus the rotation period.
    fn period(&self, event: &Event) -> String {
        let day = event.received_at.date_naive();
        match self.rotation {
            SaltRotation::None => String::new(),
            SaltRotation::Daily => day.format("%Y-%m-%d").to_string(),
            SaltRotation::Weekly => {
                let week = day.iso_week();
                format!("{}-W{:02}", week.year(), week.week())
            }
            SaltRotation::Monthly => day.format("%Y-%m").to_string(),
        }
    }

    /// The pseudonym of `id` in `period`.
    pub fn pseudonym(&self, period: &str, id: &str) -> String {
        let mut key = self.salt.clone();
        if !period.is_empty() {
            key.push(b'|');
            key.extend_from_slice(period.as_bytes());
        }
        crate::hmac_hex(&key, id.as_bytes(), HASH_HEX_CHARS)
    }
}

impl Sanitizer for HashIds {
    fn name(&self) -> &'static str {
        "hash_ids"
    }

    fn apply(&self, event: &mut Event, report: &mut SanitizeReport) -> Verdict {
        let period = self.period(event);
        for field in &self.fields {
            let slot = match field.as_str() {
                "userId" => &mut event.user_id,
                "anonymousId" => &mut event.anonymous_id,
                "groupId" => &mut event.group_id,
                "previousId" => &mut event.previous_id,
                _ => continue,
            };
            if let Some(id) = slot.as_mut() {
                *id = self.pseudonym(&period, id);
                report.add("hash_ids", 1);
            }
        }
        Verdict::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(received: &str) -> Event {
        serde_json::from_value(serde_json::json!({
            "type": "identify", "messageId": "m", "userId": "alice", "anonymousId": "device-1",
            "timestamp": received, "receivedAt": received, "source": "s"
        }))
        .unwrap()
    }

    fn sanitizer(rotation: SaltRotation) -> HashIds {
        let config = HashIdsConfig {
            fields: vec!["userId".into()],
            salt_env: "SALT".into(),
            rotation,
        };
        HashIds::new(&config, "sanitizers[0]", &|_| Some("pepper".into())).unwrap()
    }

    #[test]
    fn hashes_only_the_configured_fields_stably() {
        let step = sanitizer(SaltRotation::None);
        let mut first = event("2024-01-01T00:00:00Z");
        let mut second = event("2024-06-01T00:00:00Z");
        let mut report = SanitizeReport::default();
        step.apply(&mut first, &mut report);
        step.apply(&mut second, &mut report);
        assert_eq!(first.user_id, second.user_id);
        assert_ne!(first.user_id.as_deref(), Some("alice"));
        assert_eq!(first.user_id.as_ref().unwrap().len(), 32);
        assert_eq!(first.anonymous_id.as_deref(), Some("device-1"));
        assert_eq!(report.counts["hash_ids"], 2);
    }

    #[test]
    fn rotation_changes_pseudonyms_between_periods_only() {
        let step = sanitizer(SaltRotation::Daily);
        let mut report = SanitizeReport::default();
        let mut morning = event("2024-01-01T01:00:00Z");
        let mut evening = event("2024-01-01T23:00:00Z");
        let mut next_day = event("2024-01-02T01:00:00Z");
        for e in [&mut morning, &mut evening, &mut next_day] {
            step.apply(e, &mut report);
        }
        assert_eq!(morning.user_id, evening.user_id);
        assert_ne!(morning.user_id, next_day.user_id);
    }

    #[test]
    fn missing_salt_is_a_build_error() {
        let config = HashIdsConfig {
            fields: vec!["userId".into()],
            salt_env: "NOPE".into(),
            rotation: SaltRotation::None,
        };
        let error = HashIds::new(&config, "sanitizers[1]", &|_| None)
            .err()
            .unwrap();
        assert_eq!(error.path, "sanitizers[1].salt_env");
        assert!(error.message.contains("NOPE"));
    }
}
