//! Record-level views of batches, for the slow paths only: comparing content at the
//! resume point, and building new batches when the source cannot be copied as bytes
//! (offset gaps, a resume point inside a batch, padding before a raised log start).

use bytes::{Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::batch::RawBatch;
use super::unpack;

/// Most offsets one batch may span when it has to be rebuilt with fillers (each is a
/// record in memory). A batch spans the records it was produced with, which Kafka's
/// 1 MiB default message size keeps near 150,000 at 7 bytes a record; the cap leaves
/// room above that, and a wire value of up to 2^31 no longer decides our memory.
pub const MAX_DENSIFY_SPAN: i64 = 1 << 18;

/// Header that marks a record the mirror wrote in place of a missing source offset.
pub const FILLER_HEADER: &str = "wanmirror-filler";
/// Key of filler records: compacted topics refuse null keys, and one shared key means
/// compaction keeps at most one of them.
pub const FILLER_KEY: &[u8] = b"__wanmirror_filler";

/// The logical content of one record: what "same record" means for the mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(Bytes, Option<Bytes>)>,
}

impl Content {
    pub fn is_filler(&self) -> bool {
        self.headers
            .iter()
            .any(|(k, _)| k.as_ref() == FILLER_HEADER.as_bytes())
    }
}

/// Decodes every record of the given batches (decompressing as needed).
pub fn decode(batches: &[RawBatch]) -> Result<Vec<Content>, String> {
    let mut out = Vec::new();
    for b in batches {
        if b.header.is_control() {
            continue;
        }
        out.extend(unpack::records(b).map_err(|e| format!("cannot decode {e}"))?);
    }
    Ok(out)
}

fn compression_of(code: i16) -> Compression {
    match code {
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        _ => Compression::None,
    }
}

/// A filler record standing in for source offset `offset`.
pub fn filler(offset: i64, timestamp: i64, reason: &str) -> Content {
    Content {
        offset,
        timestamp,
        key: Some(Bytes::from_static(FILLER_KEY)),
        value: None,
        headers: vec![(
            Bytes::from_static(FILLER_HEADER.as_bytes()),
            Some(Bytes::copy_from_slice(reason.as_bytes())),
        )],
    }
}

/// Encodes records with dense offsets into one v2 batch with the given compression code.
/// Producer fields are left empty; the sink stamps them like any other batch.
pub fn encode(records: &[Content], compression: i16) -> Result<Bytes, String> {
    let recs = records
        .iter()
        .map(|c| {
            Ok(Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: c.offset,
                // The encoder groups records whose offset-sequence distance is constant.
                sequence: c.offset as i32,
                timestamp: c.timestamp,
                key: c.key.clone(),
                value: c.value.clone(),
                // The crate's encoder takes UTF-8 header keys only. Writing a replacement
                // would change the record; refusing names the record instead.
                headers: c
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        let key = StrBytes::from_utf8(k.clone()).map_err(|_| {
                            format!(
                            "cannot rebuild the record at offset {}: header key {:?} is not UTF-8",
                            c.offset,
                            String::from_utf8_lossy(k)
                        )
                        })?;
                        Ok((key, v.clone()))
                    })
                    .collect::<Result<IndexMap<_, _>, String>>()
                    .and_then(|h| {
                        // The crate keeps one value per key; Kafka allows repeats.
                        if h.len() == c.headers.len() {
                            Ok(h)
                        } else {
                            Err(format!(
                                "cannot rebuild the record at offset {}: it repeats a header key",
                                c.offset
                            ))
                        }
                    })?,
            })
        })
        .collect::<Result<Vec<Record>, String>>()?;
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &recs,
        &RecordEncodeOptions {
            version: 2,
            compression: compression_of(compression),
        },
    )
    .map_err(|e| format!("cannot encode batch: {e}"))?;
    Ok(buf.freeze())
}

