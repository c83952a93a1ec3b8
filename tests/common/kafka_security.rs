//! Secured listeners for the Kafka test kit: SSL, and SASL_SSL with PLAIN and
//! SCRAM-SHA-512, on top of the PLAINTEXT listener the brokers talk to each other on.
//! One self-signed certificate per cluster (made with the JDK's keytool), for
//! 127.0.0.1 and localhost; clients trust it through `ca_pem`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The user and password every secured cluster knows, for PLAIN and SCRAM-SHA-512.
pub const USER: &str = "mirror";
pub const PASSWORD: &str = "mirror-secret";

const STORE_PASSWORD: &str = "kit-store";

/// A cluster's TLS material.
#[derive(Debug, Clone)]
pub struct Tls {
    /// The certificate clients must trust, in PEM.
    pub ca_pem: PathBuf,
    keystore: PathBuf,
}

impl Tls {
    /// Makes a self-signed key pair and certificate in `dir`.
    pub fn generate(dir: &Path) -> Tls {
        let keystore = dir.join("broker.p12");
        let ca_pem = dir.join("ca.pem");
        let run = |args: &[&str]| {
            let out = Command::new("keytool")
                .args(args)
                .output()
                .expect("run keytool (a JDK: scripts/setup.sh)");
            assert!(
                out.status.success(),
                "keytool {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ks = keystore.display().to_string();
        run(&[
            "-genkeypair",
            "-alias",
            "broker",
            "-keyalg",
            "RSA",
            "-keysize",
            "2048",
            "-dname",
            "CN=localhost",
            "-ext",
            "SAN=IP:127.0.0.1,DNS:localhost",
            "-validity",
            "2",
            "-storetype",
            "PKCS12",
            "-keystore",
            &ks,
            "-storepass",
            STORE_PASSWORD,
            "-keypass",
            STORE_PASSWORD,
        ]);
        let pem = ca_pem.display().to_string();
        run(&[
            "-exportcert",
            "-rfc",
            "-alias",
            "broker",
            "-keystore",
            &ks,
            "-storepass",
            STORE_PASSWORD,
            "-file",
            &pem,
        ]);
        Tls { ca_pem, keystore }
    }

    /// Broker settings for an SSL listener and a SASL_SSL one (PLAIN, SCRAM-SHA-512).
    pub fn broker_props(&self) -> Vec<(&'static str, String)> {
        let plain_jaas = format!(
            "org.apache.kafka.common.security.plain.PlainLoginModule required user_{USER}=\"{PASSWORD}\";"
        );
        vec![
            ("ssl.keystore.type", "PKCS12".into()),
            ("ssl.keystore.location", self.keystore.display().to_string()),
            ("ssl.keystore.password", STORE_PASSWORD.into()),
            ("ssl.key.password", STORE_PASSWORD.into()),
            ("sasl.enabled.mechanisms", "PLAIN,SCRAM-SHA-512".into()),
            ("listener.name.sasl_ssl.plain.sasl.jaas.config", plain_jaas),
            (
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config",
                "org.apache.kafka.common.security.scram.ScramLoginModule required;".into(),
            ),
        ]
    }

    /// The formatter's argument that stores the SCRAM credentials in the metadata log.
    pub fn scram_format_args() -> [String; 2] {
        [
            "--add-scram".into(),
            format!("SCRAM-SHA-512=[name={USER},password={PASSWORD}]"),
        ]
    }
}
