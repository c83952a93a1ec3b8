//! Shared test harness: real brokers (tansu, and Apache Kafka in `kafka`), the real
//! librdkafka client (rdkafka crate) for producing and reading, and the wanmirror
//! binary as a child process. Every process started here is killed on drop, also when
//! a test fails.
#![allow(dead_code)]

pub mod apps;
pub mod kafka;
pub mod kafka_security;
pub mod peer;
pub mod pki;
pub mod proxy;
pub mod scenarios;
pub mod tansu_sql;
pub mod tls_proxy;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as RdError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use wanmirror::demo::broker::TansuBroker;
use wanmirror::kafka::client::Cluster;
use wanmirror::kafka::connection::SocketOptions;

/// A record as a consumer sees it: everything the mirror must preserve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub offset: i64,
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// A running cluster a test can point clients at.
pub trait Broker {
    /// The bootstrap list, `host:port[,host:port...]`.
    fn bootstrap(&self) -> String;
    /// The replication factor topics on this cluster should get.
    fn replicas(&self) -> i16 {
        1
    }
}

impl Broker for TansuBroker {
    fn bootstrap(&self) -> String {
        TansuBroker::bootstrap(self)
    }
}

/// Two clusters: dc-a (source) and dc-b (destination); tansu unless a test asks for
/// Apache Kafka (`Pair::with`).
pub struct Pair<A: Broker = TansuBroker, B: Broker = TansuBroker> {
    pub a: A,
    pub b: B,
    pub dir: tempfile::TempDir,
}

impl Pair {
    pub fn start() -> Pair {
        Pair::with(
            TansuBroker::start("dc-a").expect("start source broker"),
            TansuBroker::start("dc-b").expect("start destination broker"),
        )
    }
}

