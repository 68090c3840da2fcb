//! The archive writer's storage I/O: files opened under their deterministic names, row
//! groups streamed into them, closed (made visible) or abandoned.

use std::collections::HashMap;
use std::time::Instant;

use opendal::Operator;

use super::epochs::{ArchiveError, FileKey, FileName, Job};
use crate::coldstore::layout;
use crate::coldstore::parquet::{self as pq, Provenance};
use crate::kafka::consumer::TopicPartition;
use crate::metrics as m;

/// A file being written: its name and the storage writer.
pub struct OpenFile {
    path: String,
    writer: opendal::Writer,
    written: usize,
}

/// Bytes for one file: its next row group, or its last bytes and footer (`close`).
/// Abandons files being written (their temporary objects go).
pub async fn abort(files: Vec<OpenFile>) {
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
    let (partition, env, service) = (&file.tp.partition, &file.dataset.env, &file.dataset.service);
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
pub async fn run_jobs(
    storage: Operator,
    codec: pq::Codec,
    mut files: HashMap<FileKey, OpenFile>,
    jobs: Vec<Job>,
    mut failed: HashMap<TopicPartition, String>,
) -> (HashMap<FileKey, OpenFile>, HashMap<TopicPartition, String>) {
    for job in jobs {
        if failed.contains_key(&job.file.tp) {
            continue;
        }
        let partition = job.file.tp.clone();
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
