//! Record batches (magic v2) kept in wire form: header parsing, header rewriting and CRC-32C.
//!
//! The mirror never decompresses on the hot path. It reads the fixed 61-byte header,
//! rewrites the producer fields it must own, and recomputes the CRC over the unchanged
//! attributes..records span.

use bytes::{BufMut, Bytes, BytesMut};

/// Bytes of the v2 batch header before the first record.
pub const HEADER_LEN: usize = 61;
/// Bytes before `batchLength` counts: baseOffset (8) + batchLength (4).
const LOG_OVERHEAD: usize = 12;
/// The CRC covers everything from the attributes field on.
const CRC_START: usize = 21;

const ATTR_COMPRESSION_MASK: i16 = 0x07;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

/// Why a byte span is not a usable batch. Context (topic, partition) is added by callers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch at offset {offset} has magic {magic}; only v2 record batches are supported")]
    UnsupportedMagic { offset: i64, magic: i8 },
    #[error("batch at offset {offset} declares length {length}, too short for a v2 header")]
    BadLength { offset: i64, length: i32 },
    #[error("batch at offset {offset} fails its CRC-32C check (stored {stored:#010x}, computed {computed:#010x})")]
    Crc {
        offset: i64,
        stored: u32,
        computed: u32,
    },
    #[error("batch at offset {offset} has {count} records but lastOffsetDelta {delta}")]
    BadCount { offset: i64, count: i32, delta: i32 },
    #[error("batch at offset {offset} with lastOffsetDelta {delta} lies outside the offsets a log can hold")]
    BadOffset { offset: i64, delta: i32 },
}

impl BatchError {
    /// Base offset of the batch at fault.
    pub fn offset(&self) -> i64 {
        match self {
            BatchError::UnsupportedMagic { offset, .. }
            | BatchError::BadLength { offset, .. }
            | BatchError::Crc { offset, .. }
            | BatchError::BadCount { offset, .. }
            | BatchError::BadOffset { offset, .. } => *offset,
        }
    }
}

/// The fixed header of a v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }
    /// Offset right after this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }
    pub fn compression(&self) -> i16 {
        self.attributes & ATTR_COMPRESSION_MASK
    }
    /// Offsets inside the batch are dense: one record per offset. Compaction breaks this.
    pub fn is_dense(&self) -> bool {
        // In i64: a wire delta of i32::MAX must not overflow.
        self.record_count as i64 == self.last_offset_delta as i64 + 1
    }
    /// Total size on the wire.
    pub fn size(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }
}

