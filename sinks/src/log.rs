//! The durable ingest log: every accepted request is appended once, before the 2xx, and every sink
//! reads it at its own persisted cursor, so a slow or dead sink only falls behind.
//!
//! On disk the log is a folder of segment files named by the sequence number of their first record
//! (`00000000000000000042.seg`). A record is
//! `[payload length u32 LE][CRC-32 of payload u32 LE][sequence u64 LE][append time, ms since epoch, i64 LE][payload]`
//! where the payload is the JSON array of the request's canonical events. Cursors live in `cursors/<sink>`
//! as the next sequence number to read. At start the last segment is scanned and a torn or corrupt tail
//! is cut off (and reported). Recent records are also kept decoded in memory, so sinks that keep up
//! never touch the disk or decode JSON again.
//!
//! With `durability = "memory"` there are no files: records live only in memory until every sink has
//! passed them, and are lost on a crash.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, TryLockError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchyard_schemas::Event;
use tokio::sync::watch;

const HEADER_BYTES: usize = 24;
/// A record larger than this is treated as corruption (the ingest limits keep real ones far smaller).
const MAX_RECORD_BYTES: usize = 256 * 1024 * 1024;
/// Memory a cached record takes per byte of its JSON: the decoded events measured at about 5 on the
/// bench corpus (~900 bytes of canonical JSON; the maps' B-tree nodes and the many small strings
/// outweigh the text), plus the JSON itself, kept for sinks that reuse it.
const DECODED_PER_ENCODED_BYTE: usize = 6;
/// Most encoded bytes one read from disk decodes (at least one record is always returned).
const DISK_READ_BUDGET_BYTES: usize = 8 * 1024 * 1024;
/// Read positions remembered for reads from disk (a few per sink reading from disk at once).
const READ_HINTS: usize = 32;
/// A sink's cursor file is rewritten at most this often while it delivers (and at every sync and
/// on shutdown): a write and a rename per delivered batch were 1.3% of ingest's CPU. A crash can
/// then deliver up to this much of a sink's traffic again, as at-least-once delivery allows.
#[cfg(not(test))]
const CURSOR_WRITE_INTERVAL: Duration = Duration::from_millis(200);
/// Longer in unit tests, whose steps must each fall within one interval of the last write.
#[cfg(test)]
const CURSOR_WRITE_INTERVAL: Duration = Duration::from_secs(2);

/// Where a read from disk stopped: the next read, from `next_seq`, starts there.
#[derive(Clone, Copy)]
struct ReadHint {
    next_seq: u64,
    segment_first_seq: u64,
    /// Offset in the segment of the record `next_seq`.
    offset: u64,
}

/// Where and how the log keeps its records.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// `Some(dir)` for `durability = "disk"`, `None` for memory.
    pub dir: Option<PathBuf>,
    /// How often written data is flushed to stable storage; zero flushes on every append.
    pub fsync_interval: Duration,
    /// A segment is closed and a new one started past this size.
    pub segment_bytes: u64,
    /// Most bytes the log may hold (disk, or memory in memory mode) before appends are refused.
    pub max_bytes: u64,
    /// Fully delivered segments are kept this long for `switchyard replay`.
    pub retention: Duration,
    /// Memory for records kept decoded until every sink has them (disk mode), estimated as
    /// [`DECODED_PER_ENCODED_BYTE`] times their encoded size. A sink further behind reads and
    /// decodes the records from disk, at about three times the CPU.
    pub cache_bytes: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            dir: None,
            fsync_interval: Duration::from_millis(1000),
            segment_bytes: 64 * 1024 * 1024,
            max_bytes: 10 * 1024 * 1024 * 1024,
            retention: Duration::from_secs(168 * 3600),
            cache_bytes: 128 * 1024 * 1024,
        }
    }
}

/// Log failures.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("ingest log i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ingest log is full ({used} of {limit} bytes): slow or dead sinks hold it")]
    Full { used: u64, limit: u64 },
    #[error("could not encode events: {0}")]
    Encode(String),
    #[error("unknown log consumer `{0}`")]
    UnknownConsumer(String),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One appended request's events.
#[derive(Debug, Clone)]
pub struct Record {
    pub seq: u64,
    pub appended_at_ms: i64,
    /// Encoded size, used to size batches.
    pub bytes: usize,
    pub events: Arc<[Arc<Event>]>,
    /// Each event's JSON, as written in the log (slices of the record's one buffer): sinks that
    /// write the canonical JSON reuse it instead of encoding the event again.
    pub json: Arc<[Bytes]>,
    /// Whether any of the events has routing marks ([`Event::has_routing_marks`]); worked out
    /// where the events are built (or read back), so that sink stages need not search the context
    /// of every event for them.
    pub routing_marks: bool,
}

/// A request's events encoded as a log record: the CPU half of an append, done by the request's own
/// task while the events are still in its CPU's cache (encoding them on a blocking thread instead,
/// after the hop, cost ~10% more CPU per event), before the write goes to the blocking pool.
pub struct EncodedRecord {
    /// Room for the header, then the payload.
    record: Vec<u8>,
    /// Each event's byte range in `record`.
    spans: Vec<(usize, usize)>,
    checksum: u32,
    events: Arc<[Arc<Event>]>,
    routing_marks: bool,
}

impl EncodedRecord {
    /// The record's size in the log, without its header.
    pub fn payload_bytes(&self) -> usize {
        self.record.len() - HEADER_BYTES
    }

    pub fn new(events: Vec<Event>) -> EncodedRecord {
        // The payload is encoded straight after room for the header, into a buffer sized for a
        // typical event, so the record is written without copying or regrowing it.
        let mut record = Vec::with_capacity(HEADER_BYTES + events.len() * 1024);
        record.resize(HEADER_BYTES, 0);
        let spans = encode_events(&mut record, &events);
        let checksum = crc32fast::hash(&record[HEADER_BYTES..]);
        EncodedRecord {
            record,
            spans,
            checksum,
            routing_marks: events.iter().any(Event::has_routing_marks),
            events: events.into_iter().map(Arc::new).collect(),
        }
    }
}

/// Encodes `events` as the JSON array a record holds, after `buffer`'s current contents, and returns
/// each event's byte range in `buffer`. The bytes are exactly `serde_json::to_writer(&events)`'s
/// (the schemas crate's `json_writer` is the faster equivalent, tested byte for byte).
fn encode_events(buffer: &mut Vec<u8>, events: &[Event]) -> Vec<(usize, usize)> {
    let mut spans = Vec::with_capacity(events.len());
    buffer.push(b'[');
    for (index, event) in events.iter().enumerate() {
        if index > 0 {
            buffer.push(b',');
        }
        let start = buffer.len();
        switchyard_schemas::json_writer::write_event(buffer, event);
        spans.push((start, buffer.len()));
    }
    buffer.push(b']');
    spans
}

/// A record's events and each one's JSON.
type DecodedEvents = (Arc<[Arc<Event>]>, Arc<[Bytes]>);

/// Decodes a record's payload into its events and each event's JSON (slices of `payload`); None
/// when it is not a JSON array of events.
fn decode_events(payload: Bytes) -> Option<DecodedEvents> {
    let raw: Vec<&serde_json::value::RawValue> = serde_json::from_slice(&payload).ok()?;
    let mut events = Vec::with_capacity(raw.len());
    let mut json = Vec::with_capacity(raw.len());
    for value in raw {
        events.push(Arc::new(serde_json::from_str::<Event>(value.get()).ok()?));
        json.push(payload.slice_ref(value.get().as_bytes()));
    }
    Some((events.into(), json.into()))
}

/// What recovery found at start.
#[derive(Debug, Default, Clone)]
pub struct RecoveryReport {
    pub segments: usize,
    pub records: u64,
    /// Bytes cut from the tail of the last segment because the record there was torn or corrupt.
    pub torn_bytes: u64,
}

struct Segment {
    first_seq: u64,
    path: PathBuf,
    bytes: u64,
    /// Append time of the newest record, for retention.
    last_appended_ms: i64,
}

struct Writer {
    next_seq: u64,
    /// Closed segments and the active one (last).
    segments: Vec<Segment>,
    active: Option<File>,
    dirty: bool,
    /// Segments closed since the last sync, still to be flushed by it (with their paths, for errors).
    closed_unsynced: Vec<(File, PathBuf)>,
}

/// The ingest log shared by the ingest path (appends) and every sink runner (reads).
pub struct IngestLog {
    options: LogOptions,
    writer: Mutex<Writer>,
    cache: RwLock<VecDeque<Record>>,
    cache_bytes: Mutex<usize>,
    head: watch::Sender<u64>,
    cursors: Mutex<HashMap<String, u64>>,
    /// Readers whose records may be dropped when the log is full (shadow sinks), with how many records
    /// each lost that way.
    droppable: Mutex<HashMap<String, u64>>,
    /// Readers whose sink is failing (retrying a batch): they do not hold records in the cache, and
    /// read from disk once they recover.
    stalled: Mutex<HashSet<String>>,
    /// Where recent reads from disk stopped (see `read_from_disk`).
    read_hints: Mutex<VecDeque<ReadHint>>,
    recovery: RecoveryReport,
    /// Where evicted records go that no ingest request frees (see `retire`): a thread of their own,
    /// so freeing many requests' worth of events at once is not on the path of a request waiting
    /// for its 2xx.
    freer: std::sync::mpsc::SyncSender<Vec<Record>>,
    /// Evicted records waiting for ingest requests to free them (see [`IngestLog::free_one_retired`]).
    retired: Mutex<VecDeque<Record>>,
    /// Each cursor file's last write and whether the cursor moved since (see
    /// `CURSOR_WRITE_INTERVAL`). Held only to read or note that, never across the file's I/O.
    cursor_files: Mutex<HashMap<String, CursorFile>>,
    /// Held across every cursor file's write and removal (taken before `cursor_files` and
    /// `cursors`, never after): each write puts down the cursor as it is when the write starts, so
    /// one never puts back a value older than the write before it, and a removed reader's file is
    /// not brought back.
    cursor_io: Mutex<()>,
    /// A write of the due cursor files is on the blocking pool and has not started yet: commits
    /// meanwhile leave theirs to it (a stalled disk then holds one pool thread per log, not one
    /// per commit).
    cursor_write_scheduled: AtomicBool,
    /// When the log was opened: the clock of `append_now_paused_until_ms`.
    opened: Instant,
    /// Milliseconds after `opened` until which [`IngestLog::try_append_now`] defers every append
    /// (set when one of its appends was slow).
    append_now_paused_until_ms: AtomicU64,
    /// An append on the caller's thread slower than this pauses such appends ([`SLOW_APPEND_NOW`];
    /// a field so that tests can make every append count as slow).
    slow_append_now: Duration,
}

