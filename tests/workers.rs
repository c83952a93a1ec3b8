//! Several mirror workers as one group on the destination cluster (`[group]`), against
//! real tansu brokers while records keep arriving: every partition mirrored by exactly
//! one member, a killed member's partitions taken over within its session, a returning
//! member given back its share with as few moves as possible, a stopped (zombie)
//! member's writes refused after it wakes, and the copy exact throughout.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::*;
use rdkafka::consumer::Consumer;
use wanmirror::demo::broker::{free_port, TansuBroker};

const TOPICS: [&str; 3] = ["t0", "t1", "t2"];
const SESSION_MS: u64 = 6000;

/// The longest a kill -9 may take to move a member's partitions, as
/// docs/configuration.md ("Failures") bounds it: the session timeout for the
/// coordinator to drop the member, two watch ticks a second apart for the leader to
/// see it gone (tansu starts no rebalance itself), and a JoinGroup held for up to
/// twice the session timeout plus 5 s while the others rejoin. Measured unloaded:
/// 9-11 s; a loaded machine has needed 17 s.
fn takeover_bound() -> Duration {
    Duration::from_millis(3 * SESSION_MS) + Duration::from_secs(7)
}

/// One worker's config: the shared group, its own metrics port.
fn worker_config(dir: &Path, a: &str, b: &str, name: &str, port: u16) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    // A pattern: a topic created later (t3) is found by discovery.
    write_config(&p, a, b, 1, &["t[0-9]"], "tail_wait_ms = 100");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(
        &p,
        format!(
            "{text}[group]\nid = \"wanmirror.test\"\nsession_timeout_ms = {SESSION_MS}\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"
        ),
    )
    .unwrap();
    p
}

type Owned = BTreeSet<(String, i32)>;

/// The partitions a worker mirrors now, from its metrics: those with a running state.
fn owned(port: u16) -> Option<Owned> {
    std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let body = get_http(port, "/metrics").1;
    let mut out = BTreeSet::new();
    for l in body.lines().filter(|l| {
        l.starts_with("wanmirror_partition_state{")
            && l.ends_with(" 1")
            && !l.contains("state=\"stopped\"")
    }) {
        let field = |k: &str| -> String {
            let i = l.find(&format!("{k}=\"")).expect("label") + k.len() + 2;
            l[i..].split('"').next().unwrap().to_string()
        };
        out.insert((field("topic"), field("partition").parse().unwrap()));
    }
    Some(out)
}

/// All `n` partitions, each owned by exactly one of `ports`' workers; the owners by
/// port.
fn exactly(ports: &[u16], n: usize) -> Option<BTreeMap<u16, Owned>> {
    let mut by = BTreeMap::new();
    let mut all = BTreeSet::new();
    for p in ports {
        let o = owned(*p)?;
        for x in &o {
            if !all.insert(x.clone()) {
                return None;
            }
        }
        by.insert(*p, o);
    }
    (all.len() == n).then_some(by)
}

/// The (base offset, producer id, epoch) of every batch of a destination partition,
/// in offset order.
fn stamps(bootstrap: &str, topic: &str, partition: i32) -> Vec<(i64, i64, i16)> {
    all_batches(bootstrap, topic, partition)
        .iter()
        .map(|b| {
            (
                b.header.base_offset,
                b.header.producer_id,
                b.header.producer_epoch,
            )
        })
        .collect()
}

/// Worker processes of one group, each with its config and metrics port.
struct Workers {
    cfgs: Vec<PathBuf>,
    ports: Vec<u16>,
    w: Vec<Mirror>,
}

impl Workers {
    /// `n` workers mirroring `a` into `b`, named `{prefix}{i}`.
    fn start(dir: &Path, a: &str, b: &str, prefix: &str, n: usize) -> Workers {
        let ports: Vec<u16> = (0..n).map(|_| free_port().unwrap()).collect();
        let cfgs: Vec<PathBuf> = ports
            .iter()
            .enumerate()
            .map(|(i, p)| worker_config(dir, a, b, &format!("{prefix}{i}"), *p))
            .collect();
        let w = cfgs.iter().map(|c| Workers::spawn(c)).collect();
        Workers { cfgs, ports, w }
    }

    fn spawn(cfg: &Path) -> Mirror {
        Mirror::spawn_logging(cfg, &[], "info,wanmirror::groups=debug")
    }

