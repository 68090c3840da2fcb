//! Archive storage through OpenDAL, chosen by URL:
//! a path or `file:///abs/path` (local disk, the default `./data/archive`),
//! `webhdfs://namenode:9870/logs` or `hdfs://namenode:8020/logs` (HDFS over WebHDFS on the
//! namenode's HTTP port, `archive.webhdfs_port`), and `s3://bucket/prefix` (credentials and
//! region from the standard AWS environment variables, region us-east-1 when unset;
//! `AWS_ENDPOINT_URL` for S3-compatibles).

use opendal::{services, Operator};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("archive.root {0:?}: {1}")]
    Url(String, String),
    #[error("storage: {0}")]
    Io(#[from] opendal::Error),
}

pub fn operator(root: &str, webhdfs_port: u16) -> Result<Operator, StorageError> {
    let bad = |m: &str| StorageError::Url(root.to_owned(), m.to_owned());
    let (scheme, rest) = root.split_once("://").unwrap_or(("file", root));
    let (host, path) = match scheme {
        "file" => ("", rest),
        _ => rest.split_once('/').map_or((rest, "/"), |(h, p)| (h, p)),
    };
    let op = match scheme {
        "file" => {
            let abs = std::path::absolute(path).map_err(|e| bad(&e.to_string()))?;
            Operator::new(services::Fs::default().root(&abs.to_string_lossy()))?.finish()
        }
        "hdfs" | "webhdfs" => {
            if host.is_empty() {
                return Err(bad("needs a namenode host"));
            }
            let hostname = host.split(':').next().unwrap_or(host);
            let port = if scheme == "webhdfs" {
                host.split_once(':')
                    .and_then(|(_, p)| p.parse().ok())
                    .unwrap_or(webhdfs_port)
            } else {
                webhdfs_port
            };
            Operator::new(
                services::Webhdfs::default()
                    .endpoint(&format!("http://{hostname}:{port}"))
                    .root(&format!("/{}", path.trim_matches('/'))),
            )?
            .finish()
        }
        "s3" => {
            if host.is_empty() {
                return Err(bad("needs a bucket: s3://bucket/prefix"));
            }
            let mut b = services::S3::default()
                .bucket(host)
                .root(&format!("/{}", path.trim_matches('/')));
            // S3-compatible stores (MinIO, Ceph) ignore the region; AWS needs the right one.
            let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into());
            b = b.region(&region);
            if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
                b = b.endpoint(&endpoint);
            }
            Operator::new(b)?.finish()
        }
        other => return Err(bad(&format!("unsupported scheme {other}://"))),
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
