//! One TCP connection to one broker: framing, correlation ids, many requests in flight.
//!
//! A writer task owns the write half and a reader task the read half; callers hand a
//! request to the writer and wait on a oneshot for the matching response, matched by
//! correlation id. Several callers share one connection without a lock, but a broker
//! answers a connection's requests in the order they came (Kafka and tansu both), so a
//! request held at the broker delays the ones behind it. Pooling several connections
//! per broker is built on top of this type.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use std::os::fd::{AsRawFd, RawFd};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};

use super::error::{KafkaError, Result};
use super::expect::{Expect, OVERSHOOT};
use super::limit::Limit;
use super::peek::HEAD_BYTES;
use super::security::{login::login, Security};
use super::shape;
use super::versions::Versions;

/// Largest response frame we accept; larger means a corrupt stream.
const MAX_FRAME: usize = 256 * 1024 * 1024;
const CLIENT_ID: &str = "wanmirror";
/// Most bytes a read of a large response waits to gather (see `read_loop`).
const LOW_WATER: usize = 64 * 1024;
/// The steps of a connection's setup, as a timeout names them.
const STAGES: [&str; 4] = [
    "TCP connect",
    "TLS handshake",
    "version handshake",
    "SASL login",
];
/// Largest single read under a bandwidth cap (see `read_loop`).
const CAPPED_READ: usize = 64 * 1024;

struct Outgoing {
    api_key: i16,
    version: i16,
    body: Bytes,
    waiter: Waiter,
}

/// Who waits for a response: the whole frame, and optionally its first bytes early.
struct Waiter {
    reply: oneshot::Sender<Result<Bytes>>,
    head: Option<oneshot::Sender<Bytes>>,
    /// The largest frame the request's caller expects (see `expect`).
    expect: usize,
}

type Pending = Arc<Mutex<HashMap<i32, Waiter>>>;

/// A live connection to one broker. Cheap to clone; dropping the last clone closes it.
#[derive(Clone)]
pub struct Connection {
    addr: Arc<str>,
    tx: mpsc::Sender<Outgoing>,
    versions: Arc<Versions>,
    dead: Arc<Dead>,
    /// The requests waiting for an answer, shared with the I/O tasks.
    pending: Pending,
    /// Set to true to stop both I/O tasks, which closes the socket.
    close: Arc<watch::Sender<bool>>,
    request_timeout: Duration,
    /// With requests out and not a byte in for this long, the connection is stalled
    /// (a half-open socket, a black-holed path): it is closed and its requests fail.
    stall_timeout: Duration,
    /// The longest wait any request on this connection asked the broker to hold it
    /// (ms): a request queued behind a long poll sees nothing for that long, and that
    /// is not a stall.
    longest_wait_ms: Arc<AtomicU64>,
    stats: Arc<ConnStats>,
}

/// What one connection has carried, for goodput and RTT reports.
#[derive(Debug, Default)]
pub struct ConnStats {
    /// Response bytes received (frames, without the length prefix).
    pub bytes_in: AtomicU64,
    /// The kernel's smoothed RTT of this socket in microseconds (TCP_INFO), 0 if unknown.
    pub srtt_us: AtomicU32,
}

/// Socket options applied when connecting.
#[derive(Debug, Clone)]
pub struct SocketOptions {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// `None` leaves the receive buffer to kernel autotuning (a fixed size turns it off).
    pub recv_buffer: Option<usize>,
    /// How long [`crate::kafka::client::Cluster::retry`] keeps retrying a transient failure.
    pub retry_deadline: Duration,
    /// TCP congestion control for this socket (e.g. "bbr"); `None` keeps the system's.
    /// It governs what we send, so it matters on connections where we are the sender.
    pub congestion: Option<String>,
    /// TLS and SASL for every connection to the cluster (plaintext by default).
    pub security: Security,
    /// The bandwidth cap every connection to the cluster shares (`transport.max_mbit`).
    pub limit: Option<Arc<Limit>>,
}

impl Default for SocketOptions {
    fn default() -> Self {
        SocketOptions {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            recv_buffer: None,
            retry_deadline: Duration::from_secs(60),
            congestion: None,
            security: Security::default(),
            limit: None,
        }
    }
}

