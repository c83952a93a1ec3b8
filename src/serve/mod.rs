//! `wanmirror serve`: runs next to the source cluster and answers destination
//! mirrors over QUIC (docs/peer-protocol.md). It reads the local cluster as a Kafka
//! client; what crosses the WAN is whole batches as the brokers stored them, pushed
//! tails, and Merkle hashes.
//!
//! Each client connection is checked twice: rustls refuses a certificate its
//! `client_ca` did not sign (or none), then the certificate must name one of the
//! configured clients, whose allow-list every request is checked against.

pub mod config;
mod handler;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::config::ConfigError;
use crate::kafka::client::Cluster;
use crate::kafka::connection::SocketOptions;
use crate::kafka::error::KafkaError;
use crate::peer::io::close;
use crate::peer::tls::{client_name, peer_certs, server_config, transport};
use crate::source::broker::Brokers;
use crate::source::Source;
use crate::transport::sizer::PoolConfig;
use config::{Allowed, ServeConfig};

/// Why `serve` could not start (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("config {path}: {message}")]
    Setup { path: String, message: String },
    #[error("{cluster}: {source}")]
    Kafka { cluster: String, source: KafkaError },
    #[error("cannot listen on UDP {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

/// What every connection's handlers share.
pub(crate) struct Ctx {
    pub source: Source,
    pub cluster: String,
    pub max_in_flight: usize,
    /// Per client name, whatever connection it comes on: its answer-byte budget and
    /// its open connections.
    clients: std::sync::Mutex<std::collections::HashMap<String, (Arc<Semaphore>, usize)>>,
}

/// Connections one client may hold open at once (a mirror opens at most 8).
const MAX_CONNECTIONS: usize = 16;

impl Ctx {
    /// The client's budget, with one more connection counted; `None` if it holds
    /// the most it may already.
    fn join(&self, name: &str) -> Option<Arc<Semaphore>> {
        let mut m = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let kib = (self.max_in_flight / 1024).clamp(1, u32::MAX as usize / 2);
        let e = m
            .entry(name.to_string())
            .or_insert_with(|| (Arc::new(Semaphore::new(kib)), 0));
        if e.1 >= MAX_CONNECTIONS {
            return None;
        }
        e.1 += 1;
        Some(e.0.clone())
    }

    fn leave(&self, name: &str) {
        let mut m = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = m.get_mut(name) {
            e.1 = e.1.saturating_sub(1);
        }
    }
}

/// One connected client.
pub(crate) struct Client {
    pub allowed: Allowed,
    pub remote: SocketAddr,
    /// Answer bytes in flight, in KiB permits.
    pub budget: Arc<Semaphore>,
    pub budget_kib: u32,
}

/// A running server; dropping it does not stop it, [`Server::close`] does.
pub struct Server {
    endpoint: quinn::Endpoint,
    pub local_addr: SocketAddr,
}

impl Server {
    /// Loads the config, checks that the local cluster answers, binds the port.
    pub async fn start(path: &std::path::Path) -> Result<(Server, ServeRun), ServeError> {
        let (cfg, allowed) = ServeConfig::load(path)?;
        let p = path.display().to_string();
        let security = crate::kafka::security::Security::load(cfg.tls.as_ref(), cfg.sasl.as_ref())
            .map_err(|e| ServeError::Setup {
                path: p.clone(),
                message: format!("serve.{}: {}", e.section, e.message),
            })?;
        let quic = server_config(
            &cfg.cert,
            &cfg.key,
            &cfg.client_ca,
            transport(cfg.congestion, cfg.max_streams),
        )
        .map_err(|message| ServeError::Setup {
            path: p.clone(),
            message,
        })?;
        let cluster = Cluster::new(
            &cfg.cluster,
            &cfg.bootstrap,
            SocketOptions {
                security,
                // Clients time out a request after their own deadline; a local retry
                // must end well before that.
                retry_deadline: Duration::from_secs(5),
                ..SocketOptions::default()
            },
        );
        cluster.refresh(None).await.map_err(|e| ServeError::Kafka {
            cluster: cfg.cluster.clone(),
            source: e,
        })?;
        let addr: SocketAddr = cfg.listen.parse().map_err(|_| ServeError::Setup {
            path: p.clone(),
            message: format!("serve.listen {:?} is not an address", cfg.listen),
        })?;
        let endpoint =
            quinn::Endpoint::server(quic, addr).map_err(|source| ServeError::Listen {
                addr: cfg.listen.clone(),
                source,
            })?;
        let local_addr = endpoint.local_addr().map_err(|source| ServeError::Listen {
            addr: cfg.listen.clone(),
            source,
        })?;
        tracing::info!(
            cluster = %cfg.cluster, listen = %local_addr, congestion = ?cfg.congestion,
            clients = %allowed.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(","),
            "serving"
        );
        let run = ServeRun {
            endpoint: endpoint.clone(),
            allowed,
            ctx: Arc::new(Ctx {
                // Next to the brokers a few connections carry any rate: what made
                // the WAN need many is the round trip, and there is none here.
                source: Source::Brokers(Arc::new(Brokers::new(
                    cluster,
                    PoolConfig {
                        min: 1,
                        max: 32,
                        initial: 4,
                    },
                    Duration::from_secs(60),
                ))),
                cluster: cfg.cluster.clone(),
                max_in_flight: cfg.max_in_flight_bytes,
                clients: Default::default(),
            }),
        };
        Ok((
            Server {
                endpoint,
                local_addr,
            },
            run,
        ))
    }

