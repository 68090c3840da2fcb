//! Archive storage through OpenDAL, chosen by URL:
//! a path or `file:///abs/path` (local disk, the default `./data/archive`),
//! `webhdfs://namenode:9870/logs` or `hdfs://namenode:8020/logs` (HDFS over WebHDFS on the
//! namenode's HTTP port, `archive.webhdfs_port`), and `s3://bucket/prefix` (credentials and
//! region from the standard AWS environment variables, region us-east-1 when unset;
//! `AWS_ENDPOINT_URL` for S3-compatibles).

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

/// Builds the OpenDAL client for a parsed root.
pub fn open(root: &ArchiveRoot) -> Result<Operator, StorageError> {
    let op = match root {
        ArchiveRoot::Fs(path) => {
            Operator::new(services::Fs::default().root(&path.to_string_lossy()))?.finish()
        }
        ArchiveRoot::WebHdfs { endpoint, path } => {
            Operator::new(services::Webhdfs::default().endpoint(endpoint).root(path))?.finish()
        }
        ArchiveRoot::S3 { bucket, path } => {
            let mut b = services::S3::default().bucket(bucket).root(path);
            // S3-compatible stores (MinIO, Ceph) ignore the region; AWS needs the right one.
            let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into());
            b = b.region(&region);
            if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
                b = b.endpoint(&endpoint);
            }
            Operator::new(b)?.finish()
        }
    };
    Ok(op)
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
}
