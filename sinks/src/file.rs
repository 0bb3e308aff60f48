//! The file sink (the embedded default): NDJSON, one file per hour of `receivedAt`
//! (`events-YYYYMMDD-HH.ndjson`), appended in batches.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use switchyard_schemas::Event;

use crate::settings::FileSinkConfig;
use crate::sink::{SendError, Sink, SinkError};

/// Writes canonical events as NDJSON into hourly files.
pub struct FileSink {
    name: String,
    config: FileSinkConfig,
}

impl FileSink {
    pub fn new(name: &str, config: FileSinkConfig) -> FileSink {
        FileSink {
            name: name.to_string(),
            config,
        }
    }

    /// The file an event belongs in.
    pub fn file_name(event: &Event) -> String {
        format!("events-{}.ndjson", event.received_at.format("%Y%m%d-%H"))
    }

    /// Writes the batch; `json[i]`, when present, is event i's canonical JSON (from the log), written
    /// as is instead of encoding the event again.
    fn write_batch(
        path: PathBuf,
        fsync: bool,
        batch: Vec<Arc<Event>>,
        json: Vec<Option<Bytes>>,
    ) -> Result<(), SendError> {
        let mut by_file: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        // The file name is formatted once per hour of the batch, not once per event.
        let mut current: Option<(i64, String)> = None;
        for (index, event) in batch.iter().enumerate() {
            let hour = event.received_at.timestamp().div_euclid(3600);
            let name = match &current {
                Some((known, name)) if *known == hour => name,
                _ => &current.insert((hour, FileSink::file_name(event))).1,
            };
            let buffer = by_file.entry(name.clone()).or_default();
            match json.get(index) {
                Some(Some(encoded)) => buffer.extend_from_slice(encoded),
                _ => switchyard_schemas::json_writer::write_event(buffer, event),
            }
            buffer.push(b'\n');
        }
        for (name, bytes) in by_file {
            let file_path = path.join(&name);
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&file_path)
                .map_err(|e| SendError::Retryable(format!("open {}: {e}", file_path.display())))?;
            let size_before = file.metadata().map(|m| m.len()).unwrap_or(0);
            file.write_all(&bytes)
                .map_err(|e| SendError::Retryable(format!("write {}: {e}", file_path.display())))?;
            if fsync {
                file.sync_data().map_err(|e| {
                    SendError::Retryable(format!("fsync {}: {e}", file_path.display()))
                })?;
            } else if crate::writeback::crosses_writeback_mark(size_before, bytes.len() as u64) {
                crate::writeback::start_writeback(&file);
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for FileSink {
    async fn start(&self) -> Result<(), SinkError> {
        fs::create_dir_all(&self.config.path).map_err(|source| SinkError::Io {
            path: format!("sinks.{}.path = {}", self.name, self.config.path.display()),
            source,
        })
    }

    async fn send(&self, batch: &[Arc<Event>]) -> Result<(), SendError> {
        self.send_with_json(batch, &[]).await
    }

    async fn send_with_json(
        &self,
        batch: &[Arc<Event>],
        json: &[Option<Bytes>],
    ) -> Result<(), SendError> {
        let path = self.config.path.clone();
        let fsync = self.config.fsync;
        let batch = batch.to_vec();
        let json = json.to_vec();
        tokio::task::spawn_blocking(move || FileSink::write_batch(path, fsync, batch, json))
            .await
            .map_err(|e| SendError::Retryable(format!("file writer task failed: {e}")))?
    }

    async fn health(&self) -> Result<(), SinkError> {
        let probe = self.config.path.join(".switchyard-probe");
        fs::write(&probe, b"ok")
            .and_then(|_| fs::remove_file(&probe))
            .map_err(|source| SinkError::Io {
                path: self.config.path.display().to_string(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_one_line_per_event_into_hourly_files() {
        let dir = tempfile::tempdir().unwrap();
        let sink = FileSink::new(
            "local",
            FileSinkConfig {
                path: dir.path().join("events"),
                fsync: false,
            },
        );
        sink.start().await.unwrap();
        let make = |id: &str, received: &str| -> Arc<Event> {
            Arc::new(
                serde_json::from_value(serde_json::json!({
                    "type": "track", "event": "E", "messageId": id, "userId": "u",
                    "timestamp": received, "receivedAt": received, "source": "web"
                }))
                .unwrap(),
            )
        };
        let batch = vec![
            make("a", "2024-03-01T10:59:59.000Z"),
            make("b", "2024-03-01T11:00:00.000Z"),
            make("c", "2024-03-01T11:30:00.000Z"),
        ];
        sink.send(&batch).await.unwrap();
        let ten = fs::read_to_string(dir.path().join("events/events-20240301-10.ndjson")).unwrap();
        let eleven =
            fs::read_to_string(dir.path().join("events/events-20240301-11.ndjson")).unwrap();
        assert_eq!(ten.lines().count(), 1);
        assert_eq!(eleven.lines().count(), 2);
        let back: Event = serde_json::from_str(eleven.lines().next().unwrap()).unwrap();
        assert_eq!(back.message_id, "b");
        sink.health().await.unwrap();
    }
}
