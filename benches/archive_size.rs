//! Archive size on real logs, beside gzip -6, zstd -3 and real Loki's chunks of the same lines:
//!   bash benches/corpus.sh && cargo bench --bench archive_size     (CORPUS=.state/corpus)
//! Per source (one stream each, lines 10 µs apart) and in total: raw bytes; `gzip -6` and
//! `zstd -3` of the raw lines (the command-line tools); the archive's Parquet file with default
//! settings (snappy) and with the zstd codec; Loki 3.4.6 (the peers', the project's config) with
//! `chunk_encoding` snappy, then zstd: the lines pushed, `POST /flush`, its chunk files summed.
//! Ratios are raw / compressed (bigger is smaller).

#[path = "common/mod.rs"]
mod common;

use common::loki::{archive_file, corpus, dir_bytes, flush, push, start_loki};

use std::io::Write;
use std::process::{Command, Stdio};

use alertpipe::coldstore::parquet::Codec;

fn piped(cmd: &str, args: &[&str], input: &[u8]) -> usize {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "{cmd} failed");
    out.stdout.len()
}

fn archive_bytes(source: &str, lines: &[Vec<u8>], codec: Codec) -> usize {
    let file = archive_file(source, lines, codec);
    if let Ok(dir) = std::env::var("KEEP_FILES") {
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(format!("{dir}/{source}.{}", codec.extension()), &file);
    }
    file.len()
}

/// Loki's chunk bytes for each source, pushed to a fresh Loki with `encoding`.
fn loki_bytes(encoding: &str, sources: &[(String, Vec<Vec<u8>>)]) -> Vec<usize> {
    let loki = start_loki(encoding);
    let chunks = loki.dir.join("chunks");
    let mut out = Vec::new();
    for (name, l) in sources {
        let before = dir_bytes(&chunks);
        push(&loki, name, l);
        out.push(flush(&loki, before) - before);
    }
    out
}

fn main() {
    alertpipe::alloc::tune();
    let (corpus, sources) = corpus();
    let loki_snappy = loki_bytes("snappy", &sources);
    let loki_zstd = loki_bytes("zstd", &sources);
    println!("archive size on real logs ({corpus}); ratio = raw / compressed\n");
    println!(
        "{:<13} {:>10} {:>7} {:>7} {:>8} {:>8} {:>8} {:>8}",
        "source", "raw MB", "gzip-6", "zstd-3", "archive", "loki", "arch.zst", "loki zst"
    );
    let mut t = [0usize; 7];
    for (i, (name, l)) in sources.iter().enumerate() {
        let mut raw = Vec::new();
        for line in l {
            raw.extend_from_slice(line);
            raw.push(b'\n');
        }
        let row = [
            raw.len(),
            piped("gzip", &["-6", "-c"], &raw),
            piped("zstd", &["-3", "-c", "-q"], &raw),
            archive_bytes(name, l, Codec::Snappy),
            loki_snappy[i],
            archive_bytes(name, l, Codec::Zstd),
            loki_zstd[i],
        ];
        for (a, b) in t.iter_mut().zip(row) {
            *a += b;
        }
        print_row(name, &row);
    }
    print_row("total", &t);
    let r = |i: usize| t[0] as f64 / t[i] as f64;
    println!(
        "\narchive (snappy) = {:.2}x gzip-6's ratio (target >= 0.6); {} Loki's snappy chunks ({:.0} vs {:.0} KB)",
        r(3) / r(1),
        if t[3] < t[4] { "smaller than" } else { "NOT smaller than" },
        t[3] as f64 / 1024.0,
        t[4] as f64 / 1024.0
    );
    println!(
        "archive (zstd) = {:.2}x zstd -3's size (target <= 1); {} Loki's zstd chunks ({:.0} vs {:.0} KB)",
        t[5] as f64 / t[2] as f64,
        if t[5] < t[6] { "smaller than" } else { "NOT smaller than" },
        t[5] as f64 / 1024.0,
        t[6] as f64 / 1024.0
    );
}

fn print_row(name: &str, v: &[usize; 7]) {
    let r = |i: usize| v[0] as f64 / v[i].max(1) as f64;
    println!(
        "{name:<13} {:>10.2} {:>6.1}x {:>6.1}x {:>7.1}x {:>7.1}x {:>7.1}x {:>7.1}x",
        v[0] as f64 / 1e6,
        r(1),
        r(2),
        r(3),
        r(4),
        r(5),
        r(6)
    );
}
