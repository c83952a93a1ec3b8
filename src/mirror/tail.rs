//! Resume-time check: the destination's last batch must hold the same records as the
//! source at the same offsets (content, not CRC: producer fields differ by design).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::kafka::batch::{split_batches, BatchHeader, RawBatch};
use crate::kafka::client::Cluster;
use crate::kafka::records::{decode, Content};
use crate::mirror::error::MirrorError;
use crate::mirror::partition::Job;
use crate::mirror::Shared;

/// Compares the records of the destination's last batch with the source.
pub async fn verify_tail(
    shared: &Shared,
    job: &Job,
    dest_end: i64,
    src_start: i64,
) -> Result<(), MirrorError> {
    let p = job.partition;
    let fetch_bytes = shared.config.mirror.fetch_bytes;
    let dest_recs = Reader {
        cluster: &shared.dest,
        topic: &job.dest_topic,
        partition: p,
        fetch_bytes,
    }
    .records(dest_end - 1, dest_end)
    .await?;
    let Some(lo) = dest_recs.first().map(|r| r.offset) else {
        tracing::warn!(
            topic = %job.dest_topic, partition = p, dest_end,
            "cannot verify the destination tail: no records below the end offset are readable"
        );
        return Ok(());
    };
    let from = lo.max(src_start);
    if from >= dest_end {
        tracing::warn!(
            topic = %job.source_topic, partition = p, dest_end, src_start,
            "cannot verify the destination tail: the source no longer holds those offsets"
        );
        return Ok(());
    }
    let src_recs: BTreeMap<i64, Content> = Reader {
        cluster: &shared.source,
        topic: &job.source_topic,
        partition: p,
        fetch_bytes,
    }
    .records(from, dest_end)
    .await?
    .into_iter()
    .map(|r| (r.offset, r))
    .collect();
    let diverged = |offset: i64, detail: String| MirrorError::Diverged {
        topic: job.dest_topic.clone(),
        partition: p,
        offset,
        detail,
    };
    for d in dest_recs.iter().filter(|r| r.offset >= from) {
        match (src_recs.get(&d.offset), d.is_filler()) {
            (None, true) => {}
            (Some(_), true) => {
                return Err(diverged(
                    d.offset,
                    "destination holds a filler where the source has a record".into(),
                ))
            }
            (None, false) => {
                return Err(diverged(
                    d.offset,
                    "the source has no record at this offset".into(),
                ))
            }
            (Some(s), false) => {
                if let Some(what) = difference(s, d) {
                    return Err(diverged(
                        d.offset,
                        format!("{what} differs between source and destination"),
                    ));
                }
            }
        }
    }
    tracing::info!(
        topic = %job.source_topic, partition = p, from, to = dest_end,
        "destination tail matches the source"
    );
    Ok(())
}

fn difference(a: &Content, b: &Content) -> Option<&'static str> {
    if a.key != b.key {
        Some("key")
    } else if a.value != b.value {
        Some("value")
    } else if a.headers != b.headers {
        Some("headers")
    } else if a.timestamp != b.timestamp {
        Some("timestamp")
    } else {
        None
    }
}

/// Reads of one partition for the resume path: log start, raw batches, records.
struct Reader<'a> {
    cluster: &'a Cluster,
    topic: &'a str,
    partition: i32,
    fetch_bytes: usize,
}

impl Reader<'_> {
    async fn log_start(&self) -> Result<i64, MirrorError> {
        let c = self.cluster;
        c.retry("log start", || c.log_start(self.topic, self.partition))
            .await
            .map_err(|e| MirrorError::kafka(c.name(), e))
    }

    async fn fetch(&self, at: i64) -> Result<Vec<RawBatch>, MirrorError> {
        let c = self.cluster;
        let f = c
            .retry("fetch", || {
                c.fetch(
                    self.topic,
                    self.partition,
                    at,
                    self.fetch_bytes as i32,
                    Duration::ZERO,
                )
            })
            .await
            .map_err(|e| MirrorError::kafka(c.name(), e))?;
        split_batches(&f.records).map_err(|e| MirrorError::BadBatch {
            topic: self.topic.to_string(),
            partition: self.partition,
            offset: e.offset(),
            detail: e.to_string(),
        })
    }

    /// Batches starting with the one that contains `offset`.
    ///
    /// Apache Kafka answers a fetch inside a batch with the whole batch; tansu 0.6
    /// answers with the next batch. So when the answer starts after `offset`, probe
    /// further back (doubling the step) and read forward to the batch holding `offset`.
    async fn batches_from(
        &self,
        offset: i64,
        log_start: i64,
    ) -> Result<Vec<RawBatch>, MirrorError> {
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

    /// Records with offsets in `[from, to)`, plus those before `from` in its batch.
    async fn records(&self, from: i64, to: i64) -> Result<Vec<Content>, MirrorError> {
        let log_start = self.log_start().await?;
        let mut out = Vec::new();
        let mut batches = self.batches_from(from, log_start).await?;
        while let Some(last) = batches.last() {
            let next = last.header.next_offset();
            let recs = decode(&batches).map_err(|detail| MirrorError::BadBatch {
                topic: self.topic.to_string(),
                partition: self.partition,
                offset: batches[0].header.base_offset,
                detail,
            })?;
            out.extend(recs.into_iter().filter(|r| r.offset < to));
            if next >= to {
                break;
            }
            batches = self.fetch(next).await?;
        }
        Ok(out)
    }
}

/// The header of the last batch below `end` in a partition, if there is one.
pub async fn last_batch(
    cluster: &Cluster,
    topic: &str,
    partition: i32,
    end: i64,
    fetch_bytes: usize,
) -> Result<Option<BatchHeader>, MirrorError> {
    let r = Reader {
        cluster,
        topic,
        partition,
        fetch_bytes,
    };
    let log_start = r.log_start().await?;
    if end <= log_start {
        return Ok(None);
    }
    let batches = r.batches_from(end - 1, log_start).await?;
    Ok(batches
        .first()
        .filter(|b| b.header.base_offset < end)
        .map(|b| b.header))
}
