//! Crash, divergence and fencing tests against real brokers.

mod common;

use std::time::Duration;

use common::*;
use rand::Rng;

#[test]
fn kill_nine_at_random_moments_loses_and_duplicates_nothing() {
    let pair = Pair::start();
    create_topic(&pair.a.bootstrap(), "crash", 4);
    let p = producer(&pair.a.bootstrap(), "lz4", true);
    for part in 0..4 {
        produce(
            &p,
            "crash",
            part,
            &sample(15_000, part as u64, |i| (i * 37) % 1500),
        );
    }
    // Small fetches make each run take many produce round trips, so kills land mid-copy.
    let cfg = pair.config(
        "m.toml",
        &["crash"],
        "fetch_bytes = 16384\nin_flight_bytes = 65536",
    );
    let mut rng = rand::rng();
    let mut kills = 0;
    for round in 0..12 {
        let mut m = Mirror::spawn(&cfg, &[]);
        std::thread::sleep(Duration::from_millis(rng.random_range(300..1500)));
        if !m.running() {
            panic!("mirror exited early in round {round}: {}", m.log_text());
        }
        m.signal(9);
        m.wait(Duration::from_secs(10));
        kills += 1;
        // Between kills, add records so later runs also resume mid-stream.
        if round % 3 == 0 {
            produce(
                &p,
                "crash",
                round % 4,
                &sample(500, 100 + round as u64, |i| i % 200),
            );
        }
    }
    assert!(kills >= 10);
    let (st, log) = mirror_to_end(&cfg);
    assert!(st.success(), "final run failed: {log}");
    for part in 0..4 {
        assert_same(&pair, "crash", "dc-a.crash", part);
    }
}

#[test]
fn refuses_a_partition_whose_destination_holds_a_foreign_record() {
    let pair = Pair::start();
    create_topic(&pair.a.bootstrap(), "d", 2);
    let p = producer(&pair.a.bootstrap(), "none", true);
    produce(&p, "d", 0, &sample(100, 1, |i| i));
    produce(&p, "d", 1, &sample(100, 2, |i| i));
    let cfg = pair.config("m.toml", &["d"], "");
    let (st, log) = mirror_to_end(&cfg);
    assert!(st.success(), "{log}");

    // A foreign writer appends to the destination copy of partition 0.
    let foreign = producer(&pair.b.bootstrap(), "none", false);
    produce(
        &foreign,
        "dc-a.d",
        0,
        &[Rec {
            offset: 100,
            timestamp: Some(1),
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
    // Nothing was written past the foreign record; the healthy partition went on.
    assert_eq!(end_offset(&pair.b.bootstrap(), "dc-a.d", 0), 101);
    assert_same(&pair, "d", "dc-a.d", 1);
}

#[test]
fn a_second_instance_fences_the_first() {
    let pair = Pair::start();
    create_topic(&pair.a.bootstrap(), "f", 1);
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
    // The first instance learns it was fenced on its next write.
    produce(&p, "f", 0, &sample(200, 10, |i| i % 100));
    let st = first.wait(Duration::from_secs(60));
    assert_eq!(st.code(), Some(3), "{}", first.log_text());
    assert!(first.log_text().contains("fenced"), "{}", first.log_text());
    eventually(Duration::from_secs(60), "second instance copy", || {
        end_offset(&b, "dc-a.f", 0) == 700
    });
    assert!(second.running(), "{}", second.log_text());
    second.signal(15);
    assert!(second.wait(Duration::from_secs(30)).success());
    assert_eq!(assert_same(&pair, "f", "dc-a.f", 0), 700);
}

/// WAN outages: the links to the source and to the destination are cut while the
/// mirror copies a backlog and a live stream. Short cuts are ridden out by retries; a
/// long one restarts the partitions from the destination end. The copy must still be
/// exact.
#[test]
fn survives_cut_links_to_both_clusters() {
    use common::proxy::Proxy;
    use wanmirror::demo::broker::TansuBroker;

    let (pa, pb) = (Proxy::start(), Proxy::start());
    let a = TansuBroker::start_advertising("dc-a", Some(pa.port)).unwrap();
    let b = TansuBroker::start_advertising("dc-b", Some(pb.port)).unwrap();
    pa.forward_to(a.port);
    pb.forward_to(b.port);
    let (ba, bb) = (
        format!("127.0.0.1:{}", pa.port),
        format!("127.0.0.1:{}", pb.port),
    );
    create_topic(&ba, "wan", 2);
    let p = producer(&ba, "lz4", true);
    for part in 0..2 {
        produce(
            &p,
            "wan",
            part,
            &sample(20_000, part as u64, |i| (i * 37) % 1000),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("m.toml");
    std::fs::write(
        &cfg,
        format!(
            "[source]\nname = \"dc-a\"\nbootstrap = \"{ba}\"\n[destination]\nname = \"dc-b\"\nbootstrap = \"{bb}\"\n[mirror]\ntopics = [\"wan\"]\nreplication_factor = 1\nfetch_bytes = 16384\nin_flight_bytes = 65536\nretry_secs = 2\ntail_wait_ms = 100\n"
        ),
    )
    .unwrap();
    let mut m = Mirror::spawn(&cfg, &[]);
    let dest_end = || end_offset(&bb, "dc-a.wan", 0) + end_offset(&bb, "dc-a.wan", 1);
    eventually(Duration::from_secs(60), "copy under way", || {
        topic_exists(&bb, "dc-a.wan") && dest_end() > 0
    });
    // The backlog is copied in a blink over loopback; the source stays live through
    // the cuts below so that there is always something to copy when a link dies.
    let live = {
        let ba = ba.clone();
        std::thread::spawn(move || {
            let p = producer(&ba, "lz4", true);
            for round in 0..40u64 {
                for part in 0..2 {
                    produce(
                        &p,
                        "wan",
                        part,
                        &sample(250, 1000 + round, |i| (i * 17) % 700),
                    );
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    // A long cut of the destination while the backlog is copied: past the retry
    // window, so the partitions restart from the destination end.
    pb.cut();
    std::thread::sleep(Duration::from_secs(4));
    pb.restore();
    // Short cuts of both links: ridden out by retries.
    for proxy in [&pa, &pb, &pa, &pb] {
        proxy.cut();
        std::thread::sleep(Duration::from_millis(700));
        proxy.restore();
        std::thread::sleep(Duration::from_millis(500));
    }
    live.join().expect("live producer");
    eventually(Duration::from_secs(120), "full copy", || {
        dest_end() == 60_000
    });
    assert!(m.running(), "{}", m.log_text());
    m.signal(15);
    assert!(
        m.wait(Duration::from_secs(30)).success(),
        "{}",
        m.log_text()
    );
    let log = m.log_text();
    assert!(
        log.contains("restarting"),
        "the long cut should restart partitions: {log}"
    );
    // Compare through the proxies (both restored).
    for part in 0..2 {
        let s = consume_all(&ba, "wan", part);
        let d = consume_all(&bb, "dc-a.wan", part);
        assert_eq!(s, d, "partition {part}");
    }
}
