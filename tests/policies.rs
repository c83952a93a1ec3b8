//! Offset policies against real brokers: compaction-style gaps filled (and recorded in
//! the offset map) or refused.
//!
//! librdkafka cannot write a batch with offset holes (only log compaction makes them),
//! so the compacted-looking source batch is written with wanmirror's own encoder; the
//! destination is still read back with librdkafka.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use wanmirror::kafka::records::{encode, Content, FILLER_HEADER, FILLER_KEY};

fn rec(offset: i64) -> Content {
    Content {
        offset,
        timestamp: 1_700_000_000_000 + offset,
        key: Some(Bytes::from(format!("k{offset}"))),
        value: Some(Bytes::from(format!("v{offset}"))),
        headers: vec![],
    }
}

/// Source partition 0: a dense batch 0..=2, then a batch spanning 3..=8 that only
/// holds 3, 6 and 8 (as compaction leaves it), then a dense batch 9..=10.
fn write_compacted_source(pair: &Pair) {
    create_topic(&pair.a.bootstrap(), "compacted", 1);
    let rt = runtime();
    rt.block_on(async {
        let c = pair.src();
        for recs in [
            vec![rec(0), rec(1), rec(2)],
            vec![rec(3), rec(6), rec(8)],
            vec![rec(9), rec(10)],
        ] {
            // Offsets are relative to the batch; the broker assigns the base.
            let base = recs[0].offset;
            let rel: Vec<Content> = recs
                .into_iter()
                .map(|mut r| {
                    r.offset -= base;
                    r
                })
                .collect();
            let batch = encode(&rel, 4).unwrap();
            c.produce("compacted", 0, batch, Duration::from_secs(10))
                .await
                .expect("tansu accepts the batch");
        }
    });
    assert_eq!(end_offset(&pair.a.bootstrap(), "compacted", 0), 11);
}

#[test]
fn gaps_are_filled_with_marked_records_and_recorded_in_the_offset_map() {
    let pair = Pair::start();
    write_compacted_source(&pair);
    let cfg = pair.config("m.toml", &["compacted"], "");
    let (st, log) = mirror_to_end(&cfg);
    assert!(st.success(), "{log}");
    assert!(log.contains("offset deviation"), "{log}");

    let d = consume_all(&pair.b.bootstrap(), "dc-a.compacted", 0);
    let offsets: Vec<i64> = d.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (0..11).collect::<Vec<_>>());
    for r in &d {
        let filler = r.headers.iter().any(|(k, _)| k == FILLER_HEADER);
        let expect_filler = matches!(r.offset, 4 | 5 | 7);
        assert_eq!(filler, expect_filler, "offset {}", r.offset);
        if filler {
            assert_eq!(r.key.as_deref(), Some(FILLER_KEY));
            assert_eq!(r.value, None);
        } else {
            assert_eq!(r.key, Some(format!("k{}", r.offset).into_bytes()));
            assert_eq!(r.value, Some(format!("v{}", r.offset).into_bytes()));
            assert_eq!(r.timestamp, Some(1_700_000_000_000 + r.offset));
        }
    }
    // The offset map names both filled ranges.
    let map = consume_all(&pair.b.bootstrap(), "__wanmirror_offsets", 0);
    let entries: Vec<String> = map
        .iter()
        .filter_map(|r| {
            r.key
                .as_ref()
                .map(|k| String::from_utf8_lossy(k).into_owned())
        })
        .collect();
    assert!(
        entries.contains(&"offsets/dc-a.compacted/0/4".to_string()),
        "{entries:?}"
    );
    assert!(
        entries.contains(&"offsets/dc-a.compacted/0/7".to_string()),
        "{entries:?}"
    );
    assert!(
        entries.contains(&"topic/dc-a.compacted".to_string()),
        "{entries:?}"
    );
    // `wanmirror status` names the same ranges, from the offset map, and no lag.
    let (code, st) = scenarios::status_json(&cfg);
    assert_eq!(code, 0, "{st}");
    let p = &st["partitions"][0];
    assert_eq!(
        (
            p["source_end"].as_i64(),
            p["dest_end"].as_i64(),
            p["lag"].as_i64()
        ),
        (Some(11), Some(11), Some(0)),
        "{st}"
    );
    let ranges: Vec<(i64, i64, String)> = p["deviations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["first_offset"].as_i64().unwrap(),
                d["last_offset"].as_i64().unwrap(),
                d["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        ranges,
        vec![(4, 5, "gap".into()), (7, 7, "gap".into())],
        "{st}"
    );
}

#[test]
fn gaps_are_refused_when_the_policy_says_so() {
    let pair = Pair::start();
    write_compacted_source(&pair);
    let cfg = pair.config("m.toml", &["compacted"], "gap_policy = \"refuse\"");
    let (st, log) = mirror_to_end(&cfg);
    assert_eq!(st.code(), Some(1), "{log}");
    assert!(log.contains("compacted/0"), "{log}");
    assert!(log.contains("gap_policy"), "{log}");
    // Everything before the gap was copied, nothing after it.
    assert_eq!(end_offset(&pair.b.bootstrap(), "dc-a.compacted", 0), 3);
}

#[test]
fn a_corrupt_source_batch_stops_the_partition_before_it() {
    let pair = Pair::start();
    create_topic(&pair.a.bootstrap(), "corrupt", 1);
    runtime().block_on(async {
        let c = pair.src();
        let good = encode(&[rec(0), rec(1)], 0).unwrap();
        c.produce("corrupt", 0, good, Duration::from_secs(10))
            .await
            .unwrap();
        // Flip one bit in the last record's value: the stored CRC no longer matches.
        let mut bad = encode(&[rec(0), rec(1)], 0).unwrap().to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0x01;
        // tansu 0.6 stores batches without checking their CRC, which lets this test
        // put a corrupt batch into a real source log.
        c.produce("corrupt", 0, Bytes::from(bad), Duration::from_secs(10))
            .await
            .expect("tansu stores the batch unchecked");
    });
    assert_eq!(end_offset(&pair.a.bootstrap(), "corrupt", 0), 4);
    let cfg = pair.config("m.toml", &["corrupt"], "");
    let (st, log) = mirror_to_end(&cfg);
    assert_eq!(st.code(), Some(1), "{log}");
    assert!(log.contains("corrupt/0 at offset 2"), "{log}");
    assert!(log.contains("CRC-32C"), "{log}");
    assert_eq!(end_offset(&pair.b.bootstrap(), "dc-a.corrupt", 0), 2);
}
