#[derive(Debug, clap::Args)]
pub struct LoadgenArgs {}
pub async fn run(_cfg: crate::config::Config, _args: LoadgenArgs) -> anyhow::Result<()> {
    Ok(())
}
