//! The head of a Fetch answer: the high watermark and the first batch, read from the
//! answer's first bytes.
//!
//! On a long, lossy path a one-batch answer takes seconds to arrive, but its head,
//! which names the batch (base offset and last offset delta), comes in the first round
//! trip. The catch-up uses that to fetch what lies past the batch at once instead of
//! after the whole answer (`mirror::pieces`, `on_first_batch`). The high watermark
//! comes before the records: a live partition's planner learns of new data a whole
//! transfer earlier (docs/live.md).
//!
//! Only single-partition answers of Fetch v4 to v11 are read (what the connection pool
//! sends: v11 at most, see `versions`); anything else gives `None`, and the catch-up
//! simply waits for the whole answer.

use super::batch::{parse_header, HEADER_LEN};

/// How many bytes of an answer are enough for its head in the usual case (a topic name
/// of up to about 200 bytes and a few aborted transactions).
pub const HEAD_BYTES: usize = 512;

/// What the first bytes of a one-partition Fetch answer tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub high_watermark: i64,
    /// `[base, next)` of the first batch, if the first bytes hold its header and the
    /// answer holds the whole batch.
    pub first: Option<(i64, i64)>,
}

/// The head of a one-partition Fetch answer of `version`, from the frame's first
/// bytes (response header included); `None` if they do not reach the high watermark
/// or the answer is not one this reads (or reports an error).
pub fn head(frame: &[u8], version: i16) -> Option<Head> {
    if !(4..=11).contains(&version) {
        return None;
    }
    let mut r = Reader(frame);
    r.skip(4)?; // correlation id (response header v0: Fetch v11 is not flexible)
    r.skip(4)?; // throttle_time_ms
    if version >= 7 {
        r.skip(2 + 4)?; // error_code, session_id
    }
    if r.i32()? != 1 {
        return None; // topics
    }
    let name = r.i16()?;
    r.skip(usize::try_from(name).ok()?)?;
    if r.i32()? != 1 {
        return None; // partitions
    }
    r.skip(4)?; // partition_index
    if r.i16()? != 0 {
        return None; // error_code
    }
    let high_watermark = r.i64()?;
    let first = first_batch(&mut r, version);
    Some(Head {
        high_watermark,
        first,
    })
}

/// The first batch, from just past the high watermark.
fn first_batch(r: &mut Reader<'_>, version: i16) -> Option<(i64, i64)> {
    r.skip(8)?; // last_stable_offset
    if version >= 5 {
        r.skip(8)?; // log_start_offset
    }
    let aborted = r.i32()?;
    if aborted > 0 {
        r.skip(usize::try_from(aborted).ok()?.checked_mul(16)?)?;
    }
    if version >= 11 {
        r.skip(4)?; // preferred_read_replica
    }
    let records = usize::try_from(r.i32()?).ok()?;
    let head = r.take(HEADER_LEN)?;
    let h = parse_header(head).ok()?;
    let whole = 12 + usize::try_from(h.batch_length).ok()?;
    (records >= whole && h.last_offset_delta >= 0).then(|| (h.base_offset, h.next_offset()))
}

