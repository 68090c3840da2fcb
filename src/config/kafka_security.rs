//! `[kafka.security]`: how every Kafka client alertpipe makes (producers, the stages'
//! consumers, the admin client, `tail` and the other tools) reaches a secured cluster: TLS
//! with a CA (and a client certificate for mTLS), SASL PLAIN or SCRAM. The password comes from
//! `ALERTPIPE_KAFKA_PASSWORD` or `password_file`, never the config file.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{bad, ConfigError, Secret};

/// librdkafka's `security.protocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl KafkaProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            KafkaProtocol::Plaintext => "plaintext",
            KafkaProtocol::Ssl => "ssl",
            KafkaProtocol::SaslPlaintext => "sasl_plaintext",
            KafkaProtocol::SaslSsl => "sasl_ssl",
        }
    }

    pub fn sasl(self) -> bool {
        matches!(self, KafkaProtocol::SaslPlaintext | KafkaProtocol::SaslSsl)
    }

    pub fn tls(self) -> bool {
        matches!(self, KafkaProtocol::Ssl | KafkaProtocol::SaslSsl)
    }
}

/// librdkafka's `sasl.mechanism`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[default]
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSecurity {
    pub protocol: KafkaProtocol,
    /// With `sasl_*`.
    pub mechanism: SaslMechanism,
    /// With `sasl_*`: the SASL user.
    pub username: String,
    /// With `sasl_*`: a file holding the password (else `ALERTPIPE_KAFKA_PASSWORD`).
    pub password_file: Option<PathBuf>,
    #[serde(skip_deserializing)]
    pub password: Secret,
    /// With `ssl` / `sasl_ssl`: the CA certificate(s) the brokers' certificates are checked
    /// against (PEM); unset: the system's. The broker's host name is always checked.
    pub ca_file: Option<PathBuf>,
    /// mTLS: this client's certificate and key (PEM), both or neither.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl KafkaSecurity {
    /// librdkafka properties for every client.
    pub fn properties(&self) -> Vec<(&'static str, String)> {
        let mut p = vec![("security.protocol", self.protocol.as_str().to_owned())];
        if self.protocol.sasl() {
            p.push(("sasl.mechanism", self.mechanism.as_str().to_owned()));
            p.push(("sasl.username", self.username.clone()));
            p.push(("sasl.password", self.password.expose().to_owned()));
        }
        if self.protocol.tls() {
            // Host name verification (librdkafka's default since 2.0, said here so that no
            // `kafka.producer` override can quietly turn it off for one client only).
            p.push(("ssl.endpoint.identification.algorithm", "https".to_owned()));
            let path = |f: &PathBuf| f.to_string_lossy().into_owned();
            if let Some(ca) = &self.ca_file {
                p.push(("ssl.ca.location", path(ca)));
            }
            if let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) {
                p.push(("ssl.certificate.location", path(cert)));
                p.push(("ssl.key.location", path(key)));
            }
        }
        p
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.protocol.sasl() {
            if self.username.is_empty() {
                return bad("kafka.security.username", "a SASL protocol needs a user");
            }
            if self.password.expose().is_empty() {
                return bad(
                    "kafka.security.password_file",
                    "a SASL protocol needs a password: set ALERTPIPE_KAFKA_PASSWORD or kafka.security.password_file",
                );
            }
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return bad(
                "kafka.security.cert_file",
                "cert_file and key_file go together (mTLS)",
            );
        }
        let files = [
            ("kafka.security.ca_file", &self.ca_file),
            ("kafka.security.cert_file", &self.cert_file),
            ("kafka.security.key_file", &self.key_file),
        ];
        for (key, file) in files {
            if let Some(f) = file {
                if !self.protocol.tls() {
                    return bad(key, "only with protocol ssl or sasl_ssl");
                }
                if let Err(e) = std::fs::metadata(f) {
                    return bad(key, &format!("cannot read {}: {e}", f.display()));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sasl_ssl_sets_every_property_and_plaintext_none_but_the_protocol() {
        let s = KafkaSecurity {
            protocol: KafkaProtocol::SaslSsl,
            username: "alertpipe".into(),
            password: Secret::new("s3cret"),
            ca_file: Some("/etc/ca.pem".into()),
            ..KafkaSecurity::default()
        };
        let p = s.properties();
        let get = |k: &str| p.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(get("sasl.username"), Some("alertpipe"));
        assert_eq!(get("sasl.password"), Some("s3cret"));
        assert_eq!(get("ssl.ca.location"), Some("/etc/ca.pem"));
        assert_eq!(get("ssl.endpoint.identification.algorithm"), Some("https"));
        let plain = KafkaSecurity::default().properties();
        assert_eq!(plain, vec![("security.protocol", "plaintext".to_owned())]);
    }

    #[test]
    fn a_sasl_protocol_without_credentials_and_half_an_mtls_pair_are_refused() {
        let s = KafkaSecurity {
            protocol: KafkaProtocol::SaslSsl,
            username: "alertpipe".into(),
            ..KafkaSecurity::default()
        };
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("ALERTPIPE_KAFKA_PASSWORD"), "{e}");
        let s = KafkaSecurity {
            protocol: KafkaProtocol::Ssl,
            cert_file: Some("/etc/hostname".into()),
            ..KafkaSecurity::default()
        };
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("go together"));
        let s = KafkaSecurity {
            protocol: KafkaProtocol::Ssl,
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..KafkaSecurity::default()
        };
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("/nonexistent/ca.pem"));
    }
}
