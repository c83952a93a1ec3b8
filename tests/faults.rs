//! Crash, divergence and fencing tests against real brokers.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn kill_nine_at_random_moments_loses_and_duplicates_nothing() {
    let pair = Pair::start();
    let at_kills = scenarios::kill_nine_at_random_moments(&pair, 12, 50..600);
    let n = scenarios::mid_copy(&at_kills);
    assert!(
        n >= 3,
        "only {n} of 12 kills landed mid-copy (destination, source): {at_kills:?}"
    );
}

#[test]
fn refuses_a_partition_whose_destination_holds_a_foreign_record() {
    scenarios::refuses_a_foreign_record(&Pair::start());
}

#[test]
fn a_second_instance_fences_the_first() {
    // tansu refuses the older epoch's next write itself.
    scenarios::a_second_instance_fences_the_first(&Pair::start(), "fenced");
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
    // The live stream must be flowing through the mirror before the long cut, or on a
    // busy machine the cut can pass before there is anything to write.
    eventually(Duration::from_secs(60), "live records mirrored", || {
        dest_end() > 40_000
    });
    // A long cut of the destination while the stream is copied: held until the
    // partitions restart from the destination end (past the retry window), so the
    // verdict does not depend on how soon a busy machine notices.
    let restarts = |log: &str| log.matches("restarting").count();
    let before = restarts(&m.log_text());
    pb.cut();
    eventually(
        Duration::from_secs(90),
        "partitions restarted during the long cut",
        || restarts(&m.log_text()) > before,
    );
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
    m.stop_cleanly();
    // Compare through the proxies (both restored).
    for part in 0..2 {
        assert_same_at(&ba, "wan", &bb, "dc-a.wan", part);
    }
}

/// The source loses records already copied: its broker restarts with an empty log (the
/// memory engine keeps nothing) and fewer records come back than were mirrored. Each
/// partition of that topic stops with an error naming the offset where the source now
/// ends below the copy; nothing is written to it, and the mirror goes on with a topic
/// that appears on the new source.
#[test]
fn a_source_truncated_below_the_copy_stops_only_its_partitions() {
    use common::proxy::Proxy;
    use wanmirror::demo::broker::TansuBroker;

    let pa = Proxy::start();
    let a = TansuBroker::start_advertising("dc-a", Some(pa.port)).unwrap();
    let b = TansuBroker::start("dc-b").unwrap();
    let port = wanmirror::demo::broker::free_port().unwrap();
    pa.forward_to(a.port);
    let (ba, bb) = (format!("127.0.0.1:{}", pa.port), b.bootstrap());
    create_topic(&ba, "lost", 2);
    let p = producer(&ba, "zstd", true);
    for part in 0..2 {
        produce(&p, "lost", part, &sample(300, part as u64, |i| i % 200));
    }
    drop(p);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("m.toml");
    std::fs::write(
        &cfg,
        format!(
            "[source]\nname = \"dc-a\"\nbootstrap = \"{ba}\"\n[destination]\nname = \"dc-b\"\nbootstrap = \"{bb}\"\n[mirror]\ntopics = [\"lost\", \"fresh\"]\nreplication_factor = 1\nretry_secs = 2\nwatermark_grace_secs = 2\ntail_wait_ms = 100\nmetadata_refresh_secs = 1\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"
        ),
    )
    .unwrap();
    let mut m = Mirror::spawn(&cfg, &[]);
    let dest_end = |part| {
        if topic_exists(&bb, "dc-a.lost") {
            end_offset(&bb, "dc-a.lost", part)
        } else {
            0
        }
    };
    eventually(Duration::from_secs(60), "first copy", || {
        dest_end(0) == 300 && dest_end(1) == 300
    });
    let copied: Vec<_> = (0..2)
        .map(|part| consume_all(&bb, "dc-a.lost", part))
        .collect();

    // The source comes back empty; partition 0 gets 50 new records, partition 1 none.
    drop(a);
    let a2 = TansuBroker::start_advertising("dc-a", Some(pa.port)).unwrap();
    pa.forward_to(a2.port);
    create_topic(&ba, "lost", 2);
    create_topic(&ba, "fresh", 1);
    let p = producer(&ba, "lz4", true);
    produce(&p, "lost", 0, &sample(50, 7, |i| i % 100));
    produce(&p, "fresh", 0, &sample(400, 8, |i| i % 100));

    // Which check fires depends on timing (the fetch loop sees the low watermark, or
    // a restart sees the low end): both name the partition and stop it.
    let stopped = |log: &str, part: i32| {
        log.lines().any(|l| {
            l.contains("partition stopped")
                && l.contains("topic=lost")
                && l.contains(&format!("partition={part}"))
                && l.contains("diverges at offset")
        })
    };
    eventually(Duration::from_secs(90), "both partitions stopped", || {
        let log = m.log_text();
        stopped(&log, 0) && stopped(&log, 1)
    });
    eventually(Duration::from_secs(60), "the new topic copied", || {
        topic_exists(&bb, "dc-a.fresh") && end_offset(&bb, "dc-a.fresh", 0) == 400
    });
    assert!(m.running(), "{}", m.log_text());
    // Nothing was written to the stopped partitions: still the first copy, whole.
    for (part, first) in copied.iter().enumerate() {
        assert_eq!(&consume_all(&bb, "dc-a.lost", part as i32), first);
    }
    assert_same_at(&ba, "fresh", &bb, "dc-a.fresh", 0);
    // The metrics name both partitions stopped, by a divergence.
    let (_, body) = get_http(port, "/metrics");
    for part in 0..2 {
        let at = format!(r#"source_cluster="dc-a",topic="lost",partition="{part}""#);
        assert_eq!(
            metric_value(
                &body,
                &format!(r#"wanmirror_partition_state{{{at},state="stopped"}}"#)
            ),
            Some(1.0),
            "{body}"
        );
        assert_eq!(
            metric_value(
                &body,
                &format!(r#"wanmirror_partition_errors_total{{{at},kind="diverged"}}"#)
            ),
            Some(1.0),
            "{body}"
        );
    }
    let log = m.log_text();
    eprintln!(
        "{}",
        log.lines()
            .filter(|l| l.contains("partition stopped") || l.contains("waiting"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    m.signal(15);
    assert_eq!(
        m.wait(Duration::from_secs(30)).code(),
        Some(1),
        "{}",
        m.log_text()
    );
}
