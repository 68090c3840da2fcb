//! `alertpipe migrate`: applies the pending database migrations (embedded in the binary).

use alertpipe::config::Config;

pub fn run(cfg: &Config) -> anyhow::Result<()> {
    let applied = alertpipe::db::migrate(cfg.database.connect_url().expose())?;
    println!("applied {} migration(s): {applied:?}", applied.len());
    Ok(())
}
