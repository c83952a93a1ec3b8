//! The destination's side of a peer: a few QUIC connections to `wanmirror serve`, each
//! request on a stream of its own, reconnected after a cut (docs/peer-protocol.md).
//!
//! Errors come back as [`KafkaError`]s, so the pipeline treats a peer like brokers: a
//! lost stream or connection is retriable, a refusal or a certificate is not, and a
//! Kafka error the served cluster gave comes back with its code.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use tokio::sync::Mutex;

use super::frame::{ErrorCode, Frame, PartitionInfo, TopicInfo, VERSION};
use super::io::{self, close, Frames, Hold, ReadFail, StallWatch};
use super::places::{self, Place, Places};
use super::pool::Pool;
use crate::kafka::client::Fetched;
use crate::kafka::connection::ConnStats;
use crate::kafka::error::{KafkaError, Result};
use crate::kafka::fetch_mux::OnHead;
use crate::kafka::peek;
use crate::transport::pool::PoolFigures;

/// How long a topic's listed bounds answer `bounds` for other partitions.
const BOUNDS_FOR: Duration = Duration::from_millis(500);

/// Node ids per request: 12 bytes each, so 40 K ids is about 480 KB, under the
/// server's 1 MiB request limit.
const NODES_PER_REQUEST: usize = 40_000;

/// How long the QUIC handshake and the hello may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a peer client is set up with.
pub struct PeerSettings {
    /// The source cluster's name in the destination's config: the served cluster
    /// must carry it (provenance and loop safety go by names).
    pub cluster: String,
    /// `host:port` of the serve side's UDP listener.
    pub addr: String,
    /// The name its certificate is checked against (the host of `addr` by default).
    pub server_name: String,
    pub quic: quinn::ClientConfig,
    /// Most QUIC connections the pool may open (1..=8); it starts at half and
    /// adapts (`pool.rs`).
    pub connections: usize,
    /// How often the pool's state is logged.
    pub report_every: Duration,
    /// Most places for catch-up fetches over all connections; the pool sizes the
    /// places below it, and urgent fetches may go beyond (`places.rs`).
    pub streams: usize,
    pub request_timeout: Duration,
    pub retry_deadline: Duration,
}

/// A `wanmirror serve` in the source DC, reached over QUIC.
pub struct Peer {
    s: PeerSettings,
    endpoint: quinn::Endpoint,
    /// The connections, and what sizes them (`pool.rs`).
    pub(super) pool: Pool,
    /// Places for catch-up fetches (streams), as the TCP pool's leases; sized by
    /// the pool's window (`places.rs`).
    pub(super) places: Places,
    ids: AtomicU64,
    /// Partition bounds by topic, and when they were listed.
    bounds: Mutex<std::collections::HashMap<String, (Instant, Vec<PartitionInfo>)>>,
    /// The last served cluster's answer to hello, for the start-up log.
    pub(crate) agent: std::sync::Mutex<String>,
    /// Set by [`Peer::close`].
    closed: AtomicBool,
}

impl Peer {
    pub fn new(s: PeerSettings) -> std::result::Result<Arc<Peer>, String> {
        let bind: SocketAddr = "0.0.0.0:0".parse().expect("a valid address");
        let mut endpoint = quinn::Endpoint::client(bind)
            .map_err(|e| format!("cannot open a UDP socket for the peer: {e}"))?;
        endpoint.set_default_client_config(s.quic.clone());
        let peer = Arc::new(Peer {
            places: Places::new(s.streams.clamp(1, places::FIRST_PLACES)),
            pool: Pool::new(s.connections),
            s,
            endpoint,
            ids: AtomicU64::new(1),
            bounds: Mutex::new(Default::default()),
            agent: std::sync::Mutex::new(String::new()),
            closed: AtomicBool::new(false),
        });
        super::pool::start(&peer);
        Ok(peer)
    }

    pub fn name(&self) -> &str {
        &self.s.cluster
    }

    pub fn addr(&self) -> &str {
        &self.s.addr
    }

    pub(super) fn settings(&self) -> &PeerSettings {
        &self.s
    }

