//! The HTTP client of notify's outbound requests (Teams webhooks, Loki's query API), able to
//! speak https as those endpoints do in production: the system's root certificates
//! (`rustls-native-certs`, which `SSL_CERT_FILE` replaces) plus `notify.https_ca_file`, host
//! names always checked. Plain `http://` URLs work as before.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

#[derive(Debug, thiserror::Error)]
#[error("notify.https_ca_file {path}: {reason}")]
pub struct CaFileError {
    path: String,
    reason: String,
}

/// The trust anchors: the system's roots and the configured CA's certificates.
fn roots(ca_file: Option<&Path>) -> Result<rustls::RootCertStore, CaFileError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::warn!(error = %e, "a system root certificate store could not be read");
    }
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let err = |reason: String| CaFileError {
            path: path.display().to_string(),
            reason,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| err(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err(format!("not PEM: {e}")))?;
        if certs.is_empty() {
            return Err(err("no certificate in it".into()));
        }
        for c in certs {
            roots.add(c).map_err(|e| err(e.to_string()))?;
        }
    }
    if roots.is_empty() {
        tracing::warn!(
            "no trusted root certificates (no system store, no notify.https_ca_file): \
             https to Teams or Loki will fail"
        );
    }
    Ok(roots)
}

/// A client for http:// and https:// URLs, every request bounded by `timeout`.
pub fn client(ca_file: Option<&Path>, timeout: Duration) -> Result<awc::Client, CaFileError> {
    let mut tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots(ca_file)?)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = awc::Connector::new()
        .rustls_0_23(Arc::new(tls))
        .timeout(timeout);
    Ok(awc::Client::builder()
        .connector(connector)
        .timeout(timeout)
        .finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_that_is_not_pem_names_the_key_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let e = roots(Some(&path)).unwrap_err();
        assert!(e.to_string().starts_with("notify.https_ca_file "), "{e}");
        assert!(e.to_string().contains("no certificate"), "{e}");
        let missing = dir.path().join("absent.pem");
        let e = roots(Some(&missing)).unwrap_err();
        assert!(e.to_string().contains("absent.pem"), "{e}");
    }
}
