//! Typed configuration: one TOML file, then environment overrides
//! `ALERTPIPE__<SECTION>__<KEY>=value` (value read as a TOML literal when it parses as one,
//! else as a string). Unknown keys are errors naming the key. Secrets never come from the file:
//! they are read from an env var or a file named in the config, and print masked.
//! One file per section: its struct, its defaults beside it, its checks, its typed helpers.

mod archive;
mod auth;
mod database;
mod ingest;
mod kafka;
mod kafka_security;
mod notify;
mod persist;
mod secret;
mod server;
mod smtp;
mod telemetry;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use archive::{ArchiveConfig, ArchiveRoot, Codec};
pub use auth::{AuthConfig, AuthMode, Credentials, EndpointGroup};
pub use database::DatabaseConfig;
pub use ingest::{DedupConfig, IngestConfig};
pub use kafka::KafkaConfig;
pub use kafka_security::{KafkaProtocol, KafkaSecurity, SaslMechanism};
pub use notify::{LogSource, NotifyConfig, ReceiverConfig, ReceiverKind, RetryPolicy, RouteConfig};
pub use persist::PersistConfig;
use secret::read_secret;
pub use secret::Secret;
pub use server::{Role, ServerConfig, ServerTls};
pub use smtp::{SmtpConfig, SmtpTls};
pub use telemetry::{LogFormat, TelemetryConfig};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Toml { path: PathBuf, message: String },
    #[error("config key `{key}`: {message}")]
    Key { key: String, message: String },
    #[error("environment override {var}: {message}")]
    Env { var: String, message: String },
}

/// A section's check failed: which key, and why.
fn bad(key: &str, message: &str) -> Result<(), ConfigError> {
    Err(ConfigError::Key {
        key: key.into(),
        message: message.into(),
    })
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub persist: PersistConfig,
    pub archive: ArchiveConfig,
    pub notify: NotifyConfig,
    pub auth: AuthConfig,
    pub kafka: KafkaConfig,
    pub ingest: IngestConfig,
    pub dedup: DedupConfig,
    pub telemetry: TelemetryConfig,
}

pub const ENV_PREFIX: &str = "ALERTPIPE__";
pub const SECRET_ENV: &str = "ALERTPIPE_AUTH_SECRET";
pub const DB_PASSWORD_ENV: &str = "ALERTPIPE_DATABASE_PASSWORD";

impl Config {
    /// File (optional: a missing default file means defaults), then env overrides, then secrets.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_owned(),
                source,
            })?,
            None => String::new(),
        };
        let mut cfg = Config::from_sources(&text, path.unwrap_or(Path::new("<none>")), &env)?;
        cfg.load_secrets(&env)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses TOML text with the given environment applied on top (no secrets, no checks).
    pub fn from_sources(
        text: &str,
        path: &Path,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let mut root: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Toml {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })?;
        for (var, value) in env {
            let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let keys: Vec<String> = rest.split("__").map(|k| k.to_lowercase()).collect();
            if keys.iter().any(String::is_empty) {
                return Err(ConfigError::Env {
                    var: var.clone(),
                    message: "empty key segment".into(),
                });
            }
            set_path(&mut root, &keys, parse_env_value(value)).map_err(|message| {
                ConfigError::Env {
                    var: var.clone(),
                    message,
                }
            })?;
        }
        serde_path_to_error::deserialize(toml::Value::Table(root)).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::Key {
                key,
                message: e.into_inner().message().to_owned(),
            }
        })
    }

    fn load_secrets(&mut self, env: &[(String, String)]) -> Result<(), ConfigError> {
        let secret = read_secret(
            env,
            SECRET_ENV,
            self.auth.secret_file.as_deref(),
            "auth.secret_file",
        )?;
        self.auth.secret = Secret::new(secret);
        for (group, c) in &mut self.auth.groups {
            let key = format!("auth.groups.{}.secret_file", group.name());
            c.secret = Secret::new(read_secret(
                env,
                &group.secret_env(),
                c.secret_file.as_deref(),
                &key,
            )?);
        }
        self.notify.smtp.password = Secret::new(read_secret(
            env,
            "ALERTPIPE_SMTP_PASSWORD",
            self.notify.smtp.password_file.as_deref(),
            "notify.smtp.password_file",
        )?);
        for r in &mut self.notify.receivers {
            if let Some(var) = &r.webhook_url_env {
                r.webhook_url = Secret::new(read_secret(env, var, None, "notify.receivers")?);
            }
        }
        self.kafka.security.password = Secret::new(read_secret(
            env,
            "ALERTPIPE_KAFKA_PASSWORD",
            self.kafka.security.password_file.as_deref(),
            "kafka.security.password_file",
        )?);
        self.database.password = Secret::new(read_secret(
            env,
            DB_PASSWORD_ENV,
            self.database.password_file.as_deref(),
            "database.password_file",
        )?);
        Ok(())
    }

    /// Every section's own checks, in file order.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.auth.validate()?;
        self.kafka.validate()?;
        self.ingest.validate()?;
        self.dedup.validate()?;
        self.database.validate()?;
        self.persist.validate()?;
        self.archive.validate()?;
        self.notify.validate()
    }

    /// The effective config as TOML, secrets masked.
    pub fn to_masked_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

fn parse_env_value(raw: &str) -> toml::Value {
    // `x = <raw>` parses for numbers, booleans, arrays and quoted strings; anything else is a
    // bare string (so ALERTPIPE__KAFKA__BROKERS=127.0.0.1:9092 needs no quotes).
    match toml::from_str::<toml::Table>(&format!("x = {raw}")) {
        Ok(mut t) => t
            .remove("x")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

fn set_path(root: &mut toml::Table, keys: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = keys.split_last().ok_or("no key")?;
    let mut table = root;
    for k in parents {
        let entry = table
            .entry(k.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{k}` is not a table"))?;
    }
    table.insert(last.clone(), value);
    Ok(())
}
