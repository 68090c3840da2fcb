//! ArchiveActor: buffers the `logs` topic per (partition, env, service, day) and writes each
//! buffer as one snappy Parquet file on the archive storage.
//!
//! Files close on size, age, or when a partition's newest entry starts a new day. All buffers
//! of a partition close together (an "epoch"), and the offset the consumer may commit is the
//! first offset of the open epoch: everything before it is in closed files. A crash between
//! closing files and committing replays the epoch into buffers with the same first offsets,
//! so the same file names, and the rewrite replaces the file instead of duplicating rows.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::NaiveDate;
use opendal::Operator;

use crate::archive::layout;
use crate::archive::parquet::{self as pq, Promoted, Provenance, Row};
use crate::archive::push::Stream;
use crate::kafka::consumer::Commit;
use crate::kafka::sink::Decoded;
use crate::metrics as m;

#[derive(Debug, Clone)]
pub struct ArchiveSettings {
    pub default_env: String,
    /// Close a buffer when its raw lines reach this size.
    pub max_file_bytes: usize,
    /// Close a partition's buffers when the oldest is this old.
    pub max_age: Duration,
    /// Parquet compression (and the file name's extension).
    pub codec: pq::Codec,
}

/// Decoded streams of consumed messages (possibly none: a tick). Send the same batch again while the answer says
/// `more` (an epoch closed part-way through it); already-buffered offsets are skipped.
#[derive(Message)]
#[rtype(result = "Result<Progress, ArchiveError>")]
pub struct ArchiveBatch {
    pub messages: Arc<Vec<Decoded<Stream>>>,
}

/// A flush that did not complete; the same batch is sent again (nothing is skipped).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ArchiveError {
    #[error("encoding parquet: {0}")]
    Encode(String),
    #[error("storage: {0}")]
    Storage(String),
    #[error("16 name collisions in one second: refusing to overwrite {0}")]
    Collisions(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// What the consumer may commit now.
    pub commit: Commit,
    /// Part of the batch is not buffered yet.
    pub more: bool,
}

type BufferKey = (String, String, NaiveDate);

struct Buffer {
    rows: Vec<Row>,
    bytes: usize,
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
}

pub struct ArchiveActor {
    settings: ArchiveSettings,
    storage: Operator,
    partitions: HashMap<(String, i32), PartitionState>,
    /// When the epoch of a partition given up in a rebalance was opened, by its first offset:
    /// if the partition comes back and the same epoch is read again, it keeps its age (so
    /// frequent rebalances cannot keep a file from ever closing).
    forgotten: HashMap<(String, i32), (i64, Instant)>,
}

/// One file ready to be written.
struct Pending {
    env: String,
    service: String,
    first_ts: i64,
    provenance: Provenance,
    codec: pq::Codec,
    bytes: Vec<u8>,
    rows: usize,
    raw_bytes: usize,
}

impl ArchiveActor {
    pub fn new(settings: ArchiveSettings, storage: Operator) -> Self {
        ArchiveActor {
            settings,
            storage,
            partitions: HashMap::new(),
            forgotten: HashMap::new(),
        }
    }

