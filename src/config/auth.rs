//! `[auth]`: the credentials every endpoint but the probes and metrics takes, and per
//! endpoint group (`[auth.groups.<webhook|push|query|history>]`) other credentials where one
//! client should not hold another's: Alertmanager posts alerts, Promtail pushes logs, Grafana
//! and logcli read logs and history.

use std::collections::BTreeMap;
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

/// The endpoints that share credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointGroup {
    /// `POST /api/v1/alerts` (Alertmanager).
    Webhook,
    /// `POST /loki/api/v1/push` (Promtail, Alloy).
    Push,
    /// Loki's query API over the archive (Grafana, logcli).
    Query,
    /// `/api/v1/incidents`, `/api/v1/sla`.
    History,
}

impl EndpointGroup {
    pub const ALL: [EndpointGroup; 4] = [
        EndpointGroup::Webhook,
        EndpointGroup::Push,
        EndpointGroup::Query,
        EndpointGroup::History,
    ];

    /// The environment variable holding the group's secret when it has no `secret_file`.
    pub fn secret_env(self) -> String {
        format!("ALERTPIPE_AUTH_{}_SECRET", self.name().to_ascii_uppercase())
    }

    pub fn name(self) -> &'static str {
        match self {
            EndpointGroup::Webhook => "webhook",
            EndpointGroup::Push => "push",
            EndpointGroup::Query => "query",
            EndpointGroup::History => "history",
        }
    }
}

/// One set of credentials: a bearer token, or a basic user and password.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Credentials {
    pub mode: AuthMode,
    /// Basic auth user name (not a secret).
    pub username: String,
    /// File holding the bearer token or basic password (else the environment variable
    /// ALERTPIPE_AUTH_SECRET, or ALERTPIPE_AUTH_<GROUP>_SECRET for a group).
    pub secret_file: Option<PathBuf>,
    #[serde(skip_deserializing)]
    pub secret: Secret,
}

impl Default for Credentials {
    fn default() -> Self {
        Credentials {
            mode: AuthMode::None,
            username: String::new(),
            secret_file: None,
            secret: Secret::default(),
        }
    }
}

impl Credentials {
    fn validate(&self, key: &str, env: &str) -> Result<(), ConfigError> {
        if self.mode != AuthMode::None && self.secret.expose().is_empty() {
            return bad(
                &format!("{key}.mode"),
                &format!("auth is on but no secret: set {env} or {key}.secret_file"),
            );
        }
        if self.mode == AuthMode::Basic && self.username.is_empty() {
            return bad(&format!("{key}.username"), "basic auth needs a username");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub mode: AuthMode,
    pub username: String,
    pub secret_file: Option<PathBuf>,
    #[serde(skip_deserializing)]
    pub secret: Secret,
    /// Credentials of their own for some endpoint groups; the others take the ones above.
    pub groups: BTreeMap<EndpointGroup, Credentials>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::None,
            username: String::new(),
            secret_file: None,
            secret: Secret::default(),
            groups: BTreeMap::new(),
        }
    }
}

impl AuthConfig {
    /// The credentials `group`'s endpoints take: (mode, basic user name, secret).
    pub fn credentials(&self, group: EndpointGroup) -> (AuthMode, &str, &Secret) {
        match self.groups.get(&group) {
            Some(c) => (c.mode, &c.username, &c.secret),
            None => (self.mode, &self.username, &self.secret),
        }
    }

    /// Sets the same credentials for one group (tests and programs building a config).
    pub fn set_group(
        &mut self,
        group: EndpointGroup,
        mode: AuthMode,
        username: &str,
        secret: &str,
    ) {
        self.groups.insert(
            group,
            Credentials {
                mode,
                username: username.to_owned(),
                secret_file: None,
                secret: Secret::new(secret),
            },
        );
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let default = Credentials {
            mode: self.mode,
            username: self.username.clone(),
            secret_file: None,
            secret: self.secret.clone(),
        };
        if EndpointGroup::ALL
            .iter()
            .any(|g| !self.groups.contains_key(g))
        {
            default.validate("auth", "ALERTPIPE_AUTH_SECRET")?;
        }
        for (g, c) in &self.groups {
            c.validate(&format!("auth.groups.{}", g.name()), &g.secret_env())?;
        }
        Ok(())
    }
}