#[derive(Debug, Default)]
struct CursorFile {
    written_at: Option<Instant>,
    /// The cursor moved since the file was written.
    unwritten: bool,
}

/// Evicted records waiting for ingest requests to free them, about one request's events each (at
/// most 16 MB with batches of 100): enough to spread the burst of one sink's batch passing (the
/// file sink's batches are 1,000 events) over the next requests; more go to the freeing thread.
/// The background sync frees what is left; without one (memory durability, `fsync_interval_ms = 0`)
/// they wait for the next requests, at most this many while ingest is idle.
const RETIRED_AT_MOST: usize = 32;

/// An append made on the caller's thread ([`IngestLog::try_append_now`]) that took longer than this
/// (the kernel throttling writes to the page cache, or a slow disk) sends the appends of the next
/// [`APPEND_NOW_PAUSE`] to the blocking pool. A normal append of a request's events is a copy of
/// ~100 KB into the page cache: tens of microseconds; but on a busy machine the thread may also lose
/// its CPU for a scheduler slice in the middle of one (4 ms was seen every few seconds on two
/// cores at half load), which is no reason to pause. Throttled writes wait tens to hundreds of ms.
const SLOW_APPEND_NOW: Duration = Duration::from_millis(20);

/// See [`SLOW_APPEND_NOW`].
const APPEND_NOW_PAUSE: Duration = Duration::from_secs(10);

/// What [`IngestLog::try_append_now`] did with a record.
pub enum AppendNow {
    /// Appended (or failed) on the calling thread.
    Done(Result<u64, LogError>),
    /// Not tried, as it might have waited: for the writer, for a new segment's file, for room
    /// (the log near full), or for a disk that was slow a moment ago. Append it with
    /// [`IngestLog::append_encoded`] off the async threads.
    Deferred(EncodedRecord),
}

/// Evictions waiting for the freeing thread before appends free their evictions themselves: bounds
/// the memory waiting to be freed if that thread falls behind.
const FREE_QUEUE: usize = 64;

impl Drop for IngestLog {
    /// A log dropped in an orderly way (shutdown, a test) leaves every cursor on disk as it was.
    fn drop(&mut self) {
        if let Err(error) = self.flush_cursors() {
            tracing::error!(%error, "ingest log: cannot write the sinks' cursors");
        }
    }
}