impl<A: Broker, B: Broker> Pair<A, B> {
    pub fn with(a: A, b: B) -> Pair<A, B> {
        Pair {
            a,
            b,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn src(&self) -> std::sync::Arc<Cluster> {
        Cluster::new("dc-a", &self.a.bootstrap(), SocketOptions::default())
    }

    pub fn dst(&self) -> std::sync::Arc<Cluster> {
        Cluster::new("dc-b", &self.b.bootstrap(), SocketOptions::default())
    }

    /// Writes a config mirroring `topics` from a to b; `extra` lines go under [mirror].
    pub fn config(&self, name: &str, topics: &[&str], extra: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        write_config(
            &p,
            &self.a.bootstrap(),
            &self.b.bootstrap(),
            self.b.replicas(),
            topics,
            extra,
        );
        p
    }
}

/// Writes a config at `path` mirroring `topics` from the source reached at `source`
/// (a broker, or a proxy in front of it) into `dest`; `extra` lines go under [mirror].
pub fn write_config(
    path: &std::path::Path,
    source: &str,
    dest: &str,
    replicas: i16,
    topics: &[&str],
    extra: &str,
) {
    let list: Vec<String> = topics.iter().map(|t| format!("{t:?}")).collect();
    let text = format!(
        "[source]\nname = \"dc-a\"\nbootstrap = \"{source}\"\n\n[destination]\nname = \"dc-b\"\nbootstrap = \"{dest}\"\n\n[mirror]\ntopics = [{}]\nreplication_factor = {replicas}\nprogress_interval_secs = 1\nmetadata_refresh_secs = 1\n{extra}\n",
        list.join(", "),
    );
    std::fs::write(path, text).expect("write config");
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Creates a topic through our admin client (data always goes through rdkafka).
pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    create_topic_with(bootstrap, topic, partitions, 1, &[]);
}

/// Creates a topic with a replication factor and topic configs.
pub fn create_topic_with(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    replicas: i16,
    configs: &[(&str, &str)],
) {
    let configs: BTreeMap<String, String> = configs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let rt = runtime();
    rt.block_on(async {
        let c = Cluster::new("t", bootstrap, SocketOptions::default());
        c.create_topic(topic, partitions, replicas, &configs)
            .await
            .expect("create topic");
        for _ in 0..100 {
            if let Ok(Some(t)) = c.topic(topic).await {
                if t.partitions.len() == partitions as usize
                    && t.partitions.iter().all(|p| p.leader >= 0)
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("topic {topic} never got leaders");
    });
}

/// The exact end offset (high watermark) of a partition, through our client (with its
/// retries, so a leader that just died is waited out).
pub fn end_offset(bootstrap: &str, topic: &str, partition: i32) -> i64 {
    runtime().block_on(async {
        let c = Cluster::new("t", bootstrap, SocketOptions::default());
        c.retry("end offset", || c.end_offset(topic, partition))
            .await
            .expect("end offset")
    })
}

pub fn topic_exists(bootstrap: &str, topic: &str) -> bool {
    runtime().block_on(async {
        let c = Cluster::new("t", bootstrap, SocketOptions::default());
        c.topic(topic).await.expect("metadata").is_some()
    })
}

/// A librdkafka producer with the given compression codec.
pub fn producer(bootstrap: &str, codec: &str, idempotent: bool) -> BaseProducer {
    producer_via(bootstrap, codec, idempotent, &Access::default())
}

/// [`producer`] over a secured connection.
pub fn producer_via(
    bootstrap: &str,
    codec: &str,
    idempotent: bool,
    access: &Access,
) -> BaseProducer {
    let mut cfg = ClientConfig::new();
    access.apply(&mut cfg);
    cfg.set("bootstrap.servers", bootstrap)
        .set("compression.codec", codec)
        .set(
            "enable.idempotence",
            if idempotent { "true" } else { "false" },
        )
        .set("linger.ms", "5")
        .set("batch.num.messages", "500")
        .set("message.max.bytes", "2000000")
        .set("api.version.request", "true")
        .create()
        .expect("create producer")
}

/// An idempotent producer writing batches of at most 20 records.
pub fn small_batches(bootstrap: &str, codec: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("compression.codec", codec)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("batch.num.messages", "20")
        .create()
        .expect("create producer")
}

/// Mirror settings for pooled catch-up tests: small pieces and a low split threshold,
/// so that a test-sized backlog is cut into hundreds of pieces spread over dozens of
/// connections.
pub const POOLED: &str = "fetch_bytes = 16384\nin_flight_bytes = 2097152\ntail_wait_ms = 100\n\n[transport]\npool_initial = 16\npool_max = 64\npiece_bytes = 16384\nsplit_bytes = 65536\n";

/// Produces records and waits for every acknowledgement.
pub fn produce(p: &BaseProducer, topic: &str, partition: i32, recs: &[Rec]) {
    for r in recs {
        let mut headers = OwnedHeaders::new();
        for (k, v) in &r.headers {
            headers = headers.insert(Header {
                key: k,
                value: v.as_deref(),
            });
        }
        let mut rec: BaseRecord<'_, [u8], [u8]> =
            BaseRecord::to(topic).partition(partition).headers(headers);
        if let Some(k) = &r.key {
            rec = rec.key(k.as_slice());
        }
        if let Some(v) = &r.value {
            rec = rec.payload(v.as_slice());
        }
        if let Some(ts) = r.timestamp {
            rec = rec.timestamp(ts);
        }
        let mut rec = rec;
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((
                    RdError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    back,
                )) => {
                    p.poll(Duration::from_millis(50));
                    rec = back;
                }
                Err((e, _)) => panic!("produce failed: {e}"),
            }
        }
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(60)).expect("flush");
}

/// One record per size in `sizes` (value bytes), keyed and with a header naming it.
pub fn sized_records(sizes: &[usize]) -> Vec<Rec> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| Rec {
            offset: i as i64,
            timestamp: Some(recent_ms() + i as i64),
            key: Some(format!("size-{n}").into_bytes()),
            value: Some((0..n).map(|x| (x * 7 + i) as u8).collect()),
            headers: vec![("size".into(), Some(n.to_string().into_bytes()))],
        })
        .collect()
}

/// Milliseconds since the epoch, an hour ago (clear of any "too far in the future" check).
pub fn recent_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
        - 3_600_000
}

/// Generates `n` varied records: keys and values of mixed sizes, some null, headers.
/// Timestamps are recent: Apache Kafka's time retention (7 days by default) would delete
/// older ones as soon as their segment rolls.
pub fn sample(n: usize, seed: u64, value_len: impl Fn(usize) -> usize) -> Vec<Rec> {
    let t0 = recent_ms() - 3 * n as i64;
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let mut next = move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) as usize
    };
    (0..n)
        .map(|i| {
            let len = value_len(i);
            let value = match i % 7 {
                3 => None,
                _ if i % 2 == 0 => Some(
                    format!("{{\"id\":{i},\"name\":\"record-{i}\"}}")
                        .into_bytes()
                        .into_iter()
                        .cycle()
                        .take(len)
                        .collect(),
                ),
                _ => Some((0..len).map(|_| next() as u8).collect()),
            };
            Rec {
                offset: i as i64,
                timestamp: Some(t0 + (i as i64) * 3),
                key: if i % 5 == 0 {
                    None
                } else {
                    Some(format!("key-{}", next() % 1000).into_bytes())
                },
                value,
                headers: match i % 3 {
                    0 => vec![],
                    1 => vec![("trace".into(), Some(format!("t{i}").into_bytes()))],
                    _ => vec![("a".into(), Some(vec![1, 2, 3])), ("empty".into(), None)],
                },
            }
        })
        .collect()
}

