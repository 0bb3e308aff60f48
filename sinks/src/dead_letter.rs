//! Dead letters: batches a sink refused permanently (or gave up retrying), kept on disk per sink with
//! the reason, so an operator can list and replay them after a fix.

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use switchyard_schemas::Event;

/// One dead-lettered event with why it was given up on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    /// When it was dead-lettered (RFC 3339).
    pub at: String,
    /// The sink's error message.
    pub error: String,
    /// How many sends were tried.
    pub attempts: u32,
    pub event: Event,
}

/// The dead-letter store of one sink: `dead-letters/<sink>.ndjson` in the data dir (memory only when
/// the deployment has no durable storage).
pub struct DeadLetterStore {
    path: Option<PathBuf>,
    memory: Mutex<Vec<DeadLetter>>,
}

impl DeadLetterStore {
    /// The store for `sink` under `dir` (None: memory only).
    pub fn new(dir: Option<&Path>, sink: &str) -> DeadLetterStore {
        DeadLetterStore {
            path: dir.map(|dir| dir.join(format!("{sink}.ndjson"))),
            memory: Mutex::new(Vec::new()),
        }
    }

    /// The file dead letters are appended to, if on disk.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Stores a batch with its error.
    pub fn put(&self, batch: &[Arc<Event>], error: &str, attempts: u32) -> std::io::Result<()> {
        let at = switchyard_schemas::time::format_timestamp(&chrono::Utc::now());
        let letters = batch.iter().map(|event| DeadLetter {
            at: at.clone(),
            error: error.to_string(),
            attempts,
            event: Event::clone(event),
        });
        match &self.path {
            Some(path) => {
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent)?;
                }
                let mut text = Vec::new();
                for letter in letters {
                    serde_json::to_writer(&mut text, &letter)?;
                    text.push(b'\n');
                }
                let mut file = OpenOptions::new().create(true).append(true).open(path)?;
                file.write_all(&text)?;
                file.sync_data()
            }
            None => {
                self.memory
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(letters);
                Ok(())
            }
        }
    }

    /// Takes every stored dead letter out of the store for a re-send. On disk the file is first renamed
    /// to `<sink>.ndjson.resending`, so a crash mid-way loses nothing: the next
    /// [`DeadLetterStore::recover`] puts its letters back. Call [`DeadLetterStore::finish_take`] once
    /// each taken letter is delivered or stored again.
    pub fn take_all(&self) -> std::io::Result<Vec<DeadLetter>> {
        match &self.path {
            Some(path) => {
                self.recover()?;
                let resending = path.with_extension("ndjson.resending");
                match fs::rename(path, &resending) {
                    Ok(()) => read_dead_letters(&resending),
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                    Err(error) => Err(error),
                }
            }
            None => Ok(std::mem::take(
                &mut *self.memory.lock().unwrap_or_else(|p| p.into_inner()),
            )),
        }
    }

    /// Forgets the letters taken by [`DeadLetterStore::take_all`].
    pub fn finish_take(&self) -> std::io::Result<()> {
        if let Some(path) = &self.path {
            match fs::remove_file(path.with_extension("ndjson.resending")) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Puts back letters left by a re-send that did not finish (a crash).
    pub fn recover(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let resending = path.with_extension("ndjson.resending");
        let leftover = match fs::read(&resending) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(error),
        };
        let mut file = OpenOptions::new().create(true).append(true).open(path)?;
        file.write_all(&leftover)?;
        file.sync_data()?;
        fs::remove_file(resending)
    }

    /// Every stored dead letter, oldest first.
    pub fn list(&self) -> std::io::Result<Vec<DeadLetter>> {
        match &self.path {
            Some(path) => read_dead_letters(path),
            None => Ok(self
                .memory
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()),
        }
    }
}

/// Reads a dead-letter file; a missing file is an empty store. Unreadable lines are skipped.
pub fn read_dead_letters(path: &Path) -> std::io::Result<Vec<DeadLetter>> {
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut letters = Vec::new();
    for line in BufReader::new(file).lines() {
        if let Ok(letter) = serde_json::from_str::<DeadLetter>(&line?) {
            letters.push(letter);
        }
    }
    Ok(letters)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str) -> Arc<Event> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "type": "track", "event": "E", "messageId": id, "userId": "u",
                "timestamp": "2024-01-01T00:00:00Z", "receivedAt": "2024-01-01T00:00:00Z", "source": "s"
            }))
            .unwrap(),
        )
    }

    #[test]
    fn stores_lists_takes_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeadLetterStore::new(Some(dir.path()), "hook");
        store
            .put(&[event("a"), event("b")], "HTTP 400: bad", 1)
            .unwrap();
        let listed = store.list().unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].error, "HTTP 400: bad");
        assert_eq!(listed[1].event.message_id, "b");

        let taken = store.take_all().unwrap();
        assert_eq!(taken.len(), 2);
        assert!(store.list().unwrap().is_empty());
        // A crash before finish_take: recover puts them back.
        store.recover().unwrap();
        assert_eq!(store.list().unwrap().len(), 2);
        let taken = store.take_all().unwrap();
        assert_eq!(taken.len(), 2);
        store.finish_take().unwrap();
        store.recover().unwrap();
        assert!(store.list().unwrap().is_empty());
    }
}