    /// Connections taking new requests now (the pool's size).
    pub fn active(&self) -> usize {
        self.pool.active()
    }

    /// Connections subscriptions are kept on (see [`Pool::subscription_slots`]).
    pub fn subscription_slots(&self) -> usize {
        self.pool.subscription_slots()
    }

    /// The pool as of the sizer's last window.
    pub fn figures(&self) -> PoolFigures {
        self.pool.figures()
    }

    /// A partition switched between tailing and pieces: the demand changed under the
    /// sizer's window.
    pub fn note_switch(&self) {
        self.pool.note_switch();
    }

    /// Counts an open subscription while held.
    pub fn subscription(&self) -> Hold {
        self.pool.subscription()
    }

    /// Runs `op` again after transient failures (a lost stream or connection, a
    /// served cluster briefly unavailable) until the retry deadline.
    pub async fn retry<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let start = Instant::now();
        let mut backoff =
            crate::kafka::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retriable() && start.elapsed() < self.s.retry_deadline => {
                    tracing::debug!(peer = %self.s.addr, what, error = %e, "retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The topics the client may read (all of them, or those named), with partition
    /// bounds, and configs when asked for.
    pub async fn topics(
        &self,
        names: &[String],
        configs: bool,
        bounds: bool,
    ) -> Result<Vec<TopicInfo>> {
        let req = Frame::List {
            topics: names.to_vec(),
            configs,
            bounds,
        };
        let (_, mut frames) = self.request(&req, false).await?;
        match self.answer(&mut frames, "List", None).await? {
            Frame::Topics { topics } => Ok(topics),
            other => Err(self.unexpected("List", &other)),
        }
    }

    /// One partition's bounds: log start and high watermark.
    ///
    /// A listing answers for every partition of the topic: partitions starting at
    /// once (a resume) share one, kept for half a second.
    pub async fn bounds(&self, topic: &str, partition: i32) -> Result<(i64, i64)> {
        let parts = {
            let mut cache = self.bounds.lock().await;
            match cache.get(topic).filter(|(at, _)| at.elapsed() < BOUNDS_FOR) {
                Some((_, parts)) => parts.clone(),
                None => {
                    let t = self.topics(&[topic.to_string()], false, true).await?;
                    let parts: Vec<PartitionInfo> = t
                        .into_iter()
                        .find(|t| t.name == topic)
                        .map(|t| t.partitions)
                        .unwrap_or_default();
                    cache.insert(topic.to_string(), (Instant::now(), parts.clone()));
                    parts
                }
            }
        };
        parts
            .into_iter()
            .find(|p| p.index == partition)
            .map(|p| (p.log_start, p.end))
            .ok_or_else(|| KafkaError::Partition {
                api: "List",
                topic: topic.to_string(),
                partition,
                code: ResponseError::UnknownTopicOrPartition,
                detail: Some(format!("the peer {} does not list it", self.s.addr)),
            })
    }

    /// A topic's configs as the served cluster has them.
    pub async fn topic_configs(&self, topic: &str) -> Result<BTreeMap<String, String>> {
        let t = self.topics(&[topic.to_string()], true, false).await?;
        Ok(t.into_iter()
            .find(|t| t.name == topic)
            .map(|t| t.configs.into_iter().collect())
            .unwrap_or_default())
    }

    /// A place for one catch-up fetch; the fetch goes round robin over the connections.
    /// An `urgent` one (the writer waits for it) does not wait for a place.
    pub async fn lease(self: &Arc<Self>, urgent: bool) -> Result<PeerLease> {
        let queued = Instant::now();
        let place = self
            .places
            .acquire(urgent)
            .await
            .ok_or_else(|| self.lost("the peer client is closed"))?;
        Ok(PeerLease {
            peer: self.clone(),
            _place: place,
            stats: Arc::new(ConnStats::default()),
            queued: queued.elapsed(),
        })
    }

    /// Whole batches of `[offset, end)` (`end` -1: unbounded), at most `max_bytes`,
    /// waiting up to `max_wait` for data at the end. `on_head` learns the answer's
    /// high watermark and first batch when the server's head frame arrives, before
    /// the records do.
    #[allow(clippy::too_many_arguments)]
    pub async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        end: i64,
        max_bytes: i32,
        max_wait: Duration,
        on_head: Option<OnHead>,
        stats: Option<Arc<ConnStats>>,
    ) -> Result<Fetched> {
        let req = Frame::Fetch {
            topic: topic.to_string(),
            partition,
            offset,
            end,
            max_bytes: max_bytes.max(1) as u32,
            max_wait_ms: max_wait.as_millis().min(u32::MAX as u128) as u32,
        };
        let _fetching = self.pool.fetch();
        let progress = stats.unwrap_or_default();
        let (slot, mut frames) = self.request(&req, true).await?;
        let what = Some((topic, partition));
        let mut on_head = on_head;
        let answer = async {
            loop {
                match self.answer(&mut frames, "Fetch", what).await? {
                    Frame::Head {
                        high_watermark,
                        first,
                    } => {
                        if let Some(f) = on_head.take() {
                            f(peek::Head {
                                high_watermark,
                                first,
                            });
                        }
                    }
                    Frame::Batches {
                        high_watermark,
                        records,
                    } => {
                        self.pool.answered(records.len());
                        return Ok(Fetched {
                            records,
                            high_watermark,
                            conn: slot as u64 + 1,
                            queued: Duration::ZERO,
                        });
                    }
                    other => return Err(self.unexpected("Fetch", &other)),
                }
            }
        };
        // Progress is what the fetch's connection receives of fetch answers, any of
        // them: serve sends the oldest first, so a fetch waiting its turn gets nothing
        // while its connection is busy, and is neither stalled nor worth a second copy.
        // It times out when that stops for the request timeout, not when the whole
        // answer is late (`StallWatch`; the first byte may take the server's wait on
        // top).
        let rx = self.pool.slots[slot].rx.clone();
        let mut seen = rx.bytes_in.load(Ordering::Relaxed);
        let first = self.s.request_timeout + max_wait;
        let mut watch = StallWatch::new(Instant::now(), first, self.s.request_timeout);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tokio::pin!(answer);
        loop {
            tokio::select! {
                r = &mut answer => return r,
                _ = tick.tick() => {
                    let now = rx.bytes_in.load(Ordering::Relaxed);
                    progress.bytes_in.fetch_add(now.saturating_sub(seen), Ordering::Relaxed);
                    seen = now;
                    if watch.stalled(Instant::now(), progress.bytes_in.load(Ordering::Relaxed)) {
                        return Err(KafkaError::Timeout {
                            addr: self.s.addr.clone(),
                            api: "peer Fetch (its connection received nothing for the request timeout)",
                            ms: self.s.request_timeout.as_millis() as u64,
                        });
                    }
                }
            }
        }
    }

    /// Opens a subscription: the server pushes the partition's batches from
    /// `offset` as they are appended, with no request per answer.
    pub async fn subscribe(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_wait: Duration,
    ) -> Result<(usize, Frames)> {
        let req = Frame::Subscribe {
            topic: topic.to_string(),
            partition,
            offset,
            max_wait_ms: max_wait.as_millis().min(30_000) as u32,
        };
        // A subscription holds its stream for as long as the partition tails: each
        // goes on the least-loaded connection.
        let slot = self.pool.least_loaded();
        self.request_on(slot, &req).await
    }

    /// The next pushed answer of a subscription: (high watermark, records).
    pub async fn pushed(
        &self,
        frames: &mut Frames,
        topic: &str,
        partition: i32,
    ) -> Result<(i64, bytes::Bytes)> {
        match self
            .answer(frames, "Subscribe", Some((topic, partition)))
            .await?
        {
            Frame::Batches {
                high_watermark,
                records,
            } => Ok((high_watermark, records)),
            other => Err(self.unexpected("Subscribe", &other)),
        }
    }

    /// Asks the server to hash `[from, to)` of a partition in leaves of
    /// `leaf_offsets` offsets; the tree then answers node requests on its stream.
    pub async fn tree(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        to: i64,
        leaf_offsets: i64,
    ) -> Result<RemoteTree> {
        let req = Frame::Tree {
            topic: topic.to_string(),
            partition,
            from,
            to,
            leaf_offsets,
        };
        let (send, mut frames) = self.open(&req).await?;
        // Building the tree reads the partition in the source DC: no deadline here
        // (the connection's keep-alive notices a dead peer).
        match self
            .answer(&mut frames, "Tree", Some((topic, partition)))
            .await?
        {
            Frame::TreeBuilt { leaves } => Ok(RemoteTree {
                send,
                frames,
                leaves,
                topic: topic.to_string(),
                partition,
            }),
            other => Err(self.unexpected("Tree", &other)),
        }
    }

    /// Bytes this client's connections sent and received over UDP (what crossed the
    /// WAN, QUIC and TLS overhead included), closed connections' too.
    pub async fn wire_bytes(&self) -> (u64, u64) {
        self.pool.wire_bytes().await
    }

    /// A stream with `req` sent and the send side left open (a tree's requests
    /// follow on it).
    async fn open(&self, req: &Frame) -> Result<(quinn::SendStream, Frames)> {
        let (mut send, recv) = self.stream_on(0).await?;
        io::send(&mut send, req)
            .await
            .map_err(|e| self.lost(&format!("sending a request: {e}")))?;
        Ok((send, Frames::new(recv)))
    }

    /// Opens a stream (connecting if needed) and sends `req` on it. Data requests
    /// (fetches) go round robin over the pool's connections, so each has its
    /// congestion window open when a burst comes; the rest (listings, trees) go on the
    /// first, so that a diff opens one connection only (subscriptions: see
    /// [`Peer::subscribe`]).
    pub(crate) async fn request(&self, req: &Frame, data: bool) -> Result<(usize, Frames)> {
        let slot = if data {
            self.next_id() as usize % self.active()
        } else {
            0
        };
        self.request_on(slot, req).await
    }

    /// A stream of its own on a slot's connection: the server admits a few hundred
    /// at a time per connection, and waiting for a place past the request timeout
    /// is a failure (retried), not a hang.
    async fn stream_on(&self, slot: usize) -> Result<(quinn::SendStream, quinn::RecvStream)> {
        let conn = self.connection(slot).await?;
        match tokio::time::timeout(self.s.request_timeout, conn.open_bi()).await {
            Ok(r) => r.map_err(|e| self.conn_err(&e)),
            Err(_) => Err(KafkaError::Timeout {
                addr: self.s.addr.clone(),
                api: "peer stream",
                ms: self.s.request_timeout.as_millis() as u64,
            }),
        }
    }

    async fn request_on(&self, slot: usize, req: &Frame) -> Result<(usize, Frames)> {
        // Counted before the stream opens, so the sizer never closes the connection
        // under a request about to start on it; and if the pool shrank past the slot
        // meanwhile, the request goes to one it keeps.
        let mut slot = slot;
        let mut hold = Hold::new(&self.pool.slots[slot].open);
        while slot >= self.pool.active() {
            slot %= self.pool.active();
            hold = Hold::new(&self.pool.slots[slot].open);
        }
        let (mut send, recv) = self.stream_on(slot).await?;
        io::send(&mut send, req)
            .await
            .map_err(|e| self.lost(&format!("sending a request: {e}")))?;
        let _ = send.finish();
        let mut frames = Frames::new(recv).holding(hold);
        // Fetch answers only: pushes go before them at serve, and a connection busy
        // with pushes says nothing of whether a fetch's answer still comes.
        if matches!(req, Frame::Fetch { .. }) {
            frames = frames.counting(self.pool.slots[slot].rx.clone());
        }
        Ok((slot, frames))
    }

    /// The next frame of an answer; an error frame becomes the error it names.
    async fn answer(
        &self,
        frames: &mut Frames,
        api: &'static str,
        what: Option<(&str, i32)>,
    ) -> Result<Frame> {
        match frames.next().await {
            Ok(Some(Frame::Error {
                code,
                kafka,
                message,
            })) => Err(self.refusal(api, what, code, kafka, message)),
            Ok(Some(f)) => Ok(f),
            Ok(None) => Err(self.lost(&format!("the {api} answer ended early"))),
            Err(ReadFail::Stream(e)) => Err(self.lost(&e.to_string())),
            Err(ReadFail::Frame(e)) => Err(KafkaError::Decode {
                addr: self.s.addr.clone(),
                api: "peer",
                reason: e.to_string(),
            }),
        }
    }

    fn refusal(
        &self,
        api: &'static str,
        what: Option<(&str, i32)>,
        code: ErrorCode,
        kafka: i16,
        message: String,
    ) -> KafkaError {
        match code {
            ErrorCode::Kafka => match (what, ResponseError::try_from_code(kafka)) {
                (Some((topic, partition)), Some(code)) => KafkaError::Partition {
                    api,
                    topic: topic.to_string(),
                    partition,
                    code,
                    detail: Some(message),
                },
                (None, Some(code)) => KafkaError::Broker {
                    api,
                    code,
                    detail: Some(message),
                },
                _ => self.refused(format!("{api}: Kafka error {kafka}: {message}")),
            },
            // The serve side failed reading its cluster: retried, then the partition
            // restarts (a broker may come back).
            ErrorCode::Unavailable | ErrorCode::Internal => {
                self.lost(&format!("{api} failed on the serve side: {message}"))
            }
            ErrorCode::UnknownTopic => match what {
                Some((topic, partition)) => KafkaError::Partition {
                    api,
                    topic: topic.to_string(),
                    partition,
                    code: ResponseError::UnknownTopicOrPartition,
                    detail: Some(message),
                },
                None => self.refused(message),
            },
            _ => self.refused(message),
        }
    }

    /// Opens, in the background, the connections that the pool's active slots lack.
    /// Called before a catch-up starts, so the handshakes overlap the destination's
    /// set-up, and when the pool grows, so a new slot's first fetch finds its
    /// connection open. Otherwise each waits two round trips: QUIC's handshake, then
    /// the hello. A failure here is only logged: the slot's next request connects
    /// again and reports it.
    pub fn warm(self: &Arc<Self>) {
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        for slot in 0..self.pool.active() {
            let open = self.pool.slots[slot]
                .conn
                .try_lock()
                .map(|c| c.as_ref().is_some_and(|c| c.close_reason().is_none()));
            // Err: a request holds the slot, opening it or using it.
            if !matches!(open, Ok(false)) {
                continue;
            }
            let peer = self.clone();
            tokio::spawn(async move {
                if let Err(e) = peer.connection(slot).await {
                    tracing::debug!(peer = %peer.s.addr, connection = slot, error = %e, "opening a peer connection ahead of its requests failed");
                }
            });
        }
    }

    /// The slot's connection, opened (and the hello exchanged) if it has none or its
    /// last one closed.
    async fn connection(&self, slot: usize) -> Result<quinn::Connection> {
        // After `close`, nothing reconnects (nor logs that it does).
        if self.closed.load(Ordering::Relaxed) {
            return Err(self.lost("the peer client is closed"));
        }
        let place = &self.pool.slots[slot];
        let mut held = place.conn.lock().await;
        if let Some(c) = held.as_ref().filter(|c| c.close_reason().is_none()) {
            return Ok(c.clone());
        }
        if let Some(old) = held.take() {
            self.pool.retire(&old);
            tracing::info!(peer = %self.s.addr, connection = slot, "peer connection closed; reconnecting");
        }
        let c = tokio::time::timeout(CONNECT_TIMEOUT, self.connect())
            .await
            .unwrap_or_else(|_| {
                Err(KafkaError::Unreachable {
                    cluster: self.s.cluster.clone(),
                    bootstrap: self.s.addr.clone(),
                    last: format!(
                        "no answer within {} s from the peer (is wanmirror serve listening on this UDP port, and does the path let UDP through?)",
                        CONNECT_TIMEOUT.as_secs()
                    ),
                })
            })?;
        tracing::debug!(peer = %self.s.addr, connection = slot, rtt_ms = c.rtt().as_millis() as u64, "peer connection open");
        place.generation.fetch_add(1, Ordering::Relaxed);
        *held = Some(c.clone());
        Ok(c)
    }

    async fn connect(&self) -> Result<quinn::Connection> {
        let addr = tokio::net::lookup_host(&self.s.addr)
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| KafkaError::Unreachable {
                cluster: self.s.cluster.clone(),
                bootstrap: self.s.addr.clone(),
                last: "the peer address does not resolve".into(),
            })?;
        let conn = self
            .endpoint
            .connect(addr, &self.s.server_name)
            .map_err(|e| self.refused(format!("cannot connect: {e}")))?
            .await
            .map_err(|e| self.conn_err(&e))?;
        let (mut send, recv) = conn.open_bi().await.map_err(|e| self.conn_err(&e))?;
        let hello = Frame::Hello {
            min: VERSION,
            max: VERSION,
            agent: format!("wanmirror {}", env!("CARGO_PKG_VERSION")),
        };
        // A refusal may close the connection while the hello is still being sent:
        // the close carries the server's reason, which is the error to report.
        if let Err(e) = io::send(&mut send, &hello).await {
            return Err(conn.close_reason().map_or_else(
                || self.lost(&format!("sending hello: {e}")),
                |r| self.conn_err(&r),
            ));
        }
        let _ = send.finish();
        let mut frames = Frames::new(recv);
        match self.answer(&mut frames, "Hello", None).await {
            Ok(Frame::Welcome { cluster, agent, .. }) => {
                if cluster != self.s.cluster {
                    conn.close(quinn::VarInt::from_u32(close::DONE), b"wrong cluster");
                    return Err(self.refused(format!(
                        "the peer serves cluster {cluster:?}, but [source] name is {:?}: names must match (provenance and loop safety go by them)",
                        self.s.cluster
                    )));
                }
                *self.agent.lock().unwrap_or_else(|p| p.into_inner()) = agent;
                Ok(conn)
            }
            Ok(other) => Err(self.unexpected("Hello", &other)),
            // A connection closed during the hello carries the server's reason.
            Err(e) => Err(conn.close_reason().map_or(e, |r| self.conn_err(&r))),
        }
    }

