//! Mutual TLS and QUIC transport settings of a peer connection, on both ends.
//!
//! The server trusts only client certificates signed by its `client_ca` and then
//! matches the certificate against the configured client names; the client trusts
//! only the server certificates its `peer_tls.ca` signed. Both speak TLS 1.3 (QUIC
//! requires it) with the ALPN `wanmirror/1`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use quinn::congestion::{BbrConfig, CubicConfig, NewRenoConfig};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::AckFrequencyConfig;
use quinn::{IdleTimeout, TransportConfig, VarInt};
use rustls::pki_types::{CertificateDer, ServerName};

use super::frame::ALPN;
use crate::kafka::security::tls::{read_certs, read_key, read_roots};

/// The congestion controller of a peer connection (`congestion` in the configs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Congestion {
    /// quinn's BBR: paces to the measured bottleneck and does not read random loss
    /// as congestion (the link this tool is for; see docs/peer-protocol.md).
    #[default]
    Bbr,
    Cubic,
    NewReno,
}

/// How long a peer connection may be silent before it counts as gone: a cut link is
/// noticed in this time and the client reconnects.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);
const KEEP_ALIVE: Duration = Duration::from_secs(3);

/// Transport settings for one long, lossy path: windows that hold a second of a
/// gigabit link, so that neither flow control nor the send buffer caps the rate below
/// what the congestion controller finds.
pub fn transport(congestion: Congestion, max_streams: u32) -> TransportConfig {
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(max_streams))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        // A stream's window is small next to the connection's: a subscription whose
        // reader is slow (a destination that writes slowly) holds at most this much,
        // and many must be stalled before the connection's other streams wait.
        .stream_receive_window(VarInt::from_u32(4 << 20))
        .receive_window(VarInt::from_u32(256 << 20))
        .send_window(128 << 20)
        .keep_alive_interval(Some(KEEP_ALIVE))
        .max_idle_timeout(Some(
            IdleTimeout::try_from(IDLE_TIMEOUT).expect("15 s is a valid idle timeout"),
        ));
    // Each end asks the other to acknowledge every tenth packet rather than every
    // second (only the side receiving the data has many to acknowledge): on a path
    // carrying tens of thousands of datagrams a second, each acknowledgement is a
    // datagram sent and processed, and they were a large part of both ends' CPU
    // (docs/peer-protocol.md, "The client side").
    let mut acks = AckFrequencyConfig::default();
    acks.ack_eliciting_threshold(VarInt::from_u32(ACK_EVERY - 1));
    t.ack_frequency_config(Some(acks));
    match congestion {
        Congestion::Bbr => {
            let mut c = BbrConfig::default();
            c.initial_window(INITIAL_WINDOW);
            t.congestion_controller_factory(Arc::new(c))
        }
        Congestion::Cubic => {
            let mut c = CubicConfig::default();
            c.initial_window(INITIAL_WINDOW);
            t.congestion_controller_factory(Arc::new(c))
        }
        Congestion::NewReno => {
            let mut c = NewRenoConfig::default();
            c.initial_window(INITIAL_WINDOW);
            t.congestion_controller_factory(Arc::new(c))
        }
    };
    t
}

/// Packets received per acknowledgement the receiver sends (QUIC's default is 2).
const ACK_EVERY: u32 = 10;

/// Each connection's first flight, paced over the first RTT: 256 KiB, so the pool's
/// four starting connections send about what the TCP pool's 64 connections send
/// with the kernel's 10 packets each. At the default 10 packets, a 100 ms path took
/// about 2 s of slow start to fill.
const INITIAL_WINDOW: u64 = 256 << 10;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server's QUIC configuration: its certificate, and client certificates
/// required and checked against `client_ca`.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
    transport: TransportConfig,
) -> Result<quinn::ServerConfig, String> {
    let roots = Arc::new(read_roots(client_ca, "client_ca")?);
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| format!("client_ca {}: {e}", client_ca.display()))?;
    let chain = read_certs(cert, "cert")?;
    let k = read_key(key, "key")?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, k)
        .map_err(|e| format!("cert {} and key {}: {e}", cert.display(), key.display()))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicServerConfig::try_from(tls).map_err(|e| format!("QUIC TLS setup: {e}"))?;
    let mut c = quinn::ServerConfig::with_crypto(Arc::new(quic));
    c.transport_config(Arc::new(transport));
    Ok(c)
}

