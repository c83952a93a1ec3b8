//! A live stream: a topic written all the time while the mirror runs, across the test
//! link proxy, stays offset-identical. Bursts make partitions fall behind and be
//! caught up in pooled pieces (the pool grows) while records keep arriving, and the
//! quieter stretches between them let the pool shrink again. Busy partitions at their
//! end go live (pieces and probes over the pool) and back to the shared long poll.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::*;
use wanmirror::demo::broker::TansuBroker;

const PARTS: i32 = 3;

/// The reasons of the mirror's pool size changes, in order.
fn pool_changes(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("fetch pool resized"))
        .filter_map(|l| l.split("change=").nth(1))
        .filter_map(|s| s.split_whitespace().next())
        .map(|s| {
            s.trim_start_matches("Some(")
                .trim_end_matches(')')
                .to_string()
        })
        .collect()
}

#[test]
fn a_topic_written_all_the_time_stays_offset_identical() {
    let pa = Proxy::start();
    let a = TansuBroker::start_advertising("dc-a", Some(pa.port)).unwrap();
    let b = TansuBroker::start("dc-b").unwrap();
    pa.forward_to(a.port);
    let (ba, bb) = (format!("127.0.0.1:{}", pa.port), b.bootstrap());
    create_topic(&ba, "stream", PARTS);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("m.toml");
    let extra = POOLED.replace("tail_wait_ms = 100", "tail_wait_ms = 20");
    write_config(&cfg, &ba, &bb, 1, &["stream"], &extra);
    let m = Mirror::spawn_logging(
        &cfg,
        &[],
        "info,wanmirror::mirror::partition=debug,wanmirror::mirror::catch_up=debug",
    );

    // The load: bursts of a few MB as fast as the producer goes, then a trickle, until
    // the pool has grown and shrunk while records were arriving (or a time limit).
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let producer_thread = {
        let (stop, sent, ba) = (stop.clone(), sent.clone(), ba.clone());
        std::thread::spawn(move || {
            let p = small_batches(&ba, "lz4");
            let mut seed = 100;
            while !stop.load(Ordering::Relaxed) {
                for part in 0..PARTS {
                    let burst = sample(2_000, seed, |i| (i * 131) % 1500);
                    produce(&p, "stream", part, &burst);
                    seed += 1;
                    sent.fetch_add(burst.len() as u64, Ordering::Relaxed);
                }
                let until = Instant::now() + Duration::from_secs(3);
                while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    for part in 0..PARTS {
                        let trickle = sample(20, seed, |i| i % 300);
                        produce(&p, "stream", part, &trickle);
                        seed += 1;
                        sent.fetch_add(trickle.len() as u64, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
    };
    let shrank_after_growth = |log: &str| {
        let c = pool_changes(log);
        c.iter()
            .position(|x| x == "Grew")
            .is_some_and(|g| c[g..].iter().any(|x| x == "Reverted" || x == "Idle"))
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline && !shrank_after_growth(&m.log_text()) {
        std::thread::sleep(Duration::from_millis(500));
    }
    // One more burst after the shrink, then the load stops.
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    producer_thread.join().expect("producer");
    let log = m.log_text();
    assert!(
        shrank_after_growth(&log),
        "the pool should have grown and shrunk under the load: {:?}\n{log}",
        pool_changes(&log)
    );

    let total = sent.load(Ordering::Relaxed) as i64;
    let ends = |bs: &str, t: &str| (0..PARTS).map(|p| end_offset(bs, t, p)).sum::<i64>();
    assert_eq!(ends(&ba, "stream"), total, "the source holds what was sent");
    eventually(Duration::from_secs(60), "the copy catches up", || {
        ends(&bb, "dc-a.stream") == total
    });
    let log = m.log_text();
    drop(m);
    assert!(
        log.contains("catching up in parallel pieces"),
        "bursts should have been caught up in pieces: {log}"
    );
    assert!(
        log.contains("data keeps coming: the partition goes live"),
        "busy tailing partitions should have gone live: {log}"
    );
    // Live partitions probed their end on pooled connections, and went quiet again.
    let probes: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("partition quiet again"))
        .filter_map(|l| l.split(" probes=").nth(1))
        .filter_map(|s| s.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(
        probes.iter().any(|n| *n > 0),
        "live partitions should have probed their end and gone quiet again: {probes:?}\n{log}"
    );
    eprintln!(
        "records: {total}; pool changes: {:?}; probes per live stretch: {probes:?}",
        pool_changes(&log)
    );
    for part in 0..PARTS {
        let s = consume_all(&ba, "stream", part);
        let d = consume_all(&bb, "dc-a.stream", part);
        assert_eq!(s.len() as i64, end_offset(&ba, "stream", part));
        assert_eq!(s, d, "partition {part}");
    }
}
