//! The archive writer's bookkeeping, with no I/O: which lines wait in which open file, when a
//! partition's files close (an epoch), what to encode now, and what the consumer may commit.
//!
//! A partition's open files close together (its "epoch"): on size, on age, or when its newest
//! entry starts a new day. The offset the consumer may commit is the first offset of the open
//! epoch: everything before it is in closed files. A crash between closing files and
//! committing replays the epoch into files with the same first offsets, so the same names.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;

use crate::archive::push::Stream;
use crate::coldstore::layout;
use crate::coldstore::parquet::{self as pq, FileEncoder, Promoted, Provenance, Row};
use crate::kafka::consumer::{Decoded, Offsets, TopicPartition};
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
    /// Files encoded side by side at most (`archive.encode_threads`).
    pub encode_threads: usize,
}

/// Why a file could not be encoded or written; the partition is then read again from its
/// open epoch's start.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ArchiveError {
    #[error("encoding parquet: {0}")]
    Encode(String),
    #[error("storage: {0}")]
    Storage(String),
    #[error("16 name collisions in one second: refusing to overwrite {0}")]
    Collisions(String),
}

/// What one file holds: one environment's service on one day.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dataset {
    pub env: String,
    pub service: String,
    pub day: NaiveDate,
}

/// One open file: a dataset's lines from one partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub tp: TopicPartition,
    pub dataset: Dataset,
}

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
    buffers: BTreeMap<Dataset, Buffer>,
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

/// Bytes for one file: its next row group, or its last bytes and footer (`close`).
pub struct Job {
    pub file: FileKey,
    pub name: FileName,
    pub bytes: Vec<u8>,
    pub close: Option<Closed>,
}

/// A file's open row group taken out of `Epochs` to encode: owns all it needs, so several
/// files encode at once on different threads (`archive::actor` does).
pub struct Encoding {
    file: FileKey,
    name: FileName,
    codec: pq::Codec,
    /// None until the file's first row group.
    encoder: Option<FileEncoder>,
    rows: Vec<Row>,
    /// Closing the file: its footer's provenance and its figures.
    close: Option<(Provenance, Closed)>,
}

impl Encoding {
    pub fn file(&self) -> &FileKey {
        &self.file
    }

    /// Encodes the row group (and the footer when closing): the job to write, and the
    /// encoder of a file that stays open. CPU only.
    pub fn run(self) -> Result<(Job, Option<FileEncoder>), ArchiveError> {
        let encode_err = |e: pq::EncodeError| ArchiveError::Encode(e.to_string());
        let mut encoder = match self.encoder {
            Some(e) => e,
            None => FileEncoder::new(self.codec).map_err(encode_err)?,
        };
        let promoted = Promoted {
            service: &self.file.dataset.service,
            env: &self.file.dataset.env,
        };
        let mut rows = self.rows;
        let mut bytes = encoder
            .row_group(&mut rows, &promoted)
            .map_err(encode_err)?;
        drop(rows);
        let (close, encoder) = match self.close {
            Some((provenance, closed)) => {
                bytes.extend_from_slice(&encoder.finish(provenance).map_err(encode_err)?);
                (Some(closed), None)
            }
            None => (None, Some(encoder)),
        };
        let job = Job {
            file: self.file,
            name: self.name,
            bytes,
            close,
        };
        Ok((job, encoder))
    }
}

/// What encoding one file gave: its job and the encoder of a file that stays open.
pub type Encoded = Result<(Job, Option<FileEncoder>), ArchiveError>;