    /// What a closed or failed QUIC connection means, in the operator's words.
    fn conn_err(&self, e: &quinn::ConnectionError) -> KafkaError {
        use quinn::ConnectionError as C;
        let addr = self.s.addr.clone();
        let crypto = |code: u64| (0x100..0x200).contains(&code);
        match e {
            C::TransportError(t) if crypto(u64::from(t.code)) => KafkaError::Tls {
                addr,
                reason: explain_local(&t.reason),
            },
            C::ConnectionClosed(c) if crypto(u64::from(c.error_code)) => KafkaError::Tls {
                addr,
                reason: explain_alert(u64::from(c.error_code) as u8, &c.reason),
            },
            // Refusals say why; anything else (a shutdown, a limit, a close without
            // a code) is a connection to open again.
            C::ApplicationClosed(a)
                if a.error_code.into_inner() == close::UNKNOWN_CLIENT as u64 =>
            {
                self.refused(format!(
                    "the peer closed the connection: {}",
                    String::from_utf8_lossy(&a.reason)
                ))
            }
            C::ApplicationClosed(a) => self.lost(&format!(
                "the peer closed the connection: {}",
                String::from_utf8_lossy(&a.reason)
            )),
            other => self.lost(&other.to_string()),
        }
    }

    fn lost(&self, reason: &str) -> KafkaError {
        KafkaError::ConnectionLost {
            addr: self.s.addr.clone(),
            reason: reason.to_string(),
        }
    }

