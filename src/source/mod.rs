//! Where the mirror reads from: the source cluster's brokers over the TCP pool, or a
//! `wanmirror serve` next to them over QUIC. One interface, two implementations: the
//! pipeline (catch-up pieces, tailing, the resume check, diff) does not care which.

pub mod broker;
pub mod peer;
pub mod reader;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{ClusterConfig, ConfigError};
use crate::kafka::client::{Cluster, Fetched, PartitionMeta, TopicMeta};
use crate::kafka::connection::{ConnStats, SocketOptions};
use crate::kafka::error::Result;
use crate::kafka::fetch_mux::OnHead;
use crate::peer::client::{Peer, PeerLease, PeerSettings};
use crate::peer::tls::{client_config, transport};
use crate::transport::pool::{Lease as PoolLease, PoolFigures};
use crate::transport::sizer::PoolConfig;
use broker::Brokers;
use peer::PeerSource;

/// A source of batches.
#[derive(Clone)]
pub enum Source {
    /// The cluster's brokers, straight across the WAN.
    Brokers(Arc<Brokers>),
    /// A peer in the source DC.
    Peer(Arc<PeerSource>),
}

impl From<Arc<Cluster>> for Source {
    /// The brokers of `c`, with a default catch-up pool (the slow paths: the resume
    /// check, diff, tests).
    fn from(c: Arc<Cluster>) -> Source {
        Source::Brokers(Arc::new(Brokers::new(
            c,
            PoolConfig::default(),
            Duration::from_secs(10),
        )))
    }
}

impl Source {
    pub fn name(&self) -> &str {
        match self {
            Source::Brokers(b) => b.cluster.name(),
            Source::Peer(p) => p.peer.name(),
        }
    }

    /// The brokers, when the source is read straight from them.
    pub fn brokers(&self) -> Option<&Arc<Cluster>> {
        match self {
            Source::Brokers(b) => Some(&b.cluster),
            Source::Peer(_) => None,
        }
    }

    /// Runs `op` again after transient failures until the retry deadline.
    pub async fn retry<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        match self {
            Source::Brokers(b) => b.cluster.retry(what, op).await,
            Source::Peer(p) => p.peer.retry(what, op).await,
        }
    }

    /// Every topic (through a peer: every topic this client may read).
    pub async fn topics(&self) -> Result<Vec<TopicMeta>> {
        match self {
            Source::Brokers(b) => b.cluster.refresh(None).await,
            Source::Peer(p) => Ok(p
                .peer
                .topics(&[], false, false)
                .await?
                .into_iter()
                .map(|t| TopicMeta {
                    name: t.name,
                    internal: false,
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| PartitionMeta {
                            index: p.index,
                            leader: -1,
                            leader_epoch: -1,
                        })
                        .collect(),
                })
                .collect()),
        }
    }

    /// How many partitions a topic has; `None` if it does not exist (or, through a
    /// peer, is not listed for this client).
    pub async fn partition_count(&self, topic: &str) -> Result<Option<usize>> {
        match self {
            Source::Brokers(b) => Ok(b.cluster.topic(topic).await?.map(|t| t.partitions.len())),
            Source::Peer(p) => Ok(p
                .peer
                .topics(&[topic.to_string()], false, false)
                .await?
                .into_iter()
                .find(|t| t.name == topic)
                .map(|t| t.partitions.len())),
        }
    }

    pub async fn topic_configs(&self, topic: &str) -> Result<BTreeMap<String, String>> {
        match self {
            Source::Brokers(b) => b.cluster.topic_configs(topic).await,
            Source::Peer(p) => p.peer.topic_configs(topic).await,
        }
    }

    pub async fn log_start(&self, topic: &str, partition: i32) -> Result<i64> {
        Ok(self.bounds(topic, partition).await?.0)
    }

    /// Log start and high watermark.
    pub async fn bounds(&self, topic: &str, partition: i32) -> Result<(i64, i64)> {
        match self {
            Source::Brokers(b) => b.cluster.bounds(topic, partition).await,
            Source::Peer(p) => p.peer.bounds(topic, partition).await,
        }
    }

    /// A tailing read: batches from `offset`, waiting up to `max_wait` when there
    /// are none yet. Brokers: the broker's shared long poll. Peer: what the server
    /// pushed on the partition's subscription.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: i32,
        max_wait: Duration,
    ) -> Result<Fetched> {
        match self {
            Source::Brokers(b) => {
                b.cluster
                    .fetch(topic, partition, offset, max_bytes, max_wait)
                    .await
            }
            Source::Peer(p) => p.tail(topic, partition, offset, max_bytes, max_wait).await,
        }
    }

    /// One catch-up read from `offset`, no waiting.
    pub async fn fetch_piece(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: i32,
        urgent: bool,
        on_head: Option<OnHead>,
    ) -> Result<Fetched> {
        self.lease(topic, partition, urgent)
            .await?
            .fetch(topic, partition, offset, max_bytes, Duration::ZERO, on_head)
            .await
    }

    /// A place for one catch-up fetch: a pooled connection to the partition's
    /// leader, or a stream to the peer.
    pub async fn lease(&self, topic: &str, partition: i32, urgent: bool) -> Result<Lease> {
        match self {
            Source::Brokers(b) => Ok(Lease::Pool(b.lease(topic, partition, urgent).await?)),
            Source::Peer(p) => Ok(Lease::Peer(p.peer.lease(urgent).await?)),
        }
    }

    /// The partition switched between tailing and pieces: a peer's push subscription
    /// of the partition ends (its data would cross the WAN for nothing).
    pub async fn note_switch(&self, topic: &str, partition: i32) {
        match self {
            Source::Brokers(b) => b.note_switch(topic, partition).await,
            Source::Peer(p) => {
                p.peer.note_switch();
                p.unsubscribe(topic, partition)
            }
        }
    }

    /// The partition no longer tails here (its fetcher ended): a peer's push
    /// subscription of it ends.
    pub fn forget_tail(&self, topic: &str, partition: i32) {
        if let Source::Peer(p) = self {
            p.unsubscribe(topic, partition);
        }
    }

    /// The catch-up pools as of their last sizing windows, each with its `broker`
    /// label: a TCP pool per source broker, or the peer's QUIC pool as "peer".
    pub async fn pool_figures(&self) -> Vec<(String, PoolFigures)> {
        match self {
            Source::Brokers(b) => b
                .pools()
                .await
                .iter()
                .map(|p| (p.broker().to_string(), p.figures()))
                .collect(),
            Source::Peer(p) => vec![("peer".to_string(), p.peer.figures())],
        }
    }

    /// Opens ahead what a catch-up reads through (a peer's first connections), while
    /// the destination is being set up. Brokers' pools open as they are used.
    pub fn warm(&self) {
        if let Source::Peer(p) = self {
            p.peer.warm();
        }
    }

    /// Ends what the source holds open (a peer's connections), at shutdown.
    pub fn close(&self) {
        if let Source::Peer(p) = self {
            p.peer.close();
        }
    }
}

