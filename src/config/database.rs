//! `[database]`: the PostgreSQL alert history.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{bad, ConfigError, Secret};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// postgres://user@host:port/db, without the password (ALERTPIPE_DATABASE_PASSWORD or
    /// `password_file`).
    pub url: String,
    pub password_file: Option<PathBuf>,
    #[serde(skip_deserializing)]
    pub password: Secret,
    pub pool_size: u32,
    /// Apply pending migrations at start (else `alertpipe migrate`).
    pub migrate_on_start: bool,
    /// libpq's `sslmode`: disable | allow | prefer (libpq's default) | require | verify-ca |
    /// verify-full. A server that requires TLS and a checked certificate wants `verify-full`.
    pub sslmode: String,
    /// The CA that signed the server's certificate (PEM; libpq's `sslrootcert`), for
    /// `verify-ca` / `verify-full`.
    pub ca_file: Option<PathBuf>,
}

const SSLMODES: [&str; 6] = [
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

impl DatabaseConfig {
    /// The URL to connect with: password inserted (never logged), `sslmode` and
    /// `sslrootcert` as libpq reads them.
    pub fn connect_url(&self) -> Secret {
        let mut url = self.url.clone();
        let pw = self.password.expose();
        if !pw.is_empty() {
            if let Some((scheme, rest)) = self.url.split_once("://") {
                if let Some((user, host)) = rest.split_once('@') {
                    url = format!("{scheme}://{user}:{}@{host}", percent_encode(pw));
                }
            }
        }
        let mut params = vec![format!("sslmode={}", self.sslmode)];
        if let Some(ca) = &self.ca_file {
            params.push(format!(
                "sslrootcert={}",
                percent_encode(&ca.to_string_lossy())
            ));
        }
        let sep = if url.contains('?') { '&' } else { '?' };
        Secret::new(format!("{url}{sep}{}", params.join("&")))
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let db_url = &self.url;
        if !(db_url.starts_with("postgres://") || db_url.starts_with("postgresql://")) {
            return bad("database.url", "must start with postgres://");
        }
        if db_url
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('@'))
            .is_some_and(|(user, _)| user.contains(':'))
        {
            return bad(
                "database.url",
                "must not hold a password: use ALERTPIPE_DATABASE_PASSWORD or database.password_file",
            );
        }
        if self.pool_size == 0 {
            return bad("database.pool_size", "must be at least 1");
        }
        if !SSLMODES.contains(&self.sslmode.as_str()) {
            return bad(
                "database.sslmode",
                "must be one of disable, allow, prefer, require, verify-ca, verify-full",
            );
        }
        if db_url.contains("sslmode=") || db_url.contains("sslrootcert=") {
            return bad(
                "database.url",
                "set TLS with database.sslmode and database.ca_file, not in the URL",
            );
        }
        if let Some(ca) = &self.ca_file {
            if let Err(e) = std::fs::metadata(ca) {
                return bad(
                    "database.ca_file",
                    &format!("cannot read {}: {e}", ca.display()),
                );
            }
        }
        Ok(())
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "postgres://alertpipe@127.0.0.1:5432/alertpipe".into(),
            password_file: None,
            password: Secret::default(),
            pool_size: 8,
            migrate_on_start: true,
            sslmode: "prefer".into(),
            ca_file: None,
        }
    }
}
