//! ArchiveActor: writes the `logs` topic as Parquet files per (partition, env, service, day),
//! streaming each file to storage row group by row group. It only handles messages: what to
//! buffer, encode and commit is `epochs` (no I/O), the writing is `files`.
//!
//! Memory is bounded by the open row groups, not by file size: a buffer's rows are encoded
//! and handed to storage when they reach `row_group_bytes`, or, largest first, when all open
//! row groups together pass `buffer_bytes`. A file being written is invisible (a temporary
//! object on local disk and HDFS, an unfinished multipart upload on S3) until it closes.
//! A write that fails mid-file loses the row groups already handed over, so the partition's
//! open files are abandoned and the consumer reads the partition again from the epoch's
//! start (`Commit::Rewind`); the rewrite replaces each file instead of duplicating rows.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use opendal::Operator;

use super::epochs::{encode_all, ArchiveSettings, Epochs, FileKey, Stop};
use super::files::{abort, run_jobs, OpenFile};
use crate::archive::push::Stream;
use crate::kafka::consumer::{Commit, Decoded, Offsets, TopicPartition};

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

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Progress {
    /// What the consumer may commit now.
    pub commit: Offsets,
    /// Part of the batch is not buffered yet.
    pub more: bool,
    /// Partitions whose open files were lost to a failed write: read them again from these
    /// offsets (the rest of this batch's messages of them are ignored).
    pub rewind: Offsets,
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

pub struct ArchiveActor {
    epochs: Epochs,
    storage: Operator,
    /// Files being written (taken out while a flush runs).
    files: HashMap<FileKey, OpenFile>,
}

impl ArchiveActor {
    pub fn new(settings: ArchiveSettings, storage: Operator) -> Self {
        ArchiveActor {
            epochs: Epochs::new(settings),
            storage,
            files: HashMap::new(),
        }
    }

    /// Abandons, in the background, the partition's files being written.
    fn abandon(&mut self, tp: &TopicPartition, ctx: &mut Context<Self>) {
        let keys: Vec<FileKey> = self.files.keys().filter(|k| &k.tp == tp).cloned().collect();
        let abandoned: Vec<OpenFile> = keys.iter().filter_map(|k| self.files.remove(k)).collect();
        if !abandoned.is_empty() {
            ctx.spawn(fut::wrap_future(abort(abandoned)));
        }
    }

    /// Closes the epochs of `closing` partitions and encodes the open row groups `groups`
    /// (encoding here, several files side by side, writing asynchronously), then answers with the committable offsets.
    /// Runs atomically: no message interleaves.
    fn flush(
        &mut self,
        closing: Vec<TopicPartition>,
        groups: Vec<FileKey>,
        batch: ArchiveBatch,
    ) -> AtomicResponse<Self, Progress> {
        let mut works = Vec::new();
        for file in &groups {
            works.extend(self.epochs.take(file, false));
        }
        for tp in &closing {
            for file in &self.epochs.files_of(tp) {
                works.extend(self.epochs.take(file, true));
            }
        }
        let mut jobs = Vec::new();
        // An encoding failure has already taken the rows out: the partition is read again
        // (and `run_jobs` skips the rest of its jobs).
        let mut failed: HashMap<TopicPartition, String> = HashMap::new();
        for (file, encoded) in encode_all(works, self.epochs.encode_threads()) {
            match encoded {
                Ok((job, encoder)) => {
                    self.epochs.restore(&file, encoder);
                    jobs.push(job);
                }
                Err(e) => {
                    failed.entry(file.tp).or_insert_with(|| e.to_string());
                }
            }
        }
        // The open files travel with the write and come back with it (an AtomicResponse: no
        // other message runs meanwhile).
        let files = std::mem::take(&mut self.files);
        let write = run_jobs(
            self.storage.clone(),
            self.epochs.codec(),
            files,
            jobs,
            failed,
        );
        AtomicResponse::new(Box::pin(write.into_actor(self).map(
            move |(files, failed), act, ctx| {
                act.files = files;
                let mut progress = Progress::default();
                for (tp, why) in &failed {
                    act.abandon(tp, ctx);
                    if let Some(from) = act.epochs.rewind(tp, batch.id) {
                        progress.rewind.insert(tp.clone(), from);
                    }
                    progress.error = Some(why.clone());
                }
                for tp in closing.iter().filter(|tp| !failed.contains_key(*tp)) {
                    act.epochs.closed(tp);
                }
                progress.commit = act.epochs.commits();
                progress.more = act.epochs.pending_in(&batch.messages, batch.id);
                progress
            },
        )))
    }
}

impl Actor for ArchiveActor {
    type Context = Context<Self>;
}

/// Partitions that moved to another consumer: their open files are abandoned, not closed.
/// The new owner reads them again from the committed offset, the first of the open epoch,
/// and so closes files of the same names.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Forget(pub Vec<TopicPartition>);

impl Handler<Forget> for ArchiveActor {
    type Result = ();

    fn handle(&mut self, msg: Forget, ctx: &mut Self::Context) {
        for tp in msg.0 {
            self.abandon(&tp, ctx);
            if let Some(rows) = self.epochs.forget(&tp) {
                tracing::info!(%tp, open_rows = rows,
                    "partition moved; its open files are left to the new owner");
            }
        }
    }
}

impl Handler<ArchiveBatch> for ArchiveActor {
    type Result = AtomicResponse<Self, Progress>;

    fn handle(&mut self, msg: ArchiveBatch, _: &mut Self::Context) -> Self::Result {
        let mut closing = match self.epochs.add(&msg.messages, msg.id) {
            Err(Stop::Close(tp)) => vec![tp],
            Ok(()) | Err(Stop::Memory) => Vec::new(),
        };
        for tp in self.epochs.due_by_age() {
            if !closing.contains(&tp) {
                closing.push(tp);
            }
        }
        let groups = self.epochs.row_groups_due(&closing);
        if closing.is_empty() && groups.is_empty() {
            let p = Progress {
                commit: self.epochs.commits(),
                more: self.epochs.pending_in(&msg.messages, msg.id),
                ..Progress::default()
            };
            return AtomicResponse::new(Box::pin(fut::ready(p)));
        }
        self.flush(closing, groups, msg)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::archive::epochs::tests::{messages, settings};

    fn at(o: i64) -> Offsets {
        [(TopicPartition::new("logs", 0), o)].into_iter().collect()
    }

    async fn send(
        actor: &Addr<ArchiveActor>,
        id: u64,
        messages: Arc<Vec<Decoded<Stream>>>,
    ) -> Progress {
        let mut rewind = Offsets::new();
        loop {
            let mut p = actor
                .send(ArchiveBatch {
                    id,
                    messages: messages.clone(),
                })
                .await
                .unwrap();
            rewind.extend(std::mem::take(&mut p.rewind));
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
        assert_eq!(p.commit, at(200));
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
        assert_eq!(p.rewind, at(0), "{p:?}");
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
        assert_eq!(p.commit, at(150));
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
        self.epochs.held()
    }
}
