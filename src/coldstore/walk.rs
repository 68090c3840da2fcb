//! Listing the archive by its layout (`<env>/<service>/<YYYY>/<MM>/<DD>/<file>`), one level
//! at a time, entering only the directories a reader asked for.
//!
//! Not OpenDAL's recursive lister: on WebHDFS (no native recursive listing) it walks directory
//! by directory, and under `RetryLayer` a directory whose first page failed with a temporary
//! error (a 503, a reset connection) is dropped, not retried: the listing ends early without an
//! error, and a query answers "no data" where there is data. Here each directory is listed
//! whole by a plain listing (retried page by page where the operator has a retry layer), and
//! any error ends the walk with that error.

use std::ops::RangeInclusive;

use chrono::{Datelike, NaiveDate};
use futures_util::{stream, StreamExt, TryStreamExt};
use opendal::{EntryMode, Operator};

/// Directories listed at once on one level.
const LISTINGS_AT_ONCE: usize = 8;

/// Tries of one directory's listing that fails in a way the store calls temporary, and the
/// first pause between them (then 4x each time).
const LIST_ATTEMPTS: u32 = 4;
const LIST_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// What a walk enters; `None` enters all.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub env: Option<String>,
    pub service: Option<String>,
    pub days: Option<RangeInclusive<NaiveDate>>,
}

/// A file in a day directory of the layout (any name: callers pick data files or leftovers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Laid {
    /// Relative to the operator's root: `env/service/YYYY/MM/DD/name`.
    pub path: String,
    pub env: String,
    pub service: String,
    pub day: NaiveDate,
}

impl Laid {
    pub fn name(&self) -> &str {
        self.path.rsplit_once('/').map_or(&self.path, |(_, n)| n)
    }

    pub fn dir(&self) -> &str {
        self.path.rsplit_once('/').map_or("", |(d, _)| d)
    }
}

