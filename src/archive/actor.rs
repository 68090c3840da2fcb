//! ArchiveActor: writes the `logs` topic as Parquet files per (partition, env, service, day),
//! streaming each file to storage row group by row group.
//!
//! Memory is bounded by the open row groups, not by file size: a buffer's rows are encoded
//! and handed to storage when they reach `row_group_bytes`, or, largest first, when all open
//! row groups together pass `buffer_bytes`. A file being written is invisible (a temporary
//! object on local disk and HDFS, an unfinished multipart upload on S3) until it closes.
//!
//! Files close on size, age, or when a partition's newest entry starts a new day. All files
//! of a partition close together (an "epoch"), and the offset the consumer may commit is the
//! first offset of the open epoch: everything before it is in closed files. A crash between
//! closing files and committing replays the epoch into files with the same first offsets,
//! so the same names, and the rewrite replaces each file instead of duplicating rows. A write
//! that fails mid-file loses the row groups already handed over, so the partition's open
//! files are abandoned and the consumer reads the partition again from the epoch's start
//! (`Commit::Rewind`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::NaiveDate;
use opendal::Operator;

use crate::archive::push::Stream;
use crate::coldstore::layout;
use crate::coldstore::parquet::{self as pq, FileEncoder, Promoted, Provenance, Row};
use crate::kafka::consumer::Commit;
use crate::kafka::sink::Decoded;
use crate::metrics as m;

#[derive(Debug, Clone)]
pub struct ArchiveSettings {
    pub default_env: String,
    /// Close a file when its raw lines reach this size.
    pub max_file_bytes: usize,
    /// Close a partition's files when the oldest is this old.
    pub max_age: Duration,
    /// Parquet compression (and the file name's extension).
    pub codec: pq::Codec,
    /// Encode a file's open row group when its raw lines reach this size.
    pub row_group_bytes: usize,
    /// Rows waiting in open row groups, all files together, at most about this many bytes.
    pub buffer_bytes: usize,
}

/// Decoded streams of consumed messages (possibly none: a tick). Send the same batch again
/// (same `id`) while the answer says `more`; already-buffered offsets are skipped. Never
/// fails: what could not be written comes back as partitions to read again.
#[derive(Message)]
#[rtype(result = "Progress")]
pub struct ArchiveBatch {
    /// Distinct for every batch the consumer hands over; the same while it is resent.
    pub id: u64,
    pub messages: Arc<Vec<Decoded<Stream>>>,
}