impl Connection {
    /// Connects, starts the I/O tasks, negotiates API versions and logs in: all of it
    /// within `connect_timeout`, so that no listener can hold a connect longer.
    pub async fn connect(addr: &str, opts: &SocketOptions) -> Result<Connection> {
        let connect_err = |source| KafkaError::Connect {
            addr: addr.to_string(),
            source,
        };
        // Which step the setup is in, for the timeout's message (see STAGES).
        let stage = std::sync::atomic::AtomicUsize::new(0);
        let setup = async {
            let stream = TcpStream::connect(addr).await.map_err(connect_err)?;
            // Small requests (fetch, acks) must not wait for Nagle.
            stream.set_nodelay(true).map_err(connect_err)?;
            let sock = socket2::SockRef::from(&stream);
            if let Some(size) = opts.recv_buffer {
                sock.set_recv_buffer_size(size).map_err(connect_err)?;
            }
            if let Some(cc) = &opts.congestion {
                sock.set_tcp_congestion(cc.as_bytes()).map_err(|e| {
                    connect_err(std::io::Error::new(
                        e.kind(),
                        format!("congestion control {cc:?}: {e}"),
                    ))
                })?;
            }
            // A stall must be noticed within the retry window, or a retried operation
            // hangs on a dead connection past it instead of being retried elsewhere.
            let stall = opts.request_timeout.min(opts.retry_deadline);
            let io = match &opts.security.tls {
                None => Io::Plain(stream),
                Some(tls) => {
                    stage.store(1, Ordering::Relaxed);
                    Io::Tls(Box::new(tls.handshake(addr, stream).await?))
                }
            };
            let mut conn =
                Connection::start_io(io, addr, opts.request_timeout, stall, opts.limit.clone());
            stage.store(2, Ordering::Relaxed);
            conn.versions = Arc::new(conn.negotiate(opts.security.tls.is_some()).await?);
            if let Some(l) = &opts.security.sasl {
                stage.store(3, Ordering::Relaxed);
                login(&conn, l.clone()).await?;
            }
            Ok(conn)
        };
        match tokio::time::timeout(opts.connect_timeout, setup).await {
            Ok(r) => r,
            // Retriable: a slow path or a busy broker may answer next time. At start
            // the error is final all the same, and says what did not answer.
            Err(_) => {
                let at = STAGES[stage.load(Ordering::Relaxed).min(STAGES.len() - 1)];
                let hint = match at {
                    "TLS handshake" => " (is this a plaintext listener?)",
                    _ => "",
                };
                Err(connect_err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "no answer to the {at} within {} s{hint}",
                        opts.connect_timeout.as_secs()
                    ),
                )))
            }
        }
    }

    /// Starts the I/O tasks on a connected socket, before any version handshake.
    #[cfg(test)]
    fn start(
        stream: TcpStream,
        addr: &str,
        request_timeout: Duration,
        stall_timeout: Duration,
    ) -> Connection {
        Connection::start_io(
            Io::Plain(stream),
            addr,
            request_timeout,
            stall_timeout,
            None,
        )
    }

    /// Starts the I/O tasks on a connected (and, with TLS, handshaken) stream.
    fn start_io(
        io: Io,
        addr: &str,
        request_timeout: Duration,
        stall_timeout: Duration,
        limit: Option<Arc<Limit>>,
    ) -> Connection {
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let dead = Arc::new(Dead::default());
        let (tx, rx) = mpsc::channel::<Outgoing>(1024);
        let (close, closed) = watch::channel(false);
        let addr_arc: Arc<str> = Arc::from(addr);
        let stats = Arc::new(ConnStats::default());
        let shared = Shared {
            addr: addr_arc.clone(),
            pending: pending.clone(),
            dead: dead.clone(),
            limit,
        };
        // The read loop holds its half, and with it the socket, for as long as it
        // uses the descriptor.
        match io {
            Io::Plain(stream) => {
                let probe = Probe {
                    fd: stream.as_raw_fd(),
                    low_water: true,
                };
                let (rd, wr) = stream.into_split();
                spawn_io(closed, shared, rd, wr, rx, probe, stats.clone());
            }
            Io::Tls(stream) => {
                // A TLS record is decrypted whole: the kernel's low-water mark counts
                // ciphertext, part of which rustls may already hold, so it could wait
                // for bytes that never come. TLS reads come a record at a time anyway.
                let probe = Probe {
                    fd: stream.get_ref().0.as_raw_fd(),
                    low_water: false,
                };
                let (rd, wr) = tokio::io::split(*stream);
                spawn_io(closed, shared, rd, wr, rx, probe, stats.clone());
            }
        }
        Connection {
            addr: addr_arc,
            tx,
            versions: Arc::new(Versions::default()),
            dead,
            pending,
            close: Arc::new(close),
            request_timeout,
            stall_timeout,
            longest_wait_ms: Arc::new(AtomicU64::new(0)),
            stats,
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn stats(&self) -> &ConnStats {
        &self.stats
    }

    /// The same counters, to watch from elsewhere while a request is out.
    pub fn stats_handle(&self) -> Arc<ConnStats> {
        self.stats.clone()
    }

    /// False once the socket failed; the owner should reconnect.
    pub fn is_alive(&self) -> bool {
        !self.dead.load(Ordering::Relaxed) && !self.tx.is_closed()
    }

    /// `tls`: whether this connection speaks TLS (a plaintext one that a listener
    /// drops is told to).
    async fn negotiate(&self, tls: bool) -> Result<Versions> {
        // v3 is flexible and carries our client name; brokers that do not know it answer
        // UNSUPPORTED_VERSION in a v0 body, after which v0 is asked.
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let resp: ApiVersionsResponse = match self.send_versioned(&req, 3).await {
            Ok(r) if r.error_code == 0 => r,
            // Kafka's TLS listeners close a plaintext connection without a word; say
            // what that most likely means (the error stays retriable: a broker going
            // down closes connections too).
            Err(KafkaError::ConnectionLost { addr, reason }) => {
                let hint = if tls {
                    ""
                } else {
                    " (a TLS listener does this to a plaintext client: configure TLS for this cluster, [source.tls] or [destination.tls])"
                };
                return Err(KafkaError::ConnectionLost {
                    addr,
                    reason: format!("{reason} during the version handshake{hint}"),
                });
            }
            // Only an answer that says "not this version" (an error code, or a v0
            // body that does not decode as v3) is worth asking again at v0.
            Err(e) if !matches!(e, KafkaError::Decode { .. }) => return Err(e),
            _ => {
                self.send_versioned(&ApiVersionsRequest::default(), 0)
                    .await?
            }
        };
        if resp.error_code != 0 {
            return Err(broker_err("ApiVersions", resp.error_code, None));
        }
        Ok(Versions::from_response(&resp))
    }

    /// Sends a request at the highest version both sides support.
    pub async fn send<R: Request + Expect>(&self, req: &R) -> Result<R::Response> {
        let version = self.versions.pick::<R>(&self.addr)?;
        self.send_versioned_wait(req, version, Duration::ZERO).await
    }

    /// Like [`Connection::send`], for requests the broker may hold for `wait` (long polls).
    pub async fn send_wait<R: Request + Expect>(
        &self,
        req: &R,
        wait: Duration,
    ) -> Result<R::Response> {
        let version = self.versions.pick::<R>(&self.addr)?;
        self.send_versioned_wait(req, version, wait).await
    }

    /// Sends a request at an explicit version.
    pub async fn send_versioned<R: Request + Expect>(
        &self,
        req: &R,
        version: i16,
    ) -> Result<R::Response> {
        self.send_versioned_wait(req, version, Duration::ZERO).await
    }

    /// The version [`Connection::send`] would use for `R`.
    pub fn version<R: Request>(&self) -> Result<i16> {
        self.versions.pick::<R>(&self.addr)
    }

    /// Like [`Connection::send_versioned`] for a request the broker may hold for
    /// `wait`, and `head` receives the response frame's first bytes (at least
    /// [`HEAD_BYTES`], header included) as soon as they are in, if the response is
    /// longer than that.
    pub async fn send_with_head<R: Request + Expect>(
        &self,
        req: &R,
        version: i16,
        wait: Duration,
        head: oneshot::Sender<Bytes>,
    ) -> Result<R::Response> {
        self.exchange(req, version, wait, Some(head)).await
    }

    async fn send_versioned_wait<R: Request + Expect>(
        &self,
        req: &R,
        version: i16,
        wait: Duration,
    ) -> Result<R::Response> {
        self.exchange(req, version, wait, None).await
    }

    async fn exchange<R: Request + Expect>(
        &self,
        req: &R,
        version: i16,
        wait: Duration,
        head: Option<oneshot::Sender<Bytes>>,
    ) -> Result<R::Response> {
        let api = api_name(R::KEY);
        let mut body = BytesMut::with_capacity(req.compute_size(version).unwrap_or(64));
        req.encode(&mut body, version)
            .map_err(|e| KafkaError::Encode {
                api,
                reason: e.to_string(),
            })?;
        let (reply, rx) = oneshot::channel();
        // Bytes received so far: a connection on which nothing at all arrived while
        // this request waited out its timeout is stalled, not just busy.
        let seen = self.stats.bytes_in.load(Ordering::Relaxed);
        let out = Outgoing {
            api_key: R::KEY,
            version,
            body: body.freeze(),
            waiter: Waiter {
                reply,
                head,
                expect: req.expected_answer(),
            },
        };
        let lost = || self.dead.error(&self.addr);
        self.tx.send(out).await.map_err(|_| lost())?;
        let limit = self.request_timeout + wait;
        let wait_ms = wait.as_millis() as u64;
        let held = self
            .longest_wait_ms
            .fetch_max(wait_ms, Ordering::Relaxed)
            .max(wait_ms);
        let stall = self.stall_timeout + Duration::from_millis(held);
        let started = tokio::time::Instant::now();
        let (mut last_bytes, mut last_change) = (seen, started);
        let mut rx = rx;
        let mut frame = loop {
            let until = (last_change + stall).min(started + limit);
            match tokio::time::timeout_at(until, &mut rx).await {
                Ok(Ok(r)) => break r?,
                Ok(Err(_)) => return Err(lost()),
                Err(_) => {}
            }
            let now = tokio::time::Instant::now();
            let bytes = self.stats.bytes_in.load(Ordering::Relaxed);
            if bytes != last_bytes {
                (last_bytes, last_change) = (bytes, now);
            }
            // Nothing arrived for the stall window (or the whole timeout): the
            // connection is stalled (a half-open socket, a black-holed path, a wedged
            // broker), and since answers come in request order everything sent after
            // this request waits behind it. Close it so nobody reuses it, and fail
            // those requests now rather than each after its own timeout. If answers
            // did arrive, this request sat behind a slow one (a produce the broker may
            // hold longer): at the end of its timeout it fails alone.
            let idle = now >= last_change + stall;
            if !idle && now < started + limit {
                continue;
            }
            let stalled = idle || bytes == seen;
            let ms = (now - started).as_millis() as u64;
            if stalled {
                let idle_ms = (now - last_change).as_millis() as u64;
                let reason = format!(
                    "nothing arrived for {idle_ms} ms while a {api} request waited: the connection stalled"
                );
                tracing::warn!(addr = %self.addr, "{reason}; closing it");
                fail_all(&self.addr, &self.pending, &self.dead, &reason);
                self.close.send_replace(true);
            }
            return Err(KafkaError::Timeout {
                addr: self.addr.to_string(),
                api,
                ms,
            });
        };
        let decode_err = |e: anyhow::Error| KafkaError::Decode {
            addr: self.addr.to_string(),
            api,
            reason: e.to_string(),
        };
        // The crate sizes vectors from counts in the frame: check first that they fit.
        let header_version = R::Response::header_version(version);
        shape::check(R::KEY, version, header_version, &frame).map_err(|e| KafkaError::Decode {
            addr: self.addr.to_string(),
            api,
            reason: e.to_string(),
        })?;
        ResponseHeader::decode(&mut frame, header_version).map_err(decode_err)?;
        R::Response::decode(&mut frame, version).map_err(decode_err)
    }
}

pub(crate) fn api_name(key: i16) -> &'static str {
    match key {
        0 => "Produce",
        1 => "Fetch",
        2 => "ListOffsets",
        3 => "Metadata",
        8 => "OffsetCommit",
        9 => "OffsetFetch",
        10 => "FindCoordinator",
        11 => "JoinGroup",
        12 => "Heartbeat",
        13 => "LeaveGroup",
        14 => "SyncGroup",
        15 => "DescribeGroups",
        16 => "ListGroups",
        17 => "SaslHandshake",
        18 => "ApiVersions",
        19 => "CreateTopics",
        22 => "InitProducerId",
        32 => "DescribeConfigs",
        37 => "CreatePartitions",
        36 => "SaslAuthenticate",
        65 => "DescribeTransactions",
        _ => "request",
    }
}

