//! Chaos against real brokers, through the link proxy, while records keep arriving in
//! four codecs: kill -9 of the mirror at random moments (a stated share of them during
//! a pooled catch-up with pieces out of order), a black-holed link, half-open
//! connections. After each, the copy is offset-identical and complete, nothing is
//! duplicated, and `wanmirror diff` exits 0.
//!
//! `WANMIRROR_CHAOS_LONG=1` runs the long variant: 100 kills and a 60 s blackhole
//! (CI runs 12 kills and a 15 s blackhole). Broker restarts and a destination that
//! refuses writes run against Apache Kafka, whose logs survive a restart
//! (`kafka_compat.rs`).

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::*;
use rand::Rng;
use wanmirror::demo::broker::TansuBroker;

const TOPIC: &str = "chaos";
const DEST: &str = "dc-a.chaos";
const PARTS: i32 = 4;
/// Partition `p` is written in `CODECS[p]`.
const CODECS: [&str; 4] = ["none", "gzip", "lz4", "zstd"];

fn long() -> bool {
    std::env::var_os("WANMIRROR_CHAOS_LONG").is_some()
}

/// Two tansu brokers, each behind a proxy that plays the WAN (they advertise the
/// proxy's port, so every client goes through it).
struct Wan {
    src_link: Proxy,
    dst_link: Proxy,
    _a: TansuBroker,
    _b: TansuBroker,
    src: String,
    dst: String,
    dir: tempfile::TempDir,
}