/// Encodes the files side by side on up to `threads` threads (the calling one among them),
/// largest row group first; answers in the order given.
pub fn encode_all(works: Vec<Encoding>, threads: usize) -> Vec<(FileKey, Encoded)> {
    let threads = threads.min(works.len());
    if threads <= 1 {
        return works
            .into_iter()
            .map(|w| (w.file.clone(), w.run()))
            .collect();
    }
    let mut queue: Vec<(usize, Encoding)> = works.into_iter().enumerate().collect();
    // Popped from the end: the largest last in the vector.
    queue.sort_by_key(|(_, w)| w.rows.len());
    let queue = std::sync::Mutex::new(queue);
    let done = std::sync::Mutex::new(Vec::new());
    let work = || loop {
        let next = queue.lock().ok().and_then(|mut q| q.pop());
        let Some((i, w)) = next else { return };
        let file = w.file.clone();
        let encoded = w.run();
        if let Ok(mut d) = done.lock() {
            d.push((i, file, encoded));
        }
    };
    std::thread::scope(|s| {
        for _ in 1..threads {
            let spawned = std::thread::Builder::new()
                .name("archive-encode".into())
                .spawn_scoped(s, work);
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "no thread for archive encoding; encoding on fewer");
                break;
            }
        }
        work();
    });
    let mut done = done.into_inner().unwrap_or_else(|e| e.into_inner());
    done.sort_by_key(|(i, _, _)| *i);
    done.into_iter().map(|(_, f, e)| (f, e)).collect()
}

/// What a file's name is made of, besides its key.
pub struct FileName {
    pub first_ts: i64,
    pub first_offset: i64,
}

/// A closed file's figures.
pub struct Closed {
    pub rows: usize,
    pub raw_bytes: usize,
}

/// Why `add` stopped before the end of the batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// This partition's epoch must close first.
    Close(TopicPartition),
    /// The open row groups need encoding first.
    Memory,
}

/// Every partition's open epoch.
pub struct Epochs {
    settings: ArchiveSettings,
    partitions: HashMap<TopicPartition, PartitionState>,
    /// When the epoch of a partition given up in a rebalance was opened, by its first offset:
    /// if the partition comes back and the same epoch is read again, it keeps its age (so
    /// frequent rebalances cannot keep a file from ever closing).
    forgotten: HashMap<TopicPartition, (i64, Instant)>,
    /// Memory held by all open row groups.
    pending: usize,
}

impl Epochs {
    pub fn new(settings: ArchiveSettings) -> Self {
        Epochs {
            settings,
            partitions: HashMap::new(),
            forgotten: HashMap::new(),
            pending: 0,
        }
    }

    pub fn codec(&self) -> pq::Codec {
        self.settings.codec
    }

    /// Files encoded side by side at most.
    pub fn encode_threads(&self) -> usize {
        self.settings.encode_threads
    }

    /// Memory held by open row groups.
    pub fn held(&self) -> usize {
        self.pending
    }