pub(crate) fn broker_err(api: &'static str, code: i16, detail: Option<String>) -> KafkaError {
    KafkaError::Broker {
        api,
        code: kafka_protocol::ResponseError::try_from_code(code)
            .unwrap_or(kafka_protocol::ResponseError::Unknown(code)),
        detail,
    }
}

/// What both I/O tasks of a connection share.
#[derive(Clone)]
struct Shared {
    addr: Arc<str>,
    pending: Pending,
    dead: Arc<Dead>,
    /// The cluster's bandwidth cap, taken from by the read loop.
    limit: Option<Arc<Limit>>,
}

/// Starts a connection's two I/O tasks, each ending when the connection closes.
fn spawn_io(
    closed: watch::Receiver<bool>,
    shared: Shared,
    rd: impl AsyncRead + Unpin + Send + 'static,
    wr: impl AsyncWrite + Unpin + Send + 'static,
    rx: mpsc::Receiver<Outgoing>,
    probe: Probe,
    stats: Arc<ConnStats>,
) {
    tokio::spawn(until_closed(
        closed.clone(),
        write_loop(shared.clone(), wr, rx),
    ));
    tokio::spawn(until_closed(closed, read_loop(shared, rd, probe, stats)));
}

/// The socket under a connection, plaintext or TLS.
enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