/// Starts the thread that frees evicted records; it ends when the log (the sender) is dropped.
fn spawn_freer() -> std::sync::mpsc::SyncSender<Vec<Record>> {
    let (sender, receiver) = std::sync::mpsc::sync_channel::<Vec<Record>>(FREE_QUEUE);
    let spawned = std::thread::Builder::new()
        .name("switchyard-log-free".into())
        .spawn(move || {
            for records in receiver {
                drop(records);
            }
        });
    if let Err(error) = spawned {
        // The records are then freed where they are evicted (the send fails and drops them).
        tracing::warn!(%error, "ingest log: cannot start the thread that frees evicted records");
    }
    sender
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a log lock leaves plain data behind; keep serving.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether appending `encoded` to the active segment asks the kernel for writeback (see
/// [`crate::writeback`]).
fn starts_writeback(writer: &Writer, encoded: &EncodedRecord) -> bool {
    writer.segments.last().is_some_and(|segment| {
        crate::writeback::crosses_writeback_mark(segment.bytes, encoded.record.len() as u64)
    })
}

/// Bytes of every segment on disk (the writer's view).
fn segments_bytes(writer: &Writer) -> u64 {
    writer.segments.iter().map(|segment| segment.bytes).sum()
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.seg")
}

impl IngestLog {
    /// Opens (or creates) the log, recovering the last segment and the persisted cursors.
    pub fn open(options: LogOptions) -> Result<Arc<IngestLog>, LogError> {
        let mut writer = Writer {
            next_seq: 0,
            segments: Vec::new(),
            active: None,
            dirty: false,
            closed_unsynced: Vec::new(),
        };
        let mut recovery = RecoveryReport::default();
        let mut cursors = HashMap::new();
        if let Some(dir) = &options.dir {
            fs::create_dir_all(dir.join("cursors")).map_err(io_error(dir))?;
            let mut found: Vec<(u64, PathBuf)> = Vec::new();
            for entry in fs::read_dir(dir).map_err(io_error(dir))? {
                let entry = entry.map_err(io_error(dir))?;
                let name = entry.file_name().to_string_lossy().to_string();
                if let Some(first_seq) = name
                    .strip_suffix(".seg")
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    found.push((first_seq, entry.path()));
                }
            }
            found.sort();
            recovery.segments = found.len();
            let count = found.len();
            for (index, (first_seq, path)) in found.into_iter().enumerate() {
                let is_last = index + 1 == count;
                let scan = scan_segment(&path, first_seq)?;
                if is_last && scan.valid_bytes < scan.file_bytes {
                    recovery.torn_bytes = scan.file_bytes - scan.valid_bytes;
                    let file = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(io_error(&path))?;
                    file.set_len(scan.valid_bytes).map_err(io_error(&path))?;
                    file.sync_all().map_err(io_error(&path))?;
                    tracing::warn!(
                        segment = %path.display(),
                        torn_bytes = recovery.torn_bytes,
                        "ingest log: cut a torn or corrupt record from the tail"
                    );
                }
                recovery.records += scan.records;
                writer.next_seq = writer.next_seq.max(scan.next_seq);
                writer.segments.push(Segment {
                    first_seq,
                    path,
                    bytes: scan.valid_bytes,
                    last_appended_ms: scan.last_appended_ms,
                });
            }
            let cursor_dir = dir.join("cursors");
            for entry in fs::read_dir(&cursor_dir).map_err(io_error(&cursor_dir))? {
                let entry = entry.map_err(io_error(&cursor_dir))?;
                let name = entry.file_name().to_string_lossy().to_string();
                if name.ends_with(".tmp") {
                    continue;
                }
                let text = fs::read_to_string(entry.path()).map_err(io_error(&entry.path()))?;
                if let Ok(seq) = text.trim().parse::<u64>() {
                    cursors.insert(name, seq.min(writer.next_seq));
                }
            }
        }
        let (head, _) = watch::channel(writer.next_seq);
        Ok(Arc::new(IngestLog {
            options,
            writer: Mutex::new(writer),
            cache: RwLock::new(VecDeque::new()),
            cache_bytes: Mutex::new(0),
            head,
            cursors: Mutex::new(cursors),
            droppable: Mutex::new(HashMap::new()),
            stalled: Mutex::new(HashSet::new()),
            read_hints: Mutex::new(VecDeque::new()),
            recovery,
            freer: spawn_freer(),
            retired: Mutex::new(VecDeque::new()),
            cursor_files: Mutex::new(HashMap::new()),
            cursor_io: Mutex::new(()),
            cursor_write_scheduled: AtomicBool::new(false),
            opened: Instant::now(),
            append_now_paused_until_ms: AtomicU64::new(0),
            slow_append_now: SLOW_APPEND_NOW,
        }))
    }

    /// What recovery found when the log was opened.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// Whether records survive a crash.
    pub fn is_durable(&self) -> bool {
        self.options.dir.is_some()
    }

    /// The sequence number the next record will get (= number of records ever appended).
    pub fn head(&self) -> u64 {
        *self.head.borrow()
    }

    /// A receiver that changes whenever records are appended.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// Bytes the log holds now (segments on disk, or records in memory).
    pub fn used_bytes(&self) -> u64 {
        if self.options.dir.is_some() {
            segments_bytes(&lock(&self.writer))
        } else {
            *lock(&self.cache_bytes) as u64
        }
    }

    /// Appends one request's events as one record; returns its sequence number. On disk the bytes are
    /// written (to the OS) before this returns, so they survive the process being killed.
    pub fn append(&self, events: Vec<Event>) -> Result<u64, LogError> {
        self.append_encoded(EncodedRecord::new(events))
    }

    /// Appends a record encoded by [`EncodedRecord::new`]: the write half of [`IngestLog::append`],
    /// which may block on the disk.
    pub fn append_encoded(&self, encoded: EncodedRecord) -> Result<u64, LogError> {
        let payload_bytes = encoded.payload_bytes() as u64;
        let used = self.used_bytes();
        if used + payload_bytes > self.options.max_bytes {
            self.collect_garbage()?;
            // Full policy: shadow sinks lose their oldest records (counted) before live ingest blocks.
            if self.used_bytes() + payload_bytes > self.options.max_bytes
                && self.release_droppable()?
            {
                self.collect_garbage()?;
            }
            let used = self.used_bytes();
            if used + payload_bytes > self.options.max_bytes {
                return Err(LogError::Full {
                    used,
                    limit: self.options.max_bytes,
                });
            }
        }
        self.append_locked(lock(&self.writer), encoded)
    }

    /// Appends `encoded` right here when that cannot wait for long, and hands it back otherwise
    /// (see [`AppendNow::Deferred`]). Ingest calls it on its async thread: handing every append to
    /// the blocking pool cost a thread wake-up and a switch each way per request, ~12% of the
    /// server's CPU at half load, and more latency than the copy into the page cache itself.
    pub fn try_append_now(&self, encoded: EncodedRecord) -> AppendNow {
        let paused = self.append_now_paused_until_ms.load(Ordering::Relaxed)
            > self.opened.elapsed().as_millis() as u64;
        // With `fsync_interval` zero every append waits for the disk.
        let flushes_each = self.options.dir.is_some() && self.options.fsync_interval.is_zero();
        if paused || flushes_each {
            return AppendNow::Deferred(encoded);
        }
        let writer = match self.writer.try_lock() {
            Ok(writer) => writer,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return AppendNow::Deferred(encoded),
        };
        // Opening a segment file and asking for writeback (`sync_file_range`, which blocks while
        // the device's queue is full: 10-40 ms seen under load) can both wait for the disk.
        let (used, waits_for_disk) = if self.options.dir.is_some() {
            (
                segments_bytes(&writer),
                self.needs_new_segment(&writer) || starts_writeback(&writer, &encoded),
            )
        } else {
            (*lock(&self.cache_bytes) as u64, false)
        };
        if waits_for_disk || used + encoded.payload_bytes() as u64 > self.options.max_bytes {
            return AppendNow::Deferred(encoded);
        }
        let started = Instant::now();
        let appended = self.append_locked(writer, encoded);
        let took = started.elapsed();
        if took > self.slow_append_now {
            let until = self.opened.elapsed() + APPEND_NOW_PAUSE;
            self.append_now_paused_until_ms
                .store(until.as_millis() as u64, Ordering::Relaxed);
            tracing::info!(
                took_ms = took.as_millis() as u64,
                pause_secs = APPEND_NOW_PAUSE.as_secs(),
                "slow ingest log append; appending off the async threads for a while"
            );
        }
        AppendNow::Done(appended)
    }

    /// The append proper, under the writer lock `writer` (released before the evicted records are
    /// retired).
    fn append_locked(
        &self,
        mut writer: MutexGuard<'_, Writer>,
        encoded: EncodedRecord,
    ) -> Result<u64, LogError> {
        let bytes = encoded.payload_bytes();
        let EncodedRecord {
            mut record,
            spans,
            checksum,
            events,
            routing_marks,
        } = encoded;
        let appended_at_ms = chrono::Utc::now().timestamp_millis();
        let seq = writer.next_seq;
        if let Some(dir) = self.options.dir.clone() {
            self.write_record(
                &mut writer,
                &dir,
                seq,
                appended_at_ms,
                checksum,
                &mut record,
            )?;
        }
        writer.next_seq += 1;
        let record = Bytes::from(std::mem::take(&mut record));
        let json: Arc<[Bytes]> = spans
            .into_iter()
            .map(|(start, end)| record.slice(start..end))
            .collect();
        // Cache under the writer lock so the cache stays in sequence order.
        let evicted = self.cache_record(Record {
            seq,
            appended_at_ms,
            bytes,
            events,
            json,
            routing_marks,
        });
        drop(writer);
        self.retire(evicted);
        // Appends finish in any order once the writer lock is released: the head only moves forward,
        // or a sink could look caught up (lag 0, a drain finished) with records still after it.
        self.head.send_if_modified(|head| {
            let advanced = seq + 1 > *head;
            if advanced {
                *head = seq + 1;
            }
            advanced
        });
        Ok(seq)
    }

    /// Whether the next record opens a segment file (the first, or past `segment_bytes`).
    fn needs_new_segment(&self, writer: &Writer) -> bool {
        match writer.segments.last() {
            None => true,
            Some(last) => writer.active.is_none() || last.bytes >= self.options.segment_bytes,
        }
    }

    fn write_record(
        &self,
        writer: &mut Writer,
        dir: &Path,
        seq: u64,
        appended_at_ms: i64,
        checksum: u32,
        record: &mut [u8],
    ) -> Result<(), LogError> {
        if self.needs_new_segment(writer) {
            if let Some(active) = writer.active.take() {
                // The closed segment is flushed by the next sync, outside the writer lock: an fsync
                // of up to a second of writes here stalled every append for tens of milliseconds.
                // (With `fsync_interval` zero each record was flushed as it was written.)
                if let Some(last) = writer.segments.last() {
                    if !self.options.fsync_interval.is_zero() {
                        let path = last.path.clone();
                        writer.closed_unsynced.push((active, path));
                        writer.dirty = true;
                    }
                }
            }
            let reuse_last = writer
                .segments
                .last()
                .is_some_and(|last| last.bytes < self.options.segment_bytes);
            if !reuse_last {
                let path = dir.join(segment_name(seq));
                writer.segments.push(Segment {
                    first_seq: seq,
                    path,
                    bytes: 0,
                    last_appended_ms: 0,
                });
            }
            let path = writer
                .segments
                .last()
                .map(|s| s.path.clone())
                .unwrap_or_default();
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io_error(&path))?;
            writer.active = Some(file);
        }
        // `record` is the header's room followed by the payload.
        let payload_length = (record.len() - HEADER_BYTES) as u32;
        record[0..4].copy_from_slice(&payload_length.to_le_bytes());
        record[4..8].copy_from_slice(&checksum.to_le_bytes());
        record[8..16].copy_from_slice(&seq.to_le_bytes());
        record[16..24].copy_from_slice(&appended_at_ms.to_le_bytes());
        let segment = writer
            .segments
            .last_mut()
            .ok_or_else(|| LogError::Encode("no segment".into()))?;
        let path = segment.path.clone();
        let file = writer
            .active
            .as_mut()
            .ok_or_else(|| LogError::Encode("no active segment".into()))?;
        let size_before = segment.bytes;
        file.write_all(record).map_err(io_error(&path))?;
        if self.options.fsync_interval.is_zero() {
            file.sync_data().map_err(io_error(&path))?;
        } else {
            if crate::writeback::crosses_writeback_mark(size_before, record.len() as u64) {
                crate::writeback::start_writeback(file);
            }
            writer.dirty = true;
        }
        let segment = writer
            .segments
            .last_mut()
            .ok_or_else(|| LogError::Encode("no segment".into()))?;
        segment.bytes += record.len() as u64;
        segment.last_appended_ms = appended_at_ms;
        Ok(())
    }

    /// Caches `record` and returns the records evicted to make room, for the caller to drop once it
    /// holds no lock.
    #[must_use]
    fn cache_record(&self, record: Record) -> Vec<Record> {
        let mut evicted = Vec::new();
        if self.options.dir.is_none() {
            // Memory mode: the cache is the log; `trim_memory` drops what every reader has passed.
            let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
            *lock(&self.cache_bytes) += record.bytes;
            cache.push_back(record);
            return evicted;
        }
        // Records every reader has passed are of no more use (a replay reads from disk): freed at
        // once, so the budget below is spent only on records some sink still needs. A failing
        // sink does not count (it reads from disk once it recovers), nor does one the budget has
        // already pushed out of the cache (see `cache_floor`). On disk the front only moves here,
        // under the writer lock the caller holds, so this peek stays true until the write lock.
        let front = self
            .cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .front()
            .map(|record| record.seq);
        let passed = self.cache_floor(front);
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        let mut cached = lock(&self.cache_bytes);
        *cached += record.bytes;
        cache.push_back(record);
        {
            // `cache_bytes` bounds the memory the decoded records take, which is several times their
            // encoded size (see DECODED_PER_ENCODED_BYTE).
            while cache.len() > 1
                && (cache.front().is_some_and(|oldest| oldest.seq < passed)
                    || cached.saturating_mul(DECODED_PER_ENCODED_BYTE) > self.options.cache_bytes)
            {
                if let Some(old) = cache.pop_front() {
                    *cached -= old.bytes;
                    evicted.push(old);
                }
            }
        }
        evicted
    }

    /// Leaves evicted records for the next ingest requests to free (see
    /// [`IngestLog::free_one_retired`]); past [`RETIRED_AT_MOST`], the oldest go to the freeing
    /// thread.
    fn retire(&self, records: Vec<Record>) {
        if records.is_empty() {
            return;
        }
        let overflow: Vec<Record> = {
            let mut retired = lock(&self.retired);
            retired.extend(records);
            let excess = retired.len().saturating_sub(RETIRED_AT_MOST);
            retired.drain(..excess).collect()
        };
        self.free(overflow);
    }

    /// Frees the oldest evicted record on the calling thread. Ingest calls it (or
    /// [`IngestLog::take_one_retired`]) once per request, before decoding its body: the thread that
    /// allocates a request's events then frees about as many, and jemalloc's thread cache hands part
    /// of the freed memory straight to the decoding. Freed on a thread of their own, every object
    /// went through a flush of that thread's cache to the arenas and a refill of the decoding
    /// thread's (BENCHMARKS.md, eighth pass: freeing 5,250 -> 3,195 instructions per event).
    pub fn free_one_retired(&self) {
        drop(self.take_one_retired());
    }

    /// The oldest evicted record, for the caller to free (the Segment endpoints free its events one
    /// per decoded message: `switchyard_router::freeing`).
    pub fn take_one_retired(&self) -> Option<Record> {
        lock(&self.retired).pop_front()
    }

    /// Hands evicted records to the freeing thread (or frees them here if it is gone or behind).
    fn free(&self, records: Vec<Record>) {
        if records.is_empty() {
            return;
        }
        // A failed send hands the records back in the error, dropped here.
        let _ = self.freer.try_send(records);
    }

    /// Flushes written records to stable storage if any were written since the last flush, then
    /// writes the cursors that moved since their files were last written.
    pub fn sync(&self) -> Result<(), LogError> {
        // Cursors are written after the records: a failing cursor write must not keep accepted
        // records from stable storage.
        let synced = self.sync_segments();
        let cursors = self.flush_cursors();
        // Records no request freed since the last sync (ingest went quiet) are freed now.
        let idle: Vec<Record> = lock(&self.retired).drain(..).collect();
        self.free(idle);
        synced.and(cursors)
    }

    fn sync_segments(&self) -> Result<(), LogError> {
        // The fsync runs on a duplicate of the segment's descriptor *outside* the writer lock: it
        // can take tens of milliseconds with a second of writes to flush, and appends (requests
        // waiting for their 2xx) must not wait for it. Whatever is written meanwhile marks the log
        // dirty again and is flushed by the next sync.
        let (mut files, active) = {
            let mut writer = lock(&self.writer);
            if !writer.dirty {
                return Ok(());
            }
            writer.dirty = false;
            let path = writer
                .segments
                .last()
                .map(|s| s.path.clone())
                .unwrap_or_default();
            let active = match writer.active.as_ref() {
                Some(file) => Some((file.try_clone().map_err(io_error(&path))?, path)),
                None => None,
            };
            (std::mem::take(&mut writer.closed_unsynced), active)
        };
        // Closed segments first (they hold the older records), then the active one.
        files.extend(active);
        let mut files = files.into_iter();
        while let Some((file, path)) = files.next() {
            if let Err(error) = file.sync_data() {
                // Not flushed: the next sync must try again. The active segment's duplicate needs
                // no keeping (the writer still holds the segment open); closed ones go back.
                let mut writer = lock(&self.writer);
                writer.dirty = true;
                let retry = std::iter::once((file, path.clone())).chain(files);
                let active_path = writer.segments.last().map(|s| s.path.clone());
                let closed: Vec<(File, PathBuf)> = retry
                    .filter(|(_, p)| Some(p) != active_path.as_ref())
                    .collect();
                writer.closed_unsynced.splice(0..0, closed);
                return Err(io_error(&path)(error));
            }
        }
        Ok(())
    }

    /// Registers a reader. It resumes at its persisted cursor, or starts at the head when new
    /// (use replay to backfill a new sink). Returns the starting sequence number.
    pub fn register_consumer(&self, name: &str) -> Result<u64, LogError> {
        let start = {
            let mut cursors = lock(&self.cursors);
            let head = self.head();
            *cursors.entry(name.to_string()).or_insert(head)
        };
        self.persist_cursor(name)?;
        Ok(start)
    }

    /// Removes a reader (a sink removed from the config): its cursor no longer holds records.
    pub fn remove_consumer(&self, name: &str) -> Result<(), LogError> {
        // A cursor write in progress finishes first; none after this one brings the file back.
        let _io = lock(&self.cursor_io);
        lock(&self.cursors).remove(name);
        lock(&self.stalled).remove(name);
        lock(&self.cursor_files).remove(name);
        if let Some(dir) = &self.options.dir {
            let path = dir.join("cursors").join(name);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(LogError::Io {
                        path,
                        source: error,
                    })
                }
            }
        }
        Ok(())
    }

    /// Records that `name` has delivered everything before `next_seq`. The cursor moves at once;
    /// its file is written at most every `CURSOR_WRITE_INTERVAL`, on tokio's blocking pool when
    /// called within a runtime (a sink's runner: a `rename` waits for the filesystem's journal,
    /// 5-40 ms under heavy writeback, and the runner shares its thread with ingest requests), and
    /// on the calling thread otherwise. A write writes every cursor then due. The error is that of
    /// a write made here; one on the pool is logged there and stays due for the next write or sync.
    pub fn commit(self: &Arc<Self>, name: &str, next_seq: u64) -> Result<(), LogError> {
        {
            let mut cursors = lock(&self.cursors);
            let cursor = cursors
                .get_mut(name)
                .ok_or_else(|| LogError::UnknownConsumer(name.to_string()))?;
            if next_seq <= *cursor {
                return Ok(());
            }
            *cursor = next_seq;
        }
        if self.options.dir.is_none() {
            self.trim_memory();
        } else if self.cursor_write_due(name) {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    if !self.cursor_write_scheduled.swap(true, Ordering::SeqCst) {
                        let log = self.clone();
                        runtime.spawn_blocking(move || {
                            if let Err(error) = log.flush_scheduled_cursors() {
                                tracing::error!(%error, "ingest log: cannot write a sink's cursor");
                            }
                        });
                    }
                }
                Err(_) => self.flush_cursors()?,
            }
        }
        Ok(())
    }

    /// The scheduled write: once it holds `cursor_io` it takes every cursor then due, so a commit
    /// after that point schedules the next one.
    fn flush_scheduled_cursors(&self) -> Result<(), LogError> {
        let io = lock(&self.cursor_io);
        self.cursor_write_scheduled.store(false, Ordering::SeqCst);
        self.flush_cursors_locked(io)
    }

    /// Notes that `name`'s cursor moved; true when its file is due for a write, which is then
    /// counted as made now (so the commits before it is made do not ask again).
    fn cursor_write_due(&self, name: &str) -> bool {
        let mut files = lock(&self.cursor_files);
        let file = files.entry(name.to_string()).or_default();
        file.unwritten = true;
        if file
            .written_at
            .is_some_and(|at| at.elapsed() < CURSOR_WRITE_INTERVAL)
        {
            return false;
        }
        file.written_at = Some(Instant::now());
        true
    }

    /// Moves a reader's cursor back (replay) or anywhere within the retained records.
    pub fn rewind(&self, name: &str, next_seq: u64) -> Result<(), LogError> {
        {
            let mut cursors = lock(&self.cursors);
            let cursor = cursors
                .get_mut(name)
                .ok_or_else(|| LogError::UnknownConsumer(name.to_string()))?;
            *cursor = next_seq.min(self.head());
        }
        self.persist_cursor(name)
    }

    /// Every reader's cursor.
    pub fn cursors(&self) -> BTreeMap<String, u64> {
        lock(&self.cursors)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Writes a reader's cursor file now.
    fn persist_cursor(&self, name: &str) -> Result<(), LogError> {
        if self.options.dir.is_none() {
            return Ok(());
        }
        let _io = lock(&self.cursor_io);
        self.write_cursor(name)
    }

    /// Writes every cursor that moved since its file was last written.
    pub fn flush_cursors(&self) -> Result<(), LogError> {
        if self.options.dir.is_none() {
            return Ok(());
        }
        self.flush_cursors_locked(lock(&self.cursor_io))
    }

    /// [`IngestLog::flush_cursors`] under `cursor_io`, held as `_io` throughout.
    fn flush_cursors_locked(&self, _io: MutexGuard<'_, ()>) -> Result<(), LogError> {
        let moved: Vec<String> = lock(&self.cursor_files)
            .iter()
            .filter(|(_, file)| file.unwritten)
            .map(|(name, _)| name.clone())
            .collect();
        let mut result = Ok(());
        for name in moved {
            result = result.and(self.write_cursor(&name));
        }
        result
    }

    /// Writes `name`'s cursor file and notes it; a failed write stays due. Called under `cursor_io`.
    fn write_cursor(&self, name: &str) -> Result<(), LogError> {
        self.note_written(name);
        self.write_current_cursor(name)
            .inspect_err(|_| self.note_unwritten(name))
    }

    /// Notes a write of `name`'s cursor file, made now with the cursor as it is.
    fn note_written(&self, name: &str) {
        let mut files = lock(&self.cursor_files);
        let file = files.entry(name.to_string()).or_default();
        file.written_at = Some(Instant::now());
        file.unwritten = false;
    }

    /// A failed write stays due for the next flush (unless the reader was removed meanwhile).
    fn note_unwritten(&self, name: &str) {
        if let Some(file) = lock(&self.cursor_files).get_mut(name) {
            file.unwritten = true;
        }
    }

    /// Writes the reader's cursor as it is now in memory. Called under `cursor_io`: the value is
    /// read at the moment of writing, so a write never puts back a value older than one another
    /// call already wrote.
    fn write_current_cursor(&self, name: &str) -> Result<(), LogError> {
        let Some(next_seq) = lock(&self.cursors).get(name).copied() else {
            // Removed meanwhile: its file is gone and must stay gone.
            return Ok(());
        };
        self.write_cursor_file(name, next_seq)
    }

    fn write_cursor_file(&self, name: &str, next_seq: u64) -> Result<(), LogError> {
        let Some(dir) = &self.options.dir else {
            return Ok(());
        };
        let path = dir.join("cursors").join(name);
        let temporary = dir.join("cursors").join(format!("{name}.tmp"));
        fs::write(&temporary, next_seq.to_string()).map_err(io_error(&temporary))?;
        fs::rename(&temporary, &path).map_err(io_error(&path))?;
        Ok(())
    }

    /// Marks a reader as droppable (a shadow sink) or not. When the log is full, droppable readers'
    /// oldest records are given up before ingest is refused.
    pub fn set_droppable(&self, name: &str, droppable: bool) {
        let mut readers = lock(&self.droppable);
        if droppable {
            readers.entry(name.to_string()).or_insert(0);
        } else {
            readers.remove(name);
        }
    }

    /// Marks a reader's sink as failing (or recovered). A failing sink's records are not kept in the
    /// cache for it: a dead sink under load would otherwise fill the cache's whole budget.
    pub fn set_stalled(&self, name: &str, stalled: bool) {
        let mut readers = lock(&self.stalled);
        if stalled {
            readers.insert(name.to_string());
        } else {
            readers.remove(name);
        }
    }

    /// The oldest record the cache keeps: the oldest cursor of a reader that reads from the cache,
    /// one whose sink is not failing and whose cursor is not before the cache's oldest record
    /// (`cache_front`). A sink slower than ingest would otherwise hold the whole budget for ever:
    /// once the budget evicts records it has not read, it reads from disk until it catches up, so
    /// the records kept for it would be evicted again before it reached them, unused.
    fn cache_floor(&self, cache_front: Option<u64>) -> u64 {
        let stalled = lock(&self.stalled);
        let front = cache_front.unwrap_or(0);
        lock(&self.cursors)
            .iter()
            .filter(|(name, cursor)| !stalled.contains(*name) && **cursor >= front)
            .map(|(_, cursor)| *cursor)
            .min()
            .unwrap_or_else(|| self.head())
    }

    /// Records a droppable reader lost to the full-log policy (0 for others).
    pub fn dropped_records(&self, name: &str) -> u64 {
        lock(&self.droppable).get(name).copied().unwrap_or(0)
    }

    /// A reader's cursor (the next record it will read), if registered.
    pub fn cursor(&self, name: &str) -> Option<u64> {
        lock(&self.cursors).get(name).copied()
    }

    /// Moves droppable readers that hold older records than every other reader up to the oldest
    /// cursor of a non-droppable reader (or the head). Returns whether any moved.
    fn release_droppable(&self) -> Result<bool, LogError> {
        let mut moved = Vec::new();
        {
            let mut droppable = lock(&self.droppable);
            if droppable.is_empty() {
                return Ok(false);
            }
            let mut cursors = lock(&self.cursors);
            let keep_from = cursors
                .iter()
                .filter(|(name, _)| !droppable.contains_key(*name))
                .map(|(_, cursor)| *cursor)
                .min()
                .unwrap_or_else(|| self.head());
            for (name, cursor) in cursors.iter_mut() {
                if let Some(lost) = droppable.get_mut(name) {
                    if *cursor < keep_from {
                        *lost += keep_from - *cursor;
                        tracing::warn!(sink = %name, records = keep_from - *cursor, "ingest log full: shadow sink's oldest records dropped");
                        *cursor = keep_from;
                        moved.push((name.clone(), keep_from));
                    }
                }
            }
        }
        for (name, _) in &moved {
            self.persist_cursor(name)?;
        }
        if self.options.dir.is_none() && !moved.is_empty() {
            self.trim_memory();
        }
        Ok(!moved.is_empty())
    }

    fn min_cursor(&self) -> u64 {
        lock(&self.cursors)
            .values()
            .copied()
            .min()
            .unwrap_or_else(|| self.head())
    }

    fn trim_memory(&self) {
        let min_cursor = self.min_cursor();
        let mut trimmed = Vec::new();
        {
            let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
            let mut cached = lock(&self.cache_bytes);
            while cache.front().is_some_and(|record| record.seq < min_cursor) {
                if let Some(old) = cache.pop_front() {
                    *cached -= old.bytes;
                    trimmed.push(old);
                }
            }
        }
        // Freed without the cache lock held, by the next requests (see `retire`).
        self.retire(trimmed);
    }

    /// Deletes closed segments that every reader has passed and that are past retention (or all such
    /// segments, oldest first, while the log is over its size limit). Returns bytes freed.
    pub fn collect_garbage(&self) -> Result<u64, LogError> {
        if self.options.dir.is_none() {
            self.trim_memory();
            return Ok(0);
        }
        let min_cursor = self.min_cursor();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let retention_ms = self.options.retention.as_millis() as i64;
        let mut removed = Vec::new();
        {
            let mut writer = lock(&self.writer);
            let mut used: u64 = writer.segments.iter().map(|s| s.bytes).sum();
            while writer.segments.len() > 1 {
                let next_first = writer.segments[1].first_seq;
                let oldest = &writer.segments[0];
                let fully_read = next_first <= min_cursor;
                let expired = now_ms - oldest.last_appended_ms > retention_ms;
                let over_limit = used > self.options.max_bytes / 10 * 9;
                if !(fully_read && (expired || over_limit)) {
                    break;
                }
                let segment = writer.segments.remove(0);
                used -= segment.bytes;
                removed.push(segment);
            }
        }
        // Unlinking a 64 MiB file can take milliseconds: appends must not wait for it.
        let mut freed = 0;
        for segment in removed {
            fs::remove_file(&segment.path).map_err(io_error(&segment.path))?;
            freed += segment.bytes;
        }
        Ok(freed)
    }

    /// The sequence number of the first retained record appended at or after `since_ms`.
    pub fn first_seq_since(&self, since_ms: i64) -> Result<u64, LogError> {
        let segments: Vec<(u64, PathBuf)> = {
            let writer = lock(&self.writer);
            writer
                .segments
                .iter()
                .map(|s| (s.first_seq, s.path.clone()))
                .collect()
        };
        if segments.is_empty() {
            let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
            return Ok(cache
                .iter()
                .find(|record| record.appended_at_ms >= since_ms)
                .map(|record| record.seq)
                .unwrap_or_else(|| self.head()));
        }
        for (first_seq, path) in segments {
            let mut reader = SegmentReader::open(&path, first_seq)?;
            while let Some(header) = reader.next_header()? {
                if header.appended_at_ms >= since_ms {
                    return Ok(header.seq);
                }
                reader.skip_payload(&header)?;
            }
        }
        Ok(self.head())
    }

    /// The oldest retained sequence number.
    pub fn first_retained_seq(&self) -> u64 {
        let writer = lock(&self.writer);
        match writer.segments.first() {
            Some(segment) => segment.first_seq,
            None => {
                let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
                cache.front().map(|r| r.seq).unwrap_or(writer.next_seq)
            }
        }
    }

    /// Reads records from `from_seq` on: whole records, at least one, until they hold `max_events`
    /// events (a sink asks for what its batch has room for: records it held beyond that would stay in
    /// memory, outside the cache's budget, until it got to them). Recent records come from memory;
    /// older ones are read from disk, at most 8 MiB of them (blocking: call from a blocking context).
    pub fn read(&self, from_seq: u64, max_events: usize) -> Result<Vec<Record>, LogError> {
        match self.read_cached(from_seq, max_events) {
            Some(records) => Ok(records),
            None => self.read_from_disk(from_seq, max_events),
        }
    }

    /// What [`IngestLog::read`] returns when the records are in memory (it never blocks on I/O, so a
    /// sink runner calls it on its own task); `None` when they must be read from disk.
    pub fn read_cached(&self, from_seq: u64, max_events: usize) -> Option<Vec<Record>> {
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        if let Some(front) = cache.front() {
            if from_seq >= front.seq {
                let skip = (from_seq - front.seq) as usize;
                return Some(take_events(cache.iter().skip(skip), max_events));
            }
        }
        // Memory mode: records before the cache were delivered by everyone or never existed.
        self.options
            .dir
            .is_none()
            .then(|| take_events(cache.iter(), max_events))
    }

    fn read_from_disk(&self, from_seq: u64, max_events: usize) -> Result<Vec<Record>, LogError> {
        let segments: Vec<(u64, PathBuf, u64)> = {
            let writer = lock(&self.writer);
            writer
                .segments
                .iter()
                .map(|s| (s.first_seq, s.path.clone(), s.bytes))
                .collect()
        };
        let start_index = segments
            .iter()
            .rposition(|(first, _, _)| *first <= from_seq)
            .unwrap_or(0);
        let mut records = Vec::new();
        // A sink that fell behind the cache reads at most this much JSON per call: decoded, a
        // read of 256 large records took hundreds of MB at once.
        let mut read_bytes = 0usize;
        let mut read_events = 0usize;
        let full = |read_events: usize, read_bytes: usize| {
            read_events >= max_events.max(1) || read_bytes >= DISK_READ_BUDGET_BYTES
        };
        // Where the previous read that ended at `from_seq` stopped, if in this segment: without it
        // every read scans its segment from the start (tens of MB for a sink reading small batches).
        let hint = lock(&self.read_hints)
            .iter()
            .find(|hint| hint.next_seq == from_seq)
            .copied();
        let mut last_read = None;
        for (first_seq, path, valid_bytes) in segments.into_iter().skip(start_index) {
            let mut reader = SegmentReader::open(&path, first_seq)?;
            reader.limit = valid_bytes;
            if let Some(hint) = hint.filter(|hint| hint.segment_first_seq == first_seq) {
                reader.seek_to(hint.offset)?;
            }
            while !full(read_events, read_bytes) {
                let Some(header) = reader.next_header()? else {
                    break;
                };
                if header.seq < from_seq {
                    reader.skip_payload(&header)?;
                    continue;
                }
                match reader.read_payload(&header)? {
                    Some((events, json)) => {
                        read_bytes += header.length as usize;
                        read_events += events.len();
                        last_read = Some(ReadHint {
                            next_seq: header.seq + 1,
                            segment_first_seq: first_seq,
                            offset: reader.position,
                        });
                        records.push(Record {
                            seq: header.seq,
                            appended_at_ms: header.appended_at_ms,
                            bytes: header.length as usize,
                            routing_marks: events.iter().any(|event| event.has_routing_marks()),
                            events,
                            json,
                        })
                    }
                    None => {
                        tracing::error!(segment = %path.display(), seq = header.seq, "ingest log: corrupt record skipped");
                    }
                }
            }
            if full(read_events, read_bytes) {
                break;
            }
        }
        if let Some(hint) = last_read {
            let mut hints = lock(&self.read_hints);
            hints.retain(|old| old.next_seq != from_seq);
            if hints.len() >= READ_HINTS {
                hints.pop_front();
            }
            hints.push_back(hint);
        }
        Ok(records)
    }
}

