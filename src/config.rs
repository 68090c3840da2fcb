//! Typed configuration: one TOML file, then environment overrides
//! `ALERTPIPE__<SECTION>__<KEY>=value` (value read as a TOML literal when it parses as one,
//! else as a string). Unknown keys are errors naming the key. Secrets never come from the file:
//! they are read from an env var or a file named in the config, and print masked.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, Serializer};

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

/// A value that never prints.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"********\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "********" })
    }
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    None,
    Bearer,
    Basic,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// Basic auth user name (not a secret).
    pub username: String,
    /// File holding the bearer token or basic password (else env ALERTPIPE_AUTH_SECRET).
    pub secret_file: Option<PathBuf>,
    #[serde(skip_deserializing)]
    pub secret: Secret,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// bootstrap.servers
    pub brokers: String,
    pub alerts_topic: String,
    /// Where Loki pushes go (key = the stream's labels).
    pub logs_topic: String,
    /// Create missing topics at start (the broker may not auto-create them).
    pub create_topics: bool,
    pub partitions: i32,
    /// How long one produce may wait for the broker's ack before the webhook gets 503.
    pub message_timeout_ms: u64,
    /// Extra librdkafka producer properties (e.g. `"linger.ms" = "5"`).
    pub producer: BTreeMap<String, String>,
    /// Static group membership (KIP-345): a stable name for this process (a StatefulSet pod
    /// name, a host name). A restarted process takes its partitions back at once instead of
    /// waiting for the old member's session to expire.
    pub group_instance_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Alerts accepted but not yet acknowledged by Kafka, across all requests; past it, 503.
    pub max_inflight_alerts: usize,
    /// Bounded mailbox of each ingest actor.
    pub mailbox_capacity: usize,
    /// Retry-After seconds on 503.
    pub retry_after_s: u64,
    /// Raw log bytes pushed but not yet acknowledged by Kafka; past it, 429.
    pub push_max_inflight_bytes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DedupConfig {
    /// A repeat of the same alert state within this many seconds is dropped.
    pub window_s: u64,
    /// Upper bound on remembered states (oldest forgotten first).
    pub max_entries: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    /// tracing EnvFilter directive; RUST_LOG wins when set.
    pub log_level: String,
}

impl ServerConfig {
    pub fn runs(&self, role: Role) -> bool {
        self.roles.iter().any(|r| *r == role || *r == Role::All)
    }
}

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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PersistConfig {
    /// Kafka consumer group.
    pub group: String,
    /// Messages per transaction at most.
    pub batch_size: usize,
    /// How long a batch waits to fill.
    pub linger_ms: u64,
    /// PersistActor threads (SyncArbiter).
    pub workers: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {
    /// Storage URL: a path / file:///..., hdfs://namenode:8020/logs or
    /// webhdfs://namenode:9870/logs (WebHDFS), s3://bucket/prefix.
    pub root: String,
    /// WebHDFS HTTP port for hdfs:// roots.
    pub webhdfs_port: u16,
    /// env when a stream has neither `env` nor `cluster`.
    pub default_env: String,
    /// Kafka consumer group on the logs topic.
    pub group: String,
    /// Close a file when its raw lines reach this many bytes (large files: HDFS likes them).
    pub max_file_bytes: usize,
    /// Close files at this age at the latest.
    pub max_age_s: u64,
    /// Messages per consumer batch at most.
    pub batch_size: usize,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            root: "./data/archive".into(),
            webhdfs_port: 9870,
            default_env: "prod".into(),
            group: "alertpipe-archive".into(),
            max_file_bytes: 128 * 1024 * 1024,
            max_age_s: 300,
            batch_size: 1000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiverKind {
    Email,
    Teams,
}

/// One notification target.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    pub name: String,
    pub kind: ReceiverKind,
    /// Email recipients (kind = email).
    #[serde(default)]
    pub to: Vec<String>,
    /// Env var holding the Teams Workflows webhook URL (kind = teams; the URL is a secret).
    #[serde(default)]
    pub webhook_url_env: Option<String>,
    #[serde(skip_deserializing)]
    pub webhook_url: Secret,
}

/// Like an Alertmanager route: all matchers equal, first match wins unless `continue`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    #[serde(default)]
    pub matchers: BTreeMap<String, String>,
    pub receiver: String,
    #[serde(default, rename = "continue")]
    pub continue_: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    None,
    Starttls,
    Tls,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// Empty: no auth. Password from ALERTPIPE_SMTP_PASSWORD or password_file.
    pub username: String,
    pub password_file: Option<PathBuf>,
    #[serde(skip_deserializing)]
    pub password: Secret,
    pub from: String,
    /// Pooled connections (1 = a single connection).
    pub pool_size: u32,
    pub timeout_s: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    pub group: String,
    pub batch_size: usize,
    /// How long a consumer batch waits to fill: a burst gathered in one batch becomes one
    /// digest when throttled.
    pub linger_ms: u64,
    /// Base of the "View in Grafana" Explore link.
    pub grafana_url: String,
    pub routes: Vec<RouteConfig>,
    pub receivers: Vec<ReceiverConfig>,
    /// Token bucket per receiver: burst, then this many per minute.
    pub receiver_burst: u32,
    pub receiver_per_minute: u32,
    /// Token bucket per (receiver, service): burst, then this many per minute.
    pub rate_burst: u32,
    pub rate_per_minute: u32,
    /// Surplus over the rate is gathered into one digest per receiver per window.
    pub digest_window_s: u64,
    /// Sends are retried this many times (transient failures), then dead-lettered.
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Teams: requests per second per webhook at most.
    pub teams_max_per_s: u32,
    pub dlq_topic: String,
    pub smtp: SmtpConfig,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            host: "127.0.0.1".into(),
            port: 25,
            tls: SmtpTls::None,
            username: String::new(),
            password_file: None,
            password: Secret::default(),
            from: "alertpipe <alertpipe@example.com>".into(),
            pool_size: 4,
            timeout_s: 10,
        }
    }
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            group: "alertpipe-notify".into(),
            batch_size: 200,
            linger_ms: 200,
            grafana_url: "https://grafana.example.com".into(),
            routes: vec![
                RouteConfig {
                    matchers: BTreeMap::from([("severity".into(), "critical".into())]),
                    receiver: "outlook".into(),
                    continue_: false,
                },
                RouteConfig {
                    matchers: BTreeMap::from([("severity".into(), "custom".into())]),
                    receiver: "teams".into(),
                    continue_: false,
                },
            ],
            receivers: vec![
                ReceiverConfig {
                    name: "outlook".into(),
                    kind: ReceiverKind::Email,
                    to: vec!["oncall@example.com".into()],
                    webhook_url_env: None,
                    webhook_url: Secret::default(),
                },
                ReceiverConfig {
                    name: "teams".into(),
                    kind: ReceiverKind::Teams,
                    to: vec![],
                    webhook_url_env: Some("ALERTPIPE_TEAMS_WEBHOOK_URL".into()),
                    webhook_url: Secret::default(),
                },
            ],
            receiver_burst: 30,
            receiver_per_minute: 60,
            rate_burst: 10,
            rate_per_minute: 30,
            digest_window_s: 60,
            max_attempts: 5,
            backoff_base_ms: 500,
            backoff_max_ms: 30_000,
            teams_max_per_s: 4,
            dlq_topic: "alerts.dlq".into(),
            smtp: SmtpConfig::default(),
        }
    }
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

