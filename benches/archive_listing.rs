//! Finding a query's files on HDFS: listing the archive through the stack's NameNode (WebHDFS).
//!   cargo bench --bench archive_listing        (RUNS=3 SERVICES=40 DAYS=7)
//! Writes an archive of SERVICES services x DAYS days (one small file per day, the layout's
//! directories) under a fresh directory of the stack's HDFS, then times, median of RUNS each:
//! - OpenDAL's recursive lister, what the readers used before `coldstore::walk` (baseline);
//! - the walk over everything (`archive ls`, compaction);
//! - the walk a query pinning one service over one day enters (`{service="..."}`, an hour).
//!
//! Figure: milliseconds per listing and the ratio to the baseline, same NameNode, same run.

#[path = "common/mod.rs"]
mod common;

use std::time::Instant;

use alertpipe::coldstore::walk::{self, Scope};
use alertpipe::coldstore::{layout, storage};
use alertpipe::config::ArchiveRoot;
use chrono::NaiveDate;
use futures_util::{stream, StreamExt, TryStreamExt};
use opendal::{EntryMode, Operator};

use common::{env_usize, median};

async fn recursive(op: &Operator) -> usize {
    let mut lister = op
        .lister_with("")
        .recursive(true)
        .await
        .expect("a recursive lister");
    let mut n = 0;
    while let Some(e) = lister.try_next().await.expect("a listing") {
        n += usize::from(e.metadata().mode() == EntryMode::FILE);
    }
    n
}

async fn time<F: std::future::Future<Output = usize>>(
    runs: usize,
    f: impl Fn() -> F,
) -> (f64, usize) {
    let mut ms = Vec::new();
    let mut found = 0;
    for _ in 0..runs {
        let t = Instant::now();
        found = f().await;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    (median(ms), found)
}

fn main() {
    alertpipe::alloc::tune();
    let runs = env_usize("RUNS", 3);
    let services = env_usize("SERVICES", 40);
    let days = env_usize("DAYS", 7);
    let stack = common::stack();
    let base = stack
        .get("STACK_HDFS_ROOT")
        .expect("STACK_HDFS_ROOT in the stack env (bash deploy/local/stack.sh up)");
    let root = format!("{base}/bench-listing-{}", std::process::id());
    let parsed = ArchiveRoot::parse(&root, 9870).expect("the stack's HDFS root");
    let op = storage::open_retrying(&parsed).expect("an operator");
    let first = NaiveDate::from_ymd_opt(2026, 6, 1).expect("a date");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let paths: Vec<String> = (0..services)
            .flat_map(|s| (0..days).map(move |d| (s, d)))
            .map(|(s, d)| {
                let day = first + chrono::Days::new(d as u64);
                let ts = day
                    .and_hms_opt(12, 0, 0)
                    .expect("noon")
                    .and_utc()
                    .timestamp_nanos_opt()
                    .expect("in range");
                layout::file_path("prod", &format!("svc{s:03}"), ts, 0, 0, 0, Default::default())
            })
            .collect();
        let t = Instant::now();
        stream::iter(paths.iter())
            .map(|p| op.write(p, b"x".to_vec()))
            .buffer_unordered(16)
            .try_collect::<Vec<_>>()
            .await
            .expect("the archive written");
        println!(
            "archive: {services} services x {days} days = {} files on {root} (written in {:.1} s)",
            paths.len(),
            t.elapsed().as_secs_f64()
        );

        let (base_ms, n_base) = time(runs, || recursive(&op)).await;
        let (all_ms, n_all) = time(runs, || async {
            walk::files(&op, &Scope::default()).await.expect("a walk").len()
        })
        .await;
        let pinned = Scope {
            env: None,
            service: Some("svc001".into()),
            days: Some(first..=first),
        };
        let (one_ms, n_one) = time(runs, || async {
            walk::files(&op, &pinned).await.expect("a walk").len()
        })
        .await;
        assert_eq!(n_base, paths.len(), "the recursive lister found every file");
        assert_eq!(n_all, paths.len(), "the walk found every file");
        assert_eq!(n_one, 1, "one service, one day: one file");
        println!("listing (median of {runs}):");
        println!("  OpenDAL recursive lister (baseline)  {base_ms:8.1} ms  {n_base} files");
        println!(
            "  walk, everything                     {all_ms:8.1} ms  {n_all} files  {:.2}x the baseline's time",
            all_ms / base_ms
        );
        println!(
            "  walk, one service and one day        {one_ms:8.1} ms  {n_one} file   {:.3}x the baseline's time",
            one_ms / base_ms
        );
    });
    // The bench's directory goes, by WebHDFS's own recursive DELETE.
    let dir = root
        .split_once("//")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map_or("", |(_, path)| path);
    let url = format!(
        "{}/webhdfs/v1/{dir}?op=DELETE&recursive=true&user.name=alertpipe",
        stack
            .get("STACK_WEBHDFS_URL")
            .expect("STACK_WEBHDFS_URL in the stack env")
    );
    let out = std::process::Command::new("curl")
        .args(["-sf", "-X", "DELETE", &url])
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "removing {dir}: {out:?}");
}
