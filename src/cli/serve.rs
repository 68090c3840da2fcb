//! `alertpipe serve` (the service, until SIGTERM) and `alertpipe healthcheck`.

use anyhow::Context as _;

use alertpipe::config::{Config, Role};
use alertpipe::startup::Application;

pub fn run(mut cfg: Config, roles: Vec<Role>) -> anyhow::Result<()> {
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

/// Exit 0 when the local server answers GET /healthz (container health checks).
pub fn healthcheck(cfg: &Config) -> anyhow::Result<()> {
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
