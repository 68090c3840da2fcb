//! alertpipe's own listener over TLS (`[server.tls]`), for deployments without an ingress.
//! The certificate is read again on SIGHUP and when its files change (checked every few
//! seconds): new connections get the new one, open connections are not dropped. A file that
//! does not load keeps the certificate in use, and says why in the log.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::ServerTls;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("server.tls.cert_file {path}: {message}")]
    Cert { path: PathBuf, message: String },
    #[error("server.tls.key_file {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("TLS set-up: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The certificate in use, and where it comes from.
#[derive(Debug)]
pub struct Certificates {
    files: ServerTls,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' modification times when last read.
    stamp: RwLock<(Option<SystemTime>, Option<SystemTime>)>,
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn read(files: &ServerTls) -> Result<CertifiedKey, TlsError> {
    let cert_err = |message: String| TlsError::Cert {
        path: files.cert_file.clone(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert_file)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_err("no PEM certificate in it".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key_file).map_err(|e| TlsError::Key {
        path: files.key_file.clone(),
        message: e.to_string(),
    })?;
    let signer =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| TlsError::Key {
            path: files.key_file.clone(),
            message: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|e| TlsError::Key {
        path: files.key_file.clone(),
        message: format!("does not match the certificate: {e}"),
    })?;
    Ok(certified)
}

impl Certificates {
    pub fn load(files: &ServerTls) -> Result<Arc<Certificates>, TlsError> {
        let key = read(files)?;
        Ok(Arc::new(Certificates {
            stamp: RwLock::new((modified(&files.cert_file), modified(&files.key_file))),
            files: files.clone(),
            current: RwLock::new(Arc::new(key)),
        }))
    }

    /// Reads the files again; on failure the certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamp = (
            modified(&self.files.cert_file),
            modified(&self.files.key_file),
        );
        let key = read(&self.files)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
        *self.stamp.write().unwrap_or_else(|p| p.into_inner()) = stamp;
        Ok(())
    }

    fn changed(&self) -> bool {
        let now = (
            modified(&self.files.cert_file),
            modified(&self.files.key_file),
        );
        *self.stamp.read().unwrap_or_else(|p| p.into_inner()) != now
    }

    /// The listener's TLS configuration: TLS 1.2 and 1.3, HTTP/1.1, this certificate.
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    /// Reloads on SIGHUP and when a file changes (every `every`), for as long as the System
    /// runs.
    pub fn watch(self: &Arc<Self>, every: Duration) {
        let certs = self.clone();
        actix_web::rt::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let mut hup = signal(SignalKind::hangup()).ok();
            loop {
                let hangup = async {
                    match hup.as_mut() {
                        Some(h) => {
                            h.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                let why = tokio::select! {
                    _ = hangup => "SIGHUP",
                    _ = actix_web::rt::time::sleep(every) => {
                        if !certs.changed() {
                            continue;
                        }
                        "its files changed"
                    }
                };
                match certs.reload() {
                    Ok(()) => tracing::info!(reason = why, "server certificate reloaded"),
                    Err(e) => tracing::error!(reason = why, error = %e,
                        "server certificate not reloaded; the one in use stays"),
                }
            }
        });
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}