    /// Starts worker `i` again after it was killed.
    fn restart(&mut self, i: usize) {
        self.w[i] = Workers::spawn(&self.cfgs[i]);
    }

    fn logs(&self) -> String {
        self.w
            .iter()
            .map(|m| m.log_text())
            .collect::<Vec<_>>()
            .join("\n----\n")
    }

    /// Waits until the workers at `ports` own all `n` partitions exactly once and
    /// `fair` holds for the owners, checking every `every`; panics with the logs
    /// (naming `what`) once `limit` passed since `since`.
    #[allow(clippy::too_many_arguments)]
    fn owners_until(
        &self,
        ports: &[u16],
        n: usize,
        fair: impl Fn(&BTreeMap<u16, Owned>) -> bool,
        since: Instant,
        limit: Duration,
        every: Duration,
        what: &str,
    ) -> BTreeMap<u16, Owned> {
        loop {
            if let Some(by) = exactly(ports, n).filter(|by| fair(by)) {
                return by;
            }
            assert!(since.elapsed() < limit, "{what}: {}", self.logs());
            std::thread::sleep(every);
        }
    }
}

/// Every member owning the same number of partitions.
fn even(by: &BTreeMap<u16, Owned>) -> bool {
    let n: usize = by.values().map(BTreeSet::len).sum();
    by.values().all(|o| o.len() == n / by.len())
}

/// No condition beyond exact ownership.
fn any(_: &BTreeMap<u16, Owned>) -> bool {
    true
}

/// Waits until every partition of `TOPICS` reached the source's end in the
/// destination, then checks each record for record, and that no batch under an older
/// epoch of a partition's producer follows one under a newer epoch. Returns the
/// records.
fn assert_exact_in_epoch_order<A: Broker, B: Broker>(pair: &Pair<A, B>) -> usize {
    let (a, b) = (pair.a.bootstrap(), pair.b.bootstrap());
    eventually(
        Duration::from_secs(90),
        "the copy reaches the source end",
        || {
            TOPICS.iter().all(|t| {
                (0..4).all(|p| end_offset(&b, &format!("dc-a.{t}"), p) == end_offset(&a, t, p))
            })
        },
    );
    let mut records = 0;
    for t in TOPICS {
        for p in 0..4 {
            records += assert_same(pair, t, &format!("dc-a.{t}"), p);
            let mut newest: BTreeMap<i64, i16> = BTreeMap::new();
            for (offset, pid, epoch) in stamps(&b, &format!("dc-a.{t}"), p) {
                let e = newest.entry(pid).or_insert(epoch);
                assert!(
                    epoch >= *e,
                    "{t}/{p}: epoch {epoch} of producer {pid} at {offset} after epoch {e}"
                );
                *e = epoch;
            }
        }
    }
    records
}