/// Whole records from `records`, at least one, until they hold `max_events` events.
fn take_events<'a>(records: impl Iterator<Item = &'a Record>, max_events: usize) -> Vec<Record> {
    let mut taken = 0usize;
    records
        .take_while(|record| {
            let room = taken < max_events.max(1);
            taken += record.events.len();
            room
        })
        .cloned()
        .collect()
}

struct Header {
    length: u32,
    checksum: u32,
    seq: u64,
    appended_at_ms: i64,
}

struct SegmentReader {
    path: PathBuf,
    reader: BufReader<File>,
    position: u64,
    limit: u64,
}

impl SegmentReader {
    fn open(path: &Path, _first_seq: u64) -> Result<SegmentReader, LogError> {
        let file = File::open(path).map_err(io_error(path))?;
        let limit = file.metadata().map_err(io_error(path))?.len();
        Ok(SegmentReader {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(256 * 1024, file),
            position: 0,
            limit,
        })
    }

    /// Continues at `offset`, the start of a record's header.
    fn seek_to(&mut self, offset: u64) -> Result<(), LogError> {
        self.reader
            .seek(SeekFrom::Start(offset))
            .map_err(io_error(&self.path))?;
        self.position = offset;
        Ok(())
    }

    /// The next record's header, or None at the end (or at a torn tail).
    fn next_header(&mut self) -> Result<Option<Header>, LogError> {
        if self.position + HEADER_BYTES as u64 > self.limit {
            return Ok(None);
        }
        let mut header = [0u8; HEADER_BYTES];
        match self.reader.read_exact(&mut header) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(error) => {
                return Err(LogError::Io {
                    path: self.path.clone(),
                    source: error,
                })
            }
        }
        let field = |range: std::ops::Range<usize>| {
            let mut bytes = [0u8; 8];
            bytes[..range.len()].copy_from_slice(&header[range]);
            u64::from_le_bytes(bytes)
        };
        let parsed = Header {
            length: field(0..4) as u32,
            checksum: field(4..8) as u32,
            seq: field(8..16),
            appended_at_ms: field(16..24) as i64,
        };
        if parsed.length as usize > MAX_RECORD_BYTES
            || self.position + (HEADER_BYTES as u64) + u64::from(parsed.length) > self.limit
        {
            return Ok(None);
        }
        self.position += HEADER_BYTES as u64;
        Ok(Some(parsed))
    }

    fn skip_payload(&mut self, header: &Header) -> Result<(), LogError> {
        self.reader
            .seek_relative(i64::from(header.length))
            .map_err(io_error(&self.path))?;
        self.position += u64::from(header.length);
        Ok(())
    }

    fn read_raw(&mut self, header: &Header) -> Result<Vec<u8>, LogError> {
        let mut payload = vec![0u8; header.length as usize];
        self.reader
            .read_exact(&mut payload)
            .map_err(io_error(&self.path))?;
        self.position += u64::from(header.length);
        Ok(payload)
    }

    /// The record's events, or None when its checksum or encoding is wrong.
    fn read_payload(&mut self, header: &Header) -> Result<Option<DecodedEvents>, LogError> {
        let payload = self.read_raw(header)?;
        if crc32fast::hash(&payload) != header.checksum {
            return Ok(None);
        }
        Ok(decode_events(Bytes::from(payload)))
    }
}

