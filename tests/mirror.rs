//! End-to-end mirror tests: two real tansu brokers, librdkafka producing and reading,
//! the wanmirror binary in between. Each test owns its brokers and ports.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn every_codec_with_idempotent_producers_headers_and_nulls() {
    let pair = Pair::start();
    let codecs = ["none", "gzip", "snappy", "lz4", "zstd"];
    for codec in codecs {
        let topic = format!("codec-{codec}");
        create_topic(&pair.a.bootstrap(), &topic, 1);
        let p = producer(&pair.a.bootstrap(), codec, true);
        produce(&p, &topic, 0, &sample(3000, 7, |i| (i * 13) % 2000));
    }
    let cfg = pair.config("m.toml", &["codec-.*"], "");
    let (st, log) = mirror_to_end(&cfg);
    assert!(st.success(), "mirror failed: {log}");
    for codec in codecs {
        let topic = format!("codec-{codec}");
        let n = assert_same(&pair, &topic, &format!("dc-a.{topic}"), 0);
        assert_eq!(n, 3000);
    }
}

#[test]
fn sixteen_partitions_and_record_sizes_up_to_the_limit() {
    let pair = Pair::start();
    create_topic(&pair.a.bootstrap(), "wide", 16);
    create_topic(&pair.a.bootstrap(), "sizes", 1);
    let p = producer(&pair.a.bootstrap(), "lz4", true);
    for part in 0..16 {
        produce(
            &p,
            "wide",
            part,
            &sample(200 + part as usize * 10, part as u64, |i| i % 300),
        );
    }
    // 0 B up to just under the 1 MiB default max.message.bytes (batch overhead included).
    let recs = sized_records(&[0, 1, 100, 10_000, 100_000, 500_000, 1_000_000]);
    let big = producer(&pair.a.bootstrap(), "none", false);
    produce(&big, "sizes", 0, &recs);
    let cfg = pair.config("m.toml", &["wide", "sizes"], "rename = \"{topic}\"");
    let (st, log) = mirror_to_end(&cfg);
    assert!(st.success(), "mirror failed: {log}");
    for part in 0..16 {
        assert_eq!(
            assert_same(&pair, "wide", "wide", part),
            200 + part as usize * 10
        );
    }
    assert_eq!(assert_same(&pair, "sizes", "sizes", 0), recs.len());
}

#[test]
fn tails_new_records_new_topics_and_stops_cleanly_on_sigterm() {
    let pair = Pair::start();
    create_topic(&pair.a.bootstrap(), "live", 2);
    let p = producer(&pair.a.bootstrap(), "snappy", true);
    produce(&p, "live", 0, &sample(500, 1, |i| i % 100));
    let cfg = pair.config("m.toml", &["live", "late"], "tail_wait_ms = 200");
    let mut m = Mirror::spawn(&cfg, &[]);
    let b = pair.b.bootstrap();
    eventually(Duration::from_secs(60), "initial copy", || {
        topic_exists(&b, "dc-a.live") && end_offset(&b, "dc-a.live", 0) == 500
    });
    // Records produced while tailing (stamped now: their replication latency is how
    // long the mirror took; after a progress interval, so that no batch of the first
    // copy shares their line), and a topic created while running.
    std::thread::sleep(Duration::from_millis(1_500));
    let now = recent_ms() + 3_600_000;
    let fresh: Vec<Rec> = sample(300, 2, |i| i % 50)
        .into_iter()
        .map(|r| Rec {
            timestamp: Some(now),
            ..r
        })
        .collect();
    produce(&p, "live", 1, &fresh);
    create_topic(&pair.a.bootstrap(), "late", 1);
    produce(&p, "late", 0, &sample(100, 3, |i| i));
    eventually(Duration::from_secs(60), "tailed copy", || {
        end_offset(&b, "dc-a.live", 1) == 300
            && topic_exists(&b, "dc-a.late")
            && end_offset(&b, "dc-a.late", 0) == 100
    });
    m.signal(15);
    let st = m.wait(Duration::from_secs(30));
    assert!(st.success(), "SIGTERM should exit 0: {}", m.log_text());
    let log = m.log_text();
    assert!(log.contains("caught up"), "{log}");
    assert!(log.contains("progress"), "{log}");
    // Replication latency per topic on the progress lines: the first copy's records
    // were stamped an hour ago, the tailed ones a moment before they were produced.
    let late = latencies(&log, "late");
    assert!(
        !late.is_empty() && late.iter().all(|ms| *ms >= 3_600_000),
        "the hour-old records: {late:?}"
    );
    let live = latencies(&log, "live");
    assert!(
        live.iter().any(|ms| *ms < 60_000),
        "the tailed records: {live:?}"
    );
    assert_same(&pair, "live", "dc-a.live", 0);
    assert_same(&pair, "live", "dc-a.live", 1);
    assert_same(&pair, "late", "dc-a.late", 0);
}

