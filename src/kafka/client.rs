//! A cluster client: bootstrap, metadata and leader routing, retries, and the typed
//! operations the mirror needs (fetch and produce of raw batches, topic admin, producer ids).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::sync::Mutex;

use super::backoff::Backoff;
use super::connection::{Connection, SocketOptions};
use super::error::{KafkaError, Result};
use super::fetch_mux::{fetch_request, send_fetch, FetchMux};

/// One partition as metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMeta {
    pub index: i32,
    pub leader: i32,
    pub leader_epoch: i32,
}

/// One topic as metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    pub name: String,
    pub internal: bool,
    pub partitions: Vec<PartitionMeta>,
}

/// Result of fetching one partition: raw record batches and the partition's bounds.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub records: Bytes,
    pub high_watermark: i64,
    /// The pool connection that carried it (0: the long-poll connection).
    pub conn: u64,
    /// Time spent waiting for a pool connection before the request was sent.
    pub queued: Duration,
}

/// The live state of a cluster: brokers, leaders, and one connection per broker.
pub struct Cluster {
    name: String,
    bootstrap: Vec<String>,
    opts: SocketOptions,
    /// Connections per broker that produce requests are spread over (see
    /// [`Cluster::set_produce_lanes`]).
    produce_lanes: AtomicUsize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    brokers: HashMap<i32, String>,
    topics: BTreeMap<String, TopicMeta>,
    /// Connections by (broker, lane); lane 0 carries everything but produce requests
    /// of partitions given other lanes.
    conns: HashMap<(i32, usize), Connection>,
    muxes: HashMap<i32, FetchMux>,
    bootstrap_conn: Option<Connection>,
}