#[test]
fn three_workers_share_partitions_take_over_and_fence_a_zombie() {
    let pair = Pair::start();
    let (a, b) = (pair.a.bootstrap(), pair.b.bootstrap());
    for t in TOPICS {
        create_topic(&a, t, 4);
    }
    let mut traffic = Traffic::start(&a, &TOPICS, 4);
    let mut w = Workers::start(pair.dir.path(), &a, &b, "w", 3);
    let ports = w.ports.clone();
    let quarter = Duration::from_millis(250);

    // 1. Every partition owned by exactly one member, four each.
    let first = w.owners_until(
        &ports,
        12,
        even,
        Instant::now(),
        Duration::from_secs(90),
        quarter,
        "no exact 4/4/4 ownership",
    );
    eprintln!("ownership: {first:?}");

    // 2. kill -9 one member: the others take its partitions.
    w.w[2].signal(9);
    let killed = Instant::now();
    let after_kill = w.owners_until(
        &ports[..2],
        12,
        any,
        killed,
        takeover_bound() + Duration::from_secs(10),
        Duration::from_millis(100),
        "no takeover",
    );
    let takeover = killed.elapsed();
    eprintln!(
        "takeover after kill -9: {:.1} s (session {} ms)",
        takeover.as_secs_f64(),
        SESSION_MS
    );
    assert!(
        takeover < takeover_bound(),
        "took {takeover:?}: {}",
        w.logs()
    );

    // 3. It comes back: it gets a third again, and only what it takes moves.
    w.restart(2);
    let back = w.owners_until(
        &ports,
        12,
        even,
        Instant::now(),
        Duration::from_secs(60),
        quarter,
        "no rebalance on return",
    );
    let moved: usize = ports[..2]
        .iter()
        .map(|p| after_kill[p].difference(&back[p]).count())
        .sum();
    let gained: usize = ports[..2]
        .iter()
        .map(|p| back[p].difference(&after_kill[p]).count())
        .sum();
    eprintln!("on the join: {moved} partitions moved, {gained} moved between the others");
    assert_eq!(
        (moved, gained),
        (4, 0),
        "{after_kill:?} -> {back:?}: {}",
        w.logs()
    );

    // 4. Zombie: stop a member past its session, let the others take over and write.
    let zombie = 1;
    let its: Owned = back[&ports[zombie]].clone();
    w.w[zombie].signal(19); // SIGSTOP
    w.owners_until(
        &[ports[0], ports[2]],
        12,
        any,
        Instant::now(),
        Duration::from_secs(60),
        Duration::from_millis(100),
        "no takeover from the zombie",
    );
    // The new owners write to the zombie's partitions.
    let ends: Vec<i64> = its
        .iter()
        .map(|(t, p)| end_offset(&b, &format!("dc-a.{t}"), *p))
        .collect();
    eventually(Duration::from_secs(30), "the new owners write", || {
        its.iter()
            .zip(&ends)
            .all(|((t, p), e)| end_offset(&b, &format!("dc-a.{t}"), *p) > *e)
    });
    let asleep = w.w[zombie].log_text().len();
    w.w[zombie].signal(18); // SIGCONT

    // It wakes, finds itself out of the group, and rejoins: 4/4/4 again.
    w.owners_until(
        &ports,
        12,
        even,
        Instant::now(),
        Duration::from_secs(60),
        quarter,
        "the zombie never rejoined",
    );
    // What it logged after waking: it learnt it was out of the group, and it did try
    // to write, and the broker refused the write.
    let zlog = w.w[zombie].log_text()[asleep..].to_string();
    let woke: Vec<&str> = zlog
        .lines()
        .filter(|l| l.contains("out of the group") || l.contains("dropping the partition"))
        .collect();
    eprintln!("the zombie after waking:\n{}", woke.join("\n"));
    assert!(
        zlog.contains("dropping the partition, its write refused"),
        "the zombie never tried a write after waking: {zlog}"
    );

    // 5. A new topic goes through the group's assignment: each of its partitions to
    // exactly one member.
    create_topic(&a, "t3", 2);
    let p3 = producer(&a, "none", false);
    let t3: Vec<Vec<Rec>> = (0..2).map(|i| sample(50, 30 + i, |_| 20)).collect();
    for (part, r) in t3.iter().enumerate() {
        produce(&p3, "t3", part as i32, r);
    }
    let with_t3 = w.owners_until(
        &ports,
        14,
        any,
        Instant::now(),
        Duration::from_secs(60),
        quarter,
        "t3 never assigned",
    );
    eprintln!("with t3: {with_t3:?}");

    // 6. The copy is complete and exact, and no older epoch's batch follows a newer
    // one in any partition: nothing the zombie wrote after being fenced landed.
    let produced = traffic.finish();
    eventually(Duration::from_secs(60), "t3 copied", || {
        (0..2).all(|p| end_offset(&b, "dc-a.t3", p) == 50)
    });
    for p in 0..2 {
        assert_eq!(assert_same(&pair, "t3", "dc-a.t3", p), 50);
    }
    let records = assert_exact_in_epoch_order(&pair);
    eprintln!("{records} records in 12 partitions ({produced} rounds produced), identical");
    for m in &mut w.w {
        m.stop_cleanly();
    }
    assert!(
        w.w.iter().all(|m| m.log_text().contains("left the group")),
        "{}",
        w.logs()
    );
}

/// What `wanmirror run` printed and how it exited.
fn run_once(cfg: &Path) -> (Option<i32>, String, Duration) {
    let t0 = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wanmirror"))
        .args(["run", "--config", cfg.to_str().unwrap()])
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
        t0.elapsed(),
    )
}

