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
    let dest_recs = read_range(
        &shared.dest,
        &job.dest_topic,
        p,
        dest_end - 1,
        dest_end,
        fetch_bytes,
    )
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
    let src_recs: BTreeMap<i64, Content> = read_range(
        &shared.source,
        &job.source_topic,
        p,
        from,
        dest_end,
        fetch_bytes,
    )
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

/// The header of the last batch below `end` in a partition, if there is one.
pub async fn last_batch(
    cluster: &Cluster,
    topic: &str,
    partition: i32,
    end: i64,
    fetch_bytes: usize,
) -> Result<Option<BatchHeader>, MirrorError> {
    let log_start = cluster
        .retry("log start", || cluster.log_start(topic, partition))
        .await
        .map_err(|e| MirrorError::kafka(cluster.name(), e))?;
    if end <= log_start {
        return Ok(None);
    }
    let batches = batches_from(cluster, topic, partition, end - 1, log_start, fetch_bytes).await?;
    Ok(batches
        .first()
        .filter(|b| b.header.base_offset < end)
        .map(|b| b.header))
}

/// Fetches batches starting with the one that contains `offset`.
///
/// Apache Kafka answers a fetch inside a batch with the whole batch; tansu 0.6 answers
/// with the next batch. So when the answer starts after `offset`, probe further back
/// (doubling the step) and read forward until the batch holding `offset` is found.
async fn batches_from(
    cluster: &Cluster,
    topic: &str,
    partition: i32,
    offset: i64,
    log_start: i64,
    fetch_bytes: usize,
) -> Result<Vec<RawBatch>, MirrorError> {
    let fetch = |at: i64| async move {
        let f = cluster
            .retry("fetch", || {
                cluster.fetch(topic, partition, at, fetch_bytes as i32, Duration::ZERO)
            })
            .await
            .map_err(|e| MirrorError::kafka(cluster.name(), e))?;
        split_batches(&f.records).map_err(|e| MirrorError::BadBatch {
            topic: topic.to_string(),
            partition,
            offset: at,
            detail: e.to_string(),
        })
    };
    let mut step = 0i64;
    loop {
        let probe = (offset - step).max(log_start);
        let mut at = probe;
        let mut saw_earlier = false;
        loop {
            let batches = fetch(at).await?;
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
                if found.header.base_offset <= offset || saw_earlier || i > 0 || probe <= log_start
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

/// Reads and decodes records with offsets in `[from, to)`, plus the records before
/// `from` in the batch that holds `from`.
async fn read_range(
    cluster: &Cluster,
    topic: &str,
    partition: i32,
    from: i64,
    to: i64,
    fetch_bytes: usize,
) -> Result<Vec<Content>, MirrorError> {
    let log_start = cluster
        .retry("log start", || cluster.log_start(topic, partition))
        .await
        .map_err(|e| MirrorError::kafka(cluster.name(), e))?;
    let mut out = Vec::new();
    let mut batches = batches_from(cluster, topic, partition, from, log_start, fetch_bytes).await?;
    while let Some(last) = batches.last() {
        let next = last.header.next_offset();
        let recs = decode(&batches).map_err(|detail| MirrorError::BadBatch {
            topic: topic.to_string(),
            partition,
            offset: batches[0].header.base_offset,
            detail,
        })?;
        out.extend(recs.into_iter().filter(|r| r.offset < to));
        if next >= to {
            break;
        }
        let f = cluster
            .retry("fetch", || {
                cluster.fetch(topic, partition, next, fetch_bytes as i32, Duration::ZERO)
            })
            .await
            .map_err(|e| MirrorError::kafka(cluster.name(), e))?;
        batches = split_batches(&f.records).map_err(|e| MirrorError::BadBatch {
            topic: topic.to_string(),
            partition,
            offset: next,
            detail: e.to_string(),
        })?;
    }
    Ok(out)
}
