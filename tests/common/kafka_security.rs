//! Secured listeners for the Kafka test kit: SSL (mutual TLS: clients must present a
//! certificate from the kit's CA), and SASL_SSL with PLAIN, SCRAM-SHA-256 and
//! SCRAM-SHA-512, on top of the PLAINTEXT listener the brokers talk to each other on.
//! The certificates are made per cluster at test time (`pki.rs`) and handed to Kafka
//! as PEM files.

use std::path::Path;

use super::pki::Pki;

/// The user and password every secured cluster knows, for every mechanism.
pub const USER: &str = "mirror";
pub const PASSWORD: &str = "mirror-secret";

/// A cluster's TLS material.
#[derive(Debug, Clone)]
pub struct Tls {
    pub pki: Pki,
}

impl Tls {
    pub fn generate(dir: &Path) -> Tls {
        Tls {
            pki: Pki::generate(dir),
        }
    }

    /// Broker settings for an SSL listener (client certificate required) and a
    /// SASL_SSL one (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512).
    pub fn broker_props(&self) -> Vec<(&'static str, String)> {
        let plain_jaas = format!(
            "org.apache.kafka.common.security.plain.PlainLoginModule required user_{USER}=\"{PASSWORD}\";"
        );
        let scram_jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;";
        vec![
            ("ssl.keystore.type", "PEM".into()),
            (
                "ssl.keystore.location",
                self.pki.server_keystore.display().to_string(),
            ),
            ("ssl.truststore.type", "PEM".into()),
            ("ssl.truststore.location", self.pki.ca.display().to_string()),
            ("listener.name.ssl.ssl.client.auth", "required".into()),
            (
                "sasl.enabled.mechanisms",
                "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512".into(),
            ),
            ("listener.name.sasl_ssl.plain.sasl.jaas.config", plain_jaas),
            (
                "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config",
                scram_jaas.into(),
            ),
            (
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config",
                scram_jaas.into(),
            ),
        ]
    }

    /// The formatter's arguments that store the SCRAM credentials in the metadata log.
    pub fn scram_format_args() -> [String; 4] {
        [
            "--add-scram".into(),
            format!("SCRAM-SHA-256=[name={USER},password={PASSWORD}]"),
            "--add-scram".into(),
            format!("SCRAM-SHA-512=[name={USER},password={PASSWORD}]"),
        ]
    }
}
