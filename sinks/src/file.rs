//! The file sink (the embedded default): NDJSON, one file per hour of `receivedAt`
//! (`events-YYYYMMDD-HH.ndjson`), appended in batches.

use std::fs::{self, OpenOptions};
use std::io::{IoSlice, Write};
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
    /// as is instead of encoding the event again. The lines go to each file with one `writev` per
    /// [`MAX_SLICES_PER_WRITE`] slices, straight from the log's buffers: copying ~800 bytes per
    /// event into a buffer of the batch first cost more than the writes' own bookkeeping.
    fn write_batch(
        path: PathBuf,
        fsync: bool,
        batch: Vec<Arc<Event>>,
        json: Vec<Option<Bytes>>,
    ) -> Result<(), SendError> {
        // Events without their logged JSON (a stage changed them) are encoded here first, so the
        // lines below can borrow from one finished buffer.
        let mut encoded = Vec::new();
        let mut encoded_spans = Vec::with_capacity(batch.len());
        for (index, event) in batch.iter().enumerate() {
            let start = encoded.len();
            if !matches!(json.get(index), Some(Some(_))) {
                switchyard_schemas::json_writer::write_event(&mut encoded, event);
            }
            encoded_spans.push(start..encoded.len());
        }
        // Each hour's file and its lines, in the order the batch first reached that hour.
        let mut files: Vec<HourlyLines<'_>> = Vec::new();
        for (index, event) in batch.iter().enumerate() {
            let hour = event.received_at.timestamp().div_euclid(3600);
            let at = match files.iter().rposition(|file| file.hour == hour) {
                Some(at) => at,
                None => {
                    files.push(HourlyLines {
                        hour,
                        name: FileSink::file_name(event),
                        slices: Vec::new(),
                        bytes: 0,
                    });
                    files.len() - 1
                }
            };
            let line: &[u8] = match json.get(index) {
                Some(Some(logged)) => logged,
                _ => &encoded[encoded_spans[index].clone()],
            };
            let file = &mut files[at];
            file.bytes += line.len() + 1;
            file.slices.push(IoSlice::new(line));
            file.slices.push(IoSlice::new(b"\n"));
        }
        for mut lines in files {
            let file_path = path.join(&lines.name);
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&file_path)
                .map_err(|e| SendError::Retryable(format!("open {}: {e}", file_path.display())))?;
            let size_before = file.metadata().map(|m| m.len()).unwrap_or(0);
            write_all_slices(&mut file, &mut lines.slices)
                .map_err(|e| SendError::Retryable(format!("write {}: {e}", file_path.display())))?;
            if fsync {
                file.sync_data().map_err(|e| {
                    SendError::Retryable(format!("fsync {}: {e}", file_path.display()))
                })?;
            } else if crate::writeback::crosses_writeback_mark(size_before, lines.bytes as u64) {
                crate::writeback::start_writeback(&file);
            }
        }
        Ok(())
    }
}

/// The lines of a batch that go to one hourly file.
struct HourlyLines<'a> {
    hour: i64,
    name: String,
    /// Each line's JSON, then its newline.
    slices: Vec<IoSlice<'a>>,
    bytes: usize,
}

/// The most slices one `writev` is given: Linux's `IOV_MAX`.
const MAX_SLICES_PER_WRITE: usize = 1024;

/// Writes every slice, in order, however the kernel splits the writes.
fn write_all_slices(
    file: &mut std::fs::File,
    mut slices: &mut [IoSlice<'_>],
) -> std::io::Result<()> {
    while !slices.is_empty() {
        let count = slices.len().min(MAX_SLICES_PER_WRITE);
        match file.write_vectored(&slices[..count]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(written) => IoSlice::advance_slices(&mut slices, written),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
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
    use std::collections::BTreeMap;

    /// A file sink writing into `path`, without fsync.
    fn sink_into(path: PathBuf) -> FileSink {
        FileSink::new("local", FileSinkConfig { path, fsync: false })
    }

    /// A track event received at `received` (which is also its timestamp).
    fn track(id: &str, received: &str, properties: serde_json::Value) -> Arc<Event> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "type": "track", "event": "E", "messageId": id, "userId": "u",
                "timestamp": received, "receivedAt": received, "source": "web",
                "properties": properties
            }))
            .unwrap(),
        )
    }

    #[tokio::test]
    async fn writes_one_line_per_event_into_hourly_files() {
        let dir = tempfile::tempdir().unwrap();
        let sink = sink_into(dir.path().join("events"));
        sink.start().await.unwrap();
        let batch = vec![
            track("a", "2024-03-01T10:59:59.000Z", serde_json::json!({})),
            track("b", "2024-03-01T11:00:00.000Z", serde_json::json!({})),
            track("c", "2024-03-01T11:30:00.000Z", serde_json::json!({})),
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

    #[tokio::test]
    async fn logged_and_re_encoded_lines_keep_the_batch_order_past_one_writes_worth_of_slices() {
        let dir = tempfile::tempdir().unwrap();
        let sink = sink_into(dir.path().to_path_buf());
        // More lines than one writev takes (two slices a line), across two hours and back.
        let count = MAX_SLICES_PER_WRITE + 300;
        let batch: Vec<Arc<Event>> = (0..count)
            .map(|index| {
                let received = if index % 7 == 3 {
                    "2024-03-01T10:15:00.000Z"
                } else {
                    "2024-03-01T11:15:00.000Z"
                };
                let note = format!("line {index}\nbreak \"quoted\"");
                track(
                    &format!("m{index}"),
                    received,
                    serde_json::json!({ "note": note }),
                )
            })
            .collect();
        // Every third event comes with its logged JSON (marked so it is told apart from a
        // re-encoding); the others are encoded by the sink.
        let json: Vec<Option<Bytes>> = batch
            .iter()
            .enumerate()
            .map(|(index, event)| {
                (index % 3 == 0).then(|| {
                    let mut logged = serde_json::to_value(event.as_ref()).unwrap();
                    logged["logged"] = serde_json::json!(true);
                    Bytes::from(serde_json::to_vec(&logged).unwrap())
                })
            })
            .collect();
        sink.send_with_json(&batch, &json).await.unwrap();

        let mut expected: BTreeMap<&str, String> = BTreeMap::new();
        for (index, event) in batch.iter().enumerate() {
            let file = if index % 7 == 3 {
                "events-20240301-10.ndjson"
            } else {
                "events-20240301-11.ndjson"
            };
            let line = match &json[index] {
                Some(logged) => String::from_utf8(logged.to_vec()).unwrap(),
                None => serde_json::to_string(event.as_ref()).unwrap(),
            };
            let text = expected.entry(file).or_default();
            text.push_str(&line);
            text.push('\n');
        }
        for (file, text) in expected {
            assert_eq!(
                fs::read_to_string(dir.path().join(file)).unwrap(),
                text,
                "{file}"
            );
        }
    }
}