/// The source a mirror config names: its brokers, or its `peer` over QUIC.
pub fn from_config(
    c: &ClusterConfig,
    path: &str,
    sock: SocketOptions,
    pool: PoolConfig,
    report_every: Duration,
) -> std::result::Result<Source, ConfigError> {
    let Some(addr) = &c.peer else {
        return Ok(Source::Brokers(Arc::new(Brokers::new(
            Cluster::new(&c.name, &c.bootstrap, sock),
            pool,
            report_every,
        ))));
    };
    let bad = |message: String| ConfigError::Invalid {
        path: path.to_string(),
        field: "source.peer_tls",
        message,
    };
    let t = c.peer_tls.clone().unwrap_or_default();
    let (Some(ca), Some(cert), Some(key)) = (&t.ca, &t.cert, &t.key) else {
        return Err(bad("a peer needs ca, cert and key".into()));
    };
    // What a catch-up may have in flight: as many streams as the TCP pool would
    // have connections.
    let quic = client_config(ca, cert, key, transport(c.peer_congestion, 0)).map_err(bad)?;
    let server_name = t
        .server_name
        .clone()
        .unwrap_or_else(|| host_of(addr).to_string());
    let peer = Peer::new(PeerSettings {
        cluster: c.name.clone(),
        addr: addr.clone(),
        server_name,
        quic,
        connections: c.peer_connections,
        report_every,
        streams: pool.max.max(16),
        request_timeout: sock.request_timeout,
        retry_deadline: sock.retry_deadline,
    })
    .map_err(|message| ConfigError::Invalid {
        path: path.to_string(),
        field: "source.peer",
        message,
    })?;
    Ok(Source::Peer(Arc::new(PeerSource::new(peer))))
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// A place for one catch-up fetch.
pub enum Lease {
    Pool(PoolLease),
    Peer(PeerLease),
}

impl Lease {
    /// Bytes of the answer arrived so far (the connection's or the stream's).
    pub fn progress(&self) -> Arc<ConnStats> {
        match self {
            Lease::Pool(l) => l.progress(),
            Lease::Peer(l) => l.progress(),
        }
    }

    pub async fn fetch(
        self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: i32,
        max_wait: Duration,
        on_head: Option<OnHead>,
    ) -> Result<Fetched> {
        match self {
            Lease::Pool(l) => {
                l.fetch(topic, partition, offset, max_bytes, max_wait, on_head)
                    .await
            }
            Lease::Peer(l) => {
                l.fetch(topic, partition, offset, max_bytes, max_wait, on_head)
                    .await
            }
        }
    }
}
