//! Reading the Parquet archive back: pyarrow as the independent reader, file footers (cheap)
//! to wait for a row count.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::Stack;

/// What pyarrow sees under `root`.
pub fn pyarrow(root: &Path) -> Vec<Value> {
    let py = Stack::get().var("STACK_PYTHON");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/read_parquet.py");
    let out = Command::new(py)
        .args([script, root.to_str().unwrap()])
        .output()
        .unwrap_or_else(|e| panic!("{py}: {e} (rerun `bash deploy/local/stack.sh up`)"));
    assert!(
        out.status.success(),
        "pyarrow: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("reader output")
}

pub fn all_rows(files: &[Value]) -> Vec<Value> {
    files
        .iter()
        .flat_map(|f| f["rows"].as_array().unwrap().clone())
        .collect()
}

/// Waits (polling file footers, which is cheap) until `n` rows are archived, then reads
/// everything with the independent reader.
/// The tail of the test binaries' log (`<root>.log`), for failure messages.
pub fn log_tail(root: &Path) -> String {
    let text = std::fs::read_to_string(root.with_extension("log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

pub async fn wait_rows(root: &Path, n: usize) -> Vec<Value> {
    let op = alertpipe::coldstore::storage::operator(root.to_str().unwrap(), 9870).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let files = alertpipe::coldstore::read::list(&op)
            .await
            .unwrap_or_default();
        let rows: i64 = files.iter().map(|f| f.rows).sum();
        if rows as usize >= n {
            return pyarrow(root);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {n} archived rows: {rows} in {} files\n{}",
            files.len(),
            log_tail(root)
        );
        actix_web::rt::time::sleep(Duration::from_millis(250)).await;
    }
}