impl Cluster {
    pub fn new(name: &str, bootstrap: &str, opts: SocketOptions) -> Arc<Cluster> {
        Arc::new(Cluster {
            name: name.to_string(),
            bootstrap: bootstrap
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            opts,
            produce_lanes: AtomicUsize::new(1),
            state: Mutex::new(State::default()),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// How this cluster's connections are set up (security included).
    pub(crate) fn socket_options(&self) -> &SocketOptions {
        &self.opts
    }

    /// Any live connection: a known broker, else a bootstrap address.
    pub(super) async fn any_conn(&self) -> Result<Connection> {
        {
            let st = self.state.lock().await;
            if let Some(c) = st.conns.values().find(|c| c.is_alive()) {
                return Ok(c.clone());
            }
            if let Some(c) = st.bootstrap_conn.as_ref().filter(|c| c.is_alive()) {
                return Ok(c.clone());
            }
        }
        let mut last = String::from("no bootstrap address");
        let mut fatal = None;
        for addr in &self.bootstrap {
            match Connection::connect(addr, &self.opts).await {
                Ok(c) => {
                    self.state.lock().await.bootstrap_conn = Some(c.clone());
                    return Ok(c);
                }
                Err(e) if !e.is_retriable() && fatal.is_none() => fatal = Some(e),
                Err(e) => last = e.to_string(),
            }
        }
        // A TLS or login failure is the answer itself when no address worked:
        // "unreachable" would hide it (and be retried).
        if let Some(e) = fatal {
            return Err(e);
        }
        Err(KafkaError::Unreachable {
            cluster: self.name.clone(),
            bootstrap: self.bootstrap.join(","),
            last,
        })
    }

    /// Adds a broker learnt outside metadata (a coordinator address).
    pub(super) async fn remember_broker(&self, id: i32, addr: String) {
        self.state.lock().await.brokers.entry(id).or_insert(addr);
    }

    /// Spreads produce requests over `n` connections per broker, partition `p` on
    /// connection `p % n`. A broker serves one connection's requests one at a time
    /// (Kafka by design, tansu in its connection loop), so with one connection every
    /// partition's write waits behind the others' (docs/live.md, decision 44). Each
    /// partition still has one connection, so its requests stay in order.
    pub fn set_produce_lanes(&self, n: usize) {
        self.produce_lanes.store(n.max(1), Ordering::Relaxed);
    }

    /// The connection to broker `id`, reconnecting if the old one died.
    pub async fn broker_conn(&self, id: i32) -> Result<Connection> {
        self.lane_conn(id, 0).await
    }

    /// Connection `lane` to broker `id` (see [`Cluster::set_produce_lanes`]).
    async fn lane_conn(&self, id: i32, lane: usize) -> Result<Connection> {
        let addr = {
            let st = self.state.lock().await;
            if let Some(c) = st.conns.get(&(id, lane)).filter(|c| c.is_alive()) {
                return Ok(c.clone());
            }
            st.brokers.get(&id).cloned()
        };
        let addr = match addr {
            Some(a) => a,
            None => {
                self.refresh(None).await?;
                let st = self.state.lock().await;
                st.brokers
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| KafkaError::Unreachable {
                        cluster: self.name.clone(),
                        bootstrap: self.bootstrap.join(","),
                        last: format!("broker {id} is not in metadata"),
                    })?
            }
        };
        // The bootstrap connection often leads to this very broker; taking it over
        // saves a connect and a version handshake (two round trips on a long path).
        let bootstrap = if lane > 0 {
            None
        } else {
            let mut st = self.state.lock().await;
            match st.bootstrap_conn.take() {
                Some(c) if c.is_alive() && c.addr() == addr => Some(c),
                other => {
                    st.bootstrap_conn = other;
                    None
                }
            }
        };
        let conn = match bootstrap {
            Some(c) => c,
            None => Connection::connect(&addr, &self.opts).await?,
        };
        tracing::debug!(cluster = %self.name, broker = id, lane, %addr, "connected");
        self.state
            .lock()
            .await
            .conns
            .insert((id, lane), conn.clone());
        Ok(conn)
    }

    /// Fetches metadata for `topics` (all topics when `None`) and updates the cache.
    /// How long a broker may hold one of our produces (its `timeout_ms`): no longer
    /// than a stall takes to notice, so that a connection silent past it is dead, not
    /// waiting for replicas (decision 49).
    pub fn produce_timeout(&self) -> Duration {
        self.opts.request_timeout.min(self.opts.retry_deadline)
    }

    /// Brokers known from the last metadata answer.
    pub async fn broker_count(&self) -> usize {
        self.state.lock().await.brokers.len()
    }

    /// Ids of the brokers known from the last metadata answer, in order.
    pub async fn broker_ids(&self) -> Vec<i32> {
        let mut ids: Vec<i32> = self.state.lock().await.brokers.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    pub async fn refresh(&self, topics: Option<&[String]>) -> Result<Vec<TopicMeta>> {
        let conn = self.any_conn().await?;
        let req = MetadataRequest::default()
            .with_topics(topics.map(|ts| {
                ts.iter()
                    .map(|t| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
                    })
                    .collect()
            }))
            .with_allow_auto_topic_creation(false);
        let resp = match conn.send(&req).await {
            Ok(r) => r,
            Err(e) => {
                self.state.lock().await.bootstrap_conn = None;
                return Err(e);
            }
        };
        throttle(resp.throttle_time_ms).await;
        let mut out = Vec::new();
        let mut st = self.state.lock().await;
        for b in &resp.brokers {
            st.brokers
                .insert(b.node_id.0, format!("{}:{}", b.host.as_str(), b.port));
        }
        for t in resp.topics {
            let Some(name) = t.name.map(|n| n.0.to_string()) else {
                continue;
            };
            if t.error_code != 0 {
                st.topics.remove(&name);
                continue;
            }
            let mut partitions: Vec<PartitionMeta> = t
                .partitions
                .iter()
                .map(|p| PartitionMeta {
                    index: p.partition_index,
                    leader: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                })
                .collect();
            partitions.sort_by_key(|p| p.index);
            let meta = TopicMeta {
                name: name.clone(),
                internal: t.is_internal,
                partitions,
            };
            st.topics.insert(name, meta.clone());
            out.push(meta);
        }
        Ok(out)
    }

    /// Metadata of one topic, or `None` if the cluster does not have it.
    pub async fn topic(&self, topic: &str) -> Result<Option<TopicMeta>> {
        let metas = self.refresh(Some(&[topic.to_string()])).await?;
        Ok(metas.into_iter().find(|t| t.name == topic))
    }

    async fn leader_of(&self, topic: &str, partition: i32) -> Result<i32> {
        let cached = {
            let st = self.state.lock().await;
            st.topics
                .get(topic)
                .and_then(|t| t.partitions.iter().find(|p| p.index == partition))
                .map(|p| p.leader)
        };
        let leader = match cached {
            Some(l) if l >= 0 => Some(l),
            _ => {
                self.refresh(Some(&[topic.to_string()])).await?;
                let st = self.state.lock().await;
                st.topics
                    .get(topic)
                    .and_then(|t| t.partitions.iter().find(|p| p.index == partition))
                    .map(|p| p.leader)
            }
        };
        match leader {
            Some(l) if l >= 0 => Ok(l),
            _ => Err(KafkaError::NoLeader {
                cluster: self.name.clone(),
                topic: topic.to_string(),
                partition,
            }),
        }
    }

    /// The connection to the current leader of a partition.
    pub async fn leader_conn(&self, topic: &str, partition: i32) -> Result<Connection> {
        let leader = self.leader_of(topic, partition).await?;
        self.broker_conn(leader).await
    }

    /// Runs `op` until it succeeds, fails for good, or the retry deadline passes.
    /// Stale leadership triggers a metadata refresh; backoff doubles up to 2 s.
    pub async fn retry<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let start = tokio::time::Instant::now();
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retriable() && start.elapsed() < self.opts.retry_deadline => {
                    tracing::debug!(cluster = %self.name, what, error = %e, "retrying");
                    if e.needs_metadata_refresh() {
                        let _ = self.refresh(None).await;
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Fetches raw batches of one partition from `offset`, holding the request at the
    /// broker up to `max_wait` when nothing is there yet (0 for catch-up reads).
    /// Concurrent fetches to one broker share a request (see `fetch_mux`).
    pub async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: i32,
        max_wait: Duration,
    ) -> Result<Fetched> {
        let leader = self.leader_of(topic, partition).await?;
        let mux = self.fetch_mux(leader).await?;
        mux.fetch(topic, partition, offset, max_bytes, max_wait)
            .await
    }

    /// The leader of a partition and its address (for a connection pool of its own).
    pub async fn leader_addr(&self, topic: &str, partition: i32) -> Result<(i32, String)> {
        let leader = self.leader_of(topic, partition).await?;
        let st = self.state.lock().await;
        Ok((leader, self.addr_of(&st, leader)?))
    }

    fn addr_of(&self, st: &State, broker: i32) -> Result<String> {
        st.brokers
            .get(&broker)
            .cloned()
            .ok_or_else(|| KafkaError::Unreachable {
                cluster: self.name.clone(),
                bootstrap: self.bootstrap.join(","),
                last: format!("broker {broker} is not in metadata"),
            })
    }

    async fn fetch_mux(&self, broker: i32) -> Result<FetchMux> {
        let mut st = self.state.lock().await;
        let addr = self.addr_of(&st, broker)?;
        match st.muxes.get(&broker) {
            Some(m) if m.addr() == addr => Ok(m.clone()),
            _ => {
                let m = FetchMux::spawn(&addr, self.opts.clone());
                st.muxes.insert(broker, m.clone());
                Ok(m)
            }
        }
    }

    /// Appends raw record batches to a partition; returns the base offset the broker chose.
    pub async fn produce(
        &self,
        topic: &str,
        partition: i32,
        records: Bytes,
        timeout: Duration,
    ) -> Result<i64> {
        let leader = self.leader_of(topic, partition).await?;
        let lane = partition.unsigned_abs() as usize % self.produce_lanes.load(Ordering::Relaxed);
        let conn = self.lane_conn(leader, lane).await?;
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(timeout.as_millis() as i32)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(records))])]);
        let resp = conn.send_wait(&req, timeout).await?;
        throttle(resp.throttle_time_ms).await;
        let part = resp
            .responses
            .into_iter()
            .flat_map(|t| t.partition_responses)
            .find(|p| p.index == partition)
            .ok_or_else(|| KafkaError::Decode {
                addr: conn.addr().to_string(),
                api: "Produce",
                reason: format!("no answer for {topic}/{partition} in response"),
            })?;
        if part.error_code != 0 {
            // Kafka says why it refused a batch (INVALID_RECORD, CORRUPT_MESSAGE...) in
            // the error message and per-record errors: pass that on to the operator.
            let mut said: Vec<String> = part.error_message.iter().map(|m| m.to_string()).collect();
            said.extend(part.record_errors.iter().take(3).map(|r| {
                let msg = r.batch_index_error_message.as_deref().unwrap_or("");
                format!("record {} of the batch: {msg}", r.batch_index)
            }));
            let mut e = partition_err("Produce", topic, partition, part.error_code);
            if let KafkaError::Partition { detail, .. } = &mut e {
                *detail = (!said.is_empty()).then(|| said.join("; "));
            }
            return Err(e);
        }
        Ok(part.base_offset)
    }

    /// Log start offset (ListOffsets EARLIEST).
    pub async fn log_start(&self, topic: &str, partition: i32) -> Result<i64> {
        self.list_offset(topic, partition, -2).await
    }

    /// The high watermark: the offset the next appended record gets.
    ///
    /// ListOffsets(LATEST) gives a first answer; a Fetch there returns the exact high
    /// watermark. The second step guards against brokers whose LATEST lags the true end
    /// (tansu 0.6 answers the last batch's base offset + 1).
    pub async fn end_offset(&self, topic: &str, partition: i32) -> Result<i64> {
        Ok(self.bounds(topic, partition).await?.1)
    }

    /// Log start and high watermark of a partition, as [`Cluster::log_start`] and
    /// [`Cluster::end_offset`] give them, in two round trips instead of four: on a
    /// 200 ms path every partition's start-up waits for these.
    pub async fn bounds(&self, topic: &str, partition: i32) -> Result<(i64, i64)> {
        let (latest, start) = tokio::try_join!(
            self.list_offset(topic, partition, -1),
            self.log_start(topic, partition)
        )?;
        // On the leader's connection, already open: the long-poll connection is opened
        // only when a partition tails (two round trips more here).
        let probe = latest.max(start);
        let conn = self.leader_conn(topic, partition).await?;
        let req = fetch_request(
            std::iter::once((topic, partition, probe, 1)),
            Duration::ZERO,
        );
        let f =
            send_fetch(&conn, &req, Duration::ZERO)
                .await?
                .take(conn.addr(), topic, partition)?;
        Ok((start, f.high_watermark.max(latest)))
    }

    /// ListOffsets for one partition: `timestamp` -1 is LATEST, -2 EARLIEST (read_uncommitted).
    pub async fn list_offset(&self, topic: &str, partition: i32, timestamp: i64) -> Result<i64> {
        let conn = self.leader_conn(topic, partition).await?;
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_isolation_level(0)
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(partition)
                    .with_current_leader_epoch(-1)
                    .with_timestamp(timestamp)])]);
        let resp = conn.send(&req).await?;
        throttle(resp.throttle_time_ms).await;
        let part = resp
            .topics
            .into_iter()
            .flat_map(|t| t.partitions)
            .find(|p| p.partition_index == partition)
            .ok_or_else(|| KafkaError::Decode {
                addr: conn.addr().to_string(),
                api: "ListOffsets",
                reason: format!("no answer for {topic}/{partition}"),
            })?;
        if part.error_code != 0 {
            return Err(partition_err(
                "ListOffsets",
                topic,
                partition,
                part.error_code,
            ));
        }
        Ok(part.offset)
    }
}

pub(super) fn partition_err(
    api: &'static str,
    topic: &str,
    partition: i32,
    code: i16,
) -> KafkaError {
    KafkaError::Partition {
        api,
        topic: topic.to_string(),
        partition,
        code: ResponseError::try_from_code(code).unwrap_or(ResponseError::Unknown(code)),
        detail: None,
    }
}

/// Brokers ask clients to back off by `throttle_time_ms` (KIP-219); we wait it out.
pub(super) async fn throttle(ms: i32) {
    if ms > 0 {
        tracing::debug!(ms, "broker throttled us");
        tokio::time::sleep(Duration::from_millis(ms as u64)).await;
    }
}
