//! `fields`: allow and deny lists by dotted JSON path, and a cap on string sizes.

use serde_json::Value;
use switchyard_schemas::{Event, JsonMap};

use crate::chain::{SanitizeReport, Sanitizer, Verdict};
use crate::config::FieldsConfig;

pub struct FieldPolicy {
    allow: Vec<Vec<String>>,
    deny: Vec<Vec<String>>,
    max_string_bytes: Option<usize>,
}

fn split(path: &str) -> Vec<String> {
    path.split('.').map(str::to_string).collect()
}

/// The event's map for the first path segment, when it names one.
fn section<'a>(event: &'a mut Event, name: &str) -> Option<&'a mut JsonMap> {
    match name {
        "properties" => Some(&mut event.properties),
        "traits" => Some(&mut event.traits),
        "context" => Some(&mut event.context),
        "integrations" => Some(&mut event.integrations),
        _ => None,
    }
}

fn remove_path(map: &mut JsonMap, path: &[String]) -> bool {
    match path {
        [] => false,
        [last] => map.remove(last).is_some(),
        [first, rest @ ..] => match map.get_mut(first) {
            Some(Value::Object(child)) => remove_path(child, rest),
            _ => false,
        },
    }
}

/// Keeps only the allowed paths; `allowed` lists paths relative to `map`.
fn retain_allowed(map: &mut JsonMap, allowed: &[&[String]]) -> u64 {
    let mut removed = 0;
    let keys: Vec<String> = map.keys().cloned().collect();
    for key in keys {
        let matching: Vec<&[String]> = allowed
            .iter()
            .filter(|path| path.first() == Some(&key))
            .map(|path| &path[1..])
            .collect();
        if matching.is_empty() {
            map.remove(&key);
            removed += 1;
        } else if matching.iter().all(|rest| !rest.is_empty()) {
            // Only some children are allowed.
            if let Some(Value::Object(child)) = map.get_mut(&key) {
                removed += retain_allowed(child, &matching);
            }
        }
    }
    removed
}

fn cap_strings(value: &mut Value, limit: usize) -> u64 {
    match value {
        Value::String(text) if text.len() > limit => {
            let mut cut = limit;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            1
        }
        Value::Array(items) => items.iter_mut().map(|item| cap_strings(item, limit)).sum(),
        Value::Object(map) => map.values_mut().map(|item| cap_strings(item, limit)).sum(),
        _ => 0,
    }
}

impl FieldPolicy {
    pub fn new(config: &FieldsConfig) -> FieldPolicy {
        FieldPolicy {
            allow: config.allow.iter().map(|p| split(p)).collect(),
            deny: config.deny.iter().map(|p| split(p)).collect(),
            max_string_bytes: config.max_string_bytes,
        }
    }
}

impl Sanitizer for FieldPolicy {
    fn name(&self) -> &'static str {
        "fields"
    }

    fn apply(&self, event: &mut Event, report: &mut SanitizeReport) -> Verdict {
        for path in &self.deny {
            if let Some((first, rest)) = path.split_first() {
                if let Some(map) = section(event, first) {
                    if remove_path(map, rest) {
                        report.add("fields.deny", 1);
                    }
                }
            }
        }
        if !self.allow.is_empty() {
            for name in ["properties", "traits", "context"] {
                let allowed: Vec<&[String]> = self
                    .allow
                    .iter()
                    .filter(|path| path.first().map(String::as_str) == Some(name))
                    .map(|path| &path[1..])
                    .collect();
                if allowed.iter().any(|rest| rest.is_empty()) {
                    continue; // the whole section is allowed
                }
                if let Some(map) = section(event, name) {
                    let removed = retain_allowed(map, &allowed);
                    if removed > 0 {
                        report.add("fields.allow", removed);
                    }
                }
            }
        }
        if let Some(limit) = self.max_string_bytes {
            let mut cut = 0;
            for name in ["properties", "traits", "context"] {
                if let Some(map) = section(event, name) {
                    cut += map
                        .values_mut()
                        .map(|value| cap_strings(value, limit))
                        .sum::<u64>();
                }
            }
            if cut > 0 {
                report.add("fields.truncated", cut);
            }
        }
        Verdict::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        serde_json::from_value(serde_json::json!({
            "type": "track", "event": "E", "messageId": "m", "userId": "u",
            "timestamp": "2024-01-01T00:00:00Z", "receivedAt": "2024-01-01T00:00:00Z", "source": "s",
            "properties": {"password": "hunter2", "plan": "pro", "note": "ééééé", "nested": {"a": 1, "b": 2}},
            "context": {"traits": {"email": "a@b.co", "name": "A"}, "locale": "en"}
        }))
        .unwrap()
    }

    #[test]
    fn deny_removes_paths_at_any_depth() {
        let policy = FieldPolicy::new(&FieldsConfig {
            deny: vec![
                "properties.password".into(),
                "context.traits.email".into(),
                "properties.none.x".into(),
            ],
            ..FieldsConfig::default()
        });
        let mut e = event();
        let mut report = SanitizeReport::default();
        policy.apply(&mut e, &mut report);
        assert!(!e.properties.contains_key("password"));
        assert_eq!(e.context_str("traits.name"), Some("A"));
        assert!(e.context_value("traits.email").is_none());
        assert_eq!(report.counts["fields.deny"], 2);
    }

    #[test]
    fn allow_keeps_only_listed_paths_and_caps_strings() {
        let policy = FieldPolicy::new(&FieldsConfig {
            allow: vec![
                "properties.plan".into(),
                "properties.note".into(),
                "properties.nested.a".into(),
                "context".into(),
            ],
            max_string_bytes: Some(3),
            ..FieldsConfig::default()
        });
        let mut e = event();
        let mut report = SanitizeReport::default();
        policy.apply(&mut e, &mut report);
        let keys: Vec<&String> = e.properties.keys().collect();
        assert_eq!(keys.len(), 3, "{keys:?}");
        assert_eq!(e.properties["nested"], serde_json::json!({"a": 1}));
        assert_eq!(e.properties["plan"], "pro");
        assert_eq!(e.properties["note"], "é", "cut at a character boundary");
        assert_eq!(e.context_str("locale"), Some("en"));
    }
}
