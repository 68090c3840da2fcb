//! `[server]`: the HTTP listener and the roles this process runs.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{bad, ConfigError};

/// What a process runs; several processes can share the work by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything below.
    All,
    /// Alertmanager webhook -> dedup -> Kafka `alerts`.
    Ingest,
    /// `alerts` -> PostgreSQL history; serves /api/v1/incidents and /api/v1/sla.
    Persist,
    /// `logs` -> snappy Parquet files on the archive storage.
    Archive,
    /// `alerts` -> routing -> throttle -> email (SMTP) / Teams, dead letters.
    Notify,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Roles this process runs (`alertpipe serve --roles` overrides).
    pub roles: Vec<Role>,
    /// Address the HTTP server binds; port 0 picks a free port.
    pub listen: SocketAddr,
    /// HTTP worker threads.
    pub workers: usize,
    /// Largest accepted webhook body; larger gets 413.
    pub body_limit_bytes: usize,
    /// Seconds to drain in-flight requests after SIGTERM.
    pub shutdown_timeout_s: u64,
    /// TLS on alertpipe's own port, for deployments without an ingress (`[server.tls]`).
    pub tls: Option<ServerTls>,
}

/// The listener's certificate chain and key (PEM), read again on SIGHUP and when either file
/// changes (a renewed certificate is served to new connections; open ones are kept).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    pub cert_file: std::path::PathBuf,
    pub key_file: std::path::PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            roles: vec![Role::All],
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: 2,
            body_limit_bytes: 4 * 1024 * 1024,
            shutdown_timeout_s: 30,
            tls: None,
        }
    }
}

impl ServerConfig {
    pub fn runs(&self, role: Role) -> bool {
        self.roles.iter().any(|r| *r == role || *r == Role::All)
    }

    /// How long in-flight requests may drain after SIGTERM.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_s)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.workers == 0 {
            return bad("server.workers", "must be at least 1");
        }
        if self.body_limit_bytes < 1024 {
            return bad("server.body_limit_bytes", "must be at least 1024");
        }
        if self.roles.is_empty() {
            return bad("server.roles", "name at least one role");
        }
        if let Some(tls) = &self.tls {
            for (key, f) in [
                ("server.tls.cert_file", &tls.cert_file),
                ("server.tls.key_file", &tls.key_file),
            ] {
                if let Err(e) = std::fs::metadata(f) {
                    return bad(key, &format!("cannot read {}: {e}", f.display()));
                }
            }
        }
        Ok(())
    }
}