async fn write_loop(sh: Shared, wr: impl AsyncWrite + Unpin, mut rx: mpsc::Receiver<Outgoing>) {
    let Shared {
        addr,
        pending,
        dead,
        ..
    } = sh;
    let mut wr = BufWriter::with_capacity(256 * 1024, wr);
    let mut next_id: i32 = 0;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        // Coalesce whatever else is queued into one write.
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
            if batch.len() >= 64 {
                break;
            }
        }
        for out in batch {
            next_id = next_id.wrapping_add(1).max(1);
            let header = RequestHeader::default()
                .with_request_api_key(out.api_key)
                .with_request_api_version(out.version)
                .with_correlation_id(next_id)
                .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
            let hv = match ApiKey::try_from(out.api_key) {
                Ok(k) => k.request_header_version(out.version),
                Err(_) => 1,
            };
            let mut head = BytesMut::with_capacity(64);
            if let Err(e) = header.encode(&mut head, hv) {
                let _ = out.waiter.reply.send(Err(KafkaError::Encode {
                    api: api_name(out.api_key),
                    reason: e.to_string(),
                }));
                continue;
            }
            let len = head.len() + out.body.len();
            let mut prefix = [0u8; 4];
            (&mut prefix[..]).put_i32(len as i32);
            {
                let mut p = pending.lock().unwrap_or_else(|p| p.into_inner());
                // Once the reader is gone nothing would ever answer this request: it
                // would wait out its whole timeout. `fail_all` marks the connection
                // dead under this lock, so no request slips in after it drained.
                if dead.load(Ordering::Relaxed) {
                    drop(p);
                    let _ = out.waiter.reply.send(Err(dead.error(&addr)));
                    continue;
                }
                p.insert(next_id, out.waiter);
            }
            let res = async {
                wr.write_all(&prefix).await?;
                wr.write_all(&head).await?;
                wr.write_all(&out.body).await
            }
            .await;
            if let Err(e) = res {
                fail_io(&addr, &pending, &dead, &e);
                return;
            }
        }
        if let Err(e) = wr.flush().await {
            fail_io(&addr, &pending, &dead, &e);
            return;
        }
    }
}

async fn read_loop(
    sh: Shared,
    mut rd: impl AsyncRead + Unpin,
    probe: Probe,
    stats: Arc<ConnStats>,
) {
    let Shared {
        addr,
        pending,
        dead,
        limit,
    } = sh;
    loop {
        let len = match rd.read_i32().await {
            Ok(n) if n >= 4 && (n as usize) <= MAX_FRAME => n as usize,
            Ok(n) if is_tls_record(n.to_be_bytes()) => {
                fail_all_with(&pending, &dead, || {
                    KafkaError::NotKafka {
                    addr: addr.to_string(),
                    reason: "it answered with TLS: this is a TLS listener; configure TLS for this cluster ([source.tls] or [destination.tls])".into(),
                }
                });
                return;
            }
            Ok(n) => {
                fail_all(&addr, &pending, &dead, &format!("bad frame length {n}"));
                return;
            }
            Err(e) => {
                fail_io(&addr, &pending, &dead, &e);
                return;
            }
        };
        // Which request this answers decides how much to allocate: what its caller
        // expects (and budgeted for), not what the length says; beyond that the
        // buffer grows only as bytes arrive.
        let mut id = [0u8; 4];
        if let Err(e) = rd.read_exact(&mut id).await {
            fail_io(&addr, &pending, &dead, &e);
            return;
        }
        stats.bytes_in.fetch_add(4, Ordering::Relaxed);
        if let Some(l) = &limit {
            l.take(8).await;
        }
        let correlation = i32::from_be_bytes(id);
        let expect = pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&correlation)
            .map(|w| w.expect);
        let Some(expect) = expect else {
            fail_all(
                &addr,
                &pending,
                &dead,
                &format!("response with unknown correlation id {correlation}"),
            );
            return;
        };
        if len > expect.saturating_add(OVERSHOOT) {
            fail_all(
                &addr,
                &pending,
                &dead,
                &format!("a {len}-byte answer to a request that expects at most {expect} bytes (and one batch of {OVERSHOOT} more)"),
            );
            return;
        }
        let mut buf = BytesMut::with_capacity(len.min(expect));
        buf.put_slice(&id);
        // A large response arrives over many reads. Waking for every segment or two
        // (what a slow, lossy flow delivers at a time) costs a wake-up, a read and a
        // window update each: the kernel is asked to gather a share of the receive
        // buffer first (a quarter, so it never has to clamp the window to make room).
        let gather = if len >= LOW_WATER && probe.low_water {
            LOW_WATER.min(probe.recv_buffer() / 4)
        } else {
            1
        };
        let mut low = 1;
        // A caller may want the first bytes early (the head of a fetch answer names its
        // batch long before the answer is in, see `peek`): the first read wakes as
        // soon as they are here.
        let mut head_due = len > HEAD_BYTES;
        while buf.len() < len {
            // The head is the frame's first HEAD_BYTES, of which some are in already
            // (the correlation id at least): the rest is what the kernel must hold.
            let want = if head_due {
                (HEAD_BYTES - buf.len()).max(1)
            } else {
                gather.min(len - buf.len()).max(1)
            };
            if want != low {
                probe.set_low_water(want);
                low = want;
            }
            // Counted as each read lands: goodput reports must see a large response
            // arrive over seconds, not all at once when it is complete.
            // Under a bandwidth cap no read is larger than a share the bucket can
            // pay back quickly: one read of the whole receive buffer (megabytes)
            // would hold this connection for seconds while the others went on.
            let room = match &limit {
                Some(_) => (len - buf.len()).min(CAPPED_READ),
                None => len - buf.len(),
            };
            match rd.read_buf(&mut (&mut buf).limit(room)).await {
                Ok(0) => {
                    fail_all(&addr, &pending, &dead, "connection closed mid-response");
                    return;
                }
                Ok(n) => {
                    stats.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                    if let Some(l) = &limit {
                        l.take(n).await;
                    }
                }
                Err(e) => {
                    fail_io(&addr, &pending, &dead, &e);
                    return;
                }
            }
            if head_due && buf.len() >= HEAD_BYTES {
                head_due = false;
                send_head(&pending, &buf);
            }
        }
        // The next read is a 4-byte length: it must not wait for more.
        if low != 1 {
            probe.set_low_water(1);
        }
        if let Some(rtt) = probe.srtt_us() {
            stats.srtt_us.store(rtt, Ordering::Relaxed);
        }
        let mut frame: Bytes = buf.freeze();
        let waiter = pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&correlation);
        match waiter {
            Some(w) => {
                // The header is decoded by the caller, who knows its version.
                let _ = w.reply.send(Ok(std::mem::take(&mut frame)));
            }
            // Checked when the frame began: gone since, its request was failed with
            // everything else on this connection, which is closing.
            None => return,
        }
    }
}

