//! The `[source.tls]`, `[source.sasl]` (and destination) sections as written in the
//! config, checked without touching files or the environment.

use std::path::PathBuf;

use serde::Deserialize;

use super::sasl::Mechanism;

/// `[<cluster>.tls]`: its presence turns TLS on.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM file of the CA certificates to trust; the system's roots when absent.
    pub ca: Option<PathBuf>,
    /// PEM certificate chain to present (mutual TLS); needs `key`.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert` (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// The name the brokers' certificates are checked against, instead of each
    /// broker's host as metadata gives it.
    pub server_name: Option<String>,
}

/// `[<cluster>.sasl]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaslSettings {
    /// "PLAIN", "SCRAM-SHA-256" or "SCRAM-SHA-512".
    pub mechanism: String,
    pub username: String,
    /// Environment variable holding the password.
    pub password_env: Option<String>,
    /// File holding the password (its first line; trailing whitespace ignored).
    pub password_file: Option<PathBuf>,
    /// Read only to refuse it: a password written into the config is refused, and
    /// its value is never looked at or printed.
    #[serde(default)]
    password: Option<serde::de::IgnoredAny>,
}

impl TlsSettings {
    /// What is wrong with the section, if anything (the caller names the section).
    pub fn check(&self) -> Result<(), String> {
        match (&self.cert, &self.key) {
            (Some(_), None) => {
                return Err("cert is set but key is not: give both or neither".into())
            }
            (None, Some(_)) => {
                return Err("key is set but cert is not: give both or neither".into())
            }
            _ => {}
        }
        if let Some(n) = &self.server_name {
            if rustls::pki_types::ServerName::try_from(n.as_str()).is_err() {
                return Err(format!(
                    "server_name {n:?} is not a host name or IP address"
                ));
            }
        }
        Ok(())
    }
}

impl SaslSettings {
    /// What is wrong with the section, if anything (the caller names the section).
    pub fn check(&self) -> Result<(), String> {
        if self.password.is_some() {
            return Err(
                "a password may not be written into the config: use password_env or password_file"
                    .into(),
            );
        }
        if Mechanism::parse(&self.mechanism).is_none() {
            return Err(format!(
                "unknown mechanism {:?}: use {}",
                self.mechanism,
                Mechanism::NAMES
            ));
        }
        if self.username.is_empty() {
            return Err("username is empty".into());
        }
        match (&self.password_env, &self.password_file) {
            (None, None) => Err("set password_env or password_file".into()),
            (Some(_), Some(_)) => Err("set only one of password_env and password_file".into()),
            (Some(v), None) if v.is_empty() || v.contains('=') || v.contains('\0') => Err(format!(
                "password_env {v:?} is not an environment variable name"
            )),
            _ => Ok(()),
        }
    }

    pub fn mechanism(&self) -> Option<Mechanism> {
        Mechanism::parse(&self.mechanism)
    }
}
