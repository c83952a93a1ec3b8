//! A TLS terminator in front of a plaintext broker (tansu's own TLS flags do not
//! work): clients speak TLS to it, it speaks plaintext to the broker. The broker must
//! advertise the terminator's port. Its thread and runtime end when it is dropped.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;

use super::pki::Pki;

pub struct TlsTerminator {
    pub port: u16,
    target: Arc<Mutex<Option<u16>>>,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl TlsTerminator {
    /// Listens on a free port with the broker certificate of `pki`; with
    /// `client_auth`, only clients with a certificate from `pki`'s CA get through.
    pub fn start(pki: &Pki, client_auth: bool) -> TlsTerminator {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pki.server_cert)
            .expect("broker cert")
            .collect::<Result<_, _>>()
            .expect("broker cert");
        let key = PrivateKeyDer::from_pem_file(&pki.server_key).expect("broker key");
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("protocol versions");
        let builder = if client_auth {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(&pki.ca).expect("ca") {
                roots.add(c.expect("ca")).expect("ca");
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let config = builder.with_single_cert(chain, key).expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind terminator");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let target = Arc::new(Mutex::new(None::<u16>));
        let (stop, mut stopped) = watch::channel(false);
        let to = target.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let (tcp, _) = tokio::select! {
                        r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
                        _ = stopped.wait_for(|s| *s) => return,
                    };
                    let Some(backend) = *to.lock().unwrap() else {
                        continue;
                    };
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let Ok(mut plain) =
                            tokio::net::TcpStream::connect(("127.0.0.1", backend)).await
                        else {
                            return;
                        };
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    });
                }
            });
        });
        TlsTerminator {
            port,
            target,
            stop,
            thread: Some(thread),
        }
    }

    /// Forwards new connections to the broker on `port`.
    pub fn forward_to(&self, port: u16) {
        *self.target.lock().unwrap() = Some(port);
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsTerminator {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