    fn refused(&self, reason: String) -> KafkaError {
        KafkaError::PeerRefused {
            addr: self.s.addr.clone(),
            reason,
        }
    }

    fn unexpected(&self, api: &'static str, f: &Frame) -> KafkaError {
        KafkaError::Decode {
            addr: self.s.addr.clone(),
            api: "peer",
            reason: format!("unexpected frame in the {api} answer: {f:?}"),
        }
    }

    /// Closes every connection (at shutdown), so the server sees us go at once.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.endpoint
            .close(quinn::VarInt::from_u32(close::DONE), b"done");
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }
}

/// A local TLS failure (the server's certificate did not verify).
fn explain_local(reason: &str) -> String {
    if reason.contains("UnknownIssuer") {
        format!("the peer's certificate is not signed by the CA in peer_tls.ca ({reason})")
    } else if reason.contains("NotValidForName") {
        format!("the peer's certificate does not name the peer's host ({reason}); set peer_tls.server_name to a name it holds")
    } else {
        reason.to_string()
    }
}

/// A TLS alert the server sent: it refused our certificate.
fn explain_alert(alert: u8, reason: &[u8]) -> String {
    let why = String::from_utf8_lossy(reason);
    match alert {
        // bad_certificate, unknown_ca, decrypt_error (a CA of the same name but
        // another key), certificate_required.
        42 | 48 | 51 | 116 => format!(
            "the peer refused our client certificate (TLS alert {alert}{}): it must be signed by the CA the serve side names in client_ca; see peer_tls.cert",
            if why.is_empty() { String::new() } else { format!(": {why}") }
        ),
        120 => "the peer does not speak the wanmirror protocol (no ALPN wanmirror/1 in common)".into(),
        _ => format!("the peer ended the TLS handshake with alert {alert} {why}"),
    }
}

