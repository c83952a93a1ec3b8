//! The source's brokers read straight across the WAN: the cluster client for
//! metadata, bounds and long polls, and a pool of TCP connections per leader for
//! catch-up pieces (`transport/pool.rs`), opened as partitions need them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use crate::kafka::client::Cluster;
use crate::kafka::error::Result;
use crate::transport::pool::{Lease, Pool};
use crate::transport::sizer::PoolConfig;

pub struct Brokers {
    pub cluster: Arc<Cluster>,
    pool: PoolConfig,
    /// How often pools log their goodput and RTT.
    report_every: Duration,
    pools: Mutex<HashMap<i32, Arc<Pool>>>,
}

impl Brokers {
    pub fn new(cluster: Arc<Cluster>, pool: PoolConfig, report_every: Duration) -> Brokers {
        Brokers {
            cluster,
            pool,
            report_every,
            pools: Mutex::new(HashMap::new()),
        }
    }

    /// A place on a connection of the pool of the partition's leader, for a catch-up
    /// fetch decided once the place is there (see [`Pool::lease`]). `urgent`: the
    /// partition's writer waits for this one; it may open a connection beyond the
    /// pool's current target instead of queueing.
    pub async fn lease(&self, topic: &str, partition: i32, urgent: bool) -> Result<Lease> {
        let (leader, addr) = self.cluster.leader_addr(topic, partition).await?;
        self.pool(leader, &addr).await.lease(urgent).await
    }

    /// The partition switched between tailing and pieces (see [`Pool::note_switch`]).
    pub async fn note_switch(&self, topic: &str, partition: i32) {
        if let Ok((leader, addr)) = self.cluster.leader_addr(topic, partition).await {
            self.pool(leader, &addr).await.note_switch();
        }
    }

    /// The connection pools open now, one per source broker fetched from.
    pub async fn pools(&self) -> Vec<Arc<Pool>> {
        let mut v: Vec<_> = self.pools.lock().await.values().cloned().collect();
        v.sort_by_key(|p| p.broker());
        v
    }

    /// The broker's pool; a broker that moved to another address gets a new one.
    async fn pool(&self, broker: i32, addr: &str) -> Arc<Pool> {
        let mut pools = self.pools.lock().await;
        match pools.get(&broker) {
            Some(p) if p.addr() == addr => p.clone(),
            _ => {
                let p = Pool::spawn(
                    self.cluster.name(),
                    broker,
                    addr,
                    self.cluster.socket_options().clone(),
                    self.pool,
                    self.report_every,
                );
                pools.insert(broker, p.clone());
                p
            }
        }
    }
}
