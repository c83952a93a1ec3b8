//! The sink: writes planned steps to one destination partition with our producer stamp,
//! checking that every append lands at exactly the offset the plan says.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::kafka::batch::{rewrite_into, split_batches, BatchHeader, ProducerStamp, RawBatch};
use crate::kafka::client::Cluster;
use crate::kafka::error::KafkaError;
use crate::kafka::records::{densify, encode, filler};
use crate::mirror::cursor::Step;
use crate::mirror::error::MirrorError;
use crate::mirror::offset_map::{self, Deviation, OffsetMap};
use crate::mirror::tail::last_batch;

/// Filler records per produced batch when padding or filling large ranges: about
/// 480 KB, under the 1 MB batch limit of a default Kafka topic.
const FILLERS_PER_BATCH: i64 = 10_000;

/// Writer of one destination partition.
pub struct PartitionSink {
    pub dest: Arc<Cluster>,
    pub map: Arc<OffsetMap>,
    pub topic: String,
    pub partition: i32,
    pub source_cluster: String,
    pub source_topic: String,
    pub producer_id: i64,
    /// The epoch this partition's writes carry: the epoch of the sequence the
    /// partition's last batch belongs to, when that batch is ours (see `lineage`).
    pub producer_epoch: i16,
    /// The epoch our fencing lock gave us; at least `producer_epoch`.
    pub own_epoch: i16,
    /// Next idempotent sequence number for this partition under `producer_epoch`.
    pub sequence: i32,
    /// Destination end offset: where our next record must land.
    pub end: i64,
    /// Bytes per fetch when the last batch must be read again.
    pub fetch_bytes: usize,
    /// (max timestamp, acknowledged at) of the source batches written since the last
    /// [`PartitionSink::take_acked`], both in ms since the epoch: replication latency.
    pub acked: Vec<(i64, i64)>,
    /// (sent, acknowledged) of each produce request since the last
    /// [`PartitionSink::take_produced`], in ms since the epoch: produce latency.
    pub produced: Vec<(i64, i64)>,
    /// Every range filled with filler records (`[first, last]`), for continuous
    /// reconciliation, which compares only what was copied.
    pub fills: Arc<std::sync::Mutex<Vec<(i64, i64)>>>,
    /// The destination as a reader (the last batch, after a refused write).
    pub reader: crate::source::Source,
}

/// The producer epoch and sequence a partition's next write carries.
///
/// Apache Kafka checks an idempotent write only against the partition's own producer
/// state: a batch under a known (producer id, epoch) is appended only if its sequence
/// follows that producer's last batch in the partition (a repeat of one of the last
/// five is answered as a duplicate, at its original offset), but a batch under a *new*
/// epoch must start at sequence 0 and is appended wherever the log ends. So writing
/// under the epoch of the partition's last batch makes every append conditional on
/// nobody having written since: two instances that race write each batch once. A
/// fresh epoch would be unconditional (docs/offsets.md, "Fencing").
pub fn lineage(last: Option<&BatchHeader>, producer_id: i64, own_epoch: i16) -> (i16, i32) {
    match last {
        Some(h) if h.producer_id == producer_id && (0..=own_epoch).contains(&h.producer_epoch) => (
            h.producer_epoch,
            h.base_sequence
                .wrapping_add(h.last_offset_delta.wrapping_add(1))
                & i32::MAX,
        ),
        _ => (own_epoch, 0),
    }
}

impl PartitionSink {
    /// The acknowledgements recorded since the last call (see `acked`).
    pub fn take_acked(&mut self) -> Vec<(i64, i64)> {
        std::mem::take(&mut self.acked)
    }

    /// The produce requests timed since the last call (see `produced`).
    pub fn take_produced(&mut self) -> Vec<(i64, i64)> {
        std::mem::take(&mut self.produced)
    }

    fn stamp(&mut self, records: i32) -> ProducerStamp {
        let s = ProducerStamp {
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            base_sequence: self.sequence,
        };
        self.sequence = self.sequence.wrapping_add(records) & i32::MAX;
        s
    }