/// A partition's Merkle tree held by the server, asked node by node.
pub struct RemoteTree {
    send: quinn::SendStream,
    frames: Frames,
    pub leaves: u64,
    topic: String,
    partition: i32,
}

impl RemoteTree {
    /// The hashes of `ids` (layer 0: leaves); `None` where a node does not exist.
    pub async fn nodes(
        &mut self,
        peer: &Peer,
        ids: &[(u32, u64)],
    ) -> Result<Vec<Option<super::frame::Hash>>> {
        // A layer can be wide (a destination far behind differs everywhere): asked
        // in parts, each well inside the server's request limit.
        let mut out = Vec::with_capacity(ids.len());
        for part in ids.chunks(NODES_PER_REQUEST) {
            let req = Frame::Nodes { ids: part.to_vec() };
            io::send(&mut self.send, &req)
                .await
                .map_err(|e| peer.lost(&format!("sending a node request: {e}")))?;
            match peer
                .answer(
                    &mut self.frames,
                    "Nodes",
                    Some((&self.topic, self.partition)),
                )
                .await?
            {
                Frame::Hashes { hashes } if hashes.len() == part.len() => out.extend(hashes),
                other => return Err(peer.unexpected("Nodes", &other)),
            }
        }
        Ok(out)
    }

    /// Record counts of leaves `[first, first + count)`.
    pub async fn counts(&mut self, peer: &Peer, first: u64, count: u32) -> Result<Vec<u64>> {
        io::send(&mut self.send, &Frame::Counts { first, count })
            .await
            .map_err(|e| peer.lost(&format!("sending a count request: {e}")))?;
        match peer
            .answer(
                &mut self.frames,
                "Counts",
                Some((&self.topic, self.partition)),
            )
            .await?
        {
            Frame::LeafCounts { counts } if counts.len() == count as usize => Ok(counts),
            other => Err(peer.unexpected("Counts", &other)),
        }
    }

    /// Ends the stream: the server drops the tree.
    pub fn finish(mut self) {
        let _ = self.send.finish();
    }
}

/// A place for one catch-up fetch (see [`Peer::lease`]); its counter grows while the
/// fetch's connection receives (see [`Peer::fetch`]), which the catch-up driver
/// watches to steal stalled pieces.
pub struct PeerLease {
    peer: Arc<Peer>,
    _place: Place,
    stats: Arc<ConnStats>,
    queued: Duration,
}

impl PeerLease {
    pub fn progress(&self) -> Arc<ConnStats> {
        self.stats.clone()
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
        let mut f = self
            .peer
            .fetch(
                topic,
                partition,
                offset,
                -1,
                max_bytes,
                max_wait,
                on_head,
                Some(self.stats.clone()),
            )
            .await?;
        f.queued = self.queued;
        Ok(f)
    }
}