/// How the tests' clients reach a cluster: librdkafka's settings and our client's
/// (plaintext by default; TLS for a cluster behind a terminator).
#[derive(Default, Clone)]
pub struct Access {
    pub rdkafka: Vec<(String, String)>,
    pub ours: SocketOptions,
}

impl Access {
    fn apply(&self, c: &mut ClientConfig) {
        for (k, v) in &self.rdkafka {
            c.set(k, v);
        }
    }
}

/// Reads a whole partition from the beginning to its end with librdkafka.
pub fn consume_all(bootstrap: &str, topic: &str, partition: i32) -> Vec<Rec> {
    consume_all_via(bootstrap, topic, partition, &Access::default())
}

/// [`consume_all`] over a secured connection.
pub fn consume_all_via(bootstrap: &str, topic: &str, partition: i32, access: &Access) -> Vec<Rec> {
    let end = runtime().block_on(async {
        let c = Cluster::new("t", bootstrap, access.ours.clone());
        c.retry("end offset", || c.end_offset(topic, partition))
            .await
            .expect("end offset")
    });
    let mut cfg = ClientConfig::new();
    access.apply(&mut cfg);
    let c: BaseConsumer = cfg
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "wanmirror-tests")
        .set("enable.auto.commit", "false")
        // EOF ends the read where control markers (never delivered) end the log.
        .set("enable.partition.eof", "true")
        .set("fetch.message.max.bytes", "2000000")
        .create()
        .expect("create consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .expect("tpl");
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut next = 0i64;
    while next < end {
        assert!(
            Instant::now() < deadline,
            "timed out reading {topic}/{partition} at {next} of {end}"
        );
        match c.poll(Duration::from_millis(500)) {
            None => continue,
            // At the end of what is there: done if that is past `end` (the last
            // offsets may be control markers, never delivered), else more will come.
            Some(Err(RdError::PartitionEOF(_))) => {
                let pos = c
                    .position()
                    .ok()
                    .and_then(|l| l.find_partition(topic, partition).map(|e| e.offset()))
                    .and_then(|o| o.to_raw());
                if pos.is_some_and(|o| o >= end) {
                    break;
                }
            }
            // A broker of a cluster that lost one (a test killed it) is reported, and
            // the client moves on to the partition's new leader.
            Some(Err(RdError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure
                | rdkafka::types::RDKafkaErrorCode::AllBrokersDown,
            ))) => continue,
            Some(Err(e)) => panic!("consume {topic}/{partition}: {e}"),
            Some(Ok(m)) => {
                next = m.offset() + 1;
                out.push(Rec {
                    offset: m.offset(),
                    timestamp: m.timestamp().to_millis(),
                    key: m.key().map(|k| k.to_vec()),
                    value: m.payload().map(|v| v.to_vec()),
                    headers: m
                        .headers()
                        .map(|hs| {
                            hs.iter()
                                .map(|h| (h.key.to_string(), h.value.map(|v| v.to_vec())))
                                .collect()
                        })
                        .unwrap_or_default(),
                });
            }
        }
    }
    out
}

/// Every batch of a partition from its start to its end, in offset order, read with
/// the mirror's own reader (what tests check batch by batch: producer stamps, shapes).
pub fn all_batches(
    bootstrap: &str,
    topic: &str,
    partition: i32,
) -> Vec<wanmirror::kafka::batch::RawBatch> {
    runtime().block_on(async {
        let c = Cluster::new("t", bootstrap, SocketOptions::default());
        let end = c.end_offset(topic, partition).await.expect("end");
        let source = c.into();
        let r = wanmirror::source::reader::PartitionReader {
            source: &source,
            topic,
            partition,
            fetch_bytes: 1 << 20,
        };
        let mut out = Vec::new();
        let mut at = 0;
        while at < end {
            let batches = r.fetch(at).await.expect("fetch");
            assert!(!batches.is_empty(), "{topic}/{partition}: nothing at {at}");
            at = batches.last().map_or(at, |b| b.header.next_offset());
            out.extend(batches);
        }
        out
    })
}