/// One batch: its parsed header and its whole wire bytes (shared, not copied).
#[derive(Debug, Clone)]
pub struct RawBatch {
    pub header: BatchHeader,
    pub bytes: Bytes,
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

/// Parses the header at the start of `b`, which must hold at least [`HEADER_LEN`] bytes.
pub fn parse_header(b: &[u8]) -> Result<BatchHeader, BatchError> {
    debug_assert!(b.len() >= HEADER_LEN);
    let base_offset = be_i64(b, 0);
    let magic = b[16] as i8;
    if magic != 2 {
        return Err(BatchError::UnsupportedMagic {
            offset: base_offset,
            magic,
        });
    }
    let batch_length = be_i32(b, 8);
    if (batch_length as i64) < (HEADER_LEN - LOG_OVERHEAD) as i64 {
        return Err(BatchError::BadLength {
            offset: base_offset,
            length: batch_length,
        });
    }
    Ok(BatchHeader {
        base_offset,
        batch_length,
        partition_leader_epoch: be_i32(b, 12),
        magic,
        crc: be_i32(b, 17) as u32,
        attributes: be_i16(b, 21),
        last_offset_delta: be_i32(b, 23),
        base_timestamp: be_i64(b, 27),
        max_timestamp: be_i64(b, 35),
        producer_id: be_i64(b, 43),
        producer_epoch: be_i16(b, 51),
        base_sequence: be_i32(b, 53),
        record_count: be_i32(b, 57),
    })
}

/// Splits a fetch response's record bytes into whole batches, verifying each CRC.
///
/// Brokers may cut the last batch short at the size limit; that partial tail is not an
/// error, it is dropped and fetched again next time.
pub fn split_batches(records: &Bytes) -> Result<Vec<RawBatch>, BatchError> {
    match split_valid(records) {
        (batches, None) => Ok(batches),
        (_, Some(e)) => Err(e),
    }
}

/// Like [`split_batches`], but keeps the valid batches before the first bad one, so
/// that everything up to a corrupt batch can still be copied.
pub fn split_valid(records: &Bytes) -> (Vec<RawBatch>, Option<BatchError>) {
    let mut out = Vec::new();
    match split_into(records, &mut out) {
        Ok(()) => (out, None),
        Err(e) => (out, Some(e)),
    }
}

fn split_into(records: &Bytes, out: &mut Vec<RawBatch>) -> Result<(), BatchError> {
    let mut pos = 0usize;
    while records.len() - pos >= HEADER_LEN {
        let header = parse_header(&records[pos..])?;
        let size = header.size();
        if records.len() - pos < size {
            break;
        }
        let bytes = records.slice(pos..pos + size);
        let computed = crc32c::crc32c(&bytes[CRC_START..]);
        if computed != header.crc {
            return Err(BatchError::Crc {
                offset: header.base_offset,
                stored: header.crc,
                computed,
            });
        }
        // Wire values: compared in i64, so no count or offset read from a broker can
        // overflow here or in `last_offset`/`next_offset` later.
        if header.record_count < 0
            || header.last_offset_delta < 0
            || header.record_count as i64 > header.last_offset_delta as i64 + 1
        {
            return Err(BatchError::BadCount {
                offset: header.base_offset,
                count: header.record_count,
                delta: header.last_offset_delta,
            });
        }
        if header.base_offset < 0
            || header
                .base_offset
                .checked_add(header.last_offset_delta as i64 + 1)
                .is_none()
        {
            return Err(BatchError::BadOffset {
                offset: header.base_offset,
                delta: header.last_offset_delta,
            });
        }
        out.push(RawBatch { header, bytes });
        pos += size;
    }
    Ok(())
}

/// Producer identity stamped on every batch the mirror writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerStamp {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

/// Copies `batch` into `out` with the producer fields replaced and the CRC recomputed.
///
/// Changed: baseOffset (0; the broker assigns it), partitionLeaderEpoch (-1), the
/// transactional bit (cleared: the copy is written outside any transaction, and only
/// committed data is mirrored), producerId, producerEpoch, baseSequence. Everything
/// else, including compression and timestamps, is kept byte for byte.
pub fn rewrite_into(batch: &[u8], stamp: ProducerStamp, out: &mut BytesMut) {
    let start = out.len();
    out.extend_from_slice(batch);
    let b = &mut out[start..];
    b[0..8].copy_from_slice(&0i64.to_be_bytes());
    b[12..16].copy_from_slice(&(-1i32).to_be_bytes());
    let attrs = be_i16(b, 21) & !ATTR_TRANSACTIONAL;
    b[21..23].copy_from_slice(&attrs.to_be_bytes());
    b[43..51].copy_from_slice(&stamp.producer_id.to_be_bytes());
    b[51..53].copy_from_slice(&stamp.producer_epoch.to_be_bytes());
    b[53..57].copy_from_slice(&stamp.base_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Encodes a batch header + records body into wire form, computing length and CRC.
/// Used by the slow paths that must build new batches (padding, gap filling).
pub fn assemble(header: &BatchHeader, records_body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER_LEN + records_body.len());
    out.put_i64(header.base_offset);
    out.put_i32((HEADER_LEN - LOG_OVERHEAD + records_body.len()) as i32);
    out.put_i32(header.partition_leader_epoch);
    out.put_i8(2);
    out.put_u32(0);
    out.put_i16(header.attributes);
    out.put_i32(header.last_offset_delta);
    out.put_i64(header.base_timestamp);
    out.put_i64(header.max_timestamp);
    out.put_i64(header.producer_id);
    out.put_i16(header.producer_epoch);
    out.put_i32(header.base_sequence);
    out.put_i32(header.record_count);
    out.extend_from_slice(records_body);
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(base: i64, count: i32, body: &[u8], attrs: i16) -> Bytes {
        assemble(
            &BatchHeader {
                base_offset: base,
                batch_length: 0,
                partition_leader_epoch: 7,
                magic: 2,
                crc: 0,
                attributes: attrs,
                last_offset_delta: count - 1,
                base_timestamp: 1000,
                max_timestamp: 2000,
                producer_id: 42,
                producer_epoch: 3,
                base_sequence: 9,
                record_count: count,
            },
            body,
        )
    }

    #[test]
    fn parses_what_it_assembles() {
        let b = sample(100, 3, b"abc", 0x04);
        let h = parse_header(&b).unwrap();
        assert_eq!(h.base_offset, 100);
        assert_eq!(h.last_offset(), 102);
        assert_eq!(h.compression(), 4);
        assert_eq!(h.size(), b.len());
        assert!(h.is_dense());
    }

    /// Offsets and counts from the wire at their limits: a compacted batch may keep
    /// a huge lastOffsetDelta with one record left (accepted, sparse), and a batch
    /// whose last offset would not fit an i64, or which starts below 0, is refused.
    /// Neither may overflow (a panic in a debug build, a wrong offset in release).
    #[test]
    fn offsets_at_their_limits_never_overflow() {
        let with = |base: i64, delta: i32, count: i32| {
            let mut b = BytesMut::from(&sample(base, 1, b"r", 0)[..]);
            b[23..27].copy_from_slice(&delta.to_be_bytes());
            b[57..61].copy_from_slice(&count.to_be_bytes());
            let crc = crc32c::crc32c(&b[CRC_START..]);
            b[17..21].copy_from_slice(&crc.to_be_bytes());
            split_batches(&b.freeze())
        };
        let sparse = with(100, i32::MAX, 1).unwrap();
        assert!(!sparse[0].header.is_dense());
        assert_eq!(sparse[0].header.next_offset(), 100 + i32::MAX as i64 + 1);
        assert!(!with(100, i32::MAX, i32::MAX).unwrap()[0].header.is_dense());
        assert_eq!(
            with(100, 3, 5).unwrap_err(),
            BatchError::BadCount {
                offset: 100,
                count: 5,
                delta: 3
            }
        );
        assert!(with(100, i32::MAX - 1, i32::MAX).unwrap()[0]
            .header
            .is_dense());
        for base in [i64::MAX - 5, i64::MAX, -1, i64::MIN] {
            assert_eq!(
                with(base, 10, 1).unwrap_err(),
                BatchError::BadOffset {
                    offset: base,
                    delta: 10
                },
                "{base}"
            );
        }
        assert!(with(i64::MAX - 11, 10, 11).is_ok());
    }

    #[test]
    fn split_keeps_whole_batches_and_drops_a_cut_tail() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&sample(0, 2, b"xy", 0));
        buf.extend_from_slice(&sample(2, 1, b"z", 0));
        let full = buf.clone().freeze();
        assert_eq!(split_batches(&full).unwrap().len(), 2);
        let cut = full.slice(0..full.len() - 1);
        let got = split_batches(&cut).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].header.base_offset, 0);
    }

    #[test]
    fn split_rejects_a_flipped_bit() {
        let mut b = BytesMut::from(&sample(5, 1, b"hello", 0)[..]);
        let last = b.len() - 1;
        b[last] ^= 1;
        assert!(matches!(
            split_batches(&b.freeze()),
            Err(BatchError::Crc { offset: 5, .. })
        ));
    }

    #[test]
    fn split_valid_keeps_the_batches_before_a_bad_one() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&sample(0, 2, b"xy", 0));
        let mut bad = BytesMut::from(&sample(2, 1, b"z", 0)[..]);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        buf.extend_from_slice(&bad);
        let (good, err) = split_valid(&buf.freeze());
        assert_eq!(good.len(), 1);
        assert!(matches!(err, Some(BatchError::Crc { offset: 2, .. })));
    }

    #[test]
    fn split_rejects_old_magic() {
        let mut b = BytesMut::from(&sample(5, 1, b"hello", 0)[..]);
        b[16] = 1;
        assert!(matches!(
            split_batches(&b.freeze()),
            Err(BatchError::UnsupportedMagic { magic: 1, .. })
        ));
    }

    #[test]
    fn rewrite_changes_only_producer_fields_and_keeps_crc_valid() {
        let src = sample(100, 3, b"payload", 0x10 | 0x03);
        let mut out = BytesMut::new();
        rewrite_into(
            &src,
            ProducerStamp {
                producer_id: 77,
                producer_epoch: 1,
                base_sequence: 500,
            },
            &mut out,
        );
        let h = parse_header(&out).unwrap();
        assert_eq!(h.base_offset, 0);
        assert_eq!(h.partition_leader_epoch, -1);
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (77, 1, 500)
        );
        assert!(!h.is_transactional());
        assert_eq!(h.compression(), 3);
        assert_eq!((h.base_timestamp, h.max_timestamp), (1000, 2000));
        assert_eq!(&out[HEADER_LEN..], &src[HEADER_LEN..]);
        assert_eq!(split_batches(&out.freeze()).unwrap().len(), 1);
    }

    proptest! {
        #[test]
        fn rewrite_always_yields_a_valid_crc(
            body in proptest::collection::vec(any::<u8>(), 0..512),
            pid in any::<i64>(), epoch in any::<i16>(), seq in any::<i32>(),
            attrs in 0i16..0x40,
        ) {
            let src = sample(1, 1, &body, attrs);
            let mut out = BytesMut::new();
            rewrite_into(&src, ProducerStamp { producer_id: pid, producer_epoch: epoch, base_sequence: seq }, &mut out);
            let batches = split_batches(&out.freeze()).unwrap();
            prop_assert_eq!(batches.len(), 1);
            prop_assert_eq!(batches[0].header.producer_id, pid);
            prop_assert_eq!(batches[0].header.attributes, attrs & !0x10);
        }
    }
}