struct SegmentScan {
    records: u64,
    next_seq: u64,
    valid_bytes: u64,
    file_bytes: u64,
    last_appended_ms: i64,
}

/// Walks a segment checking every record's checksum; stops at the first bad one.
fn scan_segment(path: &Path, first_seq: u64) -> Result<SegmentScan, LogError> {
    let mut reader = SegmentReader::open(path, first_seq)?;
    let file_bytes = reader.limit;
    let mut scan = SegmentScan {
        records: 0,
        next_seq: first_seq,
        valid_bytes: 0,
        file_bytes,
        last_appended_ms: 0,
    };
    while let Some(header) = reader.next_header()? {
        let payload = reader.read_raw(&header)?;
        if crc32fast::hash(&payload) != header.checksum || header.seq < scan.next_seq {
            break;
        }
        scan.records += 1;
        scan.next_seq = header.seq + 1;
        scan.valid_bytes = reader.position;
        scan.last_appended_ms = header.appended_at_ms;
    }
    // Re-seek not needed: the scan only reports.
    let _ = reader.reader.seek(SeekFrom::Start(0));
    Ok(scan)
}

/// Runs `sync` every `interval` until the returned handle is dropped or aborted.
pub fn spawn_syncer(
    log: Arc<IngestLog>,
    interval: Duration,
) -> Option<tokio::task::JoinHandle<()>> {
    if log.options.dir.is_none() || interval.is_zero() {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        loop {
            ticker.tick().await;
            let log = log.clone();
            let result = tokio::task::spawn_blocking(move || {
                log.sync()?;
                log.collect_garbage()
            })
            .await;
            match result {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::error!(%error, "ingest log: background sync failed"),
                Err(error) => tracing::error!(%error, "ingest log: background sync panicked"),
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_schemas::EventType;

    pub(super) fn event(id: &str) -> Event {
        serde_json::from_value(serde_json::json!({
            "type": "track", "event": "Tested", "messageId": id, "userId": "u",
            "timestamp": "2024-01-01T00:00:00.000Z", "receivedAt": "2024-01-01T00:00:00.000Z",
            "source": "test"
        }))
        .unwrap()
    }

    fn disk_options(dir: &Path) -> LogOptions {
        LogOptions {
            dir: Some(dir.to_path_buf()),
            segment_bytes: 1024,
            ..LogOptions::default()
        }
    }

    fn ids(records: &[Record]) -> Vec<String> {
        records
            .iter()
            .flat_map(|r| r.events.iter().map(|e| e.message_id.clone()))
            .collect()
    }

    #[test]
    fn each_events_json_is_its_canonical_encoding_from_cache_and_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut odd = event("m\"1");
        odd.properties
            .insert("text".into(), serde_json::json!("ünï \n ✓ \u{1}"));
        let batch = vec![event("m0"), odd, event("m2")];
        let expected: Vec<Vec<u8>> = batch
            .iter()
            .map(|e| serde_json::to_vec(e).unwrap())
            .collect();
        {
            let log = IngestLog::open(disk_options(dir.path())).unwrap();
            log.append(batch.clone()).unwrap();
            let cached = log.read(0, 10).unwrap();
            let json: Vec<Vec<u8>> = cached[0].json.iter().map(|b| b.to_vec()).collect();
            assert_eq!(json, expected);
        }
        // After a restart the record comes from disk, with the same bytes.
        let log = IngestLog::open(disk_options(dir.path())).unwrap();
        let read = log.read(0, 10).unwrap();
        let json: Vec<Vec<u8>> = read[0].json.iter().map(|b| b.to_vec()).collect();
        assert_eq!(json, expected);
        assert_eq!(read[0].events.len(), 3);
    }

    #[test]
    fn records_note_whether_any_event_has_routing_marks_from_cache_and_disk() {
        let dir = tempfile::tempdir().unwrap();
        let marked = |key: &str, value: serde_json::Value| {
            let mut marked = event("marked");
            marked.context.insert(key.into(), value);
            marked
        };
        let batches = [
            vec![event("a"), event("b")],
            vec![
                event("c"),
                marked("quarantine", serde_json::json!({"sink": "q"})),
            ],
            vec![marked("synthetic", serde_json::json!(true))],
            vec![marked("locale", serde_json::json!("de"))],
        ];
        let expected = vec![false, true, true, false];
        let marks =
            |records: &[Record]| records.iter().map(|r| r.routing_marks).collect::<Vec<_>>();
        {
            let log = IngestLog::open(disk_options(dir.path())).unwrap();
            for batch in &batches {
                log.append(batch.clone()).unwrap();
            }
            assert_eq!(marks(&log.read(0, 10).unwrap()), expected);
        }
        let log = IngestLog::open(disk_options(dir.path())).unwrap();
        assert_eq!(marks(&log.read(0, 10).unwrap()), expected);
    }

    /// Tries [`IngestLog::try_append_now`]; a deferred record is appended the other way, so the
    /// log goes on in step. Whether it was appended at once.
    fn appended_now(log: &IngestLog, id: &str) -> bool {
        match log.try_append_now(EncodedRecord::new(vec![event(id)])) {
            AppendNow::Done(appended) => {
                appended.unwrap();
                true
            }
            AppendNow::Deferred(encoded) => {
                log.append_encoded(encoded).unwrap();
                false
            }
        }
    }

    #[test]
    fn appends_are_made_on_the_callers_thread_only_when_nothing_in_them_can_wait() {
        let dir = tempfile::tempdir().unwrap();
        let log = IngestLog::open(disk_options(dir.path())).unwrap();
        // The first append opens the first segment's file.
        assert!(!appended_now(&log, "m0"));
        assert!(appended_now(&log, "m1"));
        // A busy writer is not waited for.
        {
            let _writer = lock(&log.writer);
            match log.try_append_now(EncodedRecord::new(vec![event("busy")])) {
                AppendNow::Deferred(_) => {}
                AppendNow::Done(_) => panic!("appended while the writer was held"),
            }
        }
        // Exactly the appends that open a segment (the last one being full) are deferred.
        let segments = || log.writer.lock().unwrap().segments.len();
        for i in 2..40 {
            let before = segments();
            let at_once = appended_now(&log, &format!("m{i}"));
            assert_eq!(at_once, segments() == before, "append m{i}");
        }
        assert!(segments() > 2);
        // Every record is there, in order, whichever way it went (and again after a restart).
        let expected: Vec<String> = (0..40).map(|i| format!("m{i}")).collect();
        assert_eq!(ids(&log.read(0, 100).unwrap()), expected);
        drop(log);
        let log = IngestLog::open(disk_options(dir.path())).unwrap();
        assert_eq!(ids(&log.read(0, 100).unwrap()), expected);
    }

    #[test]
    fn exactly_the_appends_that_ask_for_writeback_are_deferred() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = IngestLog::open(LogOptions {
            segment_bytes: 64 << 20,
            ..disk_options(dir.path())
        })
        .unwrap();
        // A busy test machine must not pause appends on the caller's thread (tested elsewhere).
        Arc::get_mut(&mut log).unwrap().slow_append_now = Duration::MAX;
        let large = |id: &str| {
            let mut large = event(id);
            large
                .properties
                .insert("blob".into(), "x".repeat(700 << 10).into());
            EncodedRecord::new(vec![large])
        };
        let segment_bytes = || lock(&log.writer).segments.last().map_or(0, |s| s.bytes);
        let mut deferred = Vec::new();
        for i in 0..30 {
            let before = segment_bytes();
            let encoded = large(&format!("m{i}"));
            let crosses =
                crate::writeback::crosses_writeback_mark(before, encoded.record.len() as u64);
            match log.try_append_now(encoded) {
                AppendNow::Done(appended) => {
                    appended.unwrap();
                    assert!(
                        !crosses && i > 0,
                        "append m{i} asked for writeback on the caller's thread"
                    );
                }
                AppendNow::Deferred(encoded) => {
                    log.append_encoded(encoded).unwrap();
                    assert!(crosses || i == 0, "append m{i} deferred for nothing");
                    deferred.push(i);
                }
            }
        }
        // ~20 MiB: the segment's opening and the 8 and 16 MiB marks.
        assert_eq!(deferred.len(), 3, "{deferred:?}");
        let mut read = Vec::new();
        while read.len() < 30 {
            let records = log.read(read.len() as u64, 100).unwrap();
            assert!(!records.is_empty());
            read.extend(ids(&records));
        }
        assert_eq!(read, (0..30).map(|i| format!("m{i}")).collect::<Vec<_>>());
    }

    #[test]
    fn a_slow_append_sends_the_next_ones_off_the_callers_thread() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = IngestLog::open(disk_options(dir.path())).unwrap();
        assert!(!appended_now(&log, "opens the segment"));
        assert!(appended_now(&log, "fast"));
        Arc::get_mut(&mut log).unwrap().slow_append_now = Duration::ZERO;
        assert!(appended_now(&log, "slow"));
        assert!(!appended_now(&log, "paused"));
        assert!(!appended_now(&log, "still paused"));
    }

    #[test]
    fn appends_that_would_wait_for_the_disk_or_for_room_are_deferred() {
        let dir = tempfile::tempdir().unwrap();
        let flushing = IngestLog::open(LogOptions {
            fsync_interval: Duration::ZERO,
            ..disk_options(dir.path())
        })
        .unwrap();
        assert!(!appended_now(&flushing, "a"));
        assert!(!appended_now(&flushing, "b"));
        drop(flushing);
        // Near the size limit the append may have to collect garbage or refuse: deferred, so
        // `append_encoded` decides.
        let dir = tempfile::tempdir().unwrap();
        let one_event = EncodedRecord::new(vec![event("a")]).payload_bytes() as u64;
        let log = IngestLog::open(LogOptions {
            max_bytes: one_event * 2,
            segment_bytes: 1 << 20,
            ..disk_options(dir.path())
        })
        .unwrap();
        assert!(!appended_now(&log, "a"));
        match log.try_append_now(EncodedRecord::new(vec![event("b"), event("c")])) {
            AppendNow::Deferred(encoded) => {
                assert!(matches!(
                    log.append_encoded(encoded),
                    Err(LogError::Full { .. })
                ));
            }
            AppendNow::Done(_) => panic!("appended past the limit"),
        }
        // In memory there is no disk to wait for.
        let memory = IngestLog::open(LogOptions::default()).unwrap();
        assert!(appended_now(&memory, "a"));
        assert_eq!(ids(&memory.read(0, 10).unwrap()), vec!["a".to_string()]);
    }

    #[test]
    fn closed_segments_are_flushed_by_the_next_sync_not_by_the_append_that_rolled() {
        let dir = tempfile::tempdir().unwrap();
        let log = IngestLog::open(disk_options(dir.path())).unwrap();
        for i in 0..20 {
            log.append(vec![event(&format!("m{i}"))]).unwrap();
        }
        let closed = lock(&log.writer).closed_unsynced.len();
        assert!(
            closed >= 2,
            "20 records roll 1 KiB segments: {closed} closed"
        );
        log.sync().unwrap();
        {
            let writer = lock(&log.writer);
            assert!(writer.closed_unsynced.is_empty() && !writer.dirty);
        }
        // Synced every append: nothing is left for the syncer.
        let every_append = tempfile::tempdir().unwrap();
        let log = IngestLog::open(LogOptions {
            fsync_interval: Duration::ZERO,
            ..disk_options(every_append.path())
        })
        .unwrap();
        for i in 0..20 {
            log.append(vec![event(&format!("m{i}"))]).unwrap();
        }
        let writer = lock(&log.writer);
        assert!(writer.closed_unsynced.is_empty() && !writer.dirty);
    }

    /// A log opened with `options` and two readers, "fast" and "slow", registered.
    fn fast_and_slow_readers(options: LogOptions) -> Arc<IngestLog> {
        let log = IngestLog::open(options).unwrap();
        log.register_consumer("fast").unwrap();
        log.register_consumer("slow").unwrap();
        log
    }

    /// The sequence numbers the decoded cache holds, oldest first.
    fn cached_seqs(log: &IngestLog) -> Vec<u64> {
        let cache = log.cache.read().unwrap();
        cache.iter().map(|record| record.seq).collect()
    }

    #[test]
    fn the_cache_keeps_only_records_some_reader_still_needs() {
        let dir = tempfile::tempdir().unwrap();
        let log = fast_and_slow_readers(LogOptions {
            segment_bytes: 1 << 20,
            ..disk_options(dir.path())
        });
        for i in 0..10 {
            log.append(vec![event(&format!("m{i}"))]).unwrap();
        }
        log.commit("fast", 10).unwrap();
        log.commit("slow", 4).unwrap();
        log.append(vec![event("m10")]).unwrap();
        assert_eq!(cached_seqs(&log), (4..11).collect::<Vec<_>>());
        // What is no longer cached is read from disk, the same records.
        log.rewind("fast", 0).unwrap();
        assert_eq!(ids(&log.read(0, 3).unwrap()), ["m0", "m1", "m2"]);
        log.commit("fast", 11).unwrap();
        log.commit("slow", 11).unwrap();
        log.append(vec![event("m11")]).unwrap();
        assert_eq!(cached_seqs(&log), [11]);
        // A failing sink holds nothing in the cache; it reads from disk when it recovers.
        log.set_stalled("slow", true);
        log.commit("fast", 12).unwrap();
        log.append(vec![event("m12")]).unwrap();
        assert_eq!(cached_seqs(&log), [12]);
        assert_eq!(ids(&log.read(11, 10).unwrap()), ["m11", "m12"]);
        log.set_stalled("slow", false);
        log.append(vec![event("m13")]).unwrap();
        assert_eq!(cached_seqs(&log), [12, 13]);
    }

    #[test]
    fn evicted_records_wait_for_requests_to_free_them_the_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let log = IngestLog::open(LogOptions {
            segment_bytes: 1 << 20,
            ..disk_options(dir.path())
        })
        .unwrap();
        log.register_consumer("only").unwrap();
        let total = RETIRED_AT_MOST as u64 + 3;
        let mut events = Vec::new();
        for i in 0..total {
            log.append(vec![event(&format!("m{i}"))]).unwrap();
            events.push(Arc::downgrade(
                &log.cache.read().unwrap().back().unwrap().events[0],
            ));
        }
        // The reader passes everything but the newest record: the next append evicts them all.
        log.commit("only", total).unwrap();
        log.append(vec![event("last")]).unwrap();
        assert_eq!(cached_seqs(&log), [total]);
        let retired: Vec<u64> = lock(&log.retired).iter().map(|r| r.seq).collect();
        // The oldest beyond the queue's bound went to the freeing thread at once.
        assert_eq!(retired, (3..total).collect::<Vec<_>>());
        let alive = |events: &[std::sync::Weak<Event>]| {
            events.iter().filter(|e| e.upgrade().is_some()).count()
        };
        assert_eq!(alive(&events[3..]), RETIRED_AT_MOST);
        log.free_one_retired();
        assert!(events[3].upgrade().is_none(), "the oldest is freed first");
        assert_eq!(alive(&events[4..]), RETIRED_AT_MOST - 1);
        // A sync frees what no request did.
        log.sync().unwrap();
        assert!(lock(&log.retired).is_empty());
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(&events) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(alive(&events), 0, "the freeing thread frees the rest");
    }

    #[test]
    fn a_reader_the_budget_pushed_out_of_the_cache_holds_nothing_in_it() {
        let record_bytes = {
            let probe = IngestLog::open(LogOptions::default()).unwrap();
            probe.append(vec![event("m0")]).unwrap();
            let bytes = probe.cache.read().unwrap()[0].bytes;
            bytes
        };
        let dir = tempfile::tempdir().unwrap();
        let log = fast_and_slow_readers(LogOptions {
            segment_bytes: 1 << 20,
            // Room for four records of decoded events.
            cache_bytes: 4 * record_bytes * DECODED_PER_ENCODED_BYTE,
            ..disk_options(dir.path())
        });
        for i in 0..4 {
            log.append(vec![event(&format!("m{i}"))]).unwrap();
        }
        // Both readers are within the cache: it holds what the slower one still needs.
        log.commit("fast", 4).unwrap();
        log.commit("slow", 1).unwrap();
        log.append(vec![event("m4")]).unwrap();
        assert_eq!(cached_seqs(&log), [1, 2, 3, 4]);
        // The budget evicts records "slow" has not read: from then on it reads from disk, and the
        // cache keeps only what "fast" needs instead of filling up for a reader it no longer serves.
        log.append(vec![event("m5")]).unwrap();
        assert_eq!(cached_seqs(&log), [2, 3, 4, 5]);
        log.commit("fast", 6).unwrap();
        log.append(vec![event("m6")]).unwrap();
        assert_eq!(cached_seqs(&log), [6]);
        assert_eq!(ids(&log.read(1, 3).unwrap()), ["m1", "m2", "m3"]);
        // Caught up, it is served from the cache again.
        log.commit("slow", 6).unwrap();
        log.append(vec![event("m7")]).unwrap();
        assert_eq!(cached_seqs(&log), [6, 7]);
    }

    #[test]
    fn small_reads_from_disk_continue_where_the_last_one_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let log = IngestLog::open(disk_options(dir.path())).unwrap();
        for i in 0..40 {
            log.append(vec![event(&format!("m{i}"))]).unwrap();
        }
        assert!(
            lock(&log.writer).segments.len() > 3,
            "small segments roll over"
        );
        // Nobody reads yet, so only the newest record is cached: these reads go to disk, each
        // starting where the previous one stopped, across segments.
        let mut read = Vec::new();
        let mut next = 0;
        while next < 39 {
            let records = log.read(next, 3).unwrap();
            assert!(!records.is_empty() && records.len() <= 3);
            assert_eq!(records[0].seq, next);
            next = records.last().unwrap().seq + 1;
            read.extend(ids(&records));
            assert!(lock(&log.read_hints)
                .iter()
                .any(|hint| hint.next_seq == next));
        }
        assert_eq!(read, (0..39).map(|i| format!("m{i}")).collect::<Vec<_>>());
        // A read from elsewhere (no hint for it) scans its segment, and gets the same records.
        assert_eq!(ids(&log.read(7, 2).unwrap()), ["m7", "m8"]);
        assert_eq!(ids(&log.read(9, 1).unwrap()), ["m9"]);
    }

    #[test]
    fn appends_and_reads_back_across_segments_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = IngestLog::open(disk_options(dir.path())).unwrap();
            log.register_consumer("a").unwrap();
            for i in 0..50 {
                assert_eq!(log.append(vec![event(&format!("m{i}"))]).unwrap(), i);
            }
            log.commit("a", 20).unwrap();
        }
        let log = IngestLog::open(disk_options(dir.path())).unwrap();
        assert_eq!(log.head(), 50);
        assert!(log.recovery().segments > 1, "small segments roll over");
        let start = log.register_consumer("a").unwrap();
        assert_eq!(start, 20);
        let records = log.read(start, 1000).unwrap();
        assert_eq!(
            ids(&records),
            (20..50).map(|i| format!("m{i}")).collect::<Vec<_>>()
        );
        assert_eq!(records[0].events[0].kind, EventType::Track);
        // Appending continues the sequence.
        assert_eq!(log.append(vec![event("m50")]).unwrap(), 50);
    }

    #[test]
    fn cursor_files_are_written_at_most_every_interval_and_at_sync_and_drop() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str| dir.path().join("cursors").join(name);
        let on_disk = || std::fs::read_to_string(file("a")).unwrap();
        {
            let log = IngestLog::open(disk_options(dir.path())).unwrap();
            log.register_consumer("a").unwrap();
            log.register_consumer("b").unwrap();
            for i in 0..10 {
                log.append(vec![event(&format!("m{i}"))]).unwrap();
            }
            assert_eq!(on_disk(), "0", "registering writes the cursor");
            std::thread::sleep(CURSOR_WRITE_INTERVAL);
            // Each pair of commits below follows straight on from the write before it.
            log.commit("a", 3).unwrap();
            assert_eq!(on_disk(), "3", "a commit after the interval writes at once");
            log.commit("a", 5).unwrap();
            assert_eq!(on_disk(), "3", "a commit right after a write waits");
            assert_eq!(log.cursor("a"), Some(5), "the cursor itself moved at once");
            log.sync().unwrap();
            assert_eq!(on_disk(), "5", "a sync writes what waited");
            // A removed reader's waiting cursor does not bring its file back.
            log.commit("b", 4).unwrap();
            log.commit("b", 7).unwrap();
            log.remove_consumer("b").unwrap();
            assert!(!file("b").exists());
            log.commit("a", 8).unwrap();
            assert_eq!(on_disk(), "5", "only the drop below can write 8");
        }
        assert_eq!(on_disk(), "8", "dropping the log writes what waited");
        assert!(!file("b").exists());
        let log = IngestLog::open(disk_options(dir.path())).unwrap();
        assert_eq!(log.register_consumer("a").unwrap(), 8);
    }

    #[test]
    fn a_commit_within_a_runtime_does_not_wait_for_the_cursor_file() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let on_disk = || std::fs::read_to_string(dir.path().join("cursors").join("a")).unwrap();
        let log = IngestLog::open(disk_options(dir.path())).unwrap();
        log.register_consumer("a").unwrap();
        for i in 0..10 {
            log.append(vec![event(&format!("m{i}"))]).unwrap();
        }
        // The last write was long enough ago: the next commit's write is due.
        lock(&log.cursor_files).get_mut("a").unwrap().written_at = None;
        // A write in progress (a rename waiting for the journal) holds the cursor files.
        let in_progress = lock(&log.cursor_io);
        let (done, committed) = std::sync::mpsc::channel();
        let committer = {
            let log = log.clone();
            let runtime = runtime.handle().clone();
            std::thread::spawn(move || {
                let _within = runtime.enter();
                log.commit("a", 5).unwrap();
                done.send(()).unwrap();
            })
        };
        assert!(
            committed.recv_timeout(Duration::from_secs(5)).is_ok(),
            "the commit waited for the cursor file"
        );
        assert_eq!(log.cursor("a"), Some(5), "the cursor moved at once");
        assert_eq!(on_disk(), "0");
        committer.join().unwrap();
        // A further due commit while that write waits is left to it (no second pool thread).
        assert!(log.cursor_write_scheduled.load(Ordering::SeqCst));
        lock(&log.cursor_files).get_mut("a").unwrap().written_at = None;
        {
            let _within = runtime.enter();
            log.commit("a", 6).unwrap();
        }
        drop(in_progress);
        let deadline = Instant::now() + Duration::from_secs(10);
        while on_disk() != "6" && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            on_disk(),
            "6",
            "the blocking pool's one write took both commits"
        );
        assert!(!log.cursor_write_scheduled.load(Ordering::SeqCst));
    }

    #[test]
    fn torn_tail_is_cut_and_only_the_torn_record_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let options = LogOptions {
            segment_bytes: 1 << 20,
            ..disk_options(dir.path())
        };
        {
            let log = IngestLog::open(options.clone()).unwrap();
            for i in 0..10 {
                log.append(vec![event(&format!("m{i}"))]).unwrap();
            }
        }
        let segment = dir.path().join(segment_name(0));
        let length = fs::metadata(&segment).unwrap().len();
        let file = OpenOptions::new().write(true).open(&segment).unwrap();
        file.set_len(length - 7).unwrap();
        let log = IngestLog::open(options).unwrap();
        assert!(log.recovery().torn_bytes > 0);
        assert_eq!(log.head(), 9);
        log.register_consumer("a").unwrap();
        log.rewind("a", 0).unwrap();
        let records = log.read(0, 100).unwrap();
        assert_eq!(
            ids(&records),
            (0..9).map(|i| format!("m{i}")).collect::<Vec<_>>()
        );
        // New appends land after the cut, cleanly.
        assert_eq!(log.append(vec![event("again")]).unwrap(), 9);
        drop(log);
        let log = IngestLog::open(LogOptions {
            segment_bytes: 1 << 20,
            ..disk_options(dir.path())
        })
        .unwrap();
        assert_eq!(log.recovery().torn_bytes, 0);
        assert_eq!(log.head(), 10);
    }

    #[test]
    fn head_never_moves_backwards_under_concurrent_appends() {
        use std::sync::atomic::AtomicBool;
        let log = Arc::new(IngestLog::open(LogOptions::default()).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (log, stop) = (log.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut highest, mut backwards) = (0, 0u64);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let head = log.head();
                    if head < highest {
                        backwards += 1;
                    }
                    highest = highest.max(head);
                }
                backwards
            })
        };
        let appenders: Vec<_> = (0..4)
            .map(|thread| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for index in 0..5_000 {
                        log.append(vec![event(&format!("{thread}-{index}"))])
                            .unwrap();
                    }
                })
            })
            .collect();
        for appender in appenders {
            appender.join().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // A head that went back would report a sink as caught up while records wait after it.
        assert_eq!(watcher.join().unwrap(), 0, "the head moved backwards");
        assert_eq!(log.head(), 20_000);
    }

    #[test]
    fn corrupt_checksum_in_tail_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let options = LogOptions {
            segment_bytes: 1 << 20,
            ..disk_options(dir.path())
        };
        {
            let log = IngestLog::open(options.clone()).unwrap();
            for i in 0..3 {
                log.append(vec![event(&format!("m{i}"))]).unwrap();
            }
        }
        let segment = dir.path().join(segment_name(0));
        let mut bytes = fs::read(&segment).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0xff;
        fs::write(&segment, bytes).unwrap();
        let log = IngestLog::open(options).unwrap();
        assert_eq!(log.head(), 2);
    }

    #[test]
    fn segments_are_deleted_only_after_every_reader_passed_them() {
        let dir = tempfile::tempdir().unwrap();
        let options = LogOptions {
            retention: Duration::ZERO,
            ..disk_options(dir.path())
        };
        let log = IngestLog::open(options).unwrap();
        log.register_consumer("fast").unwrap();
        log.register_consumer("slow").unwrap();
        for i in 0..40 {
            log.append(vec![event(&format!("m{i}"))]).unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
        log.commit("fast", 40).unwrap();
        assert_eq!(
            log.collect_garbage().unwrap(),
            0,
            "slow still needs everything"
        );
        log.commit("slow", 30).unwrap();
        assert!(log.collect_garbage().unwrap() > 0);
        let records = log.read(30, 100).unwrap();
        assert_eq!(
            ids(&records),
            (30..40).map(|i| format!("m{i}")).collect::<Vec<_>>()
        );
        assert!(log.first_retained_seq() <= 30);
    }

    #[test]
    fn memory_mode_refuses_appends_when_full_and_frees_on_commit() {
        let options = LogOptions {
            dir: None,
            max_bytes: 2_000,
            ..LogOptions::default()
        };
        let log = IngestLog::open(options).unwrap();
        log.register_consumer("a").unwrap();
        let mut appended = 0;
        while log.append(vec![event("x")]).is_ok() {
            appended += 1;
        }
        assert!(appended > 2);
        assert!(matches!(
            log.append(vec![event("x")]),
            Err(LogError::Full { .. })
        ));
        log.commit("a", appended).unwrap();
        assert_eq!(log.used_bytes(), 0);
        assert!(log.append(vec![event("y")]).is_ok());
    }

    #[test]
    fn reads_from_disk_are_bounded_in_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let log = IngestLog::open(LogOptions {
            cache_bytes: 0,
            segment_bytes: 1 << 30,
            ..disk_options(dir.path())
        })
        .unwrap();
        for i in 0..4 {
            let mut big = event(&format!("m{i}"));
            big.properties
                .insert("blob".into(), "x".repeat(3_500_000).into());
            log.append(vec![big]).unwrap();
        }
        // Only the newest record is cached; the read from 0 goes to disk and stops past 8 MiB.
        let first = log.read(0, 100).unwrap();
        assert_eq!(ids(&first), ["m0", "m1", "m2"]);
        assert_eq!(ids(&log.read(3, 100).unwrap()), ["m3"]);
    }

    #[test]
    fn replay_finds_records_by_time() {
        let dir = tempfile::tempdir().unwrap();
        let log = IngestLog::open(disk_options(dir.path())).unwrap();
        log.append(vec![event("old")]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let since = chrono::Utc::now().timestamp_millis();
        log.append(vec![event("new")]).unwrap();
        assert_eq!(log.first_seq_since(since).unwrap(), 1);
        assert_eq!(log.first_seq_since(0).unwrap(), 0);
    }
}