/// Why a file could not be encoded or written; the partition is then read again from its
/// open epoch's start (`Progress::rewind`, with this as `Progress::error`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ArchiveError {
    #[error("encoding parquet: {0}")]
    Encode(String),
    #[error("storage: {0}")]
    Storage(String),
    #[error("16 name collisions in one second: refusing to overwrite {0}")]
    Collisions(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Progress {
    /// What the consumer may commit now.
    pub commit: Vec<(String, i32, i64)>,
    /// Part of the batch is not buffered yet.
    pub more: bool,
    /// Partitions whose open files were lost to a failed write: read them again from these
    /// offsets (the rest of this batch's messages of them are ignored).
    pub rewind: Vec<(String, i32, i64)>,
    /// Why they were.
    pub error: Option<String>,
}

impl Progress {
    /// What the consumer loop does with it.
    pub fn into_commit(self) -> Commit {
        if self.rewind.is_empty() {
            Commit::Offsets(self.commit)
        } else {
            Commit::Rewind {
                commit: self.commit,
                from: self.rewind,
                reason: self.error.unwrap_or_default(),
            }
        }
    }
}

type PartitionKey = (String, i32);
type BufferKey = (String, String, NaiveDate);
type FileKey = (PartitionKey, BufferKey);

/// Bytes a buffered row costs beyond its line (the row, its vectors, the allocator).
const ROW_OVERHEAD: usize = 96;

struct Buffer {
    /// The open row group.
    rows: Vec<Row>,
    /// Memory the open row group holds (lines + ROW_OVERHEAD per row).
    pending: usize,
    /// Raw line bytes in the file so far (encoded and open).
    bytes: usize,
    rows_total: usize,
    first_offset: i64,
    last_offset: i64,
    /// Time of the file's first row in offset order: with the first offset, its name. (The
    /// earliest time would depend on where the file ends, which a replay may move.)
    first_ts: i64,
    /// The file's encoder, once its first row group is encoded.
    encoder: Option<FileEncoder>,
}

#[derive(Default)]
struct PartitionState {
    buffers: BTreeMap<BufferKey, Buffer>,
    bytes: usize,
    opened: Option<Instant>,
    /// First offset of the open epoch (None: no open buffer).
    epoch_start: Option<i64>,
    /// Highest offset buffered + 1: redeliveries below it are skipped.
    next_offset: i64,
    newest_day: Option<NaiveDate>,
    /// Rewound during this batch: its further messages in it are ignored.
    rewound_in: Option<u64>,
}

/// A file being written: its name and the storage writer.
struct OpenFile {
    path: String,
    writer: opendal::Writer,
    written: usize,
}

/// Bytes for one file: its next row group, or its last bytes and footer (`close`).
struct Job {
    file: FileKey,
    name: FileName,
    bytes: Vec<u8>,
    close: Option<Closed>,
}

struct FileName {
    first_ts: i64,
    first_offset: i64,
}

struct Closed {
    rows: usize,
    raw_bytes: usize,
}

pub struct ArchiveActor {
    settings: ArchiveSettings,
    storage: Operator,
    partitions: HashMap<PartitionKey, PartitionState>,
    /// When the epoch of a partition given up in a rebalance was opened, by its first offset:
    /// if the partition comes back and the same epoch is read again, it keeps its age (so
    /// frequent rebalances cannot keep a file from ever closing).
    forgotten: HashMap<PartitionKey, (i64, Instant)>,
    /// Files being written (taken out while a flush runs).
    files: HashMap<FileKey, OpenFile>,
    /// Memory held by all open row groups.
    pending: usize,
}

impl ArchiveActor {
    pub fn new(settings: ArchiveSettings, storage: Operator) -> Self {
        ArchiveActor {
            settings,
            storage,
            partitions: HashMap::new(),
            forgotten: HashMap::new(),
            files: HashMap::new(),
            pending: 0,
        }
    }

    /// Adds messages; stops at a partition whose epoch must close before going on, or when
    /// the open row groups hold more than twice the memory budget.
    fn add(&mut self, msgs: &[Decoded<Stream>], batch: u64) -> Result<(), Stop> {
        for msg in msgs {
            let key = (msg.topic.clone(), msg.partition);
            let p = self.partitions.entry(key.clone()).or_default();
            if msg.offset < p.next_offset || p.rewound_in == Some(batch) {
                continue; // already buffered (a retried batch, a redelivery), or rewound
            }
            let stream = &msg.item;
            let newest = stream.entries.iter().map(|e| layout::day_of(e.ts_ns)).max();
            if let (Some(seen), Some(day)) = (p.newest_day, newest) {
                if day > seen && !p.buffers.is_empty() {
                    return Err(Stop::Close(key)); // day boundary: close the epoch first
                }
            }
            if newest > p.newest_day {
                p.newest_day = newest;
            }
            let env = layout::env_of(&stream.labels, &self.settings.default_env);
            let service = layout::service_of(&stream.labels);
            let labels = Arc::new(stream.labels.clone());
            for e in &stream.entries {
                let day = layout::day_of(e.ts_ns);
                let b = p
                    .buffers
                    .entry((env.clone(), service.clone(), day))
                    .or_insert_with(|| Buffer {
                        rows: Vec::new(),
                        pending: 0,
                        bytes: 0,
                        rows_total: 0,
                        first_offset: msg.offset,
                        last_offset: msg.offset,
                        first_ts: e.ts_ns,
                        encoder: None,
                    });
                let cost = e.line.len() + ROW_OVERHEAD;
                b.pending += cost;
                self.pending += cost;
                b.bytes += e.line.len();
                p.bytes += e.line.len();
                b.rows_total += 1;
                b.last_offset = msg.offset;
                b.rows.push(Row {
                    ts_ns: e.ts_ns,
                    line: e.line.clone(),
                    labels: labels.clone(),
                    metadata: e.metadata.clone(),
                    partition: msg.partition,
                    offset: msg.offset,
                });
            }
            metrics::counter!(m::ARCHIVE_LINES_TAKEN).increment(stream.entries.len() as u64);
            if p.epoch_start.is_none() {
                let again = self
                    .forgotten
                    .remove(&key)
                    .filter(|(start, _)| *start == msg.offset);
                p.opened = Some(again.map_or_else(Instant::now, |(_, t)| t));
            }
            p.epoch_start.get_or_insert(msg.offset);
            p.opened.get_or_insert_with(Instant::now);
            p.next_offset = msg.offset + 1;
            let full = p
                .buffers
                .values()
                .any(|b| b.bytes >= self.settings.max_file_bytes)
                || p.bytes >= 2 * self.settings.max_file_bytes;
            if full {
                return Err(Stop::Close(key));
            }
            if self.pending > 2 * self.settings.buffer_bytes {
                return Err(Stop::Memory);
            }
        }
        Ok(())
    }

    fn due_by_age(&self) -> Vec<PartitionKey> {
        self.partitions
            .iter()
            .filter(|(_, p)| {
                p.opened
                    .is_some_and(|t| t.elapsed() >= self.settings.max_age)
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Open row groups to encode now: those at `row_group_bytes`, then the largest until
    /// the rest fit in half the memory budget.
    fn row_groups_due(&self, closing: &[PartitionKey]) -> Vec<FileKey> {
        let mut open: Vec<(usize, FileKey)> = self
            .partitions
            .iter()
            .filter(|(k, _)| !closing.contains(k))
            .flat_map(|(pk, p)| {
                p.buffers
                    .iter()
                    .filter(|(_, b)| b.pending > 0)
                    .map(move |(bk, b)| (b.pending, (pk.clone(), bk.clone())))
            })
            .collect();
        open.sort_by_key(|(size, _)| std::cmp::Reverse(*size));
        let mut left = self.pending;
        let mut due = Vec::new();
        for (size, key) in open {
            if size < self.settings.row_group_bytes && left <= self.settings.buffer_bytes / 2 {
                break;
            }
            left -= size;
            due.push(key);
        }
        due
    }

    /// Encodes a buffer's open row group (and, when `close`, its footer) into a job.
    fn encode(&mut self, file: &FileKey, close: bool) -> Result<Option<Job>, ArchiveError> {
        let codec = self.settings.codec;
        let Some(b) = self
            .partitions
            .get_mut(&file.0)
            .and_then(|p| p.buffers.get_mut(&file.1))
        else {
            return Ok(None);
        };
        let (env, service, _) = &file.1;
        let promoted = Promoted { service, env };
        let encode_err = |e: pq::EncodeError| ArchiveError::Encode(e.to_string());
        let mut encoder = match b.encoder.take() {
            Some(e) => e,
            None => FileEncoder::new(codec).map_err(encode_err)?,
        };
        let mut rows = std::mem::take(&mut b.rows);
        self.pending -= b.pending;
        b.pending = 0;
        let mut bytes = encoder
            .row_group(&mut rows, &promoted)
            .map_err(encode_err)?;
        drop(rows);
        let closed = if close {
            let provenance = Provenance {
                partition: file.0 .1,
                first_offset: b.first_offset,
                last_offset: b.last_offset,
            };
            bytes.extend_from_slice(&encoder.finish(provenance).map_err(encode_err)?);
            Some(Closed {
                rows: b.rows_total,
                raw_bytes: b.bytes,
            })
        } else {
            b.encoder = Some(encoder);
            None
        };
        Ok(Some(Job {
            file: file.clone(),
            name: FileName {
                first_ts: b.first_ts,
                first_offset: b.first_offset,
            },
            bytes,
            close: closed,
        }))
    }

    fn commits(&self) -> Vec<(String, i32, i64)> {
        self.partitions
            .iter()
            .map(|((t, p), s)| (t.clone(), *p, s.epoch_start.unwrap_or(s.next_offset)))
            .filter(|(_, _, o)| *o > 0)
            .collect()
    }

    /// Drops a partition's open epoch: its buffers (counted out of the memory budget) and,
    /// in the background, its files being written. Returns the epoch's first offset.
    fn drop_epoch(&mut self, key: &PartitionKey, ctx: &mut Context<Self>) -> Option<i64> {
        let p = self.partitions.get_mut(key)?;
        self.pending -= p.buffers.values().map(|b| b.pending).sum::<usize>();
        p.buffers.clear();
        p.bytes = 0;
        p.opened = None;
        let start = p.epoch_start.take();
        let keys: Vec<FileKey> = self
            .files
            .keys()
            .filter(|(pk, _)| pk == key)
            .cloned()
            .collect();
        let abandoned: Vec<OpenFile> = keys.iter().filter_map(|k| self.files.remove(k)).collect();
        if !abandoned.is_empty() {
            ctx.spawn(fut::wrap_future(abort(abandoned)));
        }
        start
    }

    fn pending_in(&self, batch: &ArchiveBatch) -> bool {
        batch.messages.iter().any(|msg| {
            self.partitions
                .get(&(msg.topic.clone(), msg.partition))
                .is_none_or(|p| msg.offset >= p.next_offset && p.rewound_in != Some(batch.id))
        })
    }
}

/// Why `add` stopped before the end of the batch.
enum Stop {
    /// This partition's epoch must close first.
    Close(PartitionKey),
    /// The open row groups need encoding first.
    Memory,
}

/// Abandons files being written (their temporary objects go).
async fn abort(files: Vec<OpenFile>) {
    for mut f in files {
        if let Err(e) = f.writer.abort().await {
            tracing::debug!(path = %f.path, error = %e, "abandoned archive file not cleaned up");
        }
    }
}

/// Starts a file, choosing its name: the deterministic one, unless a file of *other* rows
/// already has it (a 16-bit suffix can collide), then the next attempt's name.
async fn open_file(
    storage: &Operator,
    file: &FileKey,
    name: &FileName,
    codec: pq::Codec,
) -> Result<OpenFile, ArchiveError> {
    let ((_, partition), (env, service, _)) = file;
    for attempt in 0..16 {
        let path = layout::file_path(
            env,
            service,
            name.first_ts,
            *partition,
            name.first_offset,
            attempt,
            codec,
        );
        let ours = match footer_provenance(storage, &path).await? {
            None => true,
            Some(p) => p.partition == *partition && p.first_offset == name.first_offset,
        };
        if !ours {
            continue;
        }
        let mut w = storage.writer_with(&path);
        if storage.info().scheme() == "s3" {
            // S3 takes multipart parts of 5 MiB at least (but the last).
            w = w.chunk(5 * 1024 * 1024);
        }
        let writer = w
            .await
            .map_err(|e| ArchiveError::Storage(format!("starting {path}: {e}")))?;
        return Ok(OpenFile {
            path,
            writer,
            written: 0,
        });
    }
    Err(ArchiveError::Collisions(format!("{env}/{service}")))
}

/// The provenance in the footer of the file at `path`, reading only the footer; None when
/// there is no such file (or it is not alertpipe's).
async fn footer_provenance(
    storage: &Operator,
    path: &str,
) -> Result<Option<Provenance>, ArchiveError> {
    match crate::coldstore::read::footer(storage, path).await {
        Ok(f) => Ok(f.and_then(|f| pq::provenance_in(f.meta.file_metadata()))),
        Err(crate::coldstore::read::ReadError::NotParquet { .. }) => Ok(None),
        Err(e) => Err(ArchiveError::Storage(format!("reading {path}: {e}"))),
    }
}

/// Writes the jobs in order. Returns the writers still open, and the partitions whose
/// write failed (their other jobs are skipped: the partition is read again), with why.
async fn run_jobs(
    storage: Operator,
    codec: pq::Codec,
    mut files: HashMap<FileKey, OpenFile>,
    jobs: Vec<Job>,
    mut failed: HashMap<PartitionKey, String>,
) -> (HashMap<FileKey, OpenFile>, HashMap<PartitionKey, String>) {
    for job in jobs {
        if failed.contains_key(&job.file.0) {
            continue;
        }
        let partition = job.file.0.clone();
        if let Err(e) = write_job(&storage, codec, &mut files, job).await {
            tracing::warn!(error = %e, "archive write failed; the partition will be read again");
            metrics::counter!(m::ARCHIVE_FAILED).increment(1);
            failed.insert(partition, e.to_string());
        }
    }
    (files, failed)
}

async fn write_job(
    storage: &Operator,
    codec: pq::Codec,
    files: &mut HashMap<FileKey, OpenFile>,
    job: Job,
) -> Result<(), ArchiveError> {
    let started = Instant::now();
    let key = job.file;
    let mut f = match files.remove(&key) {
        Some(f) => f,
        None => open_file(storage, &key, &job.name, codec).await?,
    };
    let storage_err = |what: &str, path: &str, e: opendal::Error| {
        ArchiveError::Storage(format!("{what} {path}: {e}"))
    };
    if !job.bytes.is_empty() {
        let len = job.bytes.len();
        if let Err(e) = f.writer.write(job.bytes).await {
            let err = storage_err("writing", &f.path, e);
            files.insert(key, f); // aborted with the rest of its partition
            return Err(err);
        }
        f.written += len;
    }
    let Some(closed) = &job.close else {
        files.insert(key, f);
        return Ok(());
    };
    if let Err(e) = f.writer.close().await {
        let err = storage_err("closing", &f.path, e);
        files.insert(key, f);
        return Err(err);
    }
    metrics::histogram!(m::ARCHIVE_WRITE_SECONDS).record(started.elapsed().as_secs_f64());
    metrics::counter!(m::ARCHIVE_FILES).increment(1);
    metrics::counter!(m::ARCHIVE_LINES).increment(closed.rows as u64);
    metrics::counter!(m::ARCHIVE_BYTES).increment(closed.raw_bytes as u64);
    metrics::counter!(m::ARCHIVE_FILE_BYTES).increment(f.written as u64);
    tracing::info!(path = %f.path, rows = closed.rows, bytes = f.written, "archive file closed");
    Ok(())
}

impl Actor for ArchiveActor {
    type Context = Context<Self>;
}

impl ArchiveActor {
    /// Closes the epochs of `closing` partitions and encodes the open row groups `groups`
    /// (encoding here, writing asynchronously), then answers with the committable offsets.
    /// Runs atomically: no message interleaves.
    fn flush(
        &mut self,
        closing: Vec<PartitionKey>,
        groups: Vec<FileKey>,
        batch: ArchiveBatch,
    ) -> AtomicResponse<Self, Progress> {
        let mut jobs = Vec::new();
        // An encoding failure has already taken the rows out: the partition is read again.
        let mut failed: HashMap<PartitionKey, String> = HashMap::new();
        let mut encode = |act: &mut Self, file: &FileKey, close: bool| {
            if failed.contains_key(&file.0) {
                return;
            }
            match act.encode(file, close) {
                Ok(Some(job)) => jobs.push(job),
                Ok(None) => {}
                Err(e) => {
                    failed.insert(file.0.clone(), e.to_string());
                }
            }
        };
        for file in &groups {
            encode(self, file, false);
        }
        for key in &closing {
            let files: Vec<FileKey> = self
                .partitions
                .get(key)
                .map(|p| p.buffers.keys().map(|b| (key.clone(), b.clone())).collect())
                .unwrap_or_default();
            for file in &files {
                encode(self, file, true);
            }
        }
        // The open files travel with the write and come back with it (an AtomicResponse: no
        // other message runs meanwhile).
        let files = std::mem::take(&mut self.files);
        let write = run_jobs(
            self.storage.clone(),
            self.settings.codec,
            files,
            jobs,
            failed,
        );
        AtomicResponse::new(Box::pin(write.into_actor(self).map(
            move |(files, failed), act, ctx| {
                act.files = files;
                let mut progress = Progress::default();
                for (key, why) in &failed {
                    let start = act.drop_epoch(key, ctx);
                    if let Some(p) = act.partitions.get_mut(key) {
                        let from = start.unwrap_or(p.next_offset);
                        p.next_offset = from;
                        p.rewound_in = Some(batch.id);
                        progress.rewind.push((key.0.clone(), key.1, from));
                    }
                    progress.error = Some(why.clone());
                }
                for key in closing.iter().filter(|k| !failed.contains_key(*k)) {
                    if let Some(p) = act.partitions.get_mut(key) {
                        p.buffers.clear();
                        p.bytes = 0;
                        p.opened = None;
                        p.epoch_start = None;
                    }
                }
                progress.commit = act.commits();
                progress.more = act.pending_in(&batch);
                progress
            },
        )))
    }
}

/// Partitions that moved to another consumer: their open files are abandoned, not closed.
/// The new owner reads them again from the committed offset, the first of the open epoch,
/// and so closes files of the same names.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Forget(pub Vec<(String, i32)>);

impl Handler<Forget> for ArchiveActor {
    type Result = ();

    fn handle(&mut self, msg: Forget, ctx: &mut Self::Context) {
        for key in msg.0 {
            let opened = self.partitions.get(&key).and_then(|p| p.opened);
            let rows: usize = self
                .partitions
                .get(&key)
                .map_or(0, |p| p.buffers.values().map(|b| b.rows_total).sum());
            if let (Some(start), Some(opened)) = (self.drop_epoch(&key, ctx), opened) {
                self.forgotten.insert(key.clone(), (start, opened));
            }
            if self.partitions.remove(&key).is_some() {
                tracing::info!(topic = %key.0, partition = key.1, open_rows = rows,
                    "partition moved; its open files are left to the new owner");
            }
        }
    }
}

impl Handler<ArchiveBatch> for ArchiveActor {
    type Result = AtomicResponse<Self, Progress>;

    fn handle(&mut self, msg: ArchiveBatch, _: &mut Self::Context) -> Self::Result {
        let mut closing = match self.add(&msg.messages, msg.id) {
            Err(Stop::Close(key)) => vec![key],
            Ok(()) | Err(Stop::Memory) => Vec::new(),
        };
        for k in self.due_by_age() {
            if !closing.contains(&k) {
                closing.push(k);
            }
        }
        let groups = self.row_groups_due(&closing);
        if closing.is_empty() && groups.is_empty() {
            let p = Progress {
                commit: self.commits(),
                more: self.pending_in(&msg),
                ..Progress::default()
            };
            return AtomicResponse::new(Box::pin(fut::ready(p)));
        }
        self.flush(closing, groups, msg)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::archive::push::Entry;

    const DAY_NS: i64 = 1_782_000_000_000_000_000; // 2026-06-21

    fn settings() -> ArchiveSettings {
        ArchiveSettings {
            default_env: "prod".into(),
            max_file_bytes: 1 << 30,
            max_age: Duration::from_secs(3600),
            codec: pq::Codec::Snappy,
            row_group_bytes: 4096,
            buffer_bytes: 16 * 1024,
        }
    }

    /// `n` messages on partition 0 from `first`, each one stream of 10 lines of `service`.
    fn messages(service: &str, first: i64, n: i64) -> Arc<Vec<Decoded<Stream>>> {
        let labels = BTreeMap::from([("service".to_owned(), service.to_owned())]);
        Arc::new(
            (first..first + n)
                .map(|offset| Decoded {
                    topic: "logs".into(),
                    partition: 0,
                    offset,
                    item: Stream {
                        labels: labels.clone(),
                        entries: (0..10)
                            .map(|i| Entry {
                                ts_ns: DAY_NS + offset * 1000 + i,
                                line: format!("{service} line {offset}.{i} payment accepted")
                                    .into_bytes(),
                                metadata: Vec::new(),
                            })
                            .collect(),
                    },
                })
                .collect(),
        )
    }

    async fn send(
        actor: &Addr<ArchiveActor>,
        id: u64,
        messages: Arc<Vec<Decoded<Stream>>>,
    ) -> Progress {
        let mut rewind = Vec::new();
        loop {
            let mut p = actor
                .send(ArchiveBatch {
                    id,
                    messages: messages.clone(),
                })
                .await
                .unwrap();
            rewind.append(&mut p.rewind);
            if !p.more {
                p.rewind = rewind;
                return p;
            }
        }
    }

    /// (path, row groups, lines) of every visible file, and the entries of the temp dir.
    fn files(root: &std::path::Path) -> (Vec<(String, usize, Vec<String>)>, usize) {
        use arrow_array::{Array, StringArray};
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let mut out = Vec::new();
        for e in walk(root) {
            let name = e.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if name.starts_with(crate::coldstore::storage::INCOMPLETE_DIR) {
                continue;
            }
            let b =
                ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&e).unwrap()).unwrap();
            let groups = b.metadata().num_row_groups();
            let mut lines = Vec::new();
            for batch in b.build().unwrap() {
                let batch = batch.unwrap();
                let col = batch.column_by_name("line").unwrap();
                let col = col.as_any().downcast_ref::<StringArray>().unwrap();
                lines.extend((0..col.len()).map(|i| col.value(i).to_owned()));
            }
            out.push((name, groups, lines));
        }
        out.sort();
        let incomplete = std::fs::read_dir(root.join(crate::coldstore::storage::INCOMPLETE_DIR))
            .map_or(0, |d| d.count());
        (out, incomplete)
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }

    fn start(root: &std::path::Path, s: ArchiveSettings) -> Addr<ArchiveActor> {
        let op = crate::coldstore::storage::operator(root.to_str().unwrap(), 9870).unwrap();
        ArchiveActor::new(s, op).start()
    }

    #[actix_web::test]
    async fn a_file_is_streamed_row_group_by_row_group_and_visible_only_once_closed() {
        let dir = tempfile::tempdir().unwrap();
        let actor = start(dir.path(), settings());
        let p = send(&actor, 1, messages("payment", 0, 200)).await;
        // Nothing closed yet: nothing committable, nothing visible, the file is being written.
        assert!(p.commit.is_empty(), "{p:?}");
        let (visible, incomplete) = files(dir.path());
        assert!(
            visible.is_empty(),
            "a file being written is visible: {visible:?}"
        );
        assert_eq!(incomplete, 1, "the open file streams into the temp dir");
        // The memory budget holds: what stays unencoded is at most one row group or so.
        let held = actor.send(Held).await.unwrap();
        assert!(held <= 16 * 1024, "open row groups hold {held} bytes");
        // A new day closes the epoch: one file, many row groups, every line once, in order.
        let next_day = Arc::new(
            messages("payment", 200, 1)
                .iter()
                .map(|m| {
                    let mut m = m.clone();
                    for e in &mut m.item.entries {
                        e.ts_ns += 86_400_000_000_000;
                    }
                    m
                })
                .collect::<Vec<_>>(),
        );
        let p = send(&actor, 2, next_day).await;
        assert_eq!(p.commit, vec![("logs".to_owned(), 0, 200)]);
        let (visible, incomplete) = files(dir.path());
        assert_eq!(incomplete, 0);
        assert_eq!(visible.len(), 1, "{visible:?}");
        let (_, groups, lines) = &visible[0];
        assert!(*groups > 5, "only {groups} row groups");
        let want: Vec<String> = (0..200)
            .flat_map(|o| (0..10).map(move |i| format!("payment line {o}.{i} payment accepted")))
            .collect();
        assert_eq!(lines, &want);
    }

    #[actix_web::test]
    async fn a_failed_write_rewinds_the_partition_and_the_replay_loses_and_doubles_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = ArchiveSettings {
            max_age: Duration::from_millis(300),
            ..settings()
        };
        let actor = start(dir.path(), s);
        let first = send(&actor, 1, messages("payment", 0, 100)).await;
        assert!(first.rewind.is_empty());
        // The temp dir vanishes under the open file: closing it (a rename) fails.
        let tmp = dir.path().join(crate::coldstore::storage::INCOMPLETE_DIR);
        std::fs::remove_dir_all(&tmp).unwrap();
        std::fs::write(&tmp, b"not a directory").unwrap();
        actix_web::rt::time::sleep(Duration::from_millis(400)).await;
        let p = send(&actor, 2, messages("payment", 100, 50)).await;
        assert_eq!(p.rewind, vec![("logs".to_owned(), 0, 0)], "{p:?}");
        assert!(
            p.error.as_deref().unwrap_or("").contains("storage"),
            "{p:?}"
        );
        assert!(p.commit.is_empty(), "{p:?}");
        // The rest of the batch of a rewound partition is ignored; the consumer reads it again.
        assert!(files(dir.path()).0.is_empty());
        std::fs::remove_file(&tmp).unwrap();
        std::fs::create_dir(&tmp).unwrap();
        send(&actor, 3, messages("payment", 0, 150)).await;
        actix_web::rt::time::sleep(Duration::from_millis(400)).await;
        let p = send(&actor, 4, Arc::new(Vec::new())).await;
        assert_eq!(p.commit, vec![("logs".to_owned(), 0, 150)]);
        let (visible, _) = files(dir.path());
        let lines: Vec<&String> = visible.iter().flat_map(|f| &f.2).collect();
        assert_eq!(lines.len(), 1500, "{visible:?}");
        let unique: std::collections::HashSet<_> = lines.iter().collect();
        assert_eq!(unique.len(), 1500);
    }
}

/// Memory held by open row groups (tests).
#[cfg(test)]
#[derive(Message)]
#[rtype(result = "usize")]
struct Held;

#[cfg(test)]
impl Handler<Held> for ArchiveActor {
    type Result = usize;

    fn handle(&mut self, _: Held, _: &mut Self::Context) -> usize {
        self.pending
    }
}