impl Default for PersistConfig {
    fn default() -> Self {
        PersistConfig {
            group: "alertpipe-persist".into(),
            batch_size: 500,
            linger_ms: 50,
            workers: 2,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            roles: vec![Role::All],
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: 2,
            body_limit_bytes: 4 * 1024 * 1024,
            shutdown_timeout_s: 30,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::None,
            username: String::new(),
            secret_file: None,
            secret: Secret::default(),
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            alerts_topic: "alerts".into(),
            logs_topic: "logs".into(),
            create_topics: true,
            partitions: 3,
            message_timeout_ms: 10_000,
            producer: BTreeMap::from([("linger.ms".to_owned(), "5".to_owned())]),
            group_instance_id: None,
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_inflight_alerts: 20_000,
            mailbox_capacity: 1024,
            retry_after_s: 5,
            push_max_inflight_bytes: 256 * 1024 * 1024,
        }
    }
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            window_s: 3600,
            max_entries: 200_000,
        }
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_format: LogFormat::Text,
            log_level: "info".into(),
        }
    }
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
        self.database.password = Secret::new(read_secret(
            env,
            DB_PASSWORD_ENV,
            self.database.password_file.as_deref(),
            "database.password_file",
        )?);
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, message: &str| {
            Err(ConfigError::Key {
                key: key.into(),
                message: message.into(),
            })
        };
        if self.auth.mode != AuthMode::None && self.auth.secret.expose().is_empty() {
            return bad(
                "auth.mode",
                "auth is on but no secret: set ALERTPIPE_AUTH_SECRET or auth.secret_file",
            );
        }
        if self.auth.mode == AuthMode::Basic && self.auth.username.is_empty() {
            return bad("auth.username", "basic auth needs a username");
        }
        if self.kafka.brokers.trim().is_empty() {
            return bad("kafka.brokers", "must not be empty");
        }
        if self.kafka.alerts_topic.trim().is_empty() {
            return bad("kafka.alerts_topic", "must not be empty");
        }
        if self.kafka.partitions < 1 {
            return bad("kafka.partitions", "must be at least 1");
        }
        if self.kafka.message_timeout_ms == 0 {
            return bad("kafka.message_timeout_ms", "must be above 0");
        }
        if self.server.workers == 0 {
            return bad("server.workers", "must be at least 1");
        }
        if self.server.body_limit_bytes < 1024 {
            return bad("server.body_limit_bytes", "must be at least 1024");
        }
        if self.ingest.max_inflight_alerts == 0 || self.ingest.mailbox_capacity == 0 {
            return bad(
                "ingest",
                "max_inflight_alerts and mailbox_capacity must be above 0",
            );
        }
        if self.server.roles.is_empty() {
            return bad("server.roles", "name at least one role");
        }
        let db_url = &self.database.url;
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
        if self.persist.batch_size == 0 || self.persist.workers == 0 {
            return bad("persist", "batch_size and workers must be above 0");
        }
        if self.archive.max_file_bytes < 1024 || self.archive.max_age_s == 0 {
            return bad(
                "archive",
                "max_file_bytes must be at least 1024 and max_age_s above 0",
            );
        }
        if self.archive.batch_size == 0 {
            return bad("archive.batch_size", "must be above 0");
        }
        if let Err(e) =
            crate::archive::storage::operator(&self.archive.root, self.archive.webhdfs_port)
        {
            return bad("archive.root", &e.to_string());
        }
        let n = &self.notify;
        for r in &n.routes {
            if !n.receivers.iter().any(|x| x.name == r.receiver) {
                return bad(
                    "notify.routes",
                    &format!("unknown receiver {:?}", r.receiver),
                );
            }
        }
        for r in &n.receivers {
            if r.kind == ReceiverKind::Email && r.to.is_empty() {
                return bad(
                    "notify.receivers",
                    &format!("email receiver {:?} has no `to`", r.name),
                );
            }
        }
        if n.max_attempts == 0
            || n.rate_per_minute == 0
            || n.digest_window_s == 0
            || n.teams_max_per_s == 0
        {
            return bad("notify", "max_attempts, rate_per_minute, digest_window_s and teams_max_per_s must be above 0");
        }
        if self.dedup.max_entries == 0 {
            return bad("dedup.max_entries", "must be above 0");
        }
        Ok(())
    }

    /// The effective config as TOML, secrets masked.
    pub fn to_masked_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// A secret from its file (when configured) or its env var; empty when neither.