/// Rebuilds the part of `batch` from `from` on as a dense batch: records before `from`
/// are dropped, and every offset the source batch skips is filled with a filler record.
/// Returns the new batch and the filled offsets.
pub fn densify(batch: &RawBatch, from: i64) -> Result<(Bytes, Vec<i64>), String> {
    let first = from.max(batch.header.base_offset);
    let last = batch.header.last_offset();
    let span = (last - first + 1).max(0);
    if span > MAX_DENSIFY_SPAN {
        return Err(format!(
            "batch at offset {} spans {span} offsets from {first}; rebuilding more than {MAX_DENSIFY_SPAN} with fillers is refused",
            batch.header.base_offset
        ));
    }
    let records = decode(std::slice::from_ref(batch))?;
    let mut out = Vec::with_capacity(span as usize);
    let mut filled = Vec::new();
    let mut it = records.into_iter().filter(|r| r.offset >= first).peekable();
    let mut ts = batch.header.base_timestamp;
    for o in first..=last {
        match it.peek() {
            Some(r) if r.offset == o => {
                let r = it.next().expect("peeked");
                ts = r.timestamp;
                out.push(r);
            }
            _ => {
                out.push(filler(o, ts, "gap"));
                filled.push(o);
            }
        }
    }
    Ok((encode(&out, batch.header.compression())?, filled))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::batch::split_batches;

    fn rec(offset: i64, v: &str) -> Content {
        Content {
            offset,
            timestamp: 1000 + offset,
            key: Some(Bytes::from(format!("k{offset}"))),
            value: Some(Bytes::copy_from_slice(v.as_bytes())),
            headers: vec![(Bytes::from_static(b"h"), Some(Bytes::from_static(b"1")))],
        }
    }

    #[test]
    fn encode_then_decode_round_trips_for_every_codec() {
        for codec in 0..=4 {
            let recs: Vec<_> = (10..15).map(|o| rec(o, "value")).collect();
            let bytes = encode(&recs, codec).unwrap();
            let batches = split_batches(&bytes).unwrap();
            assert_eq!(batches[0].header.compression(), codec);
            assert_eq!(decode(&batches).unwrap(), recs);
        }
    }

    #[test]
    fn a_record_the_encoder_would_change_is_refused_by_name() {
        let mut r = rec(42, "v");
        r.headers.push((Bytes::from_static(b"h"), None));
        let e = encode(&[r], 0).unwrap_err();
        assert!(
            e.contains("offset 42") && e.contains("repeats a header key"),
            "{e}"
        );
        let mut r = rec(43, "v");
        r.headers = vec![(Bytes::from_static(&[0xff]), None)];
        let e = encode(&[r], 0).unwrap_err();
        assert!(e.contains("offset 43") && e.contains("not UTF-8"), "{e}");
    }

    #[test]
    fn a_batch_spanning_too_many_offsets_is_not_densified() {
        let recs = vec![rec(0, "a"), rec(1, "b")];
        let mut batch = split_batches(&encode(&recs, 0).unwrap()).unwrap()[0].clone();
        // Compaction keeps the original lastOffsetDelta: a batch of two records that
        // claims to span 2^31 offsets would need two billion fillers.
        batch.header.last_offset_delta = i32::MAX;
        let (r, largest) = crate::test_alloc::largest_allocation(|| densify(&batch, 0));
        let e = r.unwrap_err();
        assert!(e.contains("rebuilding more than"), "{e}");
        assert!(largest < 1 << 20, "allocated {largest}");
    }

    #[test]
    fn densify_fills_holes_and_trims_the_front() {
        // A compacted batch: offsets 20, 23, 24 survive out of 20..=25.
        let recs = vec![rec(20, "a"), rec(23, "b"), rec(25, "c")];
        let mut bytes = BytesMut::from(&encode(&recs, 4).unwrap()[..]);
        // Compaction keeps lastOffsetDelta of the original batch; here it already is 5.
        let batch = split_batches(&std::mem::take(&mut bytes).freeze()).unwrap()[0].clone();
        assert!(!batch.header.is_dense());
        let (dense, filled) = densify(&batch, 21).unwrap();
        assert_eq!(filled, vec![21, 22, 24]);
        let b = split_batches(&dense).unwrap();
        assert!(b[0].header.is_dense());
        let got = decode(&b).unwrap();
        assert_eq!(
            got.iter().map(|c| c.offset).collect::<Vec<_>>(),
            vec![21, 22, 23, 24, 25]
        );
        assert!(got[0].is_filler() && !got[2].is_filler());
        assert_eq!(got[2], rec(23, "b"));
    }
}