/// A cursor over big-endian fields; every read fails (`None`) past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }

    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::batch::{assemble, BatchHeader};
    use bytes::{BufMut, Bytes, BytesMut};
    use kafka_protocol::messages::fetch_response::{
        AbortedTransaction, FetchableTopicResponse, PartitionData,
    };
    use kafka_protocol::messages::{FetchResponse, ProducerId, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn batch(base: i64, records: i32) -> Bytes {
        let h = BatchHeader {
            base_offset: base,
            batch_length: 0,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: records - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            record_count: records,
        };
        assemble(&h, &[7u8; 300])
    }

    /// A whole response frame as the broker sends it (without the length prefix).
    fn frame(version: i16, topic: &str, records: Option<Bytes>, aborted: usize) -> Vec<u8> {
        let part = PartitionData::default()
            .with_partition_index(3)
            .with_high_watermark(5000)
            .with_aborted_transactions((version >= 4).then(|| {
                (0..aborted)
                    .map(|i| {
                        AbortedTransaction::default()
                            .with_producer_id(ProducerId(i as i64))
                            .with_first_offset(1)
                    })
                    .collect()
            }))
            .with_records(records);
        let resp = FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_topic(TopicName(StrBytes::from_string(topic.into())))
            .with_partitions(vec![part])]);
        let mut out = BytesMut::new();
        out.put_i32(42); // correlation id
        resp.encode(&mut out, version).unwrap();
        out.to_vec()
    }

    fn first_batch(frame: &[u8], version: i16) -> Option<(i64, i64)> {
        head(frame, version).and_then(|h| h.first)
    }

    #[test]
    fn reads_the_first_batch_of_every_supported_version() {
        let mut two = BytesMut::from(&batch(1000, 42)[..]);
        two.extend_from_slice(&batch(1042, 10));
        for version in 4..=11 {
            for aborted in [0, 3] {
                let f = frame(version, "orders.eu", Some(two.clone().freeze()), aborted);
                assert_eq!(first_batch(&f, version), Some((1000, 1042)), "v{version}");
                // The head alone is enough ...
                let head = f.len() - two.len() + HEADER_LEN;
                assert_eq!(first_batch(&f[..head], version), Some((1000, 1042)));
                // ... and a byte less is not.
                assert_eq!(first_batch(&f[..head - 1], version), None);
            }
        }
    }

    #[test]
    fn the_high_watermark_comes_before_the_records() {
        let b = batch(7, 5);
        for version in 4..=11 {
            let f = frame(version, "t", Some(b.clone()), 2);
            let whole = head(&f, version).unwrap();
            assert_eq!(whole.high_watermark, 5000);
            assert_eq!(whole.first, Some((7, 12)));
            // Empty answers tell the high watermark too (a tail probe's answer).
            let empty = head(&frame(version, "t", None, 0), version).unwrap();
            assert_eq!((empty.high_watermark, empty.first), (5000, None));
            // The bytes up to the high watermark are enough for it, before the
            // aborted transactions and the records.
            let enough = (0..f.len())
                .find(|n| head(&f[..*n], version).is_some())
                .unwrap();
            assert!(enough + 2 * 16 + b.len() < f.len(), "v{version}");
            let early = head(&f[..enough], version).unwrap();
            assert_eq!((early.high_watermark, early.first), (5000, None));
        }
    }

    #[test]
    fn anything_else_gives_nothing() {
        let b = batch(7, 5);
        // Versions whose layout is not read here.
        let good = frame(11, "t", Some(b.clone()), 0);
        assert_eq!(first_batch(&good, 11), Some((7, 12)));
        assert_eq!(first_batch(&good, 3), None);
        assert_eq!(first_batch(&good, 12), None);
        // No records, or a batch the answer holds only part of (cut at the size limit).
        assert_eq!(first_batch(&frame(11, "t", None, 0), 11), None);
        assert_eq!(
            first_batch(&frame(11, "t", Some(Bytes::new()), 0), 11),
            None
        );
        let cut = b.slice(..b.len() - 1);
        assert_eq!(first_batch(&frame(11, "t", Some(cut), 0), 11), None);
        // Not a v2 batch.
        let mut old = BytesMut::from(&b[..]);
        old[16] = 1;
        assert_eq!(
            first_batch(&frame(11, "t", Some(old.freeze()), 0), 11),
            None
        );
        // Two partitions.
        let part = PartitionData::default().with_records(Some(b.clone()));
        let resp = FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_topic(TopicName(StrBytes::from_string("t".into())))
            .with_partitions(vec![part.clone(), part])]);
        let mut two = BytesMut::new();
        two.put_i32(1);
        resp.encode(&mut two, 11).unwrap();
        assert_eq!(first_batch(&two, 11), None);
        assert_eq!(first_batch(&[], 11), None);
    }
}