fn read_secret(
    env: &[(String, String)],
    var: &str,
    file: Option<&Path>,
    key: &str,
) -> Result<String, ConfigError> {
    if let Some(file) = file {
        return std::fs::read_to_string(file)
            .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
            .map_err(|e| ConfigError::Key {
                key: key.into(),
                message: format!("cannot read {}: {e}", file.display()),
            });
    }
    Ok(env
        .iter()
        .find(|(k, _)| k == var)
        .map(|(_, v)| v.clone())
        .unwrap_or_default())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_sources(text, Path::new("test.toml"), &env)
    }

    #[test]
    fn project_config_file_parses_and_validates() {
        let text = include_str!("../config/alertpipe.toml");
        let cfg = parse(text, &[]).unwrap();
        cfg.validate().unwrap();
    }

    #[test]
    fn env_overrides_file() {
        let cfg = parse(
            "[kafka]\nbrokers = \"a:1\"\n",
            &[
                ("ALERTPIPE__KAFKA__BROKERS", "127.0.0.1:9999"),
                ("ALERTPIPE__KAFKA__PARTITIONS", "7"),
                ("ALERTPIPE__SERVER__LISTEN", "127.0.0.1:0"),
            ],
        )
        .unwrap();
        assert_eq!(cfg.kafka.brokers, "127.0.0.1:9999");
        assert_eq!(cfg.kafka.partitions, 7);
        assert_eq!(cfg.server.listen.port(), 0);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse("[kafka]\nbrokerz = \"x\"\n", &[]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("brokerz"), "{msg}");
        let err = parse("", &[("ALERTPIPE__DEDUP__WINDOW", "5")]).unwrap_err();
        assert!(err.to_string().contains("window"), "{err}");
    }

    #[test]
    fn wrong_type_is_named() {
        let err = parse("[dedup]\nwindow_s = \"soon\"\n", &[]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("dedup.window_s"), "{msg}");
    }

    #[test]
    fn auth_without_secret_is_refused() {
        let cfg = parse("[auth]\nmode = \"bearer\"\n", &[]).unwrap();
        let err = cfg.validate().unwrap_err();
        assert!(err.to_string().contains("auth.mode"), "{err}");
    }

    #[test]
    fn database_password_goes_into_the_url_but_not_the_file() {
        let mut cfg = parse("[database]\nurl = \"postgres://ap@db:5432/x\"\n", &[]).unwrap();
        cfg.database.password = Secret::new("p@ss:w/rd");
        assert_eq!(
            cfg.database.connect_url().expose(),
            "postgres://ap:p%40ss%3Aw%2Frd@db:5432/x"
        );
        let cfg = parse("[database]\nurl = \"postgres://ap:pw@db/x\"\n", &[]).unwrap();
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("database.url"));
    }

    #[test]
    fn roles_parse() {
        let cfg = parse("[server]\nroles = [\"ingest\"]\n", &[]).unwrap();
        assert!(cfg.server.runs(Role::Ingest));
        assert!(!cfg.server.runs(Role::Persist));
        assert!(Config::default().server.runs(Role::Persist));
    }

    #[test]
    fn secrets_are_masked() {
        let mut cfg = parse("[auth]\nmode = \"bearer\"\n", &[]).unwrap();
        cfg.auth.secret = Secret::new("hunter2");
        assert!(!cfg.to_masked_toml().contains("hunter2"));
        assert!(!format!("{cfg:?}").contains("hunter2"));
        assert!(cfg.to_masked_toml().contains("********"));
    }
}
