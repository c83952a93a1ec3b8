//! Parallel catch-up against real brokers: a backlog cut into offset-range pieces that
//! travel over many pooled connections, answered in whatever order, must still land
//! offset-identical, also when the link to the source is cut mid-copy.

mod common;

use std::time::Duration;

use common::proxy::Proxy;
use common::scenarios;
use common::*;
use wanmirror::demo::broker::TansuBroker;

/// The most connections one partition's catch-up used, as the mirror reported it.
fn most_connections(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("parallel catch-up finished"))
        .filter_map(|l| l.split("connections=").nth(1))
        .filter_map(|s| s.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .max()
        .unwrap_or(0)
}

#[test]
fn pieces_over_many_connections_stay_offset_identical() {
    let pair = Pair::start();
    create_topic(&pair.a.bootstrap(), "bulk", 3);
    // Three codecs, small batches (many pieces), mixed record sizes, idempotent.
    for (part, codec) in [(0, "lz4"), (1, "none"), (2, "zstd")] {
        let p = small_batches(&pair.a.bootstrap(), codec);
        produce(
            &p,
            "bulk",
            part,
            &sample(8_000, part as u64, |i| (i * 53) % 1800),
        );
    }
    let cfg = pair.config("m.toml", &["bulk"], POOLED);
    let (st, log) = mirror_to_end(&cfg);
    assert!(st.success(), "mirror failed: {log}");
    assert!(
        log.contains("catching up in parallel pieces"),
        "the backlog should have been split: {log}"
    );
    let conns = most_connections(&log);
    eprintln!("most connections used by one partition's catch-up: {conns}");
    assert!(
        conns >= 8,
        "pieces should spread over many connections, saw {conns}: {log}"
    );
    for part in 0..3 {
        assert_eq!(assert_same(&pair, "bulk", "dc-a.bulk", part), 8_000);
    }
}

#[test]
fn pieces_survive_a_cut_link_to_the_source() {
    let pa = Proxy::start();
    let a = TansuBroker::start_advertising("dc-a", Some(pa.port)).unwrap();
    let b = TansuBroker::start("dc-b").unwrap();
    pa.forward_to(a.port);
    let ba = format!("127.0.0.1:{}", pa.port);
    let bb = b.bootstrap();
    create_topic(&ba, "cut", 2);
    let p = producer(&ba, "lz4", true);
    for part in 0..2 {
        produce(
            &p,
            "cut",
            part,
            &sample(15_000, 40 + part as u64, |i| (i * 31) % 1200),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("m.toml");
    write_config(
        &cfg,
        &ba,
        &bb,
        1,
        &["cut"],
        &format!("retry_secs = 20\n{POOLED}"),
    );
    let mut m = Mirror::spawn(&cfg, &["--stop-at-end"]);
    let dest_end = || end_offset(&bb, "dc-a.cut", 0) + end_offset(&bb, "dc-a.cut", 1);
    eventually(Duration::from_secs(60), "copy under way", || {
        topic_exists(&bb, "dc-a.cut") && dest_end() > 0
    });
    // Every pooled connection is closed mid-piece, twice; pieces must be fetched again.
    for _ in 0..2 {
        pa.cut();
        std::thread::sleep(Duration::from_millis(800));
        pa.restore();
        std::thread::sleep(Duration::from_millis(600));
    }
    let st = m.wait(Duration::from_secs(120));
    let log = m.log_text();
    assert!(st.success(), "mirror failed: {log}");
    assert!(log.contains("catching up in parallel pieces"), "{log}");
    assert!(
        dest_end() == 30_000,
        "copied {} of 30000: {log}",
        dest_end()
    );
    for part in 0..2 {
        let s = consume_all(&ba, "cut", part);
        let d = consume_all(&bb, "dc-a.cut", part);
        assert_eq!(s.len(), 15_000);
        assert_eq!(s, d, "partition {part}");
    }
}

/// The head of a catch-up answer names its first batch before the rest arrives; against
/// a real broker's encoding, what it names must be exactly the answer's first batch,
/// for fetches at, inside and between batches.
#[test]
fn an_answer_head_names_its_first_batch() {
    let a = TansuBroker::start("dc-a").unwrap();
    create_topic(&a.bootstrap(), "heads", 1);
    let p = small_batches(&a.bootstrap(), "none");
    produce(&p, "heads", 0, &sample(400, 9, |i| 600 + (i * 37) % 400));
    // (Not inside the last batch: tansu answers nothing there.)
    let answers =
        scenarios::one_batch_answers(&a.bootstrap(), "heads", &[0, 1, 19, 20, 21, 133, 250, 300]);
    // tansu answers a fetch inside a batch with the next batch.
    for (offset, base, _) in answers {
        assert!(
            base >= offset,
            "tansu answered {offset} with an earlier batch at {base}"
        );
    }
}