impl Wan {
    fn start() -> Wan {
        let (src_link, dst_link) = (Proxy::start(), Proxy::start());
        let a = TansuBroker::start_advertising("dc-a", Some(src_link.port)).unwrap();
        let b = TansuBroker::start_advertising("dc-b", Some(dst_link.port)).unwrap();
        src_link.forward_to(a.port);
        dst_link.forward_to(b.port);
        let src = format!("127.0.0.1:{}", src_link.port);
        let dst = format!("127.0.0.1:{}", dst_link.port);
        create_topic(&src, TOPIC, PARTS);
        Wan {
            src_link,
            dst_link,
            _a: a,
            _b: b,
            src,
            dst,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Small fetches and budget (many round trips per run, so kills land mid-copy),
    /// a short retry window (a stall or an outage is acted on in seconds).
    fn config(&self) -> PathBuf {
        let p = self.dir.path().join("chaos.toml");
        write_config(
            &p,
            &self.src,
            &self.dst,
            1,
            &[TOPIC],
            "fetch_bytes = 16384\nin_flight_bytes = 262144\nretry_secs = 2\ntail_wait_ms = 100",
        );
        p
    }

    fn ends(bootstrap: &str, topic: &str) -> Vec<i64> {
        if !topic_exists(bootstrap, topic) {
            return vec![0; PARTS as usize];
        }
        (0..PARTS)
            .map(|p| end_offset(bootstrap, topic, p))
            .collect()
    }

    fn src_ends(&self) -> Vec<i64> {
        Wan::ends(&self.src, TOPIC)
    }

    fn dst_ends(&self) -> Vec<i64> {
        Wan::ends(&self.dst, DEST)
    }

    /// `n` records into partition `p`, in its codec.
    fn backlog(&self, p: i32, n: usize, seed: u64) {
        let pr = producer(&self.src, CODECS[p as usize], true);
        produce(&pr, TOPIC, p, &sample(n, seed, |i| (i * 37) % 900));
    }

    fn assert_exact(&self) {
        assert_exact(&self.src, &self.dst);
    }
}

/// The whole copy is exact (offsets, keys, values, headers, timestamps; nothing
/// missing, nothing twice), and `wanmirror diff` agrees.
fn assert_exact(src: &str, dst: &str) {
    for p in 0..PARTS {
        assert_same_at(src, TOPIC, dst, DEST, p);
    }
    let (code, report) = scenarios::diff_json(src, dst, TOPIC, DEST, &[]);
    assert_eq!(code, 0, "diff: {report}");
}

/// Producers writing into every partition, each in its own codec, until dropped.
struct Stream {
    stop: Arc<AtomicBool>,
    produced: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Stream {
    fn start(bootstrap: &str) -> Stream {
        let stop = Arc::new(AtomicBool::new(false));
        let produced = Arc::new(AtomicU64::new(0));
        let threads = (0..PARTS)
            .map(|p| {
                let (stop, produced, b) = (stop.clone(), produced.clone(), bootstrap.to_string());
                std::thread::spawn(move || {
                    let pr = producer(&b, CODECS[p as usize], true);
                    let mut round = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        round += 1;
                        produce(
                            &pr,
                            TOPIC,
                            p,
                            &sample(40, 10_000 + round, |i| (i * 13) % 600),
                        );
                        produced.fetch_add(40, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(100));
                    }
                })
            })
            .collect();
        Stream {
            stop,
            produced,
            threads,
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// What a mirror's log says was going on when it was killed.
#[derive(Debug, Clone, Copy, Default)]
struct CatchUpState {
    /// A partition was in a pooled catch-up.
    active: bool,
    /// ... and an answer of it had overtaken an earlier piece's.
    out_of_order: bool,
}

fn partition_of(line: &str) -> Option<i32> {
    let at = line.find(" partition=")? + " partition=".len();
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn state_at_end_of(log: &str) -> CatchUpState {
    let n = PARTS as usize;
    let (mut start, mut end, mut ooo) = (vec![None; n], vec![None; n], vec![None; n]);
    for (i, line) in log.lines().enumerate() {
        let Some(p) = partition_of(line).filter(|p| (0..PARTS).contains(p)) else {
            continue;
        };
        let p = p as usize;
        if line.contains("catching up in parallel pieces")
            || line.contains("fetching its tail in pieces")
        {
            start[p] = Some(i);
        } else if line.contains("parallel catch-up finished")
            || line.contains("back to the shared long poll")
            || line.contains("continuing sequentially")
        {
            end[p] = Some(i);
        } else if line.contains("pieces out of order") {
            ooo[p] = Some(i);
        }
    }
    let mut s = CatchUpState::default();
    for p in 0..n {
        if start[p].is_some() && start[p] > end[p] {
            s.active = true;
            s.out_of_order |= ooo[p] > start[p];
        }
    }
    s
}

/// The stalls a mirror's log reports, in order: how long nothing arrived (ms).
fn stalls(log: &str) -> Vec<u64> {
    log.match_indices("nothing arrived for ")
        .filter_map(|(at, m)| {
            let rest = &log[at + m.len()..];
            rest.split(' ').next()?.parse().ok()
        })
        .collect()
}

#[derive(Debug)]
struct Kill {
    after_ms: u128,
    dest: Vec<i64>,
    source: Vec<i64>,
    state: CatchUpState,
}

/// Kill -9 while every partition has a backlog copied in pieces that overtake each
/// other, and while records keep arriving. Each run starts where the last one's
/// committed writes ended.
#[test]
fn kill_nine_during_pooled_catch_ups_and_a_live_stream_loses_nothing() {
    let wan = Wan::start();
    // Answers overtake each other across the pool's connections.
    wan.src_link.delay(25);
    let rounds: usize = if long() { 100 } else { 12 };
    let cfg = wan.config();
    let stream = Stream::start(&wan.src);
    let mut rng = rand::rng();
    let mut kills = Vec::new();
    for round in 0..rounds {
        // A backlog beyond the split threshold, so this run catches up in pieces.
        wan.backlog((round % PARTS as usize) as i32, 5000, round as u64);
        let mut m = Mirror::spawn_logging(&cfg, &[], "info,wanmirror::mirror::catch_up=debug");
        let t = Instant::now();
        // Most kills wait for the moment that matters: a catch-up with an answer
        // waiting for an earlier piece. The others fall at a random moment.
        if rng.random_bool(0.6) {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && m.running() {
                let s = state_at_end_of(&m.log_text());
                if s.active && s.out_of_order {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(Duration::from_millis(rng.random_range(0..40)));
        } else {
            std::thread::sleep(Duration::from_millis(rng.random_range(100..3000)));
        }
        assert!(
            m.running(),
            "round {round}: the mirror exited: {}",
            m.log_text()
        );
        m.signal(9);
        m.wait(Duration::from_secs(10));
        kills.push(Kill {
            after_ms: t.elapsed().as_millis(),
            state: state_at_end_of(&m.log_text()),
            dest: wan.dst_ends(),
            source: wan.src_ends(),
        });
    }
    let produced = stream.produced.load(Ordering::Relaxed);
    drop(stream);
    for (i, k) in kills.iter().enumerate() {
        eprintln!(
            "kill {i:3} after {:5} ms: {:?}, destination ends {:?}, source ends {:?}",
            k.after_ms, k.state, k.dest, k.source
        );
    }
    let (st, log) = mirror_to_end(&cfg);
    assert!(st.success(), "final run failed: {log}");
    wan.assert_exact();
    let in_pieces = kills
        .iter()
        .filter(|k| k.state.active && k.state.out_of_order)
        .count();
    let mid_copy = kills
        .iter()
        .filter(|k| {
            k.dest.iter().sum::<i64>() > 0
                && k.dest.iter().sum::<i64>() < k.source.iter().sum::<i64>()
        })
        .count();
    eprintln!(
        "{rounds} kills: {in_pieces} during a pooled catch-up with pieces out of order, {mid_copy} mid-copy; {produced} records produced meanwhile"
    );
    assert!(
        in_pieces * 10 >= rounds * 3,
        "only {in_pieces} of {rounds} kills landed in a pooled catch-up with pieces out of order"
    );
    assert!(
        mid_copy * 2 >= rounds,
        "only {mid_copy} of {rounds} kills landed mid-copy"
    );
    assert!(produced > 0, "no records arrived during the kills");
}

/// The link to the source goes silent (nothing forwarded, nothing closed), then comes
/// back; later every open connection to both clusters goes half-open for good. The
/// mirror rides out the first, notices the second within its retry window and carries
/// on over new connections, and the copy ends exact.
#[test]
fn a_black_holed_link_and_half_open_connections_are_ridden_out() {
    let wan = Wan::start();
    for p in 0..PARTS {
        wan.backlog(p, 3000, p as u64);
    }
    let stream = Stream::start(&wan.src);
    let cfg = wan.config();
    let mut m = Mirror::spawn(&cfg, &[]);
    let total = |v: Vec<i64>| v.iter().sum::<i64>();
    eventually(Duration::from_secs(60), "the copy under way", || {
        total(wan.dst_ends()) > 0
    });

    let secs = if long() { 60 } else { 15 };
    wan.src_link.blackhole();
    let dest_at_start = wan.dst_ends();
    std::thread::sleep(Duration::from_secs(secs));
    let dest_at_end = wan.dst_ends();
    wan.src_link.light();
    // Read once the path is back: the tests' own reads count as the mirror's for the
    // proxy (they come through the same client code).
    let source_at_end = wan.src_ends();
    eprintln!(
        "blackhole of {secs} s: destination ends {dest_at_start:?} at its start, {dest_at_end:?} at its end; source ends {source_at_end:?}"
    );
    assert!(
        m.running(),
        "the mirror gave up during the blackhole: {}",
        m.log_text()
    );
    // The records that arrived meanwhile are copied once the path is back.
    eventually(
        Duration::from_secs(120),
        "the copy past the blackhole",
        || {
            wan.dst_ends()
                .iter()
                .zip(&source_at_end)
                .all(|(d, s)| d >= s)
        },
    );

    let before = total(wan.dst_ends());
    let stalls_before = stalls(&m.log_text()).len();
    let frozen = wan.src_link.freeze_open() + wan.dst_link.freeze_open();
    assert!(frozen > 0, "no mirror connection was open to freeze");
    // Progress while the frozen connections still hang: only new ones can carry it.
    eventually(
        Duration::from_secs(120),
        "progress past half-open connections",
        || total(wan.dst_ends()) > before + 400,
    );
    eprintln!("{frozen} connections made half-open; the copy went on from {before} records");
    // Noticed by the stall window (min(30 s, retry_secs) = 2 s here), not by a
    // request's own 30 s timeout: the mirror says how long nothing arrived.
    let after: Vec<u64> = stalls(&m.log_text())[stalls_before..].to_vec();
    eprintln!("stalls noticed after the freeze, ms without a byte: {after:?}");
    assert!(!after.is_empty(), "no stall was noticed: {}", m.log_text());
    assert!(after.iter().all(|&ms| ms < 30_000), "{after:?}");

    drop(stream);
    let source = wan.src_ends();
    eventually(Duration::from_secs(120), "the full copy", || {
        wan.dst_ends() == source
    });
    m.signal(15);
    assert!(
        m.wait(Duration::from_secs(30)).success(),
        "{}",
        m.log_text()
    );
    wan.assert_exact();
}

/// Sets `min.insync.replicas` of `topic` (Kafka caps it at the replication factor).
fn set_min_insync(bootstrap: &str, topic: &str, n: usize) {
    use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::config::ClientConfig;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let value = n.to_string();
    let change =
        AlterConfig::new(ResourceSpecifier::Topic(topic)).set("min.insync.replicas", &value);
    let res = runtime()
        .block_on(admin.alter_configs(&[change], &AdminOptions::new()))
        .expect("alter configs");
    for r in res {
        r.expect("alter topic config");
    }
}

/// On Apache Kafka, whose logs survive a restart: the source broker is killed -9 and
/// restarted, then every broker of the (three-node) destination, and then the
/// destination refuses every write for a while (a replica down while
/// `min.insync.replicas` asks for all three: NOT_ENOUGH_REPLICAS to the mirror's
/// acks=all produce); records keep arriving throughout. The copy ends exact.
#[test]
fn broker_restarts_and_refused_writes_on_kafka() {
    use common::kafka::{KafkaCluster, Shape};
    let b = std::thread::spawn(|| KafkaCluster::start(Shape::three()));
    let mut a = KafkaCluster::start(Shape::single());
    let mut b = b.join().expect("start destination cluster");
    let (src, dst) = (a.bootstrap(), b.bootstrap());
    create_topic(&src, TOPIC, PARTS);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("kafka-chaos.toml");
    write_config(
        &cfg,
        &src,
        &dst,
        3,
        &[TOPIC],
        "retry_secs = 2\ntail_wait_ms = 100",
    );
    let stream = Stream::start(&src);
    let mut m = Mirror::spawn(&cfg, &[]);
    let ends = |b: &str, t: &str| Wan::ends(b, t);
    let total = |v: &[i64]| v.iter().sum::<i64>();
    eventually(Duration::from_secs(60), "the copy under way", || {
        total(&ends(&dst, DEST)) > 400
    });
    let caught_up = |source: &[i64]| {
        eventually(Duration::from_secs(120), "the copy past the fault", || {
            ends(&dst, DEST).iter().zip(source).all(|(d, s)| d >= s)
        });
    };

    let dest_before = ends(&dst, DEST);
    let id = a.node_ids()[0];
    a.kill(id);
    std::thread::sleep(Duration::from_secs(3));
    a.restart(id);
    a.wait_ready(Duration::from_secs(90));
    let source_now = ends(&src, TOPIC);
    eprintln!("source broker restarted: destination ends {dest_before:?} at the kill; source ends {source_now:?} once back");
    caught_up(&source_now);

    let dest_before = ends(&dst, DEST);
    let ids = b.node_ids();
    for &id in &ids {
        b.kill(id);
    }
    std::thread::sleep(Duration::from_secs(3));
    for &id in &ids {
        b.restart(id);
    }
    b.wait_ready(Duration::from_secs(120));
    let source_now = ends(&src, TOPIC);
    eprintln!("destination brokers restarted: destination ends {dest_before:?} at the kill; source ends {source_now:?} once back");
    caught_up(&source_now);
    assert!(
        m.running(),
        "the mirror gave up after the restarts: {}",
        m.log_text()
    );

    // Writes need all three replicas; one goes down, and once it has left the
    // in-sync set every produce is refused. (Partitions it led get a new leader whose
    // end cannot even be read until the replica is back: the refusal is seen in the
    // mirror's log, not in end offsets.)
    set_min_insync(&dst, DEST, 3);
    let victim = ids[ids.len() - 1];
    let source_before = ends(&src, TOPIC);
    b.kill(victim);
    let deadline = Instant::now() + Duration::from_secs(90);
    while !m.log_text().contains("failed: NotEnoughReplicas") {
        let log = m.log_text();
        assert!(
            Instant::now() < deadline,
            "the refusal never reached the mirror: {}",
            &log[log.len().saturating_sub(6000)..]
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    let source_now = ends(&src, TOPIC);
    eprintln!("writes refused; source ends {source_before:?} at the kill, {source_now:?} during the refusal");
    assert!(
        total(&source_now) > total(&source_before),
        "no records arrived while writes were refused"
    );
    b.restart(victim);
    b.wait_ready(Duration::from_secs(90));

    drop(stream);
    let source = ends(&src, TOPIC);
    eventually(Duration::from_secs(180), "the full copy", || {
        ends(&dst, DEST) == source
    });
    m.stop_cleanly();
    assert_exact(&src, &dst);
}
