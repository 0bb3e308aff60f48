//! Privacy requests (GDPR / CCPA): the suppression list that drops a person's future events before any
//! sink, erasure from the sinks that keep a queryable store (ClickHouse), and export of a person's
//! stored events. Every request is written to the audit log.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde::Serialize;
use switchyard_schemas::Event;

/// Ids whose events are dropped at ingest, persisted in `<data_dir>/privacy/suppressed.json`.
pub struct Suppressions {
    path: PathBuf,
    ids: RwLock<HashSet<String>>,
}

impl Suppressions {
    /// Loads the list (missing file: empty).
    pub fn open(data_dir: &Path) -> Suppressions {
        let path = data_dir.join("privacy").join("suppressed.json");
        let ids = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Vec<String>>(&bytes).ok())
            .unwrap_or_default()
            .into_iter()
            .collect();
        Suppressions {
            path,
            ids: RwLock::new(ids),
        }
    }

    /// Whether the event belongs to a suppressed person (by userId or anonymousId).
    pub fn suppresses(&self, event: &Event) -> bool {
        let ids = self.ids.read().unwrap_or_else(|p| p.into_inner());
        if ids.is_empty() {
            return false;
        }
        event.user_id.as_ref().is_some_and(|id| ids.contains(id))
            || event
                .anonymous_id
                .as_ref()
                .is_some_and(|id| ids.contains(id))
    }

    /// Adds an id and persists the list durably before returning.
    pub fn add(&self, id: &str) -> std::io::Result<bool> {
        let (added, snapshot) = {
            let mut ids = self.ids.write().unwrap_or_else(|p| p.into_inner());
            let added = ids.insert(id.to_string());
            let mut snapshot: Vec<String> = ids.iter().cloned().collect();
            snapshot.sort();
            (added, snapshot)
        };
        if let Some(parent) = self.path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let temporary = self.path.with_extension("json.tmp");
        let file = std::fs::File::create(&temporary)?;
        serde_json::to_writer(&file, &snapshot)?;
        file.sync_all()?;
        std::fs::rename(&temporary, &self.path)?;
        Ok(added)
    }

    /// How many ids are suppressed.
    pub fn len(&self) -> usize {
        self.ids.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no id is suppressed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What an erasure did in one sink.
#[derive(Debug, Clone, Serialize)]
pub struct SinkErasure {
    pub sink: String,
    /// `erased`, `not_stored` (the sink keeps no queryable store), or `failed`.
    pub outcome: &'static str,
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(user: Option<&str>, anonymous: Option<&str>) -> Event {
        let mut value = serde_json::json!({
            "type": "track", "event": "E", "messageId": "m",
            "timestamp": "2024-01-01T00:00:00Z", "receivedAt": "2024-01-01T00:00:00Z", "source": "s"
        });
        if let Some(user) = user {
            value["userId"] = user.into();
        }
        if let Some(anonymous) = anonymous {
            value["anonymousId"] = anonymous.into();
        }
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn suppression_persists_and_matches_either_id() {
        let dir = tempfile::tempdir().unwrap();
        let list = Suppressions::open(dir.path());
        assert!(!list.suppresses(&event(Some("alice"), None)));
        assert!(list.add("alice").unwrap());
        assert!(!list.add("alice").unwrap());
        list.add("device-9").unwrap();
        let reopened = Suppressions::open(dir.path());
        assert_eq!(reopened.len(), 2);
        assert!(reopened.suppresses(&event(Some("alice"), Some("x"))));
        assert!(reopened.suppresses(&event(None, Some("device-9"))));
        assert!(!reopened.suppresses(&event(Some("bob"), Some("device-1"))));
    }
}
