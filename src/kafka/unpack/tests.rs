//! Round trips against the crate's encoder for every codec, and hostile batches that
//! must be refused without a large allocation.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::kafka::batch::split_batches;
use crate::kafka::records::encode;
use crate::test_alloc::largest_allocation;

fn content(offset: i64, key: Option<&[u8]>, value: Option<&[u8]>, headers: usize) -> Content {
    Content {
        offset,
        timestamp: 1_700_000_000_000 + offset,
        key: key.map(Bytes::copy_from_slice),
        value: value.map(Bytes::copy_from_slice),
        headers: (0..headers)
            .map(|i| {
                (
                    Bytes::from(format!("h{i}")),
                    (i % 2 == 0).then(|| Bytes::from(vec![i as u8; i])),
                )
            })
            .collect(),
    }
}

fn batch_of(recs: &[Content], codec: i16) -> RawBatch {
    split_batches(&encode(recs, codec).unwrap())
        .unwrap()
        .remove(0)
}

/// The batch with its records section replaced (header fields kept, CRC not fixed:
/// decoding records does not look at it).
fn with_body(b: &RawBatch, body: &[u8], record_count: i32) -> RawBatch {
    let mut bytes = BytesMut::from(&b.bytes[..HEADER_LEN]);
    bytes.put_slice(body);
    let mut header = b.header;
    header.record_count = record_count;
    RawBatch {
        header,
        bytes: bytes.freeze(),
    }
}

#[test]
fn decodes_what_the_crate_encodes_for_every_codec() {
    let recs = vec![
        content(5, Some(b"k"), Some(b"value"), 0),
        content(6, None, Some(&[0u8; 3000]), 3),
        content(7, Some(b""), None, 1),
    ];
    for codec in 0..=4 {
        assert_eq!(
            records(&batch_of(&recs, codec)).unwrap(),
            recs,
            "codec {codec}"
        );
    }
}

#[test]
fn a_header_key_that_is_not_utf8_is_kept_as_it_is() {
    // Build the record by hand: the crate's encoder only takes UTF-8 keys.
    let mut rec = BytesMut::new();
    rec.put_u8(0); // attributes
    rec.put_u8(0); // timestamp delta 0
    rec.put_u8(0); // offset delta 0
    rec.put_u8(1); // key: null (-1)
    rec.put_u8(1); // value: null
    rec.put_u8(2); // one header
    rec.put_u8(4); // key length 2
    rec.put_slice(&[0xff, 0xfe]);
    rec.put_u8(1); // header value null
    let mut body = BytesMut::new();
    body.put_u8((rec.len() * 2) as u8);
    body.put_slice(&rec);
    let b = with_body(&batch_of(&[content(0, None, None, 0)], 0), &body, 1);
    let got = records(&b).unwrap();
    assert_eq!(
        got[0].headers,
        vec![(Bytes::from_static(&[0xff, 0xfe]), None)]
    );
}

#[test]
fn counts_and_lengths_beyond_the_bytes_are_refused() {
    let b = batch_of(&[content(0, Some(b"k"), Some(b"v"), 1)], 0);
    let body = b.bytes.slice(HEADER_LEN..);
    // A record count the bytes cannot hold (the crate reserved room for all of them).
    let e = records(&with_body(&b, &body, i32::MAX)).unwrap_err();
    assert!(e.contains("2147483647 records cannot fit"), "{e}");
    let e = records(&with_body(&b, &body, -1)).unwrap_err();
    assert!(e.contains("negative record count"), "{e}");
    // Fewer records than the bytes hold: bytes left over.
    let e = records(&with_body(&b, &[&body[..], &body[..]].concat(), 1)).unwrap_err();
    assert!(e.contains("bytes after its 1 records"), "{e}");
    // A header count far beyond the record: varint for 1,000,000 headers.
    let mut rec = vec![0u8, 0, 0, 1, 1];
    rec.extend_from_slice(&[0x80, 0x89, 0x7a]); // zigzag(1_000_000)
    let mut hostile = vec![(rec.len() * 2) as u8];
    hostile.extend_from_slice(&rec);
    let e = records(&with_body(&b, &hostile, 1)).unwrap_err();
    assert!(e.contains("1000000 headers cannot fit"), "{e}");
}

#[test]
fn a_snappy_block_claiming_more_than_it_can_hold_is_refused() {
    let b = batch_of(&[content(0, None, Some(b"v"), 0)], 2);
    // Raw snappy starts with the uncompressed length as a varint: claim 4 GiB - 1.
    let body = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
    let (r, largest) = largest_allocation(|| records(&with_body(&b, &body, 1)));
    let e = r.unwrap_err();
    assert!(e.contains("snappy"), "{e}");
    assert!(largest < 4096, "allocated {largest}");
    // The same inside xerial framing.
    let mut framed = XERIAL_MAGIC.to_vec();
    framed.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
    framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
    framed.extend_from_slice(&body);
    let (r, largest) = largest_allocation(|| records(&with_body(&b, &framed, 1)));
    assert!(r.unwrap_err().contains("snappy"));
    assert!(largest < 4096, "allocated {largest}");
}