#[test]
fn a_taken_group_id_and_an_unreachable_coordinator_are_one_line_and_exit_2() {
    let pair = Pair::start();
    let (a, b) = (pair.a.bootstrap(), pair.b.bootstrap());
    create_topic(&a, "orders", 2);
    create_topic(&b, "apps", 1);
    // An application's consumer group of that id is running in the destination.
    let app = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", &b)
        .set("group.id", "taken")
        .set("session.timeout.ms", "6000")
        .create::<rdkafka::consumer::BaseConsumer>()
        .unwrap();
    app.subscribe(&["apps"]).unwrap();
    eventually(Duration::from_secs(30), "the application joined", || {
        let _ = app.poll(Duration::from_millis(100));
        app.assignment().is_ok_and(|a| a.count() > 0)
    });
    let cfg = pair.dir.path().join("taken.toml");
    write_config(&cfg, &a, &b, 1, &["orders"], "");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{text}[group]\nid = \"taken\"\n")).unwrap();
    let (code, err, _) = run_once(&cfg);
    let _ = app.poll(Duration::from_millis(10));
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("taken") && err.contains("\"consumer\""),
        "{err}"
    );
    assert!(!topic_exists(&b, "dc-a.orders"), "a topic was created");
    eprintln!("{err}");

    // A destination whose brokers are only reachable at an address nothing answers
    // on (its advertised listener), the bootstrap address aside: the coordinator
    // cannot be reached.
    let dead = Proxy::start(); // never forwards: connections are dropped
    let c = TansuBroker::start_advertising("dc-c", Some(dead.port)).expect("broker");
    let cfg = pair.dir.path().join("unreachable.toml");
    write_config(&cfg, &a, &c.bootstrap(), 1, &["orders"], "");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        format!("{text}[group]\nid = \"g\"\nsession_timeout_ms = 3000\n"),
    )
    .unwrap();
    let (code, err, took) = run_once(&cfg);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("coordinator") && err.contains("cannot be reached"),
        "{err}"
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(
        !topic_exists(&c.bootstrap(), "dc-a.orders"),
        "a topic was created"
    );
    eprintln!("{err}");
}

/// The same group on Apache Kafka's coordinator, which (unlike tansu's) holds every
/// JoinGroup until all members rejoined: two workers split the partitions, one is
/// killed and the other takes everything, the killed one returns and takes half back,
/// and the copy stays exact with epochs in order.
#[test]
fn two_workers_on_kafkas_coordinator() {
    use common::kafka::{KafkaCluster, Shape};
    let b = std::thread::spawn(|| KafkaCluster::start(Shape::single()));
    let pair = Pair::with(KafkaCluster::start(Shape::single()), b.join().unwrap());
    let (a, b) = (pair.a.bootstrap(), pair.b.bootstrap());
    for t in TOPICS {
        common::scenarios::topic(&pair.a, t, 4);
    }
    let mut traffic = Traffic::start(&a, &TOPICS, 4);
    let mut w = Workers::start(pair.dir.path(), &a, &b, "k", 2);
    let ports = w.ports.clone();
    let quarter = Duration::from_millis(250);
    let first = w.owners_until(
        &ports,
        12,
        even,
        Instant::now(),
        Duration::from_secs(90),
        quarter,
        "no even split",
    );
    eprintln!("kafka ownership: {first:?}");

    w.w[1].signal(9);
    let killed = Instant::now();
    w.owners_until(
        &ports[..1],
        12,
        any,
        killed,
        takeover_bound() + Duration::from_secs(10),
        quarter,
        "no takeover",
    );
    let takeover = killed.elapsed();
    eprintln!(
        "kafka: takeover after kill -9: {:.1} s (session {} ms)",
        takeover.as_secs_f64(),
        SESSION_MS
    );
    assert!(
        takeover < takeover_bound(),
        "took {takeover:?}: {}",
        w.logs()
    );

    w.restart(1);
    let back = w.owners_until(
        &ports,
        12,
        even,
        Instant::now(),
        Duration::from_secs(60),
        quarter,
        "no even split on return",
    );
    let moved = 12 - back[&ports[0]].len();
    eprintln!("kafka: on the join: {moved} partitions moved");

    traffic.finish();
    assert_exact_in_epoch_order(&pair);
    for m in &mut w.w {
        m.stop_cleanly();
    }
}
