//! Secrets: never from the config file, never printed.

use std::fmt;
use std::path::Path;

use serde::{Serialize, Serializer};

use super::ConfigError;

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

/// A secret from its file (when configured) or its env var; empty when neither.
pub(super) fn read_secret(
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
