//! TLS to the brokers through rustls: the client configuration built once per cluster
//! from `[<cluster>.tls]`, and the handshake of each connection, with failures phrased
//! for the operator (an untrusted CA, a name mismatch, a plaintext port).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::settings::TlsSettings;
use crate::kafka::error::KafkaError;

/// A cluster's TLS client: trust roots, optional client certificate, name override.
pub struct Tls {
    connector: tokio_rustls::TlsConnector,
    server_name: Option<ServerName<'static>>,
    /// Where the trust roots came from, for the start-up log.
    pub roots: String,
    /// Whether a client certificate is presented.
    pub mutual: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("roots", &self.roots)
            .field("mutual", &self.mutual)
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl Tls {
    /// Reads the files `s` names and builds the client. Errors name the file and cause.
    pub fn load(s: &TlsSettings) -> Result<Tls, String> {
        let mut roots = rustls::RootCertStore::empty();
        let source = match &s.ca {
            Some(path) => {
                roots = read_roots(path, "ca")?;
                format!("{}", path.display())
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                let (n, _) = roots.add_parsable_certificates(found.certs);
                if n == 0 {
                    return Err(
                        "no CA certificates found on this system: set ca to the brokers' CA file"
                            .into(),
                    );
                }
                format!("the system's {n} CA certificates")
            }
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_root_certificates(roots);
        let config = match (&s.cert, &s.key) {
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert, "cert")?;
                let k = read_key(key, "key")?;
                builder.with_client_auth_cert(chain, k).map_err(|e| {
                    format!("cert {} and key {}: {e}", cert.display(), key.display())
                })?
            }
            _ => builder.with_no_client_auth(),
        };
        let server_name = match &s.server_name {
            Some(n) => Some(
                ServerName::try_from(n.clone())
                    .map_err(|_| format!("server_name {n:?} is not a host name or IP address"))?,
            ),
            None => None,
        };
        Ok(Tls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
            roots: source,
            mutual: s.cert.is_some(),
        })
    }

    /// The TLS handshake on a connected socket (the caller bounds its time). A
    /// certificate or protocol failure is a `Tls` error; a connection closed during
    /// the handshake is a lost connection, retriable, with a hint.
    pub async fn handshake(
        &self,
        addr: &str,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, KafkaError> {
        let fail = |reason: String| KafkaError::Tls {
            addr: addr.to_string(),
            reason,
        };
        let name = match &self.server_name {
            Some(n) => n.clone(),
            None => ServerName::try_from(host_of(addr).to_string()).map_err(|_| {
                fail(format!(
                    "{:?} is not a host name to check the certificate against; set tls.server_name",
                    host_of(addr)
                ))
            })?,
        };
        self.connector.connect(name.clone(), tcp).await.map_err(|e| {
            if is_tls_failure(&e) {
                fail(explain(&e, Some(&name)))
            } else {
                KafkaError::ConnectionLost {
                    addr: addr.to_string(),
                    reason: format!(
                        "the broker closed the connection during the TLS handshake ({e}): is this a plaintext listener?"
                    ),
                }
            }
        })
    }
}

/// The PEM certificates of a file (at least one); errors name `label` and the file.
pub(crate) fn read_certs(path: &Path, label: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{label} {shown}: {}", pem_error(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{label} {shown}: {}", pem_error(&e)))?;
    if certs.is_empty() {
        return Err(format!("{label} {shown}: no PEM certificate in it"));
    }
    Ok(certs)
}

/// The PEM private key of a file (PKCS#8, PKCS#1 or SEC1).
pub(crate) fn read_key(path: &Path, label: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("{label} {}: {}", path.display(), pem_error(&e)))
}

/// Trust roots from a PEM file of CA certificates.
pub(crate) fn read_roots(path: &Path, label: &str) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    let (_, bad) = roots.add_parsable_certificates(read_certs(path, label)?);
    if roots.is_empty() {
        return Err(format!(
            "{label} {}: none of its {bad} certificates can be used as a trust root",
            path.display()
        ));
    }
    Ok(roots)
}

/// Whether an I/O error carries a rustls error (a certificate, an alert, a record
/// that does not verify), not a plain loss of the connection.
pub fn is_tls_failure(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|i| i.downcast_ref::<rustls::Error>())
        .is_some()
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::Io(io) => format!("cannot read: {io}"),
        E::NoItemsFound => "no PEM item of the expected kind in it".into(),
        other => format!("not valid PEM: {other:?}"),
    }
}

/// What a failed handshake (or a TLS failure after it) means, in the operator's words.
pub fn explain(e: &std::io::Error, name: Option<&ServerName<'_>>) -> String {
    use rustls::{CertificateError as C, Error as R};
    let Some(r) = e.get_ref().and_then(|i| i.downcast_ref::<R>()) else {
        return e.to_string();
    };
    match r {
        R::InvalidCertificate(C::UnknownIssuer) => format!(
            "the broker's certificate is not signed by a trusted CA ({r}); set tls.ca to the CA that signed it"
        ),
        R::InvalidCertificate(c) if format!("{c:?}").starts_with("NotValidForName") => format!(
            "the broker's certificate is not valid for {} ({r}); if it names the broker otherwise, set tls.server_name",
            name.map_or("its address".into(), |n| n.to_str().to_string())
        ),
        R::InvalidMessage(_) | R::InappropriateMessage { .. } => format!(
            "the broker did not answer with TLS ({r}): is this a plaintext listener?"
        ),
        R::AlertReceived(a) => format!(
            "the broker refused the TLS session with alert {a:?} (a listener that requires a client certificate sends BadCertificate or CertificateRequired to a client without one; see tls.cert and tls.key)"
        ),
        _ => format!("{r}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_cut_from_addresses() {
        assert_eq!(host_of("kafka-1.dc-a:9093"), "kafka-1.dc-a");
        assert_eq!(host_of("127.0.0.1:9093"), "127.0.0.1");
        assert_eq!(host_of("[::1]:9093"), "::1");
    }

    #[test]
    fn missing_and_empty_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = TlsSettings {
            ca: Some(dir.path().join("nope.pem")),
            ..Default::default()
        };
        let e = Tls::load(&missing).unwrap_err();
        assert!(
            e.starts_with("ca ") && e.contains("nope.pem") && e.contains("cannot read"),
            "{e}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = Tls::load(&TlsSettings {
            ca: Some(empty),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.contains("empty.pem") && e.contains("no PEM"), "{e}");
    }
}
