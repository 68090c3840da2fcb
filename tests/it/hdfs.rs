//! The archive on the stack's real HDFS (a NameNode and a DataNode, WebHDFS): files read back
//! by an independent reader (WebHDFS OPEN, then pyarrow), the Loki query API over them, a root
//! the archive's user may not write (a clear error naming the path and the user, readiness
//! says so, nothing lost once fixed), and compaction of closed days on HDFS. Each test has a
//! directory of its own under /logs.

use std::collections::BTreeMap;
use std::time::Duration;

use alertpipe::config::Role;
use serde_json::json;

use crate::support::parquet::{all_rows, pyarrow};
use crate::support::{eventually, unique, Stack, TestApp};

/// `webhdfs://alertpipe@nn/<dir>/<unique>` on the stack's HDFS, and its HDFS path.
fn hdfs_root(dir: &str, name: &str) -> (String, String) {
    let base = Stack::get().var("STACK_HDFS_ROOT");
    let host = base
        .trim_start_matches("webhdfs://")
        .split('/')
        .next()
        .expect("host");
    let path = format!("/{dir}/{}", unique(name));
    (format!("webhdfs://{host}{path}"), path)
}

fn webhdfs(op: &str, path: &str, query: &str) -> u16 {
    let url = format!(
        "{}/webhdfs/v1{path}?op={op}&user.name=root{query}",
        Stack::get().var("STACK_WEBHDFS_URL")
    );
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "PUT",
            &url,
        ])
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

/// Rows in closed files under `root`, from their footers, through alertpipe's own lister.
async fn rows_on(root: &str) -> i64 {
    let Ok(op) = alertpipe::coldstore::storage::operator(root, 9870) else {
        return 0;
    };
    alertpipe::coldstore::read::list(&op)
        .await
        .map(|files| files.iter().map(|f| f.rows).sum())
        .unwrap_or(0)
}

/// Every line under `path` on the stack's HDFS, read by the independent reader.
fn read_back(path: &str) -> BTreeMap<String, usize> {
    read_back_from(Stack::get().var("STACK_WEBHDFS_URL"), path)
}

/// Every line under `path` on the HDFS whose NameNode serves `base`, read by the independent
/// reader (which fails on a file without a valid footer: a half-written file visible).
fn read_back_from(base: &str, path: &str) -> BTreeMap<String, usize> {
    let dest = tempfile::tempdir().expect("download dir");
    let out = std::process::Command::new(Stack::get().var("STACK_SYS_PYTHON"))
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/it/webhdfs_get.py"
        ))
        .args([base, path])
        .arg(dest.path())
        .output()
        .expect("the WebHDFS reader runs");
    assert!(
        out.status.success(),
        "webhdfs_get.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = BTreeMap::new();
    for r in all_rows(&pyarrow(dest.path())) {
        *lines
            .entry(r["line"].as_str().unwrap_or("").to_owned())
            .or_default() += 1;
    }
    lines
}

fn push(svc: &str, from: usize, to: usize, ts_ns: i64) -> Vec<u8> {
    let values: Vec<_> = (from..to)
        .map(|i| {
            json!([
                (ts_ns + i as i64).to_string(),
                format!("{svc} line {i} ünïcode")
            ])
        })
        .collect();
    serde_json::to_vec(&json!({"streams": [
        {"stream": {"service": svc, "cluster": "prod", "job": format!("{svc}-service"), "level": "error"},
         "values": values}]}))
    .expect("json")
}

async fn archive_app(root: &str) -> TestApp {
    let root = root.to_owned();
    TestApp::builder()
        .with_roles(&[Role::Archive])
        .configure(move |c| c.archive.root = root)
        .spawn()
        .await
}

