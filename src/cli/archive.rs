//! `alertpipe archive ls | cat | query | compact`: the cold archive without Spark.

use std::io::Write;

use clap::Subcommand;

use alertpipe::coldstore::read;
use alertpipe::config::Config;

#[derive(Subcommand)]
pub enum ArchiveCmd {
    /// Files per service and day, with rows and bytes.
    Ls,
    /// Lines of a service in a time range, in time order.
    Cat {
        #[arg(long)]
        service: String,
        /// RFC 3339, e.g. 2025-06-23T00:00:00Z
        #[arg(long)]
        from: chrono::DateTime<chrono::Utc>,
        #[arg(long)]
        to: chrono::DateTime<chrono::Utc>,
        /// Only lines containing this text.
        #[arg(long)]
        grep: Option<String>,
    },
    /// A LogQL query over the archive (as Loki's API answers it): log lines, oldest first,
    /// or one line per metric point.
    Query {
        /// e.g. '{service="payment"} |= "DB connection failed"' or
        /// 'sum by (level) (count_over_time({job=~".+"}[5m]))'
        query: String,
        /// How far back from --to (a duration: 30m, 6h, 7d).
        #[arg(long, default_value = "1h")]
        since: String,
        /// RFC 3339; default --to minus --since.
        #[arg(long)]
        from: Option<chrono::DateTime<chrono::Utc>>,
        /// RFC 3339; default now.
        #[arg(long)]
        to: Option<chrono::DateTime<chrono::Utc>>,
        /// Lines at most (log queries; 5000 at most, as in Loki): the newest ones.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// Step of a metric query (a duration); default the range / 250, at least 1 s.
        #[arg(long)]
        step: Option<String>,
    },
    /// Merges each closed day's files per env/service into one (crash-safe, idempotent):
    /// run it daily, e.g. from cron or a Kubernetes CronJob.
    Compact {
        /// Days before this one (YYYY-MM-DD); default: days that ended over an hour ago.
        #[arg(long)]
        before: Option<chrono::NaiveDate>,
    },
}

pub fn run(cfg: Config, cmd: ArchiveCmd) -> anyhow::Result<()> {
    let root = cfg.archive.root()?;
    let op = alertpipe::coldstore::storage::open_retrying(&root)?;
    actix_web::rt::System::new().block_on(async move {
        let mut out = std::io::stdout().lock();
        match cmd {
            ArchiveCmd::Ls => {
                let files = read::list(&op).await?;
                if files.is_empty() {
                    // On stderr: a typo in archive.root reads like an empty archive.
                    eprintln!("no archive files under {}", cfg.archive.root);
                }
                writeln!(
                    out,
                    "{:<8} {:<24} {:<10} {:>5} {:>12} {:>12}",
                    "env", "service", "day", "files", "rows", "bytes"
                )?;
                for ((env, service, day), (n, rows, bytes)) in read::summarize(&files) {
                    writeln!(
                        out,
                        "{env:<8} {service:<24} {day:<10} {n:>5} {rows:>12} {bytes:>12}"
                    )?;
                }
                for f in &files {
                    writeln!(out, "  {}  rows={} bytes={}", f.path, f.rows, f.bytes)?;
                }
            }
            ArchiveCmd::Compact { before } => {
                alertpipe::alloc::tune_for_batch();
                let before = before.unwrap_or_else(|| {
                    (chrono::Utc::now() - chrono::Duration::hours(1)).date_naive()
                });
                let r =
                    alertpipe::coldstore::compact::compact(&op, before, cfg.archive.codec).await?;
                writeln!(
                    out,
                    "compacted {} service-days before {before}: {} files -> {}, {} rows{}",
                    r.merged,
                    r.files_before,
                    r.files_after,
                    r.rows,
                    if r.recovered > 0 {
                        format!("; finished {} leftovers of an interrupted run", r.recovered)
                    } else {
                        String::new()
                    }
                )?;
            }
            ArchiveCmd::Query {
                query,
                since,
                from,
                to,
                limit,
                step,
            } => archive_query(&op, &mut out, &query, &since, from, to, limit, step).await?,
            ArchiveCmd::Cat {
                service,
                from,
                to,
                grep,
            } => {
                anyhow::ensure!(from < to, "--from must be before --to");
                for (ts, line) in read::lines(&op, &service, from, to, grep.as_deref()).await? {
                    let t = chrono::DateTime::<chrono::Utc>::from_timestamp_nanos(ts);
                    writeln!(
                        out,
                        "{} {line}",
                        t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
                    )?;
                }
            }
        }
        Ok(())
    })
}

/// `alertpipe archive query`: the same engine as the HTTP API, printed for a terminal.
#[allow(clippy::too_many_arguments)]
async fn archive_query(
    op: &opendal::Operator,
    out: &mut impl std::io::Write,
    query: &str,
    since: &str,
    from: Option<chrono::DateTime<chrono::Utc>>,
    to: Option<chrono::DateTime<chrono::Utc>>,
    limit: usize,
    step: Option<String>,
) -> anyhow::Result<()> {
    use alertpipe::query as q;
    // The flags as the HTTP API's parameters: one parser, the same defaults and limits.
    let rfc = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339();
    let mut pairs = vec![
        ("query".to_owned(), query.to_owned()),
        ("since".to_owned(), since.to_owned()),
        ("limit".to_owned(), limit.to_string()),
    ];
    pairs.extend(from.map(|t| ("start".to_owned(), rfc(t))));
    pairs.extend(to.map(|t| ("end".to_owned(), rfc(t))));
    pairs.extend(step.map(|s| ("step".to_owned(), s)));
    let params = q::Params::new(pairs);
    let flag = |e: q::ParamError| {
        let name = match e.field.as_str() {
            "start" => "--from",
            "end" => "--to",
            f => f,
        };
        anyhow::anyhow!("--{}: {}", name.trim_start_matches('-'), e.message)
    };
    let expr = params.expr().map_err(flag)?;
    let window = params.window(q::now_ns()).map_err(flag)?;
    let (answer, stats) = q::query_range(op, &expr, window).await?;
    let time = |t: i64| {
        chrono::DateTime::<chrono::Utc>::from_timestamp_nanos(t)
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
    };
    let fmt_labels = |l: &q::LabelSet| {
        let inner: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        format!("{{{}}}", inner.join(", "))
    };
    match answer {
        q::Answer::Streams(streams) => {
            let mut lines: Vec<(i64, String, String)> = streams
                .iter()
                .flat_map(|s| {
                    let l = fmt_labels(&s.labels);
                    s.entries
                        .iter()
                        .map(move |e| (e.ts_ns, l.clone(), e.line.clone()))
                })
                .collect();
            lines.sort();
            for (t, l, line) in lines {
                writeln!(out, "{} {l} {line}", time(t))?;
            }
        }
        q::Answer::Matrix(series) | q::Answer::Vector(series) => {
            for s in series {
                let l = fmt_labels(&s.labels);
                for (t, x) in s.points {
                    writeln!(out, "{} {l} {x}", time(t))?;
                }
            }
        }
        q::Answer::Scalar(t, x) => writeln!(out, "{} {x}", time(t))?,
    }
    eprintln!(
        "{} files, {} bytes read, {} lines scanned",
        stats.files, stats.bytes_read, stats.rows_scanned
    );
    Ok(())
}