#[cfg(test)]
mod full_policy_tests {
    use super::tests::event;
    use super::*;

    #[test]
    fn a_full_log_drops_shadow_readers_oldest_records_before_blocking_live_ones() {
        let options = LogOptions {
            dir: None,
            max_bytes: 3_000,
            ..LogOptions::default()
        };
        let log = IngestLog::open(options).unwrap();
        log.register_consumer("live").unwrap();
        log.register_consumer("shadow").unwrap();
        log.set_droppable("shadow", true);
        let mut appended = 0;
        while log.append(vec![event("x")]).is_ok() {
            appended += 1;
            // The live sink keeps up; the shadow sink never reads.
            log.commit("live", appended).unwrap();
            assert!(appended < 10_000, "the shadow reader never blocks ingest");
            if log.dropped_records("shadow") > 0 {
                break;
            }
        }
        assert!(log.dropped_records("shadow") > 0);
        // The shadow reader was moved up to where the live one was when the log filled.
        assert!(log.cursor("shadow").unwrap() + 1 >= log.cursor("live").unwrap());
        assert_eq!(log.dropped_records("live"), 0);

        // A live reader that falls behind blocks ingest instead.
        let live_cursor = log.cursor("live").unwrap();
        let mut refused = false;
        for _ in 0..10_000 {
            if matches!(log.append(vec![event("y")]), Err(LogError::Full { .. })) {
                refused = true;
                break;
            }
        }
        assert!(refused);
        assert_eq!(
            log.cursor("live"),
            Some(live_cursor),
            "a live reader never loses records"
        );
    }
}
