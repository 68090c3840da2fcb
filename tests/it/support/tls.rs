//! Certificates made by the test with the `openssl` command: a CA and the certificates it
//! signs, as PEM files in a temporary directory (the stack installs `openssl`).

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Pki {
    pub dir: tempfile::TempDir,
    name: String,
}

/// A certificate and its key (PKCS#8 PEM, unencrypted), and both in one file (Kafka's PEM
/// keystore).
#[allow(dead_code)] // cert and key: for peers that take them apart
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub bundle: PathBuf,
}

impl Issued {
    /// The certificate chain, as rustls takes it.
    pub fn chain(&self) -> Vec<rustls::pki_types::CertificateDer<'static>> {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::pem_file_iter(&self.cert)
            .expect("certificate file")
            .collect::<Result<_, _>>()
            .expect("PEM certificates")
    }

    /// A rustls server configuration serving this certificate.
    pub fn server_config(&self) -> rustls::ServerConfig {
        use rustls::pki_types::pem::PemObject;
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&self.key).expect("PEM key");
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(self.chain(), key)
            .expect("the test's certificate")
    }
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs (the stack installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    /// A new CA named `name` (its certificate: `ca()`).
    pub fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().expect("pki dir");
        let subj = format!("/CN={name}");
        openssl(
            &[
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", &subj,
                "-keyout", "ca.key", "-out", "ca.pem",
            ],
            dir.path(),
        );
        Pki {
            dir,
            name: name.to_owned(),
        }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A certificate for `host` (and 127.0.0.1), signed by this CA.
    pub fn issue(&self, file: &str, host: &str) -> Issued {
        self.issue_for(file, host, &format!("DNS:{host},IP:127.0.0.1"))
    }

    /// A certificate with common name `host` and exactly the subject alternative names `sans`
    /// (`DNS:localhost`, `IP:127.0.0.1`, comma-separated).
    pub fn issue_for(&self, file: &str, host: &str, sans: &str) -> Issued {
        let d = self.dir.path();
        let (key, csr, cert) = (
            format!("{file}.key"),
            format!("{file}.csr"),
            format!("{file}.pem"),
        );
        let subj = format!("/CN={host}");
        openssl(
            &[
                "req", "-newkey", "rsa:2048", "-nodes", "-subj", &subj, "-keyout", &key, "-out",
                &csr,
            ],
            d,
        );
        let ext = d.join(format!("{file}.ext"));
        std::fs::write(
            &ext,
            format!("subjectAltName={sans}\nextendedKeyUsage=serverAuth,clientAuth\n"),
        )
        .expect("ext file");
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &cert,
                "-extfile",
                &ext.to_string_lossy(),
            ],
            d,
        );
        let bundle = d.join(format!("{file}.bundle.pem"));
        let mut both = std::fs::read(d.join(&key)).expect("key");
        both.extend(std::fs::read(d.join(&cert)).expect("cert"));
        std::fs::write(&bundle, both).expect("bundle");
        let _ = &self.name;
        Issued {
            cert: d.join(cert),
            key: d.join(key),
            bundle,
        }
    }
}
