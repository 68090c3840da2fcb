//! `alertpipe check-config`: validates the config and prints it, secrets masked.

use alertpipe::config::Config;

pub fn run(cfg: &Config) -> anyhow::Result<()> {
    print!("{}", cfg.to_masked_toml());
    eprintln!("config ok");
    Ok(())
}
