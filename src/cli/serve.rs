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

/// Exit 0 when the local server answers GET /healthz (container health checks); over TLS when
/// `[server.tls]` is on.
pub fn healthcheck(cfg: &Config) -> anyhow::Result<()> {
    let mut addr = cfg.server.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let tls = cfg.server.tls.is_some();
    let url = format!("{}://{addr}/healthz", if tls { "https" } else { "http" });
    actix_web::rt::System::new().block_on(async move {
        let timeout = std::time::Duration::from_secs(3);
        let client = if tls {
            let connector = awc::Connector::new()
                .rustls_0_23(std::sync::Arc::new(own_listener::client()))
                .timeout(timeout);
            awc::Client::builder().connector(connector)
        } else {
            awc::Client::builder().connector(awc::Connector::new())
        };
        let resp = client
            .timeout(timeout)
            .finish()
            .get(&url)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
        anyhow::ensure!(resp.status().is_success(), "{url}: {}", resp.status());
        Ok(())
    })
}

/// The health check reaches its own process on loopback: the TLS handshake must succeed
/// (signatures are checked), whichever certificate the listener serves, since its name is not
/// 127.0.0.1 and its CA need not be installed in the container. Nothing is sent but the probe.
mod own_listener {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{ring, verify_tls12_signature, verify_tls13_signature, CryptoProvider};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    #[derive(Debug)]
    struct AnyCertificate(Arc<CryptoProvider>);

    impl ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    pub fn client() -> rustls::ClientConfig {
        let provider = Arc::new(ring::default_provider());
        let mut c = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        c
    }
}
