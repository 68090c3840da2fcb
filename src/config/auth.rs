//! `[auth]`: the credentials every endpoint but the probes and metrics takes.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{bad, ConfigError, Secret};

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

impl AuthConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.mode != AuthMode::None && self.secret.expose().is_empty() {
            return bad(
                "auth.mode",
                "auth is on but no secret: set ALERTPIPE_AUTH_SECRET or auth.secret_file",
            );
        }
        if self.mode == AuthMode::Basic && self.username.is_empty() {
            return bad("auth.username", "basic auth needs a username");
        }
        Ok(())
    }
}