/// Hands the first bytes of a response to its waiter, if it asked for them.
fn send_head(pending: &Pending, buf: &[u8]) {
    let correlation = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let head = pending
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_mut(&correlation)
        .and_then(|w| w.head.take());
    if let Some(h) = head {
        let _ = h.send(Bytes::copy_from_slice(
            &buf[..buf.len().min(4 * HEAD_BYTES)],
        ));
    }
}

/// Socket options of a connection's socket, read and set by its read loop. The loop
/// holds the stream the descriptor belongs to for as long as it uses it.
struct Probe {
    fd: RawFd,
    /// Whether reads may wait for a low-water mark (plaintext only, see `start_io`).
    low_water: bool,
}

impl Probe {
    /// The socket's receive buffer as the kernel sizes it now (autotuning grows it).
    fn recv_buffer(&self) -> usize {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into a live c_int; the fd is
        // open while the read loop holds its stream (see `Probe`).
        let rc = unsafe {
            libc::getsockopt(
                self.fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &mut v as *mut _ as *mut libc::c_void,
                &mut len,
            )
        };
        if rc == 0 {
            v.max(0) as usize
        } else {
            0
        }
    }

    /// SO_RCVLOWAT: the socket reads as ready only once `bytes` are buffered (or the
    /// connection ends). Best effort: without it reads just wake more often.
    fn set_low_water(&self, bytes: usize) {
        // Never on TLS (see `start_io`): the head of an answer would wait for
        // ciphertext that rustls may already hold.
        if !self.low_water {
            return;
        }
        let v = bytes.min(i32::MAX as usize) as libc::c_int;
        // SAFETY: setsockopt reads `len` bytes from a live c_int; the fd is open while
        // the read loop holds its stream (see `Probe`).
        let rc = unsafe {
            libc::setsockopt(
                self.fd,
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                &v as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            tracing::trace!(error = %std::io::Error::last_os_error(), "SO_RCVLOWAT not set");
        }
    }

    /// The kernel's smoothed round-trip time of the socket (Linux TCP_INFO), in
    /// microseconds.
    fn srtt_us(&self) -> Option<u32> {
        // SAFETY: getsockopt writes at most `len` bytes into `info`, a plain C struct
        // that is valid when zeroed; the fd is open while the read loop holds its
        // stream (see `Probe`).
        unsafe {
            let mut info: libc::tcp_info = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
            let rc = libc::getsockopt(
                self.fd,
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                &mut info as *mut _ as *mut libc::c_void,
                &mut len,
            );
            (rc == 0 && info.tcpi_rtt > 0).then_some(info.tcpi_rtt)
        }
    }
}

/// Runs an I/O task until it ends or the connection is closed; dropping it releases
/// its half of the socket.
async fn until_closed(
    mut closed: watch::Receiver<bool>,
    task: impl std::future::Future<Output = ()>,
) {
    tokio::select! {
        _ = task => {}
        _ = closed.wait_for(|c| *c) => {}
    }
}

fn fail_all(addr: &str, pending: &Pending, dead: &Dead, reason: &str) {
    fail_all_with(pending, dead, || KafkaError::ConnectionLost {
        addr: addr.to_string(),
        reason: reason.to_string(),
    });
}

/// Whether a connection died, and of what: requests made after it fail with the
/// same error (a TLS alert that arrived before the first request was written must
/// not turn into "connection closed").
#[derive(Debug, Default)]
struct Dead {
    flag: AtomicBool,
    cause: Mutex<Option<KafkaError>>,
}

impl Dead {
    fn load(&self, order: Ordering) -> bool {
        self.flag.load(order)
    }

    /// Marks the connection dead with its cause. The first cause stays, except that
    /// a TLS or protocol verdict replaces a plain loss: a write that failed with a
    /// broken pipe must not hide the alert the read side got just after.
    fn die(&self, cause: KafkaError) {
        self.flag.store(true, Ordering::Relaxed);
        let mut c = self.cause.lock().unwrap_or_else(|p| p.into_inner());
        let telling = matches!(cause, KafkaError::Tls { .. } | KafkaError::NotKafka { .. });
        if c.is_none() || (telling && matches!(*c, Some(KafkaError::ConnectionLost { .. }))) {
            *c = Some(cause);
        }
    }

