//! How every Kafka client alertpipe makes reaches the cluster: the brokers and
//! `[kafka.security]` (TLS, SASL), in one place; and the last thing a client said about
//! reaching them (a refused password, a certificate that does not verify), so that a webhook's
//! 503 and `/readyz` name the cause instead of only "timed out".

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;

use crate::config::{KafkaConfig, KafkaSecurity};

/// The last thing the clients of one connection said about reaching the brokers (a refused
/// password, a certificate that does not verify, brokers down), kept for a minute so that the
/// failures it causes can name it. Each connection has its own: the producer's, each stage's.
#[derive(Debug, Clone, Default)]
pub struct ErrorLog(Arc<Mutex<Option<(Instant, String)>>>);

/// How long a client's error stays the named cause of later failures.
const RECENT: Duration = Duration::from_secs(60);

impl ErrorLog {
    /// What a client's `error` callback reports: logged, and kept as the latest cause.
    pub fn note(&self, error: &KafkaError, reason: &str) {
        let text = if reason.is_empty() || error.to_string().contains(reason) {
            error.to_string()
        } else {
            format!("{error}: {reason}")
        };
        tracing::warn!(error = %text, "kafka client error");
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // "All brokers are down" follows every other failure: it never hides a recent cause
        // (a refused password, a certificate, the wrong protocol).
        let generic = matches!(
            error,
            KafkaError::Global(rdkafka::types::RDKafkaErrorCode::AllBrokersDown)
        );
        if generic && last.as_ref().is_some_and(|(at, _)| at.elapsed() < RECENT) {
            return;
        }
        // Down with no connection error before it: the brokers took the TCP connection and
        // never answered in Kafka's protocol, which is what a TLS or SASL listener does to a
        // plaintext client (librdkafka logs nothing more).
        let text = if generic {
            format!(
                "{text}: the brokers accept connections but do not answer in Kafka's protocol; \
                 if they require TLS or SASL, set kafka.security.protocol"
            )
        } else {
            text
        };
        *last = Some((Instant::now(), text));
    }

    /// What a client's `log` callback reports: warnings and errors go to the log; a failed
    /// connection (`FAIL`: a plaintext client on a TLS port, a TLS handshake, SASL) is kept as
    /// the latest cause too, since librdkafka's error callback may only say "all brokers are
    /// down" afterwards.
    pub fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, msg: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => {
                tracing::error!(facility = fac, "librdkafka: {msg}")
            }
            L::Warning => tracing::warn!(facility = fac, "librdkafka: {msg}"),
            L::Notice | L::Info => tracing::info!(facility = fac, "librdkafka: {msg}"),
            L::Debug => tracing::debug!(facility = fac, "librdkafka: {msg}"),
        }
        if fac == "FAIL" && matches!(level, L::Emerg | L::Alert | L::Critical | L::Error) {
            *self.0.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((Instant::now(), msg.to_owned()));
        }
    }

    /// The latest client error, when recent: the likely cause of a delivery or probe failure.
    pub fn recent(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|(at, _)| at.elapsed() < RECENT)
            .map(|(_, e)| e.clone())
    }

    /// `what`, with the latest client error appended when there is one.
    pub fn with_cause(&self, what: impl std::fmt::Display) -> String {
        let what = what.to_string();
        match self.recent() {
            Some(cause) if !what.contains(&cause) => {
                format!("{what} (broker connection: {cause})")
            }
            _ => what,
        }
    }
}

/// The brokers and how to reach them; its clients report their errors to its [`ErrorLog`].
#[derive(Debug, Clone, Default)]
pub struct Connection {
    brokers: String,
    security: KafkaSecurity,
    errors: ErrorLog,
}

impl Connection {
    pub fn of(cfg: &KafkaConfig) -> Self {
        Connection {
            brokers: cfg.brokers.clone(),
            security: cfg.security.clone(),
            errors: ErrorLog::default(),
        }
    }

    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// Where this connection's clients report their errors.
    pub fn errors(&self) -> ErrorLog {
        self.errors.clone()
    }

    /// The base of every client's config: bootstrap servers, security, a quick connection
    /// set-up. Role-specific settings go on top.
    pub fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        // rust-rdkafka derives librdkafka's log level from the `log` crate, which this service
        // does not use (its contexts forward to tracing): say it here.
        c.set_log_level(rdkafka::config::RDKafkaLogLevel::Warning);
        c.set("bootstrap.servers", &self.brokers)
            .set("socket.connection.setup.timeout.ms", "3000")
            .set("reconnect.backoff.max.ms", "1000");
        for (k, v) in self.security.properties() {
            c.set(k, v);
        }
        c
    }
}

/// A plaintext connection to `brokers` (tools and tests against an open cluster).
impl From<&str> for Connection {
    fn from(brokers: &str) -> Self {
        Connection {
            brokers: brokers.to_owned(),
            ..Connection::default()
        }
    }
}

impl From<&String> for Connection {
    fn from(brokers: &String) -> Self {
        Connection::from(brokers.as_str())
    }
}

impl From<&KafkaConfig> for Connection {
    fn from(cfg: &KafkaConfig) -> Self {
        Connection::of(cfg)
    }
}

impl From<&Connection> for Connection {
    fn from(c: &Connection) -> Self {
        c.clone()
    }
}

/// A client context that reports errors to an [`ErrorLog`] (admin and metadata clients).
pub struct ReportingContext(pub ErrorLog);

impl rdkafka::ClientContext for ReportingContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.0.note(&error, reason);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.0.log(level, fac, log_message);
    }
}

impl rdkafka::consumer::ConsumerContext for ReportingContext {}
