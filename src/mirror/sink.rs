//! The sink: writes planned steps to one destination partition with our producer stamp,
//! checking that every append lands at exactly the offset the plan says.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::kafka::batch::{rewrite_into, split_batches, ProducerStamp, RawBatch};
use crate::kafka::client::Cluster;
use crate::kafka::error::KafkaError;
use crate::kafka::records::{densify, encode, filler};
use crate::mirror::cursor::Step;
use crate::mirror::error::MirrorError;
use crate::mirror::offset_map::{Deviation, OffsetMap};

/// Filler records per produced batch when padding or filling large ranges.
const FILLERS_PER_BATCH: i64 = 20_000;

/// Writer of one destination partition.
pub struct PartitionSink {
    pub dest: Arc<Cluster>,
    pub map: Arc<OffsetMap>,
    pub topic: String,
    pub partition: i32,
    pub source_cluster: String,
    pub source_topic: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// Next idempotent sequence number for this partition under our epoch.
    pub sequence: i32,
    /// Destination end offset: where our next record must land.
    pub end: i64,
    pub max_request: usize,
}

impl PartitionSink {
    fn stamp(&mut self, records: i32) -> ProducerStamp {
        let s = ProducerStamp {
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            base_sequence: self.sequence,
        };
        self.sequence = self.sequence.wrapping_add(records) & i32::MAX;
        s
    }

    /// Writes the steps in order. Consecutive byte copies share produce requests.
    /// Returns the payload bytes written.
    pub async fn write(&mut self, steps: Vec<Step>) -> Result<u64, MirrorError> {
        let mut pending: Vec<RawBatch> = Vec::new();
        let mut pending_bytes = 0usize;
        let mut written = 0u64;
        for step in steps {
            match step {
                Step::Append(b) => {
                    if pending_bytes + b.bytes.len() > self.max_request && !pending.is_empty() {
                        written += self.append(std::mem::take(&mut pending)).await?;
                        pending_bytes = 0;
                    }
                    pending_bytes += b.bytes.len();
                    pending.push(b);
                }
                Step::Fill {
                    from,
                    to,
                    timestamp,
                } => {
                    written += self.append(std::mem::take(&mut pending)).await?;
                    pending_bytes = 0;
                    self.fill(from, to, timestamp, "gap").await?;
                }
                Step::Densify { batch, from } => {
                    written += self.append(std::mem::take(&mut pending)).await?;
                    pending_bytes = 0;
                    written += self.densify(&batch, from).await?;
                }
            }
        }
        written += self.append(pending).await?;
        Ok(written)
    }

    /// Pads `[from, to)` with fillers after recording the deviation.
    pub async fn fill(
        &mut self,
        from: i64,
        to: i64,
        timestamp: i64,
        kind: &str,
    ) -> Result<(), MirrorError> {
        self.record(from, to - 1, kind).await?;
        let mut o = from;
        while o < to {
            let n = (to - o).min(FILLERS_PER_BATCH);
            let recs: Vec<_> = (o..o + n).map(|x| filler(x, timestamp, kind)).collect();
            let bytes = encode(&recs, 0).map_err(|d| self.bad(o, d))?;
            let batches = split_batches(&bytes).map_err(|e| self.bad(o, e.to_string()))?;
            self.append(batches).await?;
            o += n;
        }
        Ok(())
    }

    async fn densify(&mut self, batch: &RawBatch, from: i64) -> Result<u64, MirrorError> {
        let (bytes, filled) = densify(batch, from).map_err(|d| self.bad(from, d))?;
        // Record each run of filled offsets before the fillers become visible.
        let mut runs: Vec<(i64, i64)> = Vec::new();
        for o in filled {
            match runs.last_mut() {
                Some((_, last)) if *last + 1 == o => *last = o,
                _ => runs.push((o, o)),
            }
        }
        for (a, b) in runs {
            self.record(a, b, "gap").await?;
        }
        let batches = split_batches(&bytes).map_err(|e| self.bad(from, e.to_string()))?;
        self.append(batches).await
    }

    async fn record(&self, first: i64, last: i64, kind: &str) -> Result<(), MirrorError> {
        self.map
            .record_deviation(&Deviation {
                topic: self.topic.clone(),
                partition: self.partition,
                first_offset: first,
                last_offset: last,
                kind: kind.to_string(),
                source_cluster: self.source_cluster.clone(),
                source_topic: self.source_topic.clone(),
            })
            .await
    }

    fn bad(&self, offset: i64, detail: String) -> MirrorError {
        MirrorError::BadBatch {
            topic: self.source_topic.clone(),
            partition: self.partition,
            offset,
            detail,
        }
    }

    /// Produces dense batches that must start at `self.end`.
    async fn append(&mut self, batches: Vec<RawBatch>) -> Result<u64, MirrorError> {
        if batches.is_empty() {
            return Ok(0);
        }
        let expected = self.end;
        let total: usize = batches.iter().map(|b| b.bytes.len()).sum();
        let mut buf = BytesMut::with_capacity(total);
        let mut count = 0i64;
        for b in &batches {
            let n = b.header.last_offset_delta + 1;
            let stamp = self.stamp(n);
            rewrite_into(&b.bytes, stamp, &mut buf);
            count += n as i64;
        }
        let records: Bytes = buf.freeze();
        let base = self.produce(records, expected, count).await?;
        if base != expected {
            return Err(MirrorError::Diverged {
                topic: self.topic.clone(),
                partition: self.partition,
                offset: expected,
                detail: format!(
                    "our batch landed at offset {base}: another writer appended to the destination"
                ),
            });
        }
        self.end = expected + count;
        Ok(total as u64)
    }

    async fn produce(&self, records: Bytes, expected: i64, count: i64) -> Result<i64, MirrorError> {
        let c = &self.dest;
        let res = c
            .retry("produce", || {
                c.produce(
                    &self.topic,
                    self.partition,
                    records.clone(),
                    Duration::from_secs(30),
                )
            })
            .await;
        match res {
            Ok(base) => Ok(base),
            // A retried request whose first attempt was written: the broker saw our
            // sequence already. Confirm through the end offset rather than trusting it.
            Err(KafkaError::Partition {
                code: kafka_protocol::ResponseError::DuplicateSequenceNumber,
                ..
            }) => {
                let end = c
                    .retry("end offset", || c.end_offset(&self.topic, self.partition))
                    .await
                    .map_err(|e| MirrorError::kafka(c.name(), e))?;
                if end == expected + count {
                    Ok(expected)
                } else {
                    Err(MirrorError::Diverged {
                        topic: self.topic.clone(),
                        partition: self.partition,
                        offset: expected,
                        detail: format!(
                            "broker reported a duplicate sequence but the end offset is {end}, expected {}",
                            expected + count
                        ),
                    })
                }
            }
            Err(e) => Err(MirrorError::kafka(c.name(), e)),
        }
    }
}