    /// Adds messages of batch `batch`; stops at a partition whose epoch must close before
    /// going on, or when the open row groups hold more than twice the memory budget.
    pub fn add(&mut self, msgs: &[Decoded<Stream>], batch: u64) -> Result<(), Stop> {
        for msg in msgs {
            let key = msg.tp();
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
                let dataset = Dataset {
                    env: env.clone(),
                    service: service.clone(),
                    day: layout::day_of(e.ts_ns),
                };
                let b = p.buffers.entry(dataset).or_insert_with(|| Buffer {
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

    /// Partitions whose open epoch is `max_age` old.
    pub fn due_by_age(&self) -> Vec<TopicPartition> {
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
    pub fn row_groups_due(&self, closing: &[TopicPartition]) -> Vec<FileKey> {
        let mut open: Vec<(usize, FileKey)> = self
            .partitions
            .iter()
            .filter(|(tp, _)| !closing.contains(tp))
            .flat_map(|(tp, p)| {
                p.buffers
                    .iter()
                    .filter(|(_, b)| b.pending > 0)
                    .map(move |(dataset, b)| {
                        let key = FileKey {
                            tp: tp.clone(),
                            dataset: dataset.clone(),
                        };
                        (b.pending, key)
                    })
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

    /// The open files of a partition.
    pub fn files_of(&self, tp: &TopicPartition) -> Vec<FileKey> {
        self.partitions
            .get(tp)
            .map(|p| {
                p.buffers
                    .keys()
                    .map(|dataset| FileKey {
                        tp: tp.clone(),
                        dataset: dataset.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Encodes a file's open row group (and, when `close`, its footer) into a job.
    pub fn encode(&mut self, file: &FileKey, close: bool) -> Result<Option<Job>, ArchiveError> {
        let Some(work) = self.take(file, close) else {
            return Ok(None);
        };
        let (job, encoder) = work.run()?;
        self.restore(file, encoder);
        Ok(Some(job))
    }

    /// Takes a file's open row group (and, when `close`, what its footer needs) out of the
    /// bookkeeping, to be encoded by `Encoding::run` on any thread; the file's encoder comes
    /// back through `restore`. The rows leave the memory count now.
    pub fn take(&mut self, file: &FileKey, close: bool) -> Option<Encoding> {
        let b = self
            .partitions
            .get_mut(&file.tp)
            .and_then(|p| p.buffers.get_mut(&file.dataset))?;
        self.pending -= b.pending;
        b.pending = 0;
        let close = close.then_some((
            Provenance {
                partition: file.tp.partition,
                first_offset: b.first_offset,
                last_offset: b.last_offset,
            },
            Closed {
                rows: b.rows_total,
                raw_bytes: b.bytes,
            },
        ));
        Some(Encoding {
            file: file.clone(),
            name: FileName {
                first_ts: b.first_ts,
                first_offset: b.first_offset,
            },
            codec: self.settings.codec,
            encoder: b.encoder.take(),
            rows: std::mem::take(&mut b.rows),
            close,
        })
    }

    /// Gives a file its encoder back after `Encoding::run` (a file still open).
    pub fn restore(&mut self, file: &FileKey, encoder: Option<FileEncoder>) {
        if let Some(b) = self
            .partitions
            .get_mut(&file.tp)
            .and_then(|p| p.buffers.get_mut(&file.dataset))
        {
            if encoder.is_some() {
                b.encoder = encoder;
            }
        }
    }

    /// What the consumer may commit: per partition, the first offset of its open epoch (or
    /// past everything buffered, when no epoch is open).
    pub fn commits(&self) -> Offsets {
        self.partitions
            .iter()
            .map(|(tp, s)| (tp.clone(), s.epoch_start.unwrap_or(s.next_offset)))
            .filter(|(_, o)| *o > 0)
            .collect()
    }

    /// The partition's files closed: its epoch ends.
    pub fn closed(&mut self, tp: &TopicPartition) {
        if let Some(p) = self.partitions.get_mut(tp) {
            p.buffers.clear();
            p.bytes = 0;
            p.opened = None;
            p.epoch_start = None;
        }
    }

    /// Drops a partition's open epoch (its buffers, counted out of the memory budget).
    /// Returns the epoch's first offset.
    fn drop_epoch(&mut self, tp: &TopicPartition) -> Option<i64> {
        let p = self.partitions.get_mut(tp)?;
        self.pending -= p.buffers.values().map(|b| b.pending).sum::<usize>();
        p.buffers.clear();
        p.bytes = 0;
        p.opened = None;
        p.epoch_start.take()
    }

    /// A write of the partition failed during batch `batch`: its open epoch is dropped and the
    /// partition is read again from the epoch's start (returned); the rest of the batch's
    /// messages of it are ignored.
    pub fn rewind(&mut self, tp: &TopicPartition, batch: u64) -> Option<i64> {
        let start = self.drop_epoch(tp);
        let p = self.partitions.get_mut(tp)?;
        let from = start.unwrap_or(p.next_offset);
        p.next_offset = from;
        p.rewound_in = Some(batch);
        Some(from)
    }

    /// The partition moved to another consumer: forget it, remembering when its epoch opened
    /// (see `forgotten`). Returns how many rows were open.
    pub fn forget(&mut self, tp: &TopicPartition) -> Option<usize> {
        let opened = self.partitions.get(tp).and_then(|p| p.opened);
        let rows: usize = self
            .partitions
            .get(tp)
            .map_or(0, |p| p.buffers.values().map(|b| b.rows_total).sum());
        if let (Some(start), Some(opened)) = (self.drop_epoch(tp), opened) {
            self.forgotten.insert(tp.clone(), (start, opened));
        }
        self.partitions.remove(tp).map(|_| rows)
    }

    /// Some message of the batch is not buffered yet.
    pub fn pending_in(&self, msgs: &[Decoded<Stream>], batch: u64) -> bool {
        msgs.iter().any(|msg| {
            self.partitions
                .get(&msg.tp())
                .is_none_or(|p| msg.offset >= p.next_offset && p.rewound_in != Some(batch))
        })
    }
}

#[cfg(test)]
pub(super) mod tests;
