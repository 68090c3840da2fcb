//! `[archive]`: where cold logs go and when files close.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{bad, ConfigError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {
    /// Storage URL: a path / file:///..., hdfs://namenode:8020/logs or
    /// webhdfs://namenode:9870/logs (WebHDFS), s3://bucket/prefix.
    pub root: String,
    /// WebHDFS HTTP port for hdfs:// roots.
    pub webhdfs_port: u16,
    /// env when a stream has neither `env` nor `cluster`.
    pub default_env: String,
    /// Kafka consumer group on the logs topic.
    pub group: String,
    /// Close a file when its raw lines reach this many bytes (large files: HDFS likes them).
    pub max_file_bytes: usize,
    /// Close files at this age at the latest.
    pub max_age_s: u64,
    /// Encode and write a file's open row group when its raw lines reach this many bytes.
    pub row_group_bytes: usize,
    /// Memory for open row groups, all files together: past it, the largest are written.
    /// With the consumer's prefetch, what bounds the stage's memory (not the file size).
    pub buffer_bytes: usize,
    /// Messages per consumer batch at most.
    pub batch_size: usize,
    /// Threads that encode files side by side when several row groups are due at once (the
    /// actor's own thread is one of them). 1 by default: on 2 cores the role read no faster
    /// with 2, and each more thread holds about one more row group while it runs (the flood
    /// benchmark's peak went from 244 to 278 MiB); worth raising where cores are spare.
    pub encode_threads: usize,
    /// Parquet compression: `snappy` (default; `.snappy.parquet`) or `zstd` (`.zstd.parquet`,
    /// about 2.5x smaller on real logs, see README "Archive size").
    pub codec: Codec,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            root: "./data/archive".into(),
            webhdfs_port: 9870,
            default_env: "prod".into(),
            group: "alertpipe-archive".into(),
            max_file_bytes: 128 * 1024 * 1024,
            max_age_s: 300,
            row_group_bytes: 8 * 1024 * 1024,
            buffer_bytes: 64 * 1024 * 1024,
            batch_size: 1000,
            encode_threads: 1,
            codec: Default::default(),
        }
    }
}

/// `archive.root` parsed: which store, where. Checking it builds no client; the archive's
/// `storage::open` builds one from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveRoot {
    /// A path or `file:///abs/path`: local disk.
    Fs(PathBuf),
    /// `webhdfs://namenode:9870/logs` or `hdfs://namenode:8020/logs`: HDFS over WebHDFS on
    /// the namenode's HTTP port (`archive.webhdfs_port` for hdfs://). The HDFS user
    /// (simple authentication): `webhdfs://user@namenode...`, else `$HADOOP_USER_NAME` as
    /// Hadoop's own clients read it, else none (WebHDFS's anonymous `dr.who`).
    WebHdfs {
        endpoint: String,
        path: String,
        user: Option<String>,
    },
    /// `s3://bucket/prefix`.
    S3 { bucket: String, path: String },
}

impl ArchiveRoot {
    pub fn parse(root: &str, webhdfs_port: u16) -> Result<ArchiveRoot, String> {
        let (scheme, rest) = root.split_once("://").unwrap_or(("file", root));
        let (host, path) = match scheme {
            "file" => ("", rest),
            _ => rest.split_once('/').map_or((rest, "/"), |(h, p)| (h, p)),
        };
        let path_under = |p: &str| format!("/{}", p.trim_matches('/'));
        match scheme {
            "file" => std::path::absolute(path)
                .map(ArchiveRoot::Fs)
                .map_err(|e| e.to_string()),
            "hdfs" | "webhdfs" => {
                let (user, host) = match host.rsplit_once('@') {
                    Some((u, h)) if !u.is_empty() => (Some(u.to_owned()), h),
                    _ => (
                        std::env::var("HADOOP_USER_NAME")
                            .ok()
                            .filter(|u| !u.is_empty()),
                        host,
                    ),
                };
                if host.is_empty() {
                    return Err("needs a namenode host".into());
                }
                let hostname = host.split(':').next().unwrap_or(host);
                let port = match (scheme, host.split_once(':')) {
                    ("webhdfs", Some((_, p))) => {
                        p.parse().map_err(|_| format!("bad port in {host:?}"))?
                    }
                    _ => webhdfs_port,
                };
                Ok(ArchiveRoot::WebHdfs {
                    endpoint: format!("http://{hostname}:{port}"),
                    path: path_under(path),
                    user,
                })
            }
            "s3" if host.is_empty() => Err("needs a bucket: s3://bucket/prefix".into()),
            "s3" => Ok(ArchiveRoot::S3 {
                bucket: host.to_owned(),
                path: path_under(path),
            }),
            other => Err(format!("unsupported scheme {other}://")),
        }
    }
}

impl ArchiveConfig {
    pub fn root(&self) -> Result<ArchiveRoot, ConfigError> {
        ArchiveRoot::parse(&self.root, self.webhdfs_port).map_err(|message| ConfigError::Key {
            key: "archive.root".into(),
            message: format!("{:?}: {message}", self.root),
        })
    }

    /// Files close at this age at the latest.
    pub fn max_age(&self) -> Duration {
        Duration::from_secs(self.max_age_s)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_file_bytes < 1024 || self.max_age_s == 0 {
            return bad(
                "archive",
                "max_file_bytes must be at least 1024 and max_age_s above 0",
            );
        }
        if self.row_group_bytes < 1024 || self.buffer_bytes < self.row_group_bytes {
            return bad(
                "archive",
                "row_group_bytes must be at least 1024 and buffer_bytes at least row_group_bytes",
            );
        }
        if self.batch_size == 0 {
            return bad("archive.batch_size", "must be above 0");
        }
        if !(1..=64).contains(&self.encode_threads) {
            return bad("archive.encode_threads", "must be 1 to 64");
        }
        self.root().map(|_| ())
    }
}

/// The Parquet compression codec of the archive's files (`archive.codec`); named in the file
/// name (`.snappy.parquet`, `.zstd.parquet`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// Fast to write and read, what Spark and Hive default to.
    #[default]
    Snappy,
    /// About twice as small, somewhat slower to write.
    Zstd,
}

impl Codec {
    pub fn extension(self) -> &'static str {
        match self {
            Codec::Snappy => "snappy.parquet",
            Codec::Zstd => "zstd.parquet",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_parse_without_a_client() {
        assert!(
            matches!(ArchiveRoot::parse("./data/archive", 9870), Ok(ArchiveRoot::Fs(p)) if p.is_absolute())
        );
        assert_eq!(
            ArchiveRoot::parse("hdfs://alertpipe@namenode:8020/logs", 9870),
            Ok(ArchiveRoot::WebHdfs {
                endpoint: "http://namenode:9870".into(),
                path: "/logs".into(),
                user: Some("alertpipe".into()),
            })
        );
        assert_eq!(
            ArchiveRoot::parse("webhdfs://svc@nn:50070/a/b/", 9870),
            Ok(ArchiveRoot::WebHdfs {
                endpoint: "http://nn:50070".into(),
                path: "/a/b".into(),
                user: Some("svc".into()),
            })
        );
        assert_eq!(
            ArchiveRoot::parse("s3://bucket/cold/logs", 9870),
            Ok(ArchiveRoot::S3 {
                bucket: "bucket".into(),
                path: "/cold/logs".into()
            })
        );
        assert!(ArchiveRoot::parse("ftp://x/y", 9870).is_err());
        assert!(ArchiveRoot::parse("s3:///nobucket", 9870).is_err());
        assert!(ArchiveRoot::parse("hdfs:///nohost", 9870).is_err());
    }
}
