//! `wanmirror diff` against real brokers: the same records on both sides (also in
//! another batch layout and codec) compare equal; each kind of difference is named
//! exactly, narrowed to the record.

mod common;

use std::process::Command;

use common::scenarios;
use common::*;
use rdkafka::producer::BaseProducer;
use rdkafka::ClientConfig;

const N: usize = 10_000;
const LEAF: i64 = 1_000;

/// A producer with its own batching, to lay the same records out differently.
fn batching(bootstrap: &str, codec: &str, per_batch: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("compression.codec", codec)
        .set("linger.ms", "1")
        .set("batch.num.messages", per_batch)
        .create()
        .expect("create producer")
}

/// Runs the ad-hoc diff of `topic` in a vs `dest` in b; returns the exit code and JSON.
fn diff(pair: &Pair, topic: &str, dest: &str, extra: &[&str]) -> (i32, serde_json::Value) {
    let leaf = LEAF.to_string();
    let mut args = vec!["--leaf-offsets", &leaf];
    args.extend_from_slice(extra);
    scenarios::diff_json(&pair.a.bootstrap(), &pair.b.bootstrap(), topic, dest, &args)
}

/// The one differing range of partition 0: (from, to, first, last, source, dest records).
fn only_range(report: &serde_json::Value) -> (i64, i64, i64, i64, u64, u64) {
    let ranges = report["partitions"][0]["ranges"]
        .as_array()
        .expect("ranges");
    assert_eq!(ranges.len(), 1, "exactly one range expected: {report:#}");
    let r = &ranges[0];
    let n = |k: &str| r[k].as_i64().unwrap_or_else(|| panic!("{k} in {r}"));
    (
        n("from"),
        n("to"),
        n("first"),
        n("last"),
        n("source_records") as u64,
        n("dest_records") as u64,
    )
}

/// Writes `src` to a fresh topic in a and `dst` to a fresh topic in b.
fn sides(pair: &Pair, name: &str, src: &[Rec], dst: &[Rec]) {
    create_topic(&pair.a.bootstrap(), name, 1);
    create_topic(&pair.b.bootstrap(), name, 1);
    produce(&producer(&pair.a.bootstrap(), "lz4", false), name, 0, src);
    produce(&batching(&pair.b.bootstrap(), "zstd", "37"), name, 0, dst);
}

#[test]
fn same_records_in_another_layout_compare_equal_and_differences_are_named() {
    let pair = Pair::start();
    let base = sample(N, 11, |i| (i * 29) % 900);

    // The same records, batched and compressed differently: identical.
    sides(&pair, "same", &base, &base);
    let (code, r) = diff(&pair, "same", "same", &[]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["identical"], true);
    assert_eq!(r["partitions"][0]["leaves"], 10);

    // One value changed in the middle.
    let mut v = base.clone();
    v[5_000].value = Some(b"changed".to_vec());
    sides(&pair, "value", &base, &v);
    let (code, r) = diff(&pair, "value", "value", &[]);
    assert_eq!(code, 1);
    assert_eq!(only_range(&r), (5_000, 6_000, 5_000, 5_000, 1_000, 1_000));

    // One header changed.
    let mut h = base.clone();
    h[2_345].headers = vec![("trace".into(), Some(b"other".to_vec()))];
    sides(&pair, "header", &base, &h);
    let (code, r) = diff(&pair, "header", "header", &[]);
    assert_eq!(code, 1);
    assert_eq!(only_range(&r), (2_000, 3_000, 2_345, 2_345, 1_000, 1_000));

    // A timestamp changed.
    let mut t = base.clone();
    t[7_777].timestamp = Some(1);
    sides(&pair, "ts", &base, &t);
    let (code, r) = diff(&pair, "ts", "ts", &[]);
    assert_eq!(code, 1);
    assert_eq!(only_range(&r), (7_000, 8_000, 7_777, 7_777, 1_000, 1_000));

    // The last record missing from the destination.
    sides(&pair, "tail", &base, &base[..N - 1]);
    let (code, r) = diff(&pair, "tail", "tail", &[]);
    assert_eq!(code, 1);
    assert_eq!(only_range(&r), (9_000, 10_000, 9_999, 9_999, 1_000, 999));
    let notes = r["partitions"][0]["notes"].to_string();
    assert!(notes.contains("missing at the tail"), "{notes}");

    // Three extra records in the destination.
    let mut x = base.clone();
    x.extend(sample(3, 99, |_| 10));
    sides(&pair, "extra", &base, &x);
    let (code, r) = diff(&pair, "extra", "extra", &[]);
    assert_eq!(code, 1);
    assert_eq!(only_range(&r), (10_000, 10_003, 10_000, 10_002, 0, 3));

    // Narrowing the comparison to offsets before the change: identical there.
    let (code, r) = diff(&pair, "value", "value", &["--to", "5000"]);
    assert_eq!(code, 0, "{r:#}");
}

#[test]
fn a_mirrored_topic_compares_equal_through_its_config() {
    let pair = Pair::start();
    create_topic(&pair.a.bootstrap(), "orders", 3);
    let p = producer(&pair.a.bootstrap(), "snappy", true);
    for part in 0..3 {
        produce(&p, "orders", part, &sample(3_000, part as u64, |i| i % 500));
    }
    let cfg = pair.config("m.toml", &["orders"], "");
    let (st, log) = mirror_to_end(&cfg);
    assert!(st.success(), "{log}");
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_wanmirror"))
            .args(["diff", "--config"])
            .arg(&cfg)
            .args(extra)
            .output()
            .expect("run diff")
    };
    let out = run(&[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("3 partition(s) compared, 3 identical"),
        "{text}"
    );
    // Then the destination gets a record the source does not have.
    produce(
        &producer(&pair.b.bootstrap(), "none", false),
        "dc-a.orders",
        1,
        &sample(1, 5, |_| 3),
    );
    let out = run(&["--partition", "1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("first difference at 3000"), "{text}");
}

#[test]
fn bad_arguments_and_unknown_topics_exit_2_with_one_line() {
    let pair = Pair::start();
    create_topic(&pair.a.bootstrap(), "x", 1);
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_wanmirror"))
            .arg("diff")
            .args(args)
            .output()
            .expect("run diff")
    };
    let a = pair.a.bootstrap();
    let b = pair.b.bootstrap();
    let cases: Vec<Vec<&str>> = vec![
        vec![],
        vec![
            "--source-bootstrap",
            &a,
            "--dest-bootstrap",
            &b,
            "--source-topic",
            "x",
            "--dest-topic",
            "nope",
        ],
        vec![
            "--source-bootstrap",
            &a,
            "--dest-bootstrap",
            "127.0.0.1:1",
            "--source-topic",
            "x",
            "--dest-topic",
            "x",
        ],
    ];
    for args in cases {
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        let line = err.lines().find(|l| l.starts_with("error:")).unwrap_or("");
        assert!(!line.is_empty(), "{args:?}: {err}");
    }
}
