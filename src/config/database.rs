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
}

impl DatabaseConfig {
    /// The URL to connect with, password inserted (never logged).
    pub fn connect_url(&self) -> Secret {
        let pw = self.password.expose();
        if pw.is_empty() {
            return Secret::new(self.url.clone());
        }
        match self.url.split_once("://") {
            Some((scheme, rest)) => match rest.split_once('@') {
                Some((user, host)) => {
                    Secret::new(format!("{scheme}://{user}:{}@{host}", percent_encode(pw)))
                }
                None => Secret::new(self.url.clone()),
            },
            None => Secret::new(self.url.clone()),
        }
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
        }
    }
}
