//! Certificates made at test time (rcgen): a CA, a broker certificate for 127.0.0.1 and
//! localhost, a client certificate, and a second CA nobody trusts. Nothing secret is
//! committed; every test run makes its own.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// PEM files in a directory.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA clients and brokers trust.
    pub ca: PathBuf,
    /// The broker's certificate (signed by `ca`) and key.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// The broker's key followed by its certificate: Kafka's PEM keystore.
    pub server_keystore: PathBuf,
    /// A client certificate (signed by `ca`, CN "mirror") and key.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed none of the above.
    pub other_ca: PathBuf,
}

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().expect("CA key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = p.self_signed(&key).expect("self-sign CA");
    Ca { cert, key }
}

fn leaf(ca: &Ca, cn: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
    let key = KeyPair::generate().expect("leaf key");
    let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .expect("leaf params");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![usage];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = p
        .signed_by(&key, &ca.cert, &ca.key)
        .expect("sign leaf certificate");
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    pub fn generate(dir: &Path) -> Pki {
        let root = ca("wanmirror test CA");
        let other = ca("some other CA");
        let (server_cert, server_key) = leaf(
            &root,
            "broker",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = leaf(
            &root,
            "mirror",
            &["mirror"],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).expect("write PEM");
            p
        };
        Pki {
            ca: write("ca.pem", &root.cert.pem()),
            server_keystore: write("broker-keystore.pem", &format!("{server_key}{server_cert}")),
            server_cert: write("broker.pem", &server_cert),
            server_key: write("broker.key", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
            other_ca: write("other-ca.pem", &other.cert.pem()),
        }
    }
}
