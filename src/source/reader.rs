//! Reading a partition's batches and records at arbitrary offsets, for the slow paths:
//! the resume check and `wanmirror diff`. Catch-up fetches over the pool, no long polls.

use super::Source;
use crate::kafka::batch::{split_batches, RawBatch};
use crate::kafka::error::{KafkaError, Result};
use crate::kafka::records::{decode, Content};

pub struct PartitionReader<'a> {
    pub source: &'a Source,
    pub topic: &'a str,
    pub partition: i32,
    pub fetch_bytes: usize,
}

impl PartitionReader<'_> {
    pub async fn log_start(&self) -> Result<i64> {
        let c = self.source;
        c.retry("log start", || c.log_start(self.topic, self.partition))
            .await
    }

    fn corrupt(&self, offset: i64, detail: String) -> KafkaError {
        KafkaError::Corrupt {
            topic: self.topic.to_string(),
            partition: self.partition,
            offset,
            detail,
        }
    }

    /// Whole batches from `at` on (one fetch).
    pub async fn fetch(&self, at: i64) -> Result<Vec<RawBatch>> {
        let c = self.source;
        let f = c
            .retry("fetch", || {
                c.fetch_piece(
                    self.topic,
                    self.partition,
                    at,
                    self.fetch_bytes as i32,
                    false,
                    None,
                )
            })
            .await?;
        split_batches(&f.records).map_err(|e| self.corrupt(e.offset(), e.to_string()))
    }

    /// Batches starting with the one that contains `offset`.
    ///
    /// Apache Kafka answers a fetch inside a batch with the whole batch; tansu 0.6
    /// answers with the next batch. So when the answer starts after `offset`, probe
    /// further back (doubling the step) and read forward to the batch holding `offset`.
    pub async fn batches_from(&self, offset: i64, log_start: i64) -> Result<Vec<RawBatch>> {
        let mut step = 0i64;
        loop {
            let probe = (offset - step).max(log_start);
            let mut at = probe;
            let mut saw_earlier = false;
            loop {
                let batches = self.fetch(at).await?;
                let Some(last) = batches.last() else {
                    if probe <= log_start || saw_earlier {
                        return Ok(vec![]);
                    }
                    break;
                };
                if let Some(i) = batches
                    .iter()
                    .position(|b| b.header.last_offset() >= offset)
                {
                    let found = &batches[i];
                    if found.header.base_offset <= offset
                        || saw_earlier
                        || i > 0
                        || probe <= log_start
                    {
                        return Ok(batches[i..].to_vec());
                    }
                    break;
                }
                saw_earlier = true;
                at = last.header.next_offset();
            }
            step = (step * 2).max(1);
        }
    }

    /// Calls `f` for every record with an offset in `[from, to)`, in order; returns the
    /// batch bytes read.
    pub async fn scan(&self, from: i64, to: i64, mut f: impl FnMut(&Content)) -> Result<u64> {
        let log_start = self.log_start().await?;
        let mut bytes = 0u64;
        let mut batches = self.batches_from(from, log_start).await?;
        while let Some(last) = batches.last() {
            let next = last.header.next_offset();
            bytes += batches.iter().map(|b| b.bytes.len() as u64).sum::<u64>();
            let recs = decode(&batches)
                .map_err(|detail| self.corrupt(batches[0].header.base_offset, detail))?;
            for r in recs.iter().filter(|r| r.offset >= from && r.offset < to) {
                f(r);
            }
            if next >= to {
                break;
            }
            batches = self.fetch(next).await?;
        }
        Ok(bytes)
    }

    /// Records with offsets in `[from, to)`, plus those before `from` in its batch.
    pub async fn records(&self, from: i64, to: i64) -> Result<Vec<Content>> {
        let log_start = self.log_start().await?;
        let mut out = Vec::new();
        let mut batches = self.batches_from(from, log_start).await?;
        while let Some(last) = batches.last() {
            let next = last.header.next_offset();
            let recs = decode(&batches)
                .map_err(|detail| self.corrupt(batches[0].header.base_offset, detail))?;
            out.extend(recs.into_iter().filter(|r| r.offset < to));
            if next >= to {
                break;
            }
            batches = self.fetch(next).await?;
        }
        Ok(out)
    }
}
