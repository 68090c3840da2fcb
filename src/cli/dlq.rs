//! `alertpipe dlq list` and `alertpipe dlq replay [--id N | --all]`.

use std::io::Write;

use clap::Subcommand;

use super::unmigrated_hint;
use alertpipe::config::Config;

#[derive(Subcommand)]
pub enum DlqCmd {
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

pub fn run(cfg: Config, cmd: DlqCmd) -> anyhow::Result<()> {
    actix_web::rt::System::new().block_on(async move {
        match cmd {
            DlqCmd::List => list(&cfg).await,
            DlqCmd::Replay { id, all: _ } => replay(&cfg, id).await,
        }
    })
}

/// Every dead letter, oldest first.
async fn list(cfg: &Config) -> anyhow::Result<()> {
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

/// Sends notification dead letters again through the worker's delivery (`notify::replay`).
async fn replay(cfg: &Config, id: Option<i64>) -> anyhow::Result<()> {
    let report = alertpipe::notify::replay::replay(cfg, id)
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