#[actix_web::test]
async fn files_on_real_hdfs_are_read_back_by_an_independent_reader_and_answer_logql() {
    let (root, path) = hdfs_root("logs", "it");
    let app = archive_app(&root).await;
    let svc = unique("hdfs").replace('-', "_");
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    for k in 0..3 {
        let (s, body) = app
            .push_logs(
                push(&svc, k * 100, k * 100 + 100, now),
                "application/json",
                false,
            )
            .await;
        assert_eq!(s, 204, "{body}");
    }
    eventually(Duration::from_secs(60), "300 rows on HDFS", || async {
        (rows_on(&root).await >= 300).then_some(())
    })
    .await;
    let lines = read_back(&path);
    let want: BTreeMap<String, usize> = (0..300)
        .map(|i| (format!("{svc} line {i} ünïcode"), 1))
        .collect();
    assert_eq!(
        lines, want,
        "every line once, read through WebHDFS by pyarrow"
    );

    // The same files answer LogQL through the archive's Loki API.
    let q = format!("{{service=\"{svc}\"}} |= \"line 1\"");
    let start = (now - 60_000_000_000).to_string();
    let (status, v) = crate::support::logs::loki_get(
        &app.url,
        "/loki/api/v1/query_range",
        &[
            ("query", q.as_str()),
            ("start", start.as_str()),
            ("limit", "1000"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let n: usize = v["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| s["values"].as_array().map_or(0, Vec::len))
        .sum();
    // "line 1", "line 10".."line 19", "line 100".."line 199".
    assert_eq!(n, 1 + 10 + 100, "{v}");
}

#[actix_web::test]
async fn a_root_it_may_not_write_names_path_and_user_and_loses_nothing_once_fixed() {
    let (root, path) = hdfs_root("locked", "it");
    // root's directory, 755: the archive's user alertpipe may read it, not write it.
    assert_eq!(webhdfs("MKDIRS", &path, ""), 200);
    let app = archive_app(&root).await;
    let svc = unique("locked").replace('-', "_");
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let (s, body) = app
        .push_logs(push(&svc, 0, 50, now), "application/json", false)
        .await;
    assert_eq!(s, 204, "accepted into Kafka: {body}");
    let reason = eventually(
        Duration::from_secs(60),
        "readiness naming the fault",
        || async {
            let (status, v) = app.get_json("/readyz").await;
            let r = v["reason"].as_str().unwrap_or("").to_owned();
            (status == 503 && r.contains("archive")).then_some(r)
        },
    )
    .await;
    assert!(
        reason.contains("Permission denied") || reason.contains("PermissionDenied"),
        "{reason}"
    );
    assert!(reason.contains("alertpipe"), "names the user: {reason}");
    assert!(reason.contains(&path), "names the path: {reason}");

    // Fixed by the operator: every line arrives, once.
    assert_eq!(webhdfs("SETPERMISSION", &path, "&permission=777"), 200);
    eventually(Duration::from_secs(60), "50 rows once writable", || async {
        (rows_on(&root).await >= 50).then_some(())
    })
    .await;
    let lines = read_back(&path);
    assert_eq!(lines.len(), 50, "{lines:?}");
    assert!(lines.values().all(|&n| n == 1), "{lines:?}");
    eventually(Duration::from_secs(30), "ready again", || async {
        (app.get_json("/readyz").await.0 == 200).then_some(())
    })
    .await;
}

#[actix_web::test]
async fn closed_days_are_compacted_on_real_hdfs_and_every_line_stays_once() {
    use alertpipe::coldstore::compact::compact;
    use alertpipe::coldstore::parquet::Codec;
    let (root, path) = hdfs_root("logs", "compact");
    let app = archive_app(&root).await;
    let svc = unique("cday").replace('-', "_");
    // Yesterday's lines, pushed in three pieces a file apart (files close after 1 s).
    let yesterday = chrono::Utc::now() - chrono::Duration::days(1);
    let ts = yesterday.timestamp_nanos_opt().unwrap_or(0);
    for k in 0..3 {
        let (s, body) = app
            .push_logs(
                push(&svc, k * 40, k * 40 + 40, ts),
                "application/json",
                false,
            )
            .await;
        assert_eq!(s, 204, "{body}");
        eventually(Duration::from_secs(60), "the piece on HDFS", || async {
            (rows_on(&root).await >= (k as i64 + 1) * 40).then_some(())
        })
        .await;
    }
    // As `alertpipe archive compact` opens it: temporary failures tried again.
    let parsed = alertpipe::config::ArchiveRoot::parse(&root, 9870).expect("root");
    let op = alertpipe::coldstore::storage::open_retrying(&parsed).expect("operator");
    let before = alertpipe::coldstore::read::list(&op).await.expect("list");
    assert!(
        before.len() >= 3,
        "one file per piece at least: {}",
        before.len()
    );
    let today = chrono::Utc::now().date_naive();
    let r = compact(&op, today, Codec::Snappy)
        .await
        .expect("compaction on HDFS");
    assert_eq!((r.merged, r.files_after), (1, 1), "{r:?}");
    let after = alertpipe::coldstore::read::list(&op).await.expect("list");
    assert_eq!(after.len(), 1, "one file for the closed day");
    let lines = read_back(&path);
    assert_eq!(lines.len(), 120, "every line: {}", lines.len());
    assert!(lines.values().all(|&n| n == 1), "none doubled");
    // Idempotent: a second run (a retried CronJob) changes nothing.
    let again = compact(&op, today, Codec::Snappy).await.expect("again");
    assert_eq!(again.merged, 0, "{again:?}");
    drop(app);
}

#[actix_web::test]
async fn the_datanode_killed_mid_file_shows_no_half_file_and_loses_and_doubles_nothing() {
    let mut hdfs = crate::support::hdfs::Hdfs::start();
    let path = format!("/logs/{}", unique("dnkill"));
    let root = hdfs.root_for(&path, "alertpipe");
    let app = TestApp::builder()
        .with_roles(&[Role::Archive])
        .configure({
            let root = root.clone();
            move |c| {
                c.archive.root = root;
                // Files stay open for a while, so the kill lands while one is being written.
                c.archive.max_age_s = 5;
            }
        })
        .spawn()
        .await;
    let svc = unique("dn").replace('-', "_");
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let mut sent = 0;
    for k in 0..4 {
        let (s, body) = app
            .push_logs(
                push(&svc, k * 50, k * 50 + 50, now),
                "application/json",
                false,
            )
            .await;
        assert_eq!(s, 204, "{body}");
        sent += 50;
        actix_web::rt::time::sleep(Duration::from_millis(700)).await;
    }
    // The DataNode dies with a file open; lines keep arriving (Kafka holds them).
    hdfs.kill_datanode();
    for k in 4..8 {
        let (s, body) = app
            .push_logs(
                push(&svc, k * 50, k * 50 + 50, now),
                "application/json",
                false,
            )
            .await;
        assert_eq!(s, 204, "{body}");
        sent += 50;
    }
    actix_web::rt::time::sleep(Duration::from_secs(8)).await;
    // Meanwhile no reader sees a half-written file: every visible file has its footer.
    let partial = read_back_from(&hdfs.url(), &path);
    assert!(partial.values().all(|&n| n == 1), "{partial:?}");
    hdfs.start_datanode();
    eventually(Duration::from_secs(120), "every line on HDFS", || async {
        (rows_on(&root).await >= sent as i64).then_some(())
    })
    .await;
    let lines = read_back_from(&hdfs.url(), &path);
    let want: BTreeMap<String, usize> = (0..sent)
        .map(|i| (format!("{svc} line {i} ünïcode"), 1))
        .collect();
    assert_eq!(lines, want, "every line once after the DataNode's return");
    // The kill did land on a file being written: its flush failed, and was done again.
    let m = app.metrics().await;
    let failed: f64 = m
        .lines()
        .filter(|l| l.starts_with("alertpipe_archive_write_failures_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        failed >= 1.0,
        "no failed flush while the DataNode was down:\n{m}"
    );
}
