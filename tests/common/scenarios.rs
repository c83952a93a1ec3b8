//! Test scenarios that run the same way on every broker: tests/faults.rs runs them on
//! tansu, tests/kafka_compat.rs on Apache Kafka.

use std::time::{Duration, Instant};

use rand::Rng;

use super::*;

/// Creates a topic with the cluster's replication factor.
pub fn topic<B: Broker>(broker: &B, name: &str, partitions: i32) {
    create_topic_with(
        &broker.bootstrap(),
        name,
        partitions,
        broker.replicas(),
        &[],
    );
}

/// kill -9 at random moments while four partitions are copied (more records arrive
/// between kills); afterwards the copy is exact. Returns, per kill, the records the
/// destination and the source held, so a caller can insist on mid-copy kills.
pub fn kill_nine_at_random_moments<A: Broker, B: Broker>(
    pair: &Pair<A, B>,
    rounds: usize,
    kill_after_ms: std::ops::Range<u64>,
) -> Vec<(i64, i64)> {
    topic(&pair.a, "crash", 4);
    let p = producer(&pair.a.bootstrap(), "lz4", true);
    for part in 0..4 {
        produce(
            &p,
            "crash",
            part,
            &sample(15_000, part as u64, |i| (i * 37) % 1500),
        );
    }
    let (sb, db) = (pair.a.bootstrap(), pair.b.bootstrap());
    let total = |b: &str, t: &str| -> i64 {
        if !topic_exists(b, t) {
            return 0;
        }
        (0..4).map(|p| end_offset(b, t, p)).sum()
    };
    // Small fetches make each run take many produce round trips, so kills land mid-copy.
    let cfg = pair.config(
        "m.toml",
        &["crash"],
        "fetch_bytes = 16384\nin_flight_bytes = 65536",
    );
    let mut rng = rand::rng();
    let mut at_kills = Vec::new();
    for round in 0..rounds {
        let mut m = Mirror::spawn(&cfg, &[]);
        std::thread::sleep(Duration::from_millis(
            rng.random_range(kill_after_ms.clone()),
        ));
        assert!(
            m.running(),
            "mirror exited early in round {round}: {}",
            m.log_text()
        );
        m.signal(9);
        m.wait(Duration::from_secs(10));
        at_kills.push((total(&db, "dc-a.crash"), total(&sb, "crash")));
        // Between kills, add records so later runs also have a backlog to copy.
        produce(
            &p,
            "crash",
            (round % 4) as i32,
            &sample(3000, 100 + round as u64, |i| i % 1500),
        );
    }
    let (st, log) = mirror_to_end(&cfg);
    assert!(st.success(), "final run failed: {log}");
    for part in 0..4 {
        assert_same(pair, "crash", "dc-a.crash", part);
    }
    at_kills
}

/// How many kills found the copy part-way.
pub fn mid_copy(at_kills: &[(i64, i64)]) -> usize {
    at_kills.iter().filter(|(d, s)| *d > 0 && d < s).count()
}

/// A foreign writer appends to the destination copy of partition 0: that partition is
/// refused with the offset named and nothing written past it; partition 1 goes on.
pub fn refuses_a_foreign_record<A: Broker, B: Broker>(pair: &Pair<A, B>) {
    topic(&pair.a, "d", 2);
    let p = producer(&pair.a.bootstrap(), "none", true);
    produce(&p, "d", 0, &sample(100, 1, |i| i));
    produce(&p, "d", 1, &sample(100, 2, |i| i));
    let cfg = pair.config("m.toml", &["d"], "");
    let (st, log) = mirror_to_end(&cfg);
    assert!(st.success(), "{log}");

    let foreign = producer(&pair.b.bootstrap(), "none", false);
    produce(
        &foreign,
        "dc-a.d",
        0,
        &[Rec {
            offset: 100,
            timestamp: Some(recent_ms()),
            key: Some(b"intruder".to_vec()),
            value: Some(b"not from the source".to_vec()),
            headers: vec![],
        }],
    );
    produce(&p, "d", 0, &sample(50, 3, |i| i));
    produce(&p, "d", 1, &sample(50, 4, |i| i));
    let (st, log) = mirror_to_end(&cfg);
    assert_eq!(st.code(), Some(1), "{log}");
    assert!(
        log.contains("dc-a.d/0 diverges at offset 100"),
        "error must name topic, partition and offset: {log}"
    );
    assert_eq!(end_offset(&pair.b.bootstrap(), "dc-a.d", 0), 101);
    assert_same(pair, "d", "dc-a.d", 1);
}