/// Asserts that a destination partition is a record-by-record copy of the source.
pub fn assert_same<A: Broker, B: Broker>(
    pair: &Pair<A, B>,
    src_topic: &str,
    dst_topic: &str,
    partition: i32,
) -> usize {
    assert_same_at(
        &pair.a.bootstrap(),
        src_topic,
        &pair.b.bootstrap(),
        dst_topic,
        partition,
    )
}

/// [`assert_same`] for clusters reached at any bootstrap (a proxy in front of them).
pub fn assert_same_at(
    src: &str,
    src_topic: &str,
    dst: &str,
    dst_topic: &str,
    partition: i32,
) -> usize {
    let s = consume_all(src, src_topic, partition);
    let d = consume_all(dst, dst_topic, partition);
    assert_eq!(
        s.len(),
        d.len(),
        "{src_topic}/{partition}: source has {} records, destination {}",
        s.len(),
        d.len()
    );
    for (x, y) in s.iter().zip(&d) {
        assert_eq!(
            x, y,
            "{src_topic}/{partition} differs at offset {}",
            x.offset
        );
    }
    s.len()
}

/// The wanmirror binary as a child process, killed on drop.
pub struct Mirror {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Mirror {
    pub fn spawn(config: &std::path::Path, args: &[&str]) -> Mirror {
        Mirror::spawn_logging(config, args, "info")
    }

    /// With `filter` as RUST_LOG (e.g. to see one module's debug lines).
    pub fn spawn_logging(config: &std::path::Path, args: &[&str], filter: &str) -> Mirror {
        let log = config.with_extension(format!(
            "{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let f = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_wanmirror"))
            .arg("run")
            .arg("--config")
            .arg(config)
            .args(args)
            .env("RUST_LOG", filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .expect("spawn wanmirror");
        Mirror {
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(-1)
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Waits for exit up to `limit`; panics with the log if it does not exit.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                return st;
            }
            if Instant::now() > deadline {
                panic!(
                    "wanmirror did not exit within {limit:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: i32) {
        unsafe_kill(self.pid(), sig);
    }

    /// Asserts that the mirror still runs, then stops it with SIGTERM and asserts a
    /// clean exit (in-flight writes finished); the log is shown on failure.
    pub fn stop_cleanly(&mut self) {
        assert!(self.running(), "{}", self.log_text());
        self.signal(15);
        assert!(
            self.wait(Duration::from_secs(30)).success(),
            "{}",
            self.log_text()
        );
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends a signal with the `kill` command (keeps the tests free of unsafe code).
pub fn unsafe_kill(pid: i32, sig: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// Runs the mirror to the source end and returns its exit status and log.
pub fn mirror_to_end(config: &std::path::Path) -> (ExitStatus, String) {
    let mut m = Mirror::spawn(config, &["--stop-at-end"]);
    let st = m.wait(Duration::from_secs(180));
    (st, m.log_text())
}

/// Polls until `f` holds or the limit passes.
pub fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One HTTP GET on a loopback port (the metrics endpoint): status line and body.
pub fn get_http(port: u16, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to /metrics");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// The value of the sample whose name and labels start with `prefix`, summed over
/// every sample that matches.
pub fn metric_value(body: &str, prefix: &str) -> Option<f64> {
    let vals: Vec<f64> = body
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!vals.is_empty()).then(|| vals.iter().sum())
}

/// Writes one small record to each of the first `partitions` partitions of every
/// topic every 50 ms until finished or dropped.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Traffic {
    pub fn start(bootstrap: &str, topics: &[&str], partitions: i32) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, b) = (stop.clone(), bootstrap.to_string());
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        let thread = std::thread::spawn(move || {
            let p = producer(&b, "none", false);
            let mut n = 0u64;
            while !s.load(Ordering::Relaxed) {
                for t in &topics {
                    for part in 0..partitions {
                        let v = format!("{t}-{part}-{n}");
                        let _ = p.send(BaseRecord::<(), str>::to(t).partition(part).payload(&v));
                    }
                }
                p.poll(Duration::ZERO);
                n += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            p.flush(Duration::from_secs(30)).expect("flush");
            n
        });
        Traffic {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops writing and waits for every record to be acknowledged; the rounds
    /// written.
    pub fn finish(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map_or(0, |t| t.join().expect("producer"))
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.finish();
    }
}
