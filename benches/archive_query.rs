//! LogQL query speed over the archive, beside real Loki answering the same queries on the same
//! lines, same machine:
//!   bash benches/corpus.sh && cargo bench --bench archive_query   (RUNS=3 REPEAT=10 CORPUS=...)
//! The corpus's sources (real programs' logs) are archived as the archive stage writes them
//! (one snappy Parquet file per source) and pushed to Loki 3.4.6 (the project's config, snappy
//! chunks, flushed). Two queries, each as an instant metric query over all the lines, so both
//! engines read every selected line (a log query would stop at its limit):
//! - selective: one source's stream, `|= "<needle>"`;
//! - full scan: every stream, `|= "<needle>"`.
//!
//! The needle changes every run (no results cache helps either side). Figure: raw MB of the
//! selected lines (their own bytes, not Loki's per-line statistic) per CPU-second of the
//! answering process (this process for the archive, Loki's pid for Loki) over REPEAT queries,
//! median of RUNS.

#[path = "common/mod.rs"]
mod common;

use std::time::Instant;

use alertpipe::coldstore::layout::file_path;
use alertpipe::coldstore::parquet::Codec;
use alertpipe::coldstore::storage;
use alertpipe::{logql, query};
use common::loki::{archive_file, base_ns, corpus, curl, dir_bytes, flush, push, start_loki};
use common::{env_usize, median};

/// CPU seconds (user + system) of a process so far.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the ')'.
    (ticks(11) + ticks(12)) / 100.0
}

fn write_archive(root: &std::path::Path, sources: &[(String, Vec<Vec<u8>>)]) {
    for (name, lines) in sources {
        let file = archive_file(name, lines, Codec::Snappy);
        let path = root.join(file_path("prod", name, base_ns(), 0, 0, 0, Codec::Snappy));
        std::fs::create_dir_all(path.parent().expect("a directory")).expect("mkdir");
        std::fs::write(&path, file).expect("write");
    }
}

fn main() {
    alertpipe::alloc::tune();
    let runs = env_usize("RUNS", 3);
    let repeat = env_usize("REPEAT", 10);
    let (corpus_dir, sources) = corpus();
    let raw = |pick: &dyn Fn(&str) -> bool| -> f64 {
        sources
            .iter()
            .filter(|(n, _)| pick(n))
            .flat_map(|(_, l)| l.iter().map(|x| x.len()))
            .sum::<usize>() as f64
            / 1e6
    };
    // The selective query's source: the biggest one but a third of the corpus or less.
    let total = raw(&|_| true);
    let mut by_size: Vec<(f64, &str)> = sources
        .iter()
        .map(|(n, _)| (raw(&|x| x == n), n.as_str()))
        .collect();
    by_size.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (sel_mb, sel_src) = by_size
        .iter()
        .find(|(mb, _)| *mb <= total / 3.0)
        .copied()
        .unwrap_or(by_size[by_size.len() - 1]);

    let dir = tempfile::tempdir().expect("tempdir");
    write_archive(dir.path(), &sources);
    let op = storage::operator(&dir.path().display().to_string(), 9870).expect("archive opens");
    let loki = start_loki("snappy");
    let before = dir_bytes(&loki.dir.join("chunks"));
    for (name, l) in &sources {
        push(&loki, name, l);
    }
    flush(&loki, before);
    let loki_pid = loki.child.id().to_string();
    let me = std::process::id().to_string();
    let now_ns = base_ns() + 3_600_000_000_000;
    let rt = actix_web::rt::System::new();

    println!(
        "LogQL query speed on real logs ({corpus_dir}: {total:.1} MB raw, {} sources), medians of {runs}\n",
        sources.len()
    );
    println!(
        "{:<34} {:>9} {:>14} {:>14} {:>8} {:>10} {:>10}",
        "query", "raw MB", "archive MB/cpu-s", "Loki MB/cpu-s", "ratio", "archive s", "Loki s"
    );
    let queries = [
        (
            "selective (one source)",
            format!("service=\"{sel_src}\""),
            sel_mb,
        ),
        (
            "full scan (every source)",
            "cluster=\"prod\"".to_owned(),
            total,
        ),
    ];
    let mut ratios = Vec::new();
    for (name, selector, mb) in &queries {
        let (mut a_rate, mut l_rate, mut a_wall, mut l_wall) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for run in 0..runs {
            // Each run asks REPEAT queries (CPU time is counted in 10 ms ticks).
            let qs: Vec<String> = (0..repeat)
                .map(|i| {
                    format!(
                        "sum(count_over_time({{{selector}}} |= \"needle-{run}-{i}-{}\" [2h]))",
                        std::process::id()
                    )
                })
                .collect();
            // The archive, in this process.
            let (c0, t0) = (cpu_seconds(&me), Instant::now());
            for q in &qs {
                let expr = logql::parse(q).expect("query parses");
                let (_, stats) = rt
                    .block_on(query::query_instant(&op, &expr, now_ns))
                    .expect("archive answers");
                assert!(
                    (stats.line_bytes_scanned as f64 / 1e6 - mb).abs() < 0.01 * mb + 0.01,
                    "the archive scanned {} bytes, expected {mb} MB",
                    stats.line_bytes_scanned
                );
            }
            let (cpu, wall) = (cpu_seconds(&me) - c0, t0.elapsed().as_secs_f64());
            a_rate.push(mb * repeat as f64 / cpu.max(0.01));
            a_wall.push(wall / repeat as f64);
            // Loki, the same queries.
            let (c0, t0) = (cpu_seconds(&loki_pid), Instant::now());
            for q in &qs {
                let body = curl(&[
                    "-fsS",
                    "-G",
                    &format!("http://127.0.0.1:{}/loki/api/v1/query", loki.port),
                    "--data-urlencode",
                    &format!("query={q}"),
                    "--data-urlencode",
                    &format!("time={now_ns}"),
                ])
                .unwrap_or_else(|e| panic!("Loki: {e}"));
                let v: serde_json::Value = serde_json::from_slice(&body).expect("Loki's JSON");
                assert_eq!(v["status"], "success", "{v}");
            }
            let (cpu, wall) = (cpu_seconds(&loki_pid) - c0, t0.elapsed().as_secs_f64());
            l_rate.push(mb * repeat as f64 / cpu.max(0.01));
            l_wall.push(wall / repeat as f64);
        }
        let (a, l) = (median(a_rate), median(l_rate));
        ratios.push(a / l);
        println!(
            "{name:<34} {mb:>9.1} {a:>14.0} {l:>14.0} {:>7.2}x {:>10.3} {:>10.3}",
            a / l,
            median(a_wall),
            median(l_wall)
        );
    }
    println!(
        "\ntarget: the archive >= 2x Loki's raw MB per CPU-second (selective {:.2}x, full scan {:.2}x)",
        ratios[0], ratios[1]
    );
}
