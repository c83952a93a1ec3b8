//! Secured connections to brokers: TLS (rustls) and SASL (PLAIN, SCRAM-SHA-256/512),
//! set per cluster by `[<cluster>.tls]` and `[<cluster>.sasl]` (docs/security.md).
//!
//! Loaded once per cluster at start (files read, the password taken from its
//! variable or file); every connection, pooled ones included, then does its TLS
//! handshake and its SASL login before any request but the version handshake.

pub mod login;
pub mod sasl;
pub mod settings;
pub mod tls;

use std::sync::Arc;

use sasl::{KeyCache, Mechanism, Secret};
use settings::{SaslSettings, TlsSettings};
pub use tls::Tls;

/// A cluster's security, loaded. The default is plaintext without login.
#[derive(Debug, Clone, Default)]
pub struct Security {
    pub tls: Option<Arc<Tls>>,
    pub sasl: Option<Arc<Login>>,
}

/// SASL credentials of a cluster, and the salted keys every connection reuses.
#[derive(Debug)]
pub struct Login {
    pub mechanism: Mechanism,
    pub username: String,
    pub(crate) password: Secret,
    pub(crate) keys: KeyCache,
}

/// A problem loading a cluster's security: which section, and what.
#[derive(Debug)]
pub struct LoadError {
    /// "tls" or "sasl".
    pub section: &'static str,
    pub message: String,
}

impl Security {
    /// Reads the files and the password the sections name.
    pub fn load(
        tls: Option<&TlsSettings>,
        sasl: Option<&SaslSettings>,
    ) -> Result<Security, LoadError> {
        let tls = match tls {
            Some(t) => Some(Arc::new(Tls::load(t).map_err(|message| LoadError {
                section: "tls",
                message,
            })?)),
            None => None,
        };
        let sasl = match sasl {
            Some(s) => Some(Arc::new(Login::load(s).map_err(|message| LoadError {
                section: "sasl",
                message,
            })?)),
            None => None,
        };
        Ok(Security { tls, sasl })
    }

    /// Kafka's name for this combination: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL,
    /// with the mechanism and user, for logs and `check` (never the password).
    pub fn describe(&self) -> String {
        let proto = match (&self.tls, &self.sasl) {
            (None, None) => "PLAINTEXT",
            (Some(_), None) => "SSL",
            (None, Some(_)) => "SASL_PLAINTEXT",
            (Some(_), Some(_)) => "SASL_SSL",
        };
        let mut out = proto.to_string();
        if let Some(t) = &self.tls {
            out += &format!(
                ", trusting {}{}",
                t.roots,
                if t.mutual {
                    ", with a client certificate"
                } else {
                    ""
                }
            );
        }
        if let Some(l) = &self.sasl {
            out += &format!(", {} as {}", l.mechanism.name(), l.username);
        }
        out
    }
}

impl Login {
    fn load(s: &SaslSettings) -> Result<Login, String> {
        s.check()?;
        let mechanism = s.mechanism().expect("checked");
        let password = match (&s.password_env, &s.password_file) {
            (Some(var), _) => match std::env::var(var) {
                Ok(p) => p,
                Err(std::env::VarError::NotPresent) => {
                    return Err(format!(
                        "environment variable {var} (password_env) is not set"
                    ))
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(format!(
                        "environment variable {var} (password_env) is not UTF-8"
                    ))
                }
            },
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("password_file {}: cannot read: {e}", path.display()))?;
                text.lines().next().unwrap_or("").trim_end().to_string()
            }
            (None, None) => unreachable!("checked"),
        };
        if password.is_empty() {
            return Err("the password is empty".into());
        }
        Ok(Login {
            mechanism,
            username: s.username.clone(),
            password: Secret::new(&password),
            keys: KeyCache::default(),
        })
    }
}