    /// Adds messages; returns partitions whose epoch must close before going on.
    fn add(&mut self, msgs: &[Decoded<Stream>]) -> Result<(), (String, i32)> {
        for msg in msgs {
            let key = (msg.topic.clone(), msg.partition);
            let p = self.partitions.entry(key.clone()).or_default();
            if msg.offset < p.next_offset {
                continue; // already buffered (a retried batch, or a redelivery)
            }
            let stream = &msg.item;
            let newest = stream.entries.iter().map(|e| layout::day_of(e.ts_ns)).max();
            if let (Some(seen), Some(day)) = (p.newest_day, newest) {
                if day > seen && !p.buffers.is_empty() {
                    return Err(key); // day boundary: close the epoch before this message
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
                        bytes: 0,
                    });
                b.bytes += e.line.len();
                p.bytes += e.line.len();
                b.rows.push(Row {
                    ts_ns: e.ts_ns,
                    line: e.line.clone(),
                    labels: labels.clone(),
                    metadata: e.metadata.clone(),
                    partition: msg.partition,
                    offset: msg.offset,
                });
            }
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
                return Err(key);
            }
        }
        Ok(())
    }

    fn due_by_age(&self) -> Vec<(String, i32)> {
        self.partitions
            .iter()
            .filter(|(_, p)| {
                p.opened
                    .is_some_and(|t| t.elapsed() >= self.settings.max_age)
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Encodes a partition's buffers (CPU; the actor has its own thread).
    fn encode(&self, key: &(String, i32)) -> Result<Vec<Pending>, ArchiveError> {
        let Some(p) = self.partitions.get(key) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for ((env, service, _day), b) in &p.buffers {
            let mut rows = b.rows.clone();
            let first = rows.iter().map(|r| r.offset).min().unwrap_or_default();
            let last = rows.iter().map(|r| r.offset).max().unwrap_or_default();
            let first_ts = rows.iter().map(|r| r.ts_ns).min().unwrap_or_default();
            let provenance = Provenance {
                partition: key.1,
                first_offset: first,
                last_offset: last,
            };
            let bytes = pq::encode_with(
                &mut rows,
                &Promoted { service, env },
                provenance,
                self.settings.codec,
            )
            .map_err(|e| ArchiveError::Encode(e.to_string()))?;
            out.push(Pending {
                env: env.clone(),
                service: service.clone(),
                first_ts,
                provenance,
                codec: self.settings.codec,
                bytes,
                rows: rows.len(),
                raw_bytes: b.bytes,
            });
        }
        Ok(out)
    }

    fn commits(&self) -> Commit {
        Commit::Offsets(
            self.partitions
                .iter()
                .map(|((t, p), s)| (t.clone(), *p, s.epoch_start.unwrap_or(s.next_offset)))
                .filter(|(_, _, o)| *o > 0)
                .collect(),
        )
    }

    fn closed(&mut self, key: &(String, i32)) {
        if let Some(p) = self.partitions.get_mut(key) {
            p.buffers.clear();
            p.bytes = 0;
            p.opened = None;
            p.epoch_start = None;
        }
    }
}

/// Writes one file, choosing its name: the deterministic one, unless a file of *other* rows
/// already has it (a 16-bit suffix can collide), then the next attempt's name.
async fn write_file(storage: &Operator, f: Pending) -> Result<String, ArchiveError> {
    for attempt in 0..16 {
        let path = layout::file_path(
            &f.env,
            &f.service,
            f.first_ts,
            f.provenance.partition,
            f.provenance.first_offset,
            attempt,
            f.codec,
        );
        let existing = match storage.exists(&path).await {
            Ok(true) => match storage.read(&path).await {
                Ok(buf) => pq::provenance(buf.to_bytes()),
                Err(e) => return Err(ArchiveError::Storage(format!("reading {path}: {e}"))),
            },
            Ok(false) => None,
            Err(e) => return Err(ArchiveError::Storage(format!("checking {path}: {e}"))),
        };
        let ours = existing.is_none_or(|p| {
            p.partition == f.provenance.partition && p.first_offset == f.provenance.first_offset
        });
        if !ours {
            continue;
        }
        let started = Instant::now();
        let size = f.bytes.len();
        storage
            .write(&path, f.bytes)
            .await
            .map_err(|e| ArchiveError::Storage(format!("writing {path}: {e}")))?;
        metrics::histogram!(m::ARCHIVE_WRITE_SECONDS).record(started.elapsed().as_secs_f64());
        metrics::counter!(m::ARCHIVE_FILES).increment(1);
        metrics::counter!(m::ARCHIVE_LINES).increment(f.rows as u64);
        metrics::counter!(m::ARCHIVE_BYTES).increment(f.raw_bytes as u64);
        metrics::counter!(m::ARCHIVE_FILE_BYTES).increment(size as u64);
        tracing::info!(%path, rows = f.rows, bytes = size, "archive file closed");
        return Ok(path);
    }
    Err(ArchiveError::Collisions(f.env.clone() + "/" + &f.service))
}

impl Actor for ArchiveActor {
    type Context = Context<Self>;
}

impl ArchiveActor {
    /// Closes the epochs of `due` partitions (encode here, write asynchronously), then
    /// answers with the committable offsets. Runs atomically: no message interleaves.
    fn flush(
        &mut self,
        due: Vec<(String, i32)>,
        batch: Arc<Vec<Decoded<Stream>>>,
    ) -> AtomicResponse<Self, Result<Progress, ArchiveError>> {
        let mut pending = Vec::new();
        for key in &due {
            match self.encode(key) {
                Ok(files) => pending.push((key.clone(), files)),
                Err(e) => return AtomicResponse::new(Box::pin(fut::ready(Err(e)))),
            }
        }
        let storage = self.storage.clone();
        let write = async move {
            let mut done = Vec::new();
            for (key, files) in pending {
                for f in files {
                    write_file(&storage, f).await?;
                }
                done.push(key);
            }
            Ok::<_, ArchiveError>(done)
        };
        AtomicResponse::new(Box::pin(write.into_actor(self).map(move |res, act, _| {
            let done = res.inspect_err(|e| {
                tracing::warn!(error = %e, "archive flush failed; will retry");
                metrics::counter!(m::ARCHIVE_FAILED).increment(1);
            })?;
            for key in &done {
                act.closed(key);
            }
            Ok(Progress {
                commit: act.commits(),
                more: act.pending_in(&batch),
            })
        })))
    }

    fn pending_in(&self, batch: &[Decoded<Stream>]) -> bool {
        batch.iter().any(|m| {
            self.partitions
                .get(&(m.topic.clone(), m.partition))
                .is_none_or(|p| m.offset >= p.next_offset)
        })
    }
}

/// Partitions that moved to another consumer: their open buffers are dropped, not written.
/// The new owner reads them again from the committed offset, the first of the open epoch,
/// and so closes files of the same names.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Forget(pub Vec<(String, i32)>);

impl Handler<Forget> for ArchiveActor {
    type Result = ();

    fn handle(&mut self, msg: Forget, _: &mut Self::Context) {
        for key in msg.0 {
            if let Some(p) = self.partitions.remove(&key) {
                if let (Some(start), Some(opened)) = (p.epoch_start, p.opened) {
                    self.forgotten.insert(key.clone(), (start, opened));
                }
                let rows: usize = p.buffers.values().map(|b| b.rows.len()).sum();
                tracing::info!(topic = %key.0, partition = key.1, open_rows = rows,
                    "partition moved; its open buffers are left to the new owner");
            }
        }
    }
}

impl Handler<ArchiveBatch> for ArchiveActor {
    type Result = AtomicResponse<Self, Result<Progress, ArchiveError>>;

    fn handle(&mut self, msg: ArchiveBatch, _: &mut Self::Context) -> Self::Result {
        let mut due = match self.add(&msg.messages) {
            Ok(()) => Vec::new(),
            Err(key) => vec![key],
        };
        for k in self.due_by_age() {
            if !due.contains(&k) {
                due.push(k);
            }
        }
        if due.is_empty() {
            let p = Progress {
                commit: self.commits(),
                more: false,
            };
            return AtomicResponse::new(Box::pin(fut::ready(Ok(p))));
        }
        self.flush(due, msg.messages)
    }
}
