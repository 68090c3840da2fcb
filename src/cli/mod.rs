//! The `alertpipe` command line: one file per command, each loading the config and calling
//! the library. `main.rs` only parses and dispatches (`run`). The load generator is a binary
//! of its own (`alertpipe-loadgen`, `src/bin/loadgen/`).

mod archive;
mod check_config;
mod dlq;
mod migrate;
mod serve;
mod tail;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use alertpipe::config::{Config, Role};

#[derive(Parser)]
#[command(
    name = "alertpipe",
    version,
    about = "Alert and cold-log pipeline service"
)]
pub struct Cli {
    /// Config file (TOML); environment overrides ALERTPIPE__SECTION__KEY apply on top.
    #[arg(long, short, global = true, env = "ALERTPIPE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
    Tail(tail::TailArgs),
    /// Dead-lettered notifications: list them, send them again.
    #[command(subcommand)]
    Dlq(dlq::DlqCmd),
    /// Look at the cold log archive without Spark.
    #[command(subcommand)]
    Archive(archive::ArchiveCmd),
}

impl Cli {
    fn config(&self) -> anyhow::Result<Config> {
        Ok(Config::load(self.config.as_deref())?)
    }
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let cfg = cli.config()?;
    match cli.command {
        Command::CheckConfig => check_config::run(&cfg),
        Command::Migrate => migrate::run(&cfg),
        Command::Serve { roles } => serve::run(cfg, roles),
        Command::Healthcheck => serve::healthcheck(&cfg),
        Command::Tail(args) => tail::run(&cfg, &args),
        Command::Dlq(cmd) => dlq::run(cfg, cmd),
        Command::Archive(cmd) => archive::run(cfg, cmd),
    }
}

/// A database without alertpipe's tables (a new one, or the wrong one) answers "relation ...
/// does not exist": say what to do about it.
pub(crate) fn unmigrated_hint(e: anyhow::Error) -> anyhow::Error {
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
pub fn report(e: &anyhow::Error) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// clap checks a command's definition only when it is parsed, in debug builds: a
    /// subcommand's `-c` beside the global `--config`'s once made a command panic.
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
