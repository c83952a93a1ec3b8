use bytes::{Bytes, BytesMut};

use super::*;
use crate::kafka::records::{encode, Content};

fn batch(base: i64, n: i64) -> Bytes {
    let recs: Vec<Content> = (base..base + n)
        .map(|o| Content {
            offset: o,
            timestamp: 1_700_000_000_000 + o,
            key: None,
            value: Some(Bytes::from(format!("value-{o}"))),
            headers: Vec::new(),
        })
        .collect();
    encode(&recs, 0).unwrap()
}

fn log(batches: &[(i64, i64)]) -> (Bytes, Vec<usize>) {
    let mut b = BytesMut::new();
    let mut sizes = Vec::new();
    for (base, n) in batches {
        let x = batch(*base, *n);
        sizes.push(x.len());
        b.extend_from_slice(&x);
    }
    (b.freeze(), sizes)
}

#[test]
fn a_brokers_partial_last_batch_does_not_cross_the_wan() {
    let (all, sizes) = log(&[(10, 5), (15, 5), (20, 5)]);
    let cut = all.slice(..sizes[0] + sizes[1] + sizes[2] / 2);
    let (out, first) = whole_batches(&cut, -1);
    assert_eq!(out.len(), sizes[0] + sizes[1]);
    assert_eq!(first, Some((10, 15)));
    assert_eq!(last_next(&out), Some(20));
}

#[test]
fn an_end_cuts_at_the_first_batch_starting_there_but_keeps_the_first() {
    let (all, sizes) = log(&[(10, 5), (15, 5), (20, 5)]);
    let (out, _) = whole_batches(&all, 15);
    assert_eq!(out.len(), sizes[0]);
    let (out, _) = whole_batches(&all, 16);
    assert_eq!(out.len(), sizes[0] + sizes[1]);
    // A range that begins past the first batch's start still gets that batch.
    let (out, first) = whole_batches(&all, 5);
    assert_eq!(out.len(), sizes[0]);
    assert_eq!(first, Some((10, 15)));
}

#[test]
fn bytes_that_are_not_batches_pass_unchanged_for_the_mirror_to_name() {
    let (all, _) = log(&[(10, 5)]);
    let mut bad = BytesMut::from(&all[..]);
    bad[16] = 1; // magic 1
    let bad = bad.freeze();
    let (out, first) = whole_batches(&bad, -1);
    assert_eq!(out, bad);
    assert_eq!(first, None);
    assert_eq!(whole_batches(&Bytes::new(), -1), (Bytes::new(), None));
    assert_eq!(last_next(&Bytes::from_static(&[1, 2, 3])), None);
    // A good batch and then garbage: the good one's end, and its length.
    let (good, _) = log(&[(10, 5)]);
    let mut mixed = BytesMut::from(&good[..]);
    mixed.extend_from_slice(&bad);
    let mixed = mixed.freeze();
    assert_eq!(last_next(&mixed), Some(15));
    assert_eq!(last_len(&mixed), good.len());
}

#[test]
fn older_fetches_go_first_and_everything_else_before_them() {
    let fetch = Frame::Fetch {
        topic: "t".into(),
        partition: 0,
        offset: 0,
        end: -1,
        max_bytes: 1,
        max_wait_ms: 0,
    };
    let sub = Frame::Subscribe {
        topic: "t".into(),
        partition: 0,
        offset: 0,
        max_wait_ms: 0,
    };
    assert!(priority(&fetch, 4) > priority(&fetch, 5));
    assert!(priority(&fetch, 0) < priority(&sub, 1_000));
    assert_eq!(priority(&sub, 7), i32::MAX);
    // A connection's 2^31-th stream and later share the lowest priority; no overflow.
    assert_eq!(priority(&fetch, u64::MAX), -i32::MAX);
    assert_eq!(priority(&fetch, 1 << 31), -i32::MAX);
}
