//! Entry points for fuzzers. Each feeds arbitrary bytes to the decoders of wire data
//! the way the mirror calls them. Whatever the bytes, each must return (an error is
//! fine): no panic, no abort, and no allocation beyond the decoder's bound.
//!
//! `fuzz/` runs them under libFuzzer (cargo-fuzz, `./dev fuzz`), with a limit on any
//! single allocation; the proptest below runs them in `cargo test` as well.

use bytes::{BufMut, Bytes, BytesMut};

use crate::kafka::batch::{parse_header, split_valid, RawBatch, HEADER_LEN};
use crate::kafka::shape::{self, by_key};
use crate::kafka::{peek, records, unpack};
use crate::mirror::offset_map::Entries;

/// A response frame of any API the mirror reads: the first two bytes pick the API and
/// version, the rest is the frame (header included). The crate decodes only frames
/// the walk passed, as on a connection.
pub fn response_frame(data: &[u8]) {
    let [a, b, frame @ ..] = data else { return };
    let all = by_key::all_versions();
    let (key, v) = all[u16::from_be_bytes([*a, *b]) as usize % all.len()];
    let Some(hv) = by_key::header_version(key, v) else {
        return;
    };
    if shape::check(key, v, hv, frame).is_ok() {
        by_key::crate_decode(key, v, &mut Bytes::copy_from_slice(frame));
    }
}

/// The first bytes of a Fetch answer, read for their head: the first byte picks the
/// version.
pub fn fetch_head(data: &[u8]) {
    let Some((v, frame)) = data.split_first() else {
        return;
    };
    let _ = peek::head(frame, (*v % 16) as i16);
}

/// A partition's record bytes from a Fetch answer: split into batches (lengths, CRCs,
/// counts), then every batch that passed decoded and rebuilt from inside it, as the
/// slow paths do.
pub fn fetched_records(data: &[u8]) {
    let (batches, _) = split_valid(&Bytes::copy_from_slice(data));
    for b in &batches {
        slow_paths(b);
    }
}

/// A batch whose header is right and whose body is anything: the first byte picks the
/// codec and the next four the record count, the rest is the records section. A CRC
/// stops random bytes at `split_valid`; this reaches the record decoders, the rebuild
/// and the offset map's entries behind it.
pub fn batch_body(data: &[u8]) {
    let [codec, c0, c1, c2, c3, body @ ..] = data else {
        return;
    };
    let count = i32::from_be_bytes([*c0, *c1, *c2, *c3]);
    if let Some(b) = wrap((*codec % 5) as i16, count, body) {
        slow_paths(&b);
    }
}

/// A QUIC stream of the peer protocol: frames are taken off the bytes as they would
/// arrive in two reads (the first byte picks where the first read ends), then the
/// stream ends. Frames that decode must encode back to the bytes they came from.
pub fn peer_frames(data: &[u8]) {
    use crate::peer::frame::{decode, finish};
    let Some((cut, rest)) = data.split_first() else {
        return;
    };
    let at = (*cut as usize).min(rest.len());
    let mut buf = BytesMut::from(&rest[..at]);
    let mut taken = 0usize;
    for more in [&rest[at..], &[][..]] {
        loop {
            let before = buf.len();
            match decode(&mut buf) {
                Ok(Some(f)) => {
                    let used = before - buf.len();
                    let again = f.to_bytes();
                    assert_eq!(
                        &again[..],
                        &rest[taken..taken + used],
                        "a frame did not encode back to its bytes"
                    );
                    taken += used;
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        buf.extend_from_slice(more);
    }
    let _ = finish(&buf);
}

fn slow_paths(b: &RawBatch) {
    if let Ok(recs) = unpack::records(b) {
        let mut entries = Entries::default();
        entries.add(recs);
        let _ = entries.parse();
    }
    let _ = records::densify(b, b.header.base_offset.saturating_add(1));
}

/// A v2 batch at offset 100 around `body`, with its length and CRC right.
fn wrap(codec: i16, count: i32, body: &[u8]) -> Option<RawBatch> {
    let mut b = BytesMut::with_capacity(HEADER_LEN + body.len());
    b.put_i64(100); // base offset
    b.put_i32((HEADER_LEN - 12 + body.len()) as i32); // batch length
    b.put_i32(0); // partition leader epoch
    b.put_i8(2); // magic
    b.put_u32(0); // crc, set below
    b.put_i16(codec); // attributes
    b.put_i32(count.max(1) - 1); // last offset delta
    b.put_i64(1_000); // base timestamp
    b.put_i64(1_000); // max timestamp
    b.put_i64(-1); // producer id
    b.put_i16(-1); // producer epoch
    b.put_i32(-1); // base sequence
    b.put_i32(count);
    b.put_slice(body);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    let bytes = b.freeze();
    let header = parse_header(&bytes).ok()?;
    Some(RawBatch { header, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_wrapped_batch_passes_the_split() {
        let b = wrap(0, 3, &[0; 30]).unwrap();
        let (batches, bad) = split_valid(&b.bytes);
        assert!(bad.is_none(), "{bad:?}");
        assert_eq!(batches.len(), 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("WANMIRROR_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
        ))]

        /// The fuzz entry points on arbitrary bytes, in `cargo test`.
        #[test]
        fn entry_points_take_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            response_frame(&data);
            fetch_head(&data);
            fetched_records(&data);
            batch_body(&data);
            peer_frames(&data);
        }
    }
}