/// Every file in the day directories `scope` admits, sorted by path.
pub async fn files(op: &Operator, scope: &Scope) -> Result<Vec<Laid>, opendal::Error> {
    // (directory path ending in '/', its segments below the root)
    let mut level: Vec<(String, Vec<String>)> = vec![(String::new(), Vec::new())];
    for depth in 0..5 {
        let listed: Vec<Vec<(String, Vec<String>)>> = stream::iter(level)
            .map(|(dir, segs)| async move {
                let subdirs = children(op, &dir, EntryMode::DIR).await?;
                Ok::<_, opendal::Error>(
                    subdirs
                        .into_iter()
                        .filter(|name| admits(scope, depth, &segs, name))
                        .map(|name| {
                            let mut s = segs.clone();
                            s.push(name.clone());
                            (format!("{dir}{name}/"), s)
                        })
                        .collect(),
                )
            })
            .buffer_unordered(LISTINGS_AT_ONCE)
            .try_collect()
            .await?;
        level = listed.into_iter().flatten().collect();
    }
    let days = level
        .into_iter()
        .filter_map(|(dir, segs)| Some((dir, day_of(&segs)?, segs)));
    let per_day: Vec<Vec<Laid>> = stream::iter(days)
        .map(|(dir, day, segs)| async move {
            let names = children(op, &dir, EntryMode::FILE).await?;
            Ok::<_, opendal::Error>(
                names
                    .into_iter()
                    .map(|name| Laid {
                        path: format!("{dir}{name}"),
                        env: segs[0].clone(),
                        service: segs[1].clone(),
                        day,
                    })
                    .collect(),
            )
        })
        .buffer_unordered(LISTINGS_AT_ONCE)
        .try_collect()
        .await?;
    let mut out: Vec<Laid> = per_day.into_iter().flatten().collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The names of `dir`'s entries of kind `mode` (not `dir` itself, nothing hidden: the
/// `.incomplete` directory of files being written).
async fn children(
    op: &Operator,
    dir: &str,
    mode: EntryMode,
) -> Result<Vec<String>, opendal::Error> {
    let path = if dir.is_empty() { "/" } else { dir };
    let mut pause = LIST_RETRY_PAUSE;
    let mut attempt = 1;
    let entries = loop {
        match op.list(path).await {
            Ok(e) => break e,
            // Gone between its parent's listing and its own (a compaction emptied it).
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(Vec::new()),
            // A directory listed again from its start is safe to repeat, whatever layers the
            // operator has (a retry layer gives up with a persistent error).
            Err(e) if e.is_temporary() && attempt < LIST_ATTEMPTS => {
                tracing::debug!(dir = path, error = %e, "listing again");
                tokio::time::sleep(pause).await;
                pause *= 4;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    };
    Ok(entries
        .into_iter()
        .filter(|e| e.metadata().mode() == mode && e.path() != path)
        .map(|e| e.name().trim_end_matches('/').to_owned())
        .filter(|n| !n.is_empty() && !n.starts_with('.'))
        .collect())
}

/// Whether a directory `name` at `depth` (0 env, 1 service, 2 year, 3 month, 4 day) below
/// `segs` is in `scope`.
fn admits(scope: &Scope, depth: usize, segs: &[String], name: &str) -> bool {
    let days = scope.days.as_ref();
    let num = |s: &str| s.parse::<u32>().ok();
    match depth {
        0 => scope.env.as_deref().is_none_or(|e| e == name),
        1 => scope.service.as_deref().is_none_or(|s| s == name),
        2 => match (num(name), days) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(y), Some(r)) => (r.start().year()..=r.end().year()).contains(&(y as i32)),
        },
        3 => match (num(&segs[2]), num(name), days) {
            (Some(_), Some(m), None) => (1..=12).contains(&m),
            (Some(y), Some(m), Some(r)) => {
                let first = NaiveDate::from_ymd_opt(y as i32, m, 1);
                let last = first.and_then(|f| {
                    f.checked_add_months(chrono::Months::new(1))
                        .and_then(|n| n.pred_opt())
                });
                matches!((first, last), (Some(f), Some(l)) if f <= *r.end() && l >= *r.start())
            }
            _ => false,
        },
        _ => {
            let mut s = segs.to_vec();
            s.push(name.to_owned());
            match (day_of(&s), days) {
                (Some(d), Some(r)) => r.contains(&d),
                (Some(_), None) => true,
                (None, _) => false,
            }
        }
    }
}

/// The day of `[env, service, YYYY, MM, DD]`.
fn day_of(segs: &[String]) -> Option<NaiveDate> {
    let [_, _, y, m, d] = segs else { return None };
    NaiveDate::from_ymd_opt(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::coldstore::storage;
    use crate::config::ArchiveRoot;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("a date")
    }

    fn fs_archive(paths: &[&str]) -> (tempfile::TempDir, Operator) {
        let dir = tempfile::tempdir().expect("tempdir");
        for p in paths {
            let p = dir.path().join(p);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("dirs");
            std::fs::write(p, b"x").expect("file");
        }
        let op = storage::open(&ArchiveRoot::Fs(dir.path().to_owned())).expect("operator");
        (dir, op)
    }

    fn paths(files: &[Laid]) -> Vec<&str> {
        files.iter().map(|f| f.path.as_str()).collect()
    }

    #[tokio::test]
    async fn only_files_in_day_directories_of_the_layout_are_listed() {
        let (_dir, op) = fs_archive(&[
            "prod/payment/2025/06/23/a.snappy.parquet",
            "prod/payment/2025/06/23/_compacting-1.tmp",
            "prod/prod/2025/06/24/b.snappy.parquet", // a service named as its env
            "prod/payment/2025/13/40/bad-date.snappy.parquet",
            "prod/payment/2025/06/stray.snappy.parquet",
            "prod/payment/2025/06/23/deeper/c.snappy.parquet",
            ".incomplete/prod/payment/2025/06/23/d.snappy.parquet",
            "top.snappy.parquet",
        ]);
        let all = files(&op, &Scope::default()).await.expect("walk");
        assert_eq!(
            paths(&all),
            [
                "prod/payment/2025/06/23/_compacting-1.tmp",
                "prod/payment/2025/06/23/a.snappy.parquet",
                "prod/prod/2025/06/24/b.snappy.parquet",
            ]
        );
        assert_eq!(
            (all[1].env.as_str(), all[1].service.as_str(), all[1].day),
            ("prod", "payment", day(2025, 6, 23))
        );
        assert_eq!(all[1].dir(), "prod/payment/2025/06/23");
        assert_eq!(all[1].name(), "a.snappy.parquet");
    }

    #[tokio::test]
    async fn a_scope_enters_only_its_env_service_and_days() {
        let (_dir, op) = fs_archive(&[
            "prod/payment/2024/12/31/a.snappy.parquet",
            "prod/payment/2025/01/01/b.snappy.parquet",
            "prod/payment/2025/01/02/c.snappy.parquet",
            "prod/payment/2025/02/01/d.snappy.parquet",
            "prod/orders/2025/01/01/e.snappy.parquet",
            "staging/payment/2025/01/01/f.snappy.parquet",
        ]);
        let scope = Scope {
            env: Some("prod".into()),
            service: Some("payment".into()),
            days: Some(day(2024, 12, 31)..=day(2025, 1, 1)),
        };
        let got = files(&op, &scope).await.expect("walk");
        assert_eq!(
            paths(&got),
            [
                "prod/payment/2024/12/31/a.snappy.parquet",
                "prod/payment/2025/01/01/b.snappy.parquet"
            ]
        );
        let month = Scope {
            days: Some(day(2025, 1, 2)..=day(2025, 2, 1)),
            ..Scope::default()
        };
        let got = files(&op, &month).await.expect("walk");
        assert_eq!(
            paths(&got),
            [
                "prod/payment/2025/01/02/c.snappy.parquet",
                "prod/payment/2025/02/01/d.snappy.parquet"
            ]
        );
        let none = files(&op, &Scope::default()).await.expect("walk");
        assert_eq!(none.len(), 6);
        let (_empty, op) = fs_archive(&[]);
        assert!(files(&op, &Scope::default())
            .await
            .expect("walk")
            .is_empty());
    }

    /// A WebHDFS NameNode that answers LISTSTATUS_BATCH from `tree` (directory -> entries,
    /// true for a directory), failing its first `fail` requests with 503.
    fn namenode(
        tree: BTreeMap<String, Vec<(String, bool)>>,
        fail: usize,
    ) -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let requests = Arc::new(AtomicUsize::new(0));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut line = String::new();
                let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).map_or(true, |n| n == 0) || h == "\r\n" {
                        break;
                    }
                }
                let n = seen.fetch_add(1, Ordering::SeqCst);
                let target = line.split(' ').nth(1).unwrap_or("");
                let path = target
                    .trim_start_matches("/webhdfs/v1")
                    .split('?')
                    .next()
                    .unwrap_or("")
                    .trim_matches('/');
                let (status, body) = if n < fail {
                    ("503 Service Unavailable", "busy".to_owned())
                } else if let Some(entries) = tree.get(path) {
                    let statuses: Vec<String> = entries
                        .iter()
                        .map(|(name, dir)| {
                            format!(
                                r#"{{"pathSuffix":"{name}","type":"{}","length":1,"modificationTime":0}}"#,
                                if *dir { "DIRECTORY" } else { "FILE" }
                            )
                        })
                        .collect();
                    (
                        "200 OK",
                        format!(
                            r#"{{"DirectoryListing":{{"partialListing":{{"FileStatuses":{{"FileStatus":[{}]}}}},"remainingEntries":0}}}}"#,
                            statuses.join(",")
                        ),
                    )
                } else {
                    ("404 Not Found", "{}".to_owned())
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        (port, requests)
    }

    fn tree() -> BTreeMap<String, Vec<(String, bool)>> {
        let e = |n: &str, d: bool| (n.to_owned(), d);
        BTreeMap::from([
            ("arch".to_owned(), vec![e("prod", true)]),
            ("arch/prod".to_owned(), vec![e("payment", true)]),
            ("arch/prod/payment".to_owned(), vec![e("2025", true)]),
            ("arch/prod/payment/2025".to_owned(), vec![e("06", true)]),
            ("arch/prod/payment/2025/06".to_owned(), vec![e("23", true)]),
            (
                "arch/prod/payment/2025/06/23".to_owned(),
                vec![e("a.snappy.parquet", false), e("b.snappy.parquet", false)],
            ),
        ])
    }

    fn webhdfs(port: u16) -> ArchiveRoot {
        ArchiveRoot::parse(&format!("webhdfs://127.0.0.1:{port}/arch"), 9870).expect("root")
    }

    /// The case OpenDAL's recursive lister gets wrong under its retry layer: the first
    /// directory listing answers 503 once. The walk lists it again and lists everything,
    /// with the retry layer and without it.
    #[tokio::test]
    async fn a_listing_that_fails_once_is_retried_and_nothing_is_left_out() {
        for retrying in [true, false] {
            let (port, requests) = namenode(tree(), 1);
            let op = if retrying {
                storage::open_retrying(&webhdfs(port))
            } else {
                storage::open(&webhdfs(port))
            }
            .expect("operator");
            let got = files(&op, &Scope::default()).await.expect("walk");
            assert_eq!(
                paths(&got),
                [
                    "prod/payment/2025/06/23/a.snappy.parquet",
                    "prod/payment/2025/06/23/b.snappy.parquet"
                ]
            );
            assert_eq!(
                requests.load(Ordering::SeqCst),
                7,
                "six directories, one retry"
            );
        }
    }

    /// Once the tries are spent a failed listing is an error, never a shorter list that reads
    /// as "no data".
    #[tokio::test]
    async fn a_listing_that_keeps_failing_is_an_error_not_an_empty_archive() {
        let (port, requests) = namenode(tree(), usize::MAX);
        let op = storage::open(&webhdfs(port)).expect("operator");
        let err = files(&op, &Scope::default())
            .await
            .expect_err("a failed listing is an error");
        assert!(err.to_string().contains("busy"), "{err}");
        assert_eq!(requests.load(Ordering::SeqCst), LIST_ATTEMPTS as usize);
    }
}