/// The client's QUIC configuration: the CA its peer's certificate must come from, and
/// the certificate it presents.
pub fn client_config(
    ca: &Path,
    cert: &Path,
    key: &Path,
    transport: TransportConfig,
) -> Result<quinn::ClientConfig, String> {
    let roots = read_roots(ca, "peer_tls.ca")?;
    let chain = read_certs(cert, "peer_tls.cert")?;
    let k = read_key(key, "peer_tls.key")?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, k)
        .map_err(|e| {
            format!(
                "peer_tls.cert {} and key {}: {e}",
                cert.display(),
                key.display()
            )
        })?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(|e| format!("QUIC TLS setup: {e}"))?;
    let mut c = quinn::ClientConfig::new(Arc::new(quic));
    c.transport_config(Arc::new(transport));
    Ok(c)
}

/// Which of `names` the client's certificate (already verified against the client
/// CA) names exactly, as a SAN DNS name or IP address. `None`: no certificate, none of
/// the names, or more than one (a certificate must say which client it is). A wildcard
/// SAN (`*.example`) names no client: it would stand for every client under it.
pub fn client_name<'n>(
    identity: Option<&[CertificateDer<'_>]>,
    names: &'n [String],
) -> Option<&'n str> {
    let leaf = identity?.first()?;
    let cert = webpki::EndEntityCert::try_from(leaf).ok()?;
    let valid = |n: &str| {
        ServerName::try_from(n)
            .map(|sn| cert.verify_is_valid_for_subject_name(&sn).is_ok())
            .unwrap_or(false)
    };
    let exact = |n: &str| {
        if !valid(n) {
            return false;
        }
        // A wildcard covering `n` would cover any other first label too.
        match n.split_once('.') {
            Some((_, rest)) if n.parse::<std::net::IpAddr>().is_err() => {
                !valid(&format!("wanmirror-wildcard-probe.{rest}"))
            }
            _ => true,
        }
    };
    let mut found = names.iter().map(String::as_str).filter(|n| exact(n));
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// The certificates a QUIC connection's peer presented.
pub fn peer_certs(conn: &quinn::Connection) -> Option<Vec<CertificateDer<'static>>> {
    conn.peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()
        .map(|b| *b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_for(names: &[&str]) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn a_client_is_known_by_the_names_its_certificate_holds() {
        let names = vec!["dc-b".to_string(), "dc-c".to_string()];
        let c = cert_for(&["dc-c"]);
        assert_eq!(client_name(Some(&[c]), &names), Some("dc-c"));
        let other = cert_for(&["dc-z", "mirror.dc-z.example"]);
        assert_eq!(client_name(Some(&[other]), &names), None);
        // A wildcard stands for no client; a certificate naming two is refused.
        let wild = cert_for(&["*.example"]);
        let dotted = vec!["dc-b.example".to_string()];
        assert_eq!(client_name(Some(&[wild]), &dotted), None);
        let exact = cert_for(&["dc-b.example"]);
        assert_eq!(client_name(Some(&[exact]), &dotted), Some("dc-b.example"));
        let both = cert_for(&["dc-b", "dc-c"]);
        assert_eq!(client_name(Some(&[both]), &names), None);
        assert_eq!(client_name(None, &names), None);
        let ip = cert_for(&["127.0.0.1"]);
        assert_eq!(
            client_name(Some(&[ip]), &["127.0.0.1".to_string()]),
            Some("127.0.0.1")
        );
    }
}
