//! The `alertpipe` command: thin; the work lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use alertpipe::config::{Config, Role};
use alertpipe::startup::Application;

#[derive(Parser)]
#[command(
    name = "alertpipe",
    version,
    about = "Alert and cold-log pipeline service"
)]
struct Cli {
    /// Config file (TOML); environment overrides ALERTPIPE__SECTION__KEY apply on top.
    #[arg(long, short, global = true, env = "ALERTPIPE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Serve {
        /// Roles to run (comma-separated); default: `server.roles` from the config.
        #[arg(long, value_delimiter = ',')]
        roles: Vec<Role>,
    },
    /// Apply pending database migrations (embedded in the binary) and exit.
    Migrate,
    /// Validate the config and print the effective config, secrets masked.
    CheckConfig,
    /// Exit 0 when the local server answers GET /healthz (for container health checks).
    Healthcheck,
    /// Print the messages of a Kafka topic (from the beginning) as JSON lines.
    Tail(alertpipe::kafka::TailArgs),
    /// Dead-lettered notifications: list them, send them again.
    #[command(subcommand)]
    Dlq(DlqCmd),
    /// Look at the cold log archive without Spark.
    #[command(subcommand)]
    Archive(ArchiveCmd),
    /// Load generator: webhook batches against a running alertpipe, and a bare-producer baseline.
    Loadgen(alertpipe::loadgen::LoadgenArgs),
}

#[derive(Subcommand)]
enum DlqCmd {
    /// Every dead letter (persist and notify stages), oldest first.
    List,
    /// Send notification dead letters again; replayed ones are marked.
    Replay {
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        id: Option<i64>,
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand)]
enum ArchiveCmd {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // `alertpipe archive cat ... | head` closing the pipe is not an error.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("alertpipe: {}", report(&e));
            ExitCode::FAILURE
        }
    }
}

/// A database without alertpipe's tables (a new one, or the wrong one) answers "relation ...
/// does not exist": say what to do about it.
fn unmigrated_hint(e: anyhow::Error) -> anyhow::Error {
    let undefined_table = e.chain().any(|c| {
        let text = c.to_string();
        text.contains("relation \"") && text.contains("does not exist")
    });
    if undefined_table {
        e.context("this database has no alertpipe tables: check database.url, or run `alertpipe migrate` on it")
    } else {
        e
    }
}