#[test]
fn a_decompression_bomb_stops_at_the_cap() {
    // Zeros past the cap compress to a few KiB with zstd.
    let zeros = vec![0u8; MAX_UNCOMPRESSED + (8 << 20)];
    let bomb = zstd::bulk::compress(&zeros, 3).unwrap();
    drop(zeros);
    let b = batch_of(&[content(0, None, Some(b"v"), 0)], 4);
    let e = records(&with_body(&b, &bomb, 1)).unwrap_err();
    assert!(e.contains("decompresses to more than"), "{e}");
}

/// Key, value and headers of one record.
type Parts = (
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(Vec<u8>, Option<Vec<u8>>)>,
);

fn arb_content() -> impl Strategy<Value = Parts> {
    let blob = proptest::collection::vec(any::<u8>(), 0..40);
    let text = "[a-z]{0,8}".prop_map(String::into_bytes);
    (
        proptest::option::of(blob.clone()),
        proptest::option::of(blob.clone()),
        // Distinct keys: the crate's encoder (which builds these batches) keeps one
        // value per key; `records::encode` refuses duplicates.
        proptest::collection::btree_map(text, proptest::option::of(blob), 0..4)
            .prop_map(|m| m.into_iter().collect::<Vec<_>>()),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("WANMIRROR_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
    ))]

    /// Whatever the crate encodes, in any codec, decodes to the same records.
    #[test]
    fn round_trips_any_records(recs in proptest::collection::vec(arb_content(), 1..20), codec in 0i16..=4) {
        let recs: Vec<Content> = recs
            .into_iter()
            .enumerate()
            .map(|(i, (k, v, h))| Content {
                offset: 100 + i as i64,
                timestamp: 1_000 + i as i64,
                key: k.map(Bytes::from),
                value: v.map(Bytes::from),
                headers: h.into_iter().map(|(k, v)| (Bytes::from(k), v.map(Bytes::from))).collect(),
            })
            .collect();
        prop_assert_eq!(records(&batch_of(&recs, codec)).unwrap(), recs);
    }

    /// Fuzz: a valid batch with bytes of its records section and its record count
    /// overwritten. Never a panic, and never an allocation beyond what the bytes or the cap allow.
    #[test]
    fn mutated_batches_never_panic_or_over_allocate(
        codec in 0i16..=4,
        count in prop_oneof![Just(None), any::<i32>().prop_map(Some)],
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let recs: Vec<Content> = (0..5).map(|i| content(i, Some(b"key"), Some(b"some value"), 2)).collect();
        let b = batch_of(&recs, codec);
        let mut body = b.bytes[HEADER_LEN..].to_vec();
        for (at, byte) in edits {
            let i = at.index(body.len());
            body[i] = byte;
        }
        let hostile = with_body(&b, &body, count.unwrap_or(b.header.record_count));
        let (_, largest) = largest_allocation(|| records(&hostile));
        // Uncompressed and snappy data are sized from the bytes themselves; the
        // streaming codecs size their working memory from their own frame header, and
        // their output stops at the cap.
        let bound = match codec {
            0 | 2 => 32 * hostile.bytes.len() + 64 * 1024,
            _ => MAX_UNCOMPRESSED + (1 << 20),
        };
        prop_assert!(largest <= bound, "codec {}: allocated {}", codec, largest);
    }

    /// Fuzz: arbitrary bytes as the records section, in every codec.
    #[test]
    fn arbitrary_bodies_never_panic(codec in 0i16..=4, body in proptest::collection::vec(any::<u8>(), 0..300), count in 0i32..1000) {
        let b = batch_of(&[content(0, None, None, 0)], codec);
        let _ = records(&with_body(&b, &body, count));
    }
}

/// A batch whose count claims as many records as its bytes could hold, over bytes
/// that are not records: it fails at the first one having reserved little. It
/// reserved room for every claimed record up front before (about 15 times the body).
#[test]
fn a_false_record_count_reserves_nothing_ahead() {
    let b = batch_of(&[content(0, None, None, 0)], 0);
    let body = vec![0xffu8; 700_000];
    let hostile = with_body(&b, &body, 100_000);
    let (r, largest) = largest_allocation(|| records(&hostile));
    assert!(r.is_err());
    assert!(
        largest < body.len() / 4,
        "allocated {largest} bytes at once for a {}-byte body",
        body.len()
    );
}
