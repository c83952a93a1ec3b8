//! Record-level views of batches, for the slow paths only: comparing content at the
//! resume point, and building new batches when the source cannot be copied as bytes
//! (offset gaps, a resume point inside a batch, padding before a raised log start).

use bytes::{Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::batch::RawBatch;

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
        let mut buf = b.bytes.clone();
        let set = RecordBatchDecoder::decode(&mut buf).map_err(|e| {
            format!(
                "cannot decode batch at offset {}: {e}",
                b.header.base_offset
            )
        })?;
        out.extend(set.records.into_iter().map(|r| {
            Content {
                offset: r.offset,
                timestamp: r.timestamp,
                key: r.key,
                value: r.value,
                headers: r
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.into_bytes(), v))
                    .collect(),
            }
        }));
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
    let recs: Vec<Record> = records
        .iter()
        .map(|c| Record {
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
            headers: c
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        StrBytes::from_utf8(k.clone())
                            .unwrap_or_else(|_| StrBytes::from_static_str("?")),
                        v.clone(),
                    )
                })
                .collect::<IndexMap<_, _>>(),
        })
        .collect();
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
    let records = decode(std::slice::from_ref(batch))?;
    let first = from.max(batch.header.base_offset);
    let last = batch.header.last_offset();
    let mut out = Vec::with_capacity((last - first + 1).max(0) as usize);
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