    /// The error a request on the dead connection fails with.
    fn error(&self, addr: &str) -> KafkaError {
        let c = self.cause.lock().unwrap_or_else(|p| p.into_inner());
        match c.as_ref() {
            Some(KafkaError::Tls { addr, reason }) => KafkaError::Tls {
                addr: addr.clone(),
                reason: reason.clone(),
            },
            Some(KafkaError::NotKafka { addr, reason }) => KafkaError::NotKafka {
                addr: addr.clone(),
                reason: reason.clone(),
            },
            Some(KafkaError::ConnectionLost { reason, .. }) => KafkaError::ConnectionLost {
                addr: addr.to_string(),
                reason: reason.clone(),
            },
            Some(e) => KafkaError::ConnectionLost {
                addr: addr.to_string(),
                reason: format!("connection closed: {e}"),
            },
            None => KafkaError::ConnectionLost {
                addr: addr.to_string(),
                reason: "connection closed".into(),
            },
        }
    }
}

/// Fails every request after an I/O error. A TLS failure (an alert from the broker,
/// a record that does not verify) is not a lost connection to retry but a `Tls` error.
fn fail_io(addr: &str, pending: &Pending, dead: &Dead, e: &std::io::Error) {
    if super::security::tls::is_tls_failure(e) {
        let reason = super::security::tls::explain(e, None);
        fail_all_with(pending, dead, || KafkaError::Tls {
            addr: addr.to_string(),
            reason: reason.clone(),
        });
    } else {
        fail_all(addr, pending, dead, &e.to_string());
    }
}

fn fail_all_with(pending: &Pending, dead: &Dead, err: impl Fn() -> KafkaError) {
    tracing::debug!(error = %err(), "connection closed");
    let waiters: Vec<_> = {
        let mut p = pending.lock().unwrap_or_else(|p| p.into_inner());
        dead.die(err());
        p.drain().collect()
    };
    for (_, w) in waiters {
        let _ = w.reply.send(Err(err()));
    }
}

/// Whether the first bytes of an answer are a TLS record header (handshake or alert,
/// version 3.x) rather than a Kafka frame length: a TLS listener refusing our
/// plaintext request.
fn is_tls_record(first: [u8; 4]) -> bool {
    matches!(first[0], 0x15 | 0x16) && first[1] == 0x03 && first[2] <= 0x04
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn a_tls_record_is_told_from_a_frame_length() {
        // A TLS alert and a handshake record, as a TLS listener sends them.
        assert!(is_tls_record([0x15, 0x03, 0x03, 0x00]));
        assert!(is_tls_record([0x16, 0x03, 0x01, 0x02]));
        // Kafka frame lengths: small, or at most 256 MiB (first byte 0x10 at most).
        assert!(!is_tls_record(1024i32.to_be_bytes()));
        assert!(!is_tls_record((MAX_FRAME as i32).to_be_bytes()));
        assert!(!is_tls_record([0x15, 0x02, 0x00, 0x00]));
    }

    /// The broker closes the connection; a request handed to the writer afterwards
    /// fails at once instead of waiting out its timeout for an answer nobody reads.
    #[tokio::test]
    async fn a_request_after_the_connection_closed_fails_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            drop(s);
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let probe = Probe {
            fd: stream.as_raw_fd(),
            low_water: true,
        };
        let (rd, wr) = stream.into_split();
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let dead = Arc::new(Dead::default());
        let sh = Shared {
            addr: Arc::from("test"),
            pending,
            dead: dead.clone(),
            limit: None,
        };
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(write_loop(sh.clone(), wr, rx));
        tokio::spawn(read_loop(sh, rd, probe, Arc::new(ConnStats::default())));
        while !dead.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (reply, answer) = oneshot::channel();
        tx.send(Outgoing {
            api_key: 1,
            version: 11,
            body: Bytes::from_static(b"x"),
            waiter: Waiter {
                reply,
                head: None,
                expect: 1024,
            },
        })
        .await
        .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(2), answer)
            .await
            .expect("the request waited for an answer from a closed connection")
            .unwrap();
        assert!(matches!(got, Err(KafkaError::ConnectionLost { .. })));
        server.abort();
    }

    /// A broker that takes requests and never answers (a half-open path, a wedged
    /// broker): the request times out, the requests queued behind it fail at once, the
    /// connection no longer counts as alive, and its socket is closed.
    #[tokio::test]
    async fn a_timed_out_request_closes_the_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut sink = vec![0u8; 4096];
            // Read (and never answer) until the client closes its end.
            loop {
                match s.read(&mut sink).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let conn = Connection::start(
            stream,
            "test",
            Duration::from_millis(300),
            Duration::from_millis(300),
        );
        let req = ApiVersionsRequest::default();
        let behind = {
            let c = conn.clone();
            tokio::spawn(async move {
                // Sent just after the first one, with a long wait of its own.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let t = std::time::Instant::now();
                let r = c
                    .exchange(
                        &ApiVersionsRequest::default(),
                        0,
                        Duration::from_secs(60),
                        None,
                    )
                    .await;
                (r.is_err(), t.elapsed())
            })
        };
        let first = conn.send_versioned(&req, 0).await;
        assert!(
            matches!(first, Err(KafkaError::Timeout { .. })),
            "{first:?}"
        );
        assert!(
            !conn.is_alive(),
            "a stalled connection still counts as alive"
        );
        let (failed, waited) = behind.await.unwrap();
        assert!(failed, "the request behind the stalled one was answered");
        // Its own timeout is a minute away: failing now came from the stalled one.
        assert!(waited < Duration::from_secs(30), "it waited {waited:?}");
        // The server sees the socket closed while we still hold the Connection.
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the stalled connection's socket was left open")
            .unwrap();
        drop(conn);
    }

    /// A request that times out behind one that was answered (answers arrive, the
    /// broker is slow rather than gone) fails alone: the connection stays in use.
    #[tokio::test]
    async fn a_timeout_on_a_connection_that_answers_keeps_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            // The first request is answered after 150 ms, the second never.
            for n in 0.. {
                let body = read_request(&mut s).await;
                if n == 0 {
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    let mut frame = 4i32.to_be_bytes().to_vec();
                    frame.extend_from_slice(&body[4..8]);
                    s.write_all(&frame).await.unwrap();
                }
            }
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let conn = Connection::start(
            stream,
            "test",
            Duration::from_millis(400),
            Duration::from_millis(400),
        );
        let req = ApiVersionsRequest::default();
        let first = {
            let c = conn.clone();
            tokio::spawn(async move {
                c.exchange(
                    &ApiVersionsRequest::default(),
                    0,
                    Duration::from_secs(5),
                    None,
                )
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = conn.send_versioned(&req, 0).await;
        assert!(
            matches!(second, Err(KafkaError::Timeout { .. })),
            "{second:?}"
        );
        // The first one's answer came in meanwhile (its body does not decode as an
        // ApiVersions response, which is beside the point here).
        assert!(!matches!(
            first.await.unwrap(),
            Err(KafkaError::ConnectionLost { .. })
        ));
        assert!(conn.is_alive(), "a connection that answers was closed");
        server.abort();
    }

    /// A large response trickling in (the low-water mark is raised for it) followed by
    /// a response far smaller than that mark: both arrive whole, in order. Were the mark
    /// left up, the small one would never be read. The large one's first bytes reach
    /// the waiter that asked for them while the rest is still on its way.
    #[tokio::test]
    async fn reads_a_slow_large_response_then_a_small_one() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let big: Vec<u8> = (0..300 * 1024).map(|i| (i % 251) as u8).collect();
        let body = big.clone();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut frame = Vec::new();
            frame.extend_from_slice(&((4 + body.len()) as i32).to_be_bytes());
            frame.extend_from_slice(&1i32.to_be_bytes());
            frame.extend_from_slice(&body);
            for (i, chunk) in frame.chunks(7 * 1024).enumerate() {
                s.write_all(chunk).await.unwrap();
                let pause = if i == 0 { 500 } else { 1 };
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            // Later, once the reader has drained the socket and waits for readiness.
            tokio::time::sleep(Duration::from_millis(300)).await;
            s.write_all(&[0, 0, 0, 6, 0, 0, 0, 2, 0xab, 0xcd])
                .await
                .unwrap();
            // Keep the socket open: the reader must not depend on the end of stream.
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let probe = Probe {
            fd: stream.as_raw_fd(),
            low_water: true,
        };
        let (rd, _wr) = stream.into_split();
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let (tx1, rx1) = oneshot::channel();
        let (tx2, rx2) = oneshot::channel();
        let (head_tx, head_rx) = oneshot::channel();
        let waiter = |reply, head| Waiter {
            reply,
            head,
            expect: 1024,
        };
        pending
            .lock()
            .unwrap()
            .insert(1, waiter(tx1, Some(head_tx)));
        pending.lock().unwrap().insert(2, waiter(tx2, None));
        let stats = Arc::new(ConnStats::default());
        let sh = Shared {
            addr: Arc::from("test"),
            pending,
            dead: Arc::new(Dead::default()),
            limit: None,
        };
        let reader = tokio::spawn(read_loop(sh, rd, probe, stats.clone()));
        let wait = |rx: oneshot::Receiver<Result<Bytes>>| async {
            tokio::time::timeout(Duration::from_secs(10), rx)
                .await
                .expect("response not read")
                .unwrap()
                .unwrap()
        };
        let head = tokio::time::timeout(Duration::from_millis(400), head_rx)
            .await
            .expect("the head waited for the rest")
            .unwrap();
        assert!(head.len() >= HEAD_BYTES);
        assert_eq!(&head[..4], &1i32.to_be_bytes());
        assert_eq!(&head[4..], &big[..head.len() - 4]);
        let first = wait(rx1).await;
        assert_eq!(&first[..4], &1i32.to_be_bytes());
        assert_eq!(&first[4..], &big[..]);
        let second = wait(rx2).await;
        assert_eq!(&second[..], &[0, 0, 0, 2, 0xab, 0xcd]);
        assert_eq!(
            stats.bytes_in.load(Ordering::Relaxed),
            (4 + big.len() + 6) as u64
        );
        reader.abort();
        server.abort();
    }

    /// One request frame as a test server reads it: header and body, without the
    /// length (the correlation id is at bytes 4..8).
    async fn read_request(s: &mut TcpStream) -> Vec<u8> {
        let n = s.read_i32().await.unwrap() as usize;
        let mut req = vec![0u8; n];
        s.read_exact(&mut req).await.unwrap();
        req
    }

    /// Sends one request to a server that answers with a frame header announcing
    /// `len` bytes, sends `send` bytes of it and closes. Returns the error, the largest
    /// allocation made meanwhile, and whether the connection still counts as alive.
    async fn answered_with(len: usize, send: usize, id_shift: i32) -> (String, usize, bool) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let req = read_request(&mut s).await;
            let mut frame = (len as i32).to_be_bytes().to_vec();
            let id = i32::from_be_bytes([req[4], req[5], req[6], req[7]]) + id_shift;
            frame.extend_from_slice(&id.to_be_bytes());
            frame.resize(8 + send, 7);
            let _ = s.write_all(&frame).await;
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let five = Duration::from_secs(5);
        let conn = Connection::start(stream, "test", five, five);
        // Every task runs on this thread (current-thread runtime): the reader's
        // allocations are counted too.
        crate::test_alloc::reset_largest();
        let e = conn
            .send_versioned(&ApiVersionsRequest::default(), 0)
            .await
            .unwrap_err()
            .to_string();
        let largest = crate::test_alloc::largest_since_reset();
        server.await.unwrap();
        (e, largest, conn.is_alive())
    }

    /// A frame far longer than its request can bring (a control request expects
    /// `CONTROL` bytes, plus at most one oversized batch) is refused from its length,
    /// before anything is allocated for it, and the connection is closed.
    #[tokio::test]
    async fn an_answer_far_larger_than_expected_is_refused() {
        let (e, largest, alive) = answered_with(100 << 20, 64, 0).await;
        assert!(e.contains("expects at most"), "{e}");
        assert!(largest < 1 << 20, "allocated {largest} bytes");
        assert!(!alive);
    }

    /// A frame just over the head's size whose id arrives first and the rest later:
    /// the reader must not wait for more bytes than the frame has left (it asked the
    /// kernel for a whole head's worth after the id, and waited out the stall window).
    #[tokio::test]
    async fn a_frame_just_over_the_head_arrives_in_two_parts() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let req = read_request(&mut s).await;
            let len = HEAD_BYTES + 2;
            let mut first = (len as i32).to_be_bytes().to_vec();
            first.extend_from_slice(&req[4..8]);
            s.write_all(&first).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            s.write_all(&vec![0u8; len - 4]).await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let conn = Connection::start(
            stream,
            "test",
            Duration::from_secs(30),
            Duration::from_secs(2),
        );
        let res = conn.send_versioned(&ApiVersionsRequest::default(), 0).await;
        // The body does not decode as ApiVersions; what matters is that it arrived.
        assert!(matches!(res, Err(KafkaError::Decode { .. })), "{res:?}");
        assert!(conn.is_alive());
        server.abort();
    }

    /// An answer to a request nobody sent breaks the protocol: the connection is
    /// closed and its requests fail (retriable: they go out again on a new one).
    #[tokio::test]
    async fn an_answer_with_a_wrong_correlation_id_closes_the_connection() {
        let (e, _, alive) = answered_with(64, 60, 1).await;
        assert!(e.contains("unknown correlation id"), "{e}");
        assert!(!alive);
    }

    /// A frame longer than expected but within the overshoot is allocated as its bytes
    /// arrive: a length alone, or a broker that stops sending, costs no memory.
    #[tokio::test]
    async fn a_long_answer_is_allocated_as_its_bytes_arrive() {
        let (e, largest, _) = answered_with(48 << 20, 100_000, 0).await;
        assert!(e.contains("closed mid-response"), "{e}");
        assert!(largest < 2 << 20, "allocated {largest} bytes for 100 kB");
    }

    /// A request on a connection that never answers fails once nothing arrived for the
    /// stall window, long before its own timeout, and the connection is closed: a
    /// half-open socket is noticed within the retry window.
    #[tokio::test]
    async fn a_stalled_connection_fails_within_the_stall_window() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut sink = vec![0u8; 4096];
            while let Ok(n) = s.read(&mut sink).await {
                if n == 0 {
                    return;
                }
            }
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let conn = Connection::start(
            stream,
            "test",
            Duration::from_secs(600),
            Duration::from_millis(300),
        );
        let res = tokio::time::timeout(
            Duration::from_secs(60),
            conn.send_versioned(&ApiVersionsRequest::default(), 0),
        )
        .await
        .expect("the stall went unnoticed until the request's own timeout");
        assert!(matches!(res, Err(KafkaError::Timeout { .. })), "{res:?}");
        assert!(!conn.is_alive());
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the stalled socket was left open")
            .unwrap();
    }

    /// A TLS verdict that arrives after a plain loss is what later requests see; a
    /// later plain loss does not hide an earlier verdict.
    #[test]
    fn a_tls_verdict_is_the_cause_of_death_over_a_plain_loss() {
        let lost = || KafkaError::ConnectionLost {
            addr: "a".into(),
            reason: "broken pipe".into(),
        };
        let tls = || KafkaError::Tls {
            addr: "a".into(),
            reason: "alert BadCertificate".into(),
        };
        for order in [[lost(), tls()], [tls(), lost()]] {
            let d = Dead::default();
            assert!(matches!(d.error("a"), KafkaError::ConnectionLost { .. }));
            for c in order {
                d.die(c);
            }
            assert!(d.load(Ordering::Relaxed));
            assert!(
                matches!(d.error("a"), KafkaError::Tls { ref reason, .. } if reason.contains("BadCertificate")),
                "{}",
                d.error("a")
            );
        }
    }

    /// The low-water mark is never set on a TLS connection's socket.
    #[tokio::test]
    async fn no_low_water_mark_on_tls_sockets() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let lowat = |fd: RawFd| {
            let mut v: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: getsockopt writes at most `len` bytes into a live c_int; the
            // stream owning the fd lives for the whole test.
            unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVLOWAT,
                    &mut v as *mut _ as *mut libc::c_void,
                    &mut len,
                );
            }
            v
        };
        let fd = stream.as_raw_fd();
        Probe {
            fd,
            low_water: false,
        }
        .set_low_water(500);
        assert_eq!(lowat(fd), 1);
        Probe {
            fd,
            low_water: true,
        }
        .set_low_water(500);
        assert_eq!(lowat(fd), 500);
    }

    /// Under a bandwidth cap the read loop takes from the bucket for what it reads
    /// (reads held back are counted), and the answer still arrives whole.
    #[tokio::test]
    async fn a_capped_read_loop_takes_from_the_bucket() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let body: Vec<u8> = (0..400 * 1024).map(|i| (i % 253) as u8).collect();
        let sent = body.clone();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(&((4 + sent.len()) as i32).to_be_bytes())
                .await
                .unwrap();
            s.write_all(&1i32.to_be_bytes()).await.unwrap();
            s.write_all(&sent).await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let probe = Probe {
            fd: stream.as_raw_fd(),
            low_water: true,
        };
        let (rd, _wr) = stream.into_split();
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let (tx, rx) = oneshot::channel();
        pending.lock().unwrap().insert(
            1,
            Waiter {
                reply: tx,
                head: None,
                expect: 1 << 20,
            },
        );
        // 8 Mbit/s: 1 MB/s with a 64 KiB burst, far less than the answer.
        let limit = Arc::new(Limit::new(8));
        let sh = Shared {
            addr: Arc::from("test"),
            pending,
            dead: Arc::new(Dead::default()),
            limit: Some(limit.clone()),
        };
        let reader = tokio::spawn(read_loop(sh, rd, probe, Arc::new(ConnStats::default())));
        let frame = tokio::time::timeout(Duration::from_secs(20), rx)
            .await
            .expect("answer read")
            .unwrap()
            .unwrap();
        assert_eq!(&frame[4..], &body[..]);
        assert!(limit.waits() > 0, "the cap never held a read back");
        reader.abort();
    }
}
