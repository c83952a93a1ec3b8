//! `serve.toml`: what `wanmirror serve` reads, listens on, and lets each client read.

use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Deserialize;

use crate::config::ConfigError;
use crate::peer::tls::Congestion;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    serve: ServeConfig,
}

/// `[serve]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// The served cluster's name: clients' `[source] name` must be the same.
    pub cluster: String,
    /// The local cluster's brokers (host:port, comma-separated).
    pub bootstrap: String,
    /// UDP address to listen on for QUIC.
    pub listen: String,
    /// PEM certificate chain and key the server presents.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// PEM CA certificates: only clients with a certificate it signed get in.
    pub client_ca: PathBuf,
    /// Congestion control of every client connection (what the server sends is
    /// what crosses the WAN): "bbr" (default), "cubic" or "newreno".
    #[serde(default)]
    pub congestion: Congestion,
    /// Streams one client connection may have open at once (a tailing partition
    /// holds one; a client has up to 8 connections).
    #[serde(default = "default_streams")]
    pub max_streams: u32,
    /// Answer bytes a client may have in flight at once (read from the cluster and
    /// not yet sent); requests beyond it wait.
    #[serde(default = "default_in_flight")]
    pub max_in_flight_bytes: usize,
    /// TLS and SASL to the local cluster, as `[source.tls]` and `[source.sasl]`.
    #[serde(default)]
    pub tls: Option<crate::kafka::security::settings::TlsSettings>,
    #[serde(default)]
    pub sasl: Option<crate::kafka::security::settings::SaslSettings>,
    /// `[[serve.client]]`: who may connect and what each may read.
    #[serde(default, rename = "client")]
    pub clients: Vec<ClientConfig>,
}

fn default_streams() -> u32 {
    256
}

fn default_in_flight() -> usize {
    256 << 20
}

/// `[[serve.client]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// A DNS name (or IP address) its certificate must hold as a subject alternative
    /// name.
    pub name: String,
    /// Topics it may read: names or regular expressions matched against the whole
    /// name.
    pub topics: Vec<String>,
}

/// A client's allow-list, compiled.
#[derive(Debug, Clone)]
pub struct Allowed {
    pub name: String,
    patterns: Vec<Regex>,
}

impl Allowed {
    pub fn allows(&self, topic: &str) -> bool {
        self.patterns.iter().any(|p| p.is_match(topic))
    }
}

impl ServeConfig {
    pub fn load(path: &Path) -> Result<(ServeConfig, Vec<Allowed>), ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: p.clone(),
            source,
        })?;
        Self::parse(&p, &text)
    }

    pub fn parse(path: &str, text: &str) -> Result<(ServeConfig, Vec<Allowed>), ConfigError> {
        let file: File = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_string(),
            message: crate::config::one_line(&e.to_string()),
        })?;
        let s = file.serve;
        let bad = |field: &'static str, message: String| ConfigError::Invalid {
            path: path.to_string(),
            field,
            message,
        };
        if s.cluster.trim().is_empty() || s.cluster.contains(['/', ' ']) {
            return Err(bad(
                "serve.cluster",
                format!("name {:?} must be a non-empty word", s.cluster),
            ));
        }
        if s.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(bad(
                "serve.listen",
                format!("{:?} is not an IP address and port", s.listen),
            ));
        }
        crate::config::check_bootstrap(&s.bootstrap).map_err(|m| bad("serve.bootstrap", m))?;
        if s.clients.is_empty() {
            return Err(bad(
                "serve.client",
                "no [[serve.client]]: name at least one client and the topics it may read".into(),
            ));
        }
        if !(1..=4096).contains(&s.max_streams) {
            return Err(bad("serve.max_streams", "must be 1..=4096".into()));
        }
        if s.max_in_flight_bytes < (1 << 20) {
            return Err(bad(
                "serve.max_in_flight_bytes",
                "must be at least 1 MiB".into(),
            ));
        }
        if let Some(t) = &s.tls {
            t.check().map_err(|m| bad("serve.tls", m))?;
        }
        if let Some(sasl) = &s.sasl {
            sasl.check().map_err(|m| bad("serve.sasl", m))?;
        }
        let mut allowed = Vec::new();
        for c in &s.clients {
            if rustls::pki_types::ServerName::try_from(c.name.as_str()).is_err() {
                return Err(bad(
                    "serve.client",
                    format!(
                        "name {:?} is not a DNS name or IP address a certificate can hold",
                        c.name
                    ),
                ));
            }
            if allowed.iter().any(|a: &Allowed| a.name == c.name) {
                return Err(bad(
                    "serve.client",
                    format!("client {:?} is named twice", c.name),
                ));
            }
            if c.topics.is_empty() {
                return Err(bad(
                    "serve.client",
                    format!("client {:?} has no topics: list what it may read", c.name),
                ));
            }
            let patterns = c
                .topics
                .iter()
                .map(|t| {
                    Regex::new(&format!("^(?:{t})$")).map_err(|e| {
                        bad(
                            "serve.client",
                            format!(
                                "client {:?}: bad regular expression {t:?}: {}",
                                c.name,
                                crate::config::one_line(&e.to_string())
                            ),
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
            allowed.push(Allowed {
                name: c.name.clone(),
                patterns,
            });
        }
        Ok((s, allowed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[serve]
cluster = "dc-a"
bootstrap = "127.0.0.1:9092"
listen = "0.0.0.0:7400"
cert = "serve.pem"
key = "serve.key"
client_ca = "ca.pem"
[[serve.client]]
name = "dc-b"
topics = ["orders", "payments\\..*"]
"#;

    #[test]
    fn the_documented_example_parses_and_its_patterns_match_whole_names() {
        let (s, a) = ServeConfig::parse("serve.toml", GOOD).unwrap();
        assert_eq!(s.cluster, "dc-a");
        assert_eq!(s.congestion, Congestion::Bbr);
        assert!(a[0].allows("orders"));
        assert!(a[0].allows("payments.eu"));
        assert!(!a[0].allows("orders2"));
        assert!(!a[0].allows("xpayments.eu"));
    }

    #[test]
    fn bad_settings_are_named() {
        let cases = [
            (GOOD.replace("0.0.0.0:7400", "nowhere"), "serve.listen"),
            (GOOD.replace("\"payments\\\\..*\"", "\"(\""), "bad regular expression"),
            (GOOD.replace("name = \"dc-b\"", "name = \"not a name\""), "not a DNS name"),
            (GOOD.replace("127.0.0.1:9092", "kafka"), "serve.bootstrap"),
            (GOOD.replace("cluster = \"dc-a\"", "cluster = \"\""), "serve.cluster"),
            (GOOD.replace("[[serve.client]]\nname = \"dc-b\"\ntopics = [\"orders\", \"payments\\\\..*\"]\n", ""), "no [[serve.client]]"),
            (GOOD.replace("client_ca", "client_cax"), "unknown field"),
        ];
        for (text, want) in cases {
            let e = ServeConfig::parse("serve.toml", &text)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e} should say {want}");
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