    /// Closes every client connection and stops accepting; waits (a little) until
    /// the clients were told, so they reconnect at once instead of after the idle
    /// timeout.
    pub async fn close(&self) {
        self.endpoint.close(
            quinn::VarInt::from_u32(close::SHUTDOWN),
            b"server shutting down",
        );
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

/// The accept loop of a started server.
pub struct ServeRun {
    endpoint: quinn::Endpoint,
    allowed: Vec<Allowed>,
    ctx: Arc<Ctx>,
}

impl ServeRun {
    /// Accepts clients until the endpoint is closed.
    pub async fn run(self) {
        while let Some(incoming) = self.endpoint.accept().await {
            let (ctx, allowed) = (self.ctx.clone(), self.allowed.clone());
            tokio::spawn(async move { connection(ctx, allowed, incoming).await });
        }
    }
}

async fn connection(ctx: Arc<Ctx>, allowed: Vec<Allowed>, incoming: quinn::Incoming) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(%remote, reason = %refusal(&e), "refused a client connection");
            return;
        }
    };
    let names: Vec<String> = allowed.iter().map(|a| a.name.clone()).collect();
    let certs = peer_certs(&conn);
    let Some(name) = client_name(certs.as_deref(), &names) else {
        let why = format!(
            "the client certificate names none of the configured clients ({})",
            names.join(", ")
        );
        tracing::warn!(%remote, reason = %why, "refused a client connection");
        conn.close(
            quinn::VarInt::from_u32(close::UNKNOWN_CLIENT),
            why.as_bytes(),
        );
        return;
    };
    let allowed = allowed
        .into_iter()
        .find(|a| a.name == name)
        .expect("the name came from this list");
    let Some(budget) = ctx.join(&allowed.name) else {
        let why = format!(
            "client {} holds {MAX_CONNECTIONS} connections already",
            allowed.name
        );
        tracing::warn!(%remote, reason = %why, "refused a client connection");
        conn.close(quinn::VarInt::from_u32(close::LIMIT), why.as_bytes());
        return;
    };
    tracing::info!(client = %allowed.name, %remote, "client connected");
    let kib = (ctx.max_in_flight / 1024).clamp(1, u32::MAX as usize / 2);
    let client = Arc::new(Client {
        budget,
        budget_kib: kib as u32,
        allowed,
        remote,
    });
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                let (ctx, client) = (ctx.clone(), client.clone());
                tokio::spawn(async move { handler::stream(ctx, client, send, recv).await });
            }
            Err(e) => {
                tracing::info!(client = %client.allowed.name, remote = %client.remote, reason = %e, "client disconnected");
                ctx.leave(&client.allowed.name);
                return;
            }
        }
    }
}

/// Why a handshake failed, from the server's side.
fn refusal(e: &quinn::ConnectionError) -> String {
    use quinn::ConnectionError as C;
    match e {
        C::TransportError(t) if (0x100..0x200).contains(&u64::from(t.code)) => {
            format!(
                "TLS: {} (a client certificate signed by client_ca is required)",
                t.reason
            )
        }
        C::ConnectionClosed(c) => format!("the client ended the handshake: {c}"),
        other => other.to_string(),
    }
}