    /// Writes the steps in order, one batch per produce request: Produce v3 and later
    /// carry exactly one record batch per partition on Apache Kafka, which refuses more
    /// with INVALID_RECORD (tansu 0.6 accepts several). Returns the payload bytes
    /// written.
    pub async fn write(&mut self, steps: Vec<Step>) -> Result<u64, MirrorError> {
        let mut written = 0u64;
        for step in steps {
            match step {
                Step::Append(b) => {
                    let ts = b.header.max_timestamp;
                    written += self.append(vec![b]).await?;
                    self.acked.push((ts, offset_map::now_ms()));
                }
                Step::Fill {
                    from,
                    to,
                    timestamp,
                } => self.fill(from, to, timestamp, "gap").await?,
                Step::Densify { batch, from } => {
                    written += self.densify(&batch, from).await?;
                    self.acked
                        .push((batch.header.max_timestamp, offset_map::now_ms()));
                }
            }
        }
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
        self.fills
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((first, last));
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

    /// Produces dense batches, one request each, the first at `self.end`.
    async fn append(&mut self, batches: Vec<RawBatch>) -> Result<u64, MirrorError> {
        let mut total = 0u64;
        for b in &batches {
            let expected = self.end;
            let count = b.header.last_offset_delta as i64 + 1;
            let mut switched = false;
            let base = loop {
                let mut buf = BytesMut::with_capacity(b.bytes.len());
                let stamp = self.stamp(count as i32);
                rewrite_into(&b.bytes, stamp, &mut buf);
                match self.produce(buf.freeze(), expected, count).await {
                    Err(e) if !switched && self.may_restart_sequence(&e) => {
                        self.own_sequence(expected, &e).await?;
                        switched = true;
                    }
                    r => break r?,
                }
            };
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
            total += b.bytes.len() as u64;
        }
        Ok(total)
    }

    /// Whether the destination refused a write for its producer sequence (or, while we
    /// continue an older epoch's sequence, for that epoch) rather than for the data or
    /// the cluster's state. A refusal of our own epoch is a real fence.
    fn may_restart_sequence(&self, e: &MirrorError) -> bool {
        use kafka_protocol::ResponseError as R;
        match e {
            MirrorError::Fenced { .. } => self.producer_epoch < self.own_epoch,
            MirrorError::Kafka { source, .. } => matches!(
                source.code(),
                Some(R::OutOfOrderSequenceNumber | R::UnknownProducerId)
            ),
            _ => false,
        }
    }

    /// The broker refused to continue the partition's sequence. If nobody wrote since
    /// we read the end, the broker either checks every write against the fencing lock's
    /// epoch (tansu), which fences older instances on each write, or has forgotten the
    /// producer (Kafka expires idle producer state after `producer.id.expiration.ms`):
    /// either way a new sequence under our own epoch is safe. If somebody wrote, another
    /// instance of our lineage is ahead: the partition starts again from the new end.
    async fn own_sequence(
        &mut self,
        expected: i64,
        refused: &MirrorError,
    ) -> Result<(), MirrorError> {
        let c = &self.dest;
        let end = c
            .retry("end offset", || c.end_offset(&self.topic, self.partition))
            .await
            .map_err(|e| MirrorError::kafka(c.name(), e))?;
        let last = last_batch(
            &self.reader,
            &self.topic,
            self.partition,
            end,
            self.fetch_bytes,
        )
        .await?;
        let ours = last.is_some_and(|h| {
            h.producer_id == self.producer_id && h.producer_epoch == self.producer_epoch
        });
        if end != expected || !ours {
            return Err(MirrorError::Raced {
                topic: self.topic.clone(),
                partition: self.partition,
                offset: expected,
                detail: format!(
                    "the destination refused our next batch ({refused}) and now ends at {end}"
                ),
            });
        }
        tracing::info!(
            topic = %self.topic, partition = self.partition, offset = expected,
            from_epoch = self.producer_epoch, to_epoch = self.own_epoch, refused = %refused,
            "destination refused the partition's producer sequence; starting a new one under our epoch"
        );
        self.producer_epoch = self.own_epoch;
        self.sequence = 0;
        Ok(())
    }

    async fn produce(
        &mut self,
        records: Bytes,
        expected: i64,
        count: i64,
    ) -> Result<i64, MirrorError> {
        let c = &self.dest;
        // Retries included: what a write costs as the mirror sees it.
        let sent = offset_map::now_ms();
        let res = c
            .retry("produce", || {
                c.produce(
                    &self.topic,
                    self.partition,
                    records.clone(),
                    c.produce_timeout(),
                )
            })
            .await;
        if res.is_ok() {
            self.produced.push((sent, offset_map::now_ms()));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn last(producer_id: i64, producer_epoch: i16, base_sequence: i32, span: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 100,
            batch_length: 0,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: span - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id,
            producer_epoch,
            base_sequence,
            record_count: span,
        }
    }

    #[test]
    fn our_last_batch_is_continued_under_its_own_epoch() {
        // A restarted instance (epoch 5) continues the sequence written under epoch 2.
        assert_eq!(lineage(Some(&last(7, 2, 40, 10)), 7, 5), (2, 50));
        // The same epoch: the sequence goes on.
        assert_eq!(lineage(Some(&last(7, 5, 0, 3)), 7, 5), (5, 3));
        // Sequences wrap at i32::MAX, as Kafka's do.
        assert_eq!(lineage(Some(&last(7, 5, i32::MAX, 2)), 7, 5), (5, 1));
        // A wire delta at its limit wraps too (2^31 records later the sequence is
        // back where it was), without overflowing.
        let mut h = last(7, 5, 3, 1);
        h.last_offset_delta = i32::MAX;
        assert_eq!(lineage(Some(&h), 7, 5), (5, 3));
    }

    #[test]
    fn anything_else_starts_a_new_sequence_under_our_epoch() {
        assert_eq!(lineage(None, 7, 5), (5, 0));
        // Another producer's batch (a foreign writer, or a producer id given up).
        assert_eq!(lineage(Some(&last(8, 2, 40, 10)), 7, 5), (5, 0));
        // A newer epoch than ours is not ours to continue: we are the older instance,
        // and our writes will be refused as fenced.
        assert_eq!(lineage(Some(&last(7, 6, 40, 10)), 7, 5), (5, 0));
        // Batches of a non-idempotent producer carry no epoch.
        assert_eq!(lineage(Some(&last(-1, -1, -1, 10)), 7, 5), (5, 0));
    }
}