#[test]
fn resumes_after_a_clean_stop_without_duplicates() {
    let pair = Pair::start();
    create_topic(&pair.a.bootstrap(), "t", 1);
    let p = producer(&pair.a.bootstrap(), "zstd", true);
    let recs = sample(2000, 5, |i| i % 500);
    produce(&p, "t", 0, &recs[..1000]);
    let cfg = pair.config("m.toml", &["t"], "");
    let (st, log) = mirror_to_end(&cfg);
    assert!(st.success(), "{log}");
    produce(&p, "t", 0, &recs[1000..]);
    let (st, log) = mirror_to_end(&cfg);
    assert!(st.success(), "{log}");
    assert!(log.contains("destination tail matches the source"), "{log}");
    assert_eq!(assert_same(&pair, "t", "dc-a.t", 0), 2000);
}

/// The copy holds the source's batches as bytes: same batch boundaries, same codec,
/// same compressed record bytes; only producer fields and the CRC differ.
#[test]
fn batches_are_forwarded_as_bytes_and_topic_configs_are_copied() {
    use std::collections::BTreeMap;
    use wanmirror::kafka::batch::{split_batches, HEADER_LEN};

    let pair = Pair::start();
    let rt = runtime();
    let configs = BTreeMap::from([
        ("cleanup.policy".to_string(), "delete".to_string()),
        ("retention.ms".to_string(), "86400000".to_string()),
    ]);
    rt.block_on(async {
        pair.src()
            .create_topic("raw", 1, 1, &configs)
            .await
            .unwrap()
    });
    let p = producer(&pair.a.bootstrap(), "zstd", true);
    produce(&p, "raw", 0, &sample(2000, 3, |i| i % 400));
    let cfg = pair.config("m.toml", &["raw"], "");
    let (st, log) = mirror_to_end(&cfg);
    assert!(st.success(), "{log}");

    rt.block_on(async {
        let (src, dst) = (pair.src(), pair.dst());
        let mut next = 0;
        let mut compared = 0;
        while next < 2000 {
            let a = src
                .fetch("raw", 0, next, 1 << 20, Duration::ZERO)
                .await
                .unwrap();
            let b = dst
                .fetch("dc-a.raw", 0, next, 1 << 20, Duration::ZERO)
                .await
                .unwrap();
            let (a, b) = (
                split_batches(&a.records).unwrap(),
                split_batches(&b.records).unwrap(),
            );
            // Answers from two brokers may end at different batches: compare what both
            // brought, and go on from there. A destination missing batches brings
            // none where the source has some.
            let n = a.len().min(b.len());
            assert!(n > 0, "the destination has no batch at offset {next}");
            for (x, y) in a[..n].iter().zip(&b[..n]) {
                assert_eq!(x.header.base_offset, y.header.base_offset);
                assert_eq!(x.header.last_offset_delta, y.header.last_offset_delta);
                assert_eq!(x.header.compression(), 4);
                assert_eq!(y.header.compression(), 4);
                assert_eq!(x.header.base_timestamp, y.header.base_timestamp);
                assert_eq!(x.header.max_timestamp, y.header.max_timestamp);
                assert_eq!(&x.bytes[HEADER_LEN..], &y.bytes[HEADER_LEN..]);
                compared += 1;
            }
            next = a[n - 1].header.next_offset();
        }
        assert_eq!(next, 2000, "the comparison ended past the source's end");
        assert!(compared > 1);
        let copied = dst.topic_configs("dc-a.raw").await.unwrap();
        assert_eq!(
            copied.get("retention.ms").map(String::as_str),
            Some("86400000"),
            "{copied:?}"
        );
        assert_eq!(
            copied.get("message.timestamp.type").map(String::as_str),
            Some("CreateTime"),
            "{copied:?}"
        );
    });
}

/// The p50 replication latencies the progress lines of `log` give for `topic`.
fn latencies(log: &str, topic: &str) -> Vec<u64> {
    let key = "latency=\"p50 ";
    log.lines()
        .filter(|l| l.contains(" progress") && l.contains(&format!("topic={topic} ")))
        .filter_map(|l| {
            let rest = &l[l.find(key)? + key.len()..];
            rest.split(' ').next()?.parse().ok()
        })
        .collect()
}