/// A second instance takes the fencing lock while the first tails; the first stops
/// with exit code 3 and a log line containing `fenced_by`, the second copies on, and
/// the copy is exact (no batch written by both).
pub fn a_second_instance_fences_the_first<A: Broker, B: Broker>(
    pair: &Pair<A, B>,
    fenced_by: &str,
) {
    topic(&pair.a, "f", 1);
    let p = producer(&pair.a.bootstrap(), "gzip", true);
    produce(&p, "f", 0, &sample(500, 9, |i| i % 100));
    let cfg = pair.config("m.toml", &["f"], "tail_wait_ms = 100");
    let mut first = Mirror::spawn(&cfg, &[]);
    let b = pair.b.bootstrap();
    eventually(Duration::from_secs(60), "first copy", || {
        topic_exists(&b, "dc-a.f") && end_offset(&b, "dc-a.f", 0) == 500
    });
    let mut second = Mirror::spawn(&cfg, &[]);
    eventually(
        Duration::from_secs(30),
        "second instance to hold the lock",
        || second.log_text().contains("holding the fencing lock"),
    );
    // Both instances see these records.
    produce(&p, "f", 0, &sample(200, 10, |i| i % 100));
    let deadline = Instant::now() + Duration::from_secs(60);
    while first.running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !first.running(),
        "the first instance was not fenced; its log:\n{}\nthe second's:\n{}",
        first.log_text(),
        second.log_text()
    );
    let st = first.wait(Duration::from_secs(1));
    assert_eq!(st.code(), Some(3), "{}", first.log_text());
    assert!(first.log_text().contains(fenced_by), "{}", first.log_text());
    eventually(Duration::from_secs(60), "second instance copy", || {
        end_offset(&b, "dc-a.f", 0) == 700
    });
    assert!(second.running(), "{}", second.log_text());
    second.signal(15);
    assert!(second.wait(Duration::from_secs(30)).success());
    assert_eq!(assert_same(pair, "f", "dc-a.f", 0), 700);
}

/// Runs `wanmirror diff --json` of one topic between two clusters; exit code and report.
pub fn diff_json(
    source: &str,
    dest: &str,
    source_topic: &str,
    dest_topic: &str,
    extra: &[&str],
) -> (i32, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_wanmirror"))
        .args(["diff", "--json"])
        .args(["--source-bootstrap", source, "--dest-bootstrap", dest])
        .args(["--source-topic", source_topic, "--dest-topic", dest_topic])
        .args(extra)
        .output()
        .expect("run wanmirror diff");
    exit_and_json(&out)
}

/// A command's exit code and the JSON it printed.
fn exit_and_json(out: &std::process::Output) -> (i32, serde_json::Value) {
    let code = out.status.code().unwrap_or(-1);
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON ({e}), exit {code}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, json)
}

/// Runs `wanmirror status --json --config`; exit code and answer.
pub fn status_json(config: &std::path::Path) -> (i32, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_wanmirror"))
        .args(["status", "--json", "--config"])
        .arg(config)
        .output()
        .expect("run wanmirror status");
    exit_and_json(&out)
}

/// One fetch at `offset` of partition 0 asking for `max_bytes`: the bytes of the
/// answer's record set, and the bytes of the whole batches in it (a broker may cut
/// the last batch off at the limit).
pub fn answer_bytes(bootstrap: &str, topic: &str, offset: i64, max_bytes: i32) -> (usize, usize) {
    use wanmirror::kafka::batch::split_batches;
    runtime().block_on(async {
        let c: wanmirror::source::Source =
            Cluster::new("dc-a", bootstrap, SocketOptions::default()).into();
        let f = c
            .fetch_piece(topic, 0, offset, max_bytes, false, None)
            .await
            .expect("fetch");
        let whole = split_batches(&f.records).expect("batches");
        (f.records.len(), whole.iter().map(|b| b.bytes.len()).sum())
    })
}

/// One-byte catch-up fetches of a real broker's log (batches of up to 20 records):
/// each brings exactly one batch, and where the answer is larger than its head, the
/// head names that batch. Returns (offset, first batch base, next) per fetch.
pub fn one_batch_answers(bootstrap: &str, topic: &str, offsets: &[i64]) -> Vec<(i64, i64, i64)> {
    use wanmirror::kafka::batch::split_batches;
    runtime().block_on(async {
        let c: wanmirror::source::Source =
            Cluster::new("dc-a", bootstrap, SocketOptions::default()).into();
        let mut out = Vec::new();
        let mut told = 0;
        for &offset in offsets {
            let (tx, rx) = std::sync::mpsc::channel();
            let tell = Box::new(move |h: wanmirror::kafka::peek::Head| {
                if let Some(first) = h.first {
                    tx.send(first).unwrap();
                }
            });
            let f = c
                .fetch_piece(topic, 0, offset, 1, false, Some(tell))
                .await
                .expect("fetch");
            let batches = split_batches(&f.records).expect("batches");
            assert_eq!(
                batches.len(),
                1,
                "a one-byte ask brings one batch (at {offset})"
            );
            let first = &batches[0].header;
            if f.records.len() > wanmirror::kafka::peek::HEAD_BYTES {
                assert_eq!(
                    rx.try_recv().ok(),
                    Some((first.base_offset, first.next_offset())),
                    "head of the answer at {offset}"
                );
                told += 1;
            }
            out.push((offset, first.base_offset, first.next_offset()));
        }
        assert!(told >= 6, "answers too small to have heads: {told}");
        out
    })
}
