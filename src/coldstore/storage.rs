//! Archive storage through OpenDAL, chosen by URL:
//! a path or `file:///abs/path` (local disk, the default `./data/archive`),
//! `webhdfs://namenode:9870/logs` or `hdfs://namenode:8020/logs` (HDFS over WebHDFS on the
//! namenode's HTTP port, `archive.webhdfs_port`), and `s3://bucket/prefix` (credentials and
//! region from the standard AWS environment variables, region us-east-1 when unset;
//! `AWS_ENDPOINT_URL` for S3-compatibles).

use std::time::Duration;

use opendal::layers::{HttpClientLayer, RetryLayer};
use opendal::raw::HttpClient;
use opendal::{services, Operator};

use crate::config::ArchiveRoot;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("archive.root {0:?}: {1}")]
    Url(String, String),
    #[error("storage: {0}")]
    Io(#[from] opendal::Error),
}

/// Opens the store `root` names (see `config::ArchiveRoot` for the URL forms).
pub fn operator(root: &str, webhdfs_port: u16) -> Result<Operator, StorageError> {
    let parsed = ArchiveRoot::parse(root, webhdfs_port)
        .map_err(|m| StorageError::Url(root.to_owned(), m))?;
    open(&parsed)
}

/// Where files being written live until they close (under the root; no reader lists it):
/// the archive streams a file row group by row group, and a reader must never see half a
/// file. S3 needs none: an unfinished multipart upload is invisible.
pub const INCOMPLETE_DIR: &str = ".incomplete";

/// How long an idle pooled HTTP connection (WebHDFS, S3) is kept: less than the servers keep
/// theirs (Hadoop's `hadoop.http.idle_timeout.ms` is 60 s by default; S3 closes after about
/// 20 s), so a request is never sent on a connection the server has already closed. reqwest,
/// under OpenDAL, keeps them 90 s by default.
const HTTP_POOL_IDLE: Duration = Duration::from_secs(15);

/// One client for the process, as OpenDAL's own default is: operators are opened per query
/// and per mail's log lines, and each would otherwise start an empty pool (and load the TLS
/// roots again).
fn http_client() -> Result<HttpClient, StorageError> {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return Ok(HttpClient::with(c.clone()));
    }
    let client = reqwest::Client::builder()
        .pool_idle_timeout(HTTP_POOL_IDLE)
        .build()
        .map_err(|e| {
            StorageError::Io(
                opendal::Error::new(opendal::ErrorKind::Unexpected, "HTTP client").set_source(e),
            )
        })?;
    Ok(HttpClient::with(CLIENT.get_or_init(|| client).clone()))
}

/// The store for readers (the Loki query API, the lines behind a mail, `archive ls|cat`) and
/// for compaction: as [`open`], and a request that fails in a way the store calls temporary
/// (a connection reset, a body cut short, a 503) is tried again, up to 3 times with jittered
/// backoff. Compaction's writes are safe to repeat: it writes a temporary file, renames it
/// and deletes inputs, each step finished by the next run if a repeat fails (`compact`).
/// The archive stage does without: it rewinds its partition on any failed write, which is
/// its own retry.
pub fn open_retrying(root: &ArchiveRoot) -> Result<Operator, StorageError> {
    Ok(open(root)?.layer(RetryLayer::new().with_max_times(3).with_jitter()))
}

