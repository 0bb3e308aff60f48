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