/// The error and its causes on one line, each cause once: the library's errors already name
/// their cause in their own message (for the logs, which print only that), so a cause whose
/// text is already there is not repeated.
fn report(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::CheckConfig => {
            let cfg = Config::load(cli.config.as_deref())?;
            print!("{}", cfg.to_masked_toml());
            eprintln!("config ok");
            Ok(())
        }
        Command::Migrate => {
            let cfg = Config::load(cli.config.as_deref())?;
            let applied = alertpipe::db::migrate(cfg.database.connect_url().expose())?;
            println!("applied {} migration(s): {applied:?}", applied.len());
            Ok(())
        }
        Command::Serve { roles } => {
            let mut cfg = Config::load(cli.config.as_deref())?;
            if !roles.is_empty() {
                cfg.server.roles = roles;
            }
            alertpipe::telemetry::init(&cfg.telemetry);
            actix_web::rt::System::new().block_on(async move {
                let app = Application::build(cfg)
                    .await
                    .context("starting alertpipe")?;
                app.install_signal_handlers();
                app.run_until_stopped().await
            })
        }
        Command::Healthcheck => {
            let cfg = Config::load(cli.config.as_deref())?;
            let mut addr = cfg.server.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            let url = format!("http://{addr}/healthz");
            actix_web::rt::System::new().block_on(async move {
                let client = awc::Client::builder()
                    .timeout(std::time::Duration::from_secs(3))
                    .finish();
                let resp = client
                    .get(&url)
                    .send()
                    .await
                    .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
                anyhow::ensure!(resp.status().is_success(), "{url}: {}", resp.status());
                Ok(())
            })
        }
        Command::Tail(args) => {
            let cfg = Config::load(cli.config.as_deref())?;
            alertpipe::kafka::tail(&cfg.kafka, &args)
        }
        Command::Dlq(cmd) => {
            let cfg = Config::load(cli.config.as_deref())?;
            actix_web::rt::System::new().block_on(async move {
                use std::io::Write;
                match cmd {
                    DlqCmd::List => {
                        let pool = alertpipe::db::pool(cfg.database.connect_url().expose(), 1);
                        let rows = actix_web::rt::task::spawn_blocking(move || {
                            alertpipe::db::queries::dead_letters(&pool, None)
                        })
                        .await?
                        .map_err(|e| unmigrated_hint(e.into()))?;
                        let mut out = std::io::stdout().lock();
                        writeln!(
                            out,
                            "{:>6} {:<20} {:<8} {:<10} {:>8} {:<9} reason",
                            "id", "created", "stage", "receiver", "attempts", "replayed"
                        )?;
                        for r in rows {
                            writeln!(
                                out,
                                "{:>6} {:<20} {:<8} {:<10} {:>8} {:<9} {}",
                                r.id,
                                r.created_at.format("%Y-%m-%d %H:%M:%S"),
                                r.stage,
                                r.receiver.unwrap_or_default(),
                                r.attempts,
                                if r.replayed_at.is_some() { "yes" } else { "no" },
                                r.reason
                            )?;
                        }
                        Ok(())
                    }
                    DlqCmd::Replay { id, all: _ } => {
                        let report = alertpipe::notify::replay::replay(&cfg, id)
                            .await
                            .map_err(unmigrated_hint)?;
                        println!("replayed: {} sent, {} failed", report.sent, report.failed);
                        anyhow::ensure!(
                            report.failed == 0,
                            "{} dead letter(s) failed again",
                            report.failed
                        );
                        Ok(())
                    }
                }
            })
        }
        Command::Archive(cmd) => {
            let cfg = Config::load(cli.config.as_deref())?;
            let op = alertpipe::coldstore::storage::open(&cfg.archive.root()?)?;
            actix_web::rt::System::new().block_on(async move {
                use alertpipe::coldstore::read;
                use std::io::Write;
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
                        let before = before.unwrap_or_else(|| {
                            (chrono::Utc::now() - chrono::Duration::hours(1)).date_naive()
                        });
                        let r =
                            alertpipe::coldstore::compact::compact(&op, before, cfg.archive.codec)
                                .await?;
                        writeln!(
                            out,
                            "compacted {} service-days before {before}: {} files -> {}, {} rows{}",
                            r.merged,
                            r.files_before,
                            r.files_after,
                            r.rows,
                            if r.recovered > 0 {
                                format!(
                                    "; finished {} leftovers of an interrupted run",
                                    r.recovered
                                )
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
                    } => {
                        archive_query(&op, &mut out, &query, &since, from, to, limit, step).await?
                    }
                    ArchiveCmd::Cat {
                        service,
                        from,
                        to,
                        grep,
                    } => {
                        anyhow::ensure!(from < to, "--from must be before --to");
                        for (ts, line) in
                            read::lines(&op, &service, from, to, grep.as_deref()).await?
                        {
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
        Command::Loadgen(args) => {
            let cfg = Config::load(cli.config.as_deref())?;
            actix_web::rt::System::new().block_on(alertpipe::loadgen::run(cfg, args))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap checks a command's definition only when it is parsed, in debug builds: a
    /// subcommand's `-c` beside the global `--config`'s made `alertpipe loadgen` panic.
    #[test]
    fn every_subcommand_is_a_valid_cli_definition() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn a_report_names_each_cause_once() {
        let missing = std::fs::read_to_string("/nonexistent/alertpipe.toml").unwrap_err();
        let e = anyhow::Error::new(alertpipe::config::ConfigError::Read {
            path: "/nonexistent/alertpipe.toml".into(),
            source: missing,
        })
        .context("starting");
        let text = report(&e);
        assert_eq!(
            text.matches("No such file or directory").count(),
            1,
            "{text}"
        );
        assert!(
            text.starts_with("starting: cannot read config file /nonexistent/alertpipe.toml: "),
            "{text}"
        );
        let plain = anyhow::anyhow!("no route").context("routing");
        assert_eq!(report(&plain), "routing: no route");
    }
}