/// Builds the OpenDAL client for a parsed root.
pub fn open(root: &ArchiveRoot) -> Result<Operator, StorageError> {
    let op = match root {
        ArchiveRoot::Fs(path) => Operator::new(
            services::Fs::default()
                .root(&path.to_string_lossy())
                .atomic_write_dir(&path.join(INCOMPLETE_DIR).to_string_lossy()),
        )?
        .finish(),
        ArchiveRoot::WebHdfs {
            endpoint,
            path,
            user,
        } => {
            let mut b = services::Webhdfs::default()
                .endpoint(endpoint)
                .root(path)
                .atomic_write_dir(&format!("{INCOMPLETE_DIR}/"));
            if let Some(u) = user {
                b = b.user_name(u);
            }
            Operator::new(b)?
                .layer(HttpClientLayer::new(http_client()?))
                .finish()
        }
        ArchiveRoot::S3 { bucket, path } => {
            let mut b = services::S3::default().bucket(bucket).root(path);
            // S3-compatible stores (MinIO, Ceph) ignore the region; AWS needs the right one.
            let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into());
            b = b.region(&region);
            if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
                b = b.endpoint(&endpoint);
            }
            Operator::new(b)?
                .layer(HttpClientLayer::new(http_client()?))
                .finish()
        }
    };
    Ok(op)
}

/// Removes what crashed or killed writers left in [`INCOMPLETE_DIR`]: objects older than
/// `age` (a live writer's object is younger than the archive's file age; were one removed
/// anyway, its close fails and the stage reads the partition again). Returns how many.
pub async fn sweep_incomplete(
    op: &Operator,
    age: std::time::Duration,
) -> Result<usize, StorageError> {
    use futures_util::TryStreamExt;
    let dir = format!("{INCOMPLETE_DIR}/");
    let cutoff = std::time::SystemTime::now() - age;
    let mut removed = 0;
    let mut lister = match op.lister_with(&dir).await {
        Ok(l) => l,
        Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    while let Some(entry) = lister.try_next().await? {
        if entry.path() == dir || entry.metadata().mode() != opendal::EntryMode::FILE {
            continue;
        }
        let modified = match entry.metadata().last_modified() {
            Some(t) => Some(t),
            None => op.stat(entry.path()).await?.last_modified(),
        };
        let modified = modified.map_or(cutoff, std::time::SystemTime::from);
        if modified < cutoff {
            op.delete(entry.path()).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_choose_the_backend() {
        assert_eq!(
            operator("./data/archive", 9870)
                .unwrap()
                .info()
                .scheme()
                .to_string(),
            "fs"
        );
        assert_eq!(
            operator("file:///tmp/x", 9870)
                .unwrap()
                .info()
                .scheme()
                .to_string(),
            "fs"
        );
        let h = operator("hdfs://namenode:8020/logs", 9870).unwrap();
        assert_eq!(h.info().scheme().to_string(), "webhdfs");
        assert_eq!(h.info().root(), "/logs/");
        let s = operator("s3://bucket/cold/logs", 9870).unwrap();
        assert_eq!(s.info().scheme().to_string(), "s3");
        assert_eq!(s.info().name(), "bucket");
        assert!(operator("ftp://x/y", 9870).is_err());
        assert!(operator("s3:///nobucket", 9870).is_err());
    }

    #[actix_web::test]
    async fn the_sweep_removes_only_old_unfinished_files() {
        let dir = tempfile::tempdir().unwrap();
        let op = operator(dir.path().to_str().unwrap(), 9870).unwrap();
        let tmp = dir.path().join(INCOMPLETE_DIR);
        let old = tmp.join("120000-abcd.snappy.parquet.old");
        std::fs::write(&old, b"half a file").unwrap();
        let day_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(86_400);
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(day_ago)
            .unwrap();
        let young = tmp.join("130000-abcd.snappy.parquet.young");
        std::fs::write(&young, b"being written").unwrap();
        let kept = dir
            .path()
            .join("prod/payment/2026/06/21/120000-abcd.snappy.parquet");
        std::fs::create_dir_all(kept.parent().unwrap()).unwrap();
        std::fs::write(&kept, b"a closed file").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&kept)
            .unwrap()
            .set_modified(day_ago)
            .unwrap();
        let removed = sweep_incomplete(&op, std::time::Duration::from_secs(3600))
            .await
            .unwrap();
        assert_eq!(removed, 1);
        assert!(!old.exists());
        assert!(young.exists() && kept.exists());
    }
}
