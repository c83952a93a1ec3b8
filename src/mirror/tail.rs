//! Resume-time check: the destination's last batch must hold the same records as the
//! source at the same offsets (content, not CRC: producer fields differ by design).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::kafka::batch::split_batches;
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

/// Reads and decodes records with offsets in `[from, to)`. The first fetch may start
/// inside a batch; the whole batch is decoded so the caller sees its first record.
async fn read_range(
    cluster: &Cluster,
    topic: &str,
    partition: i32,
    from: i64,
    to: i64,
    fetch_bytes: usize,
) -> Result<Vec<Content>, MirrorError> {
    let mut out = Vec::new();
    let mut next = from;
    let mut first = true;
    while next < to {
        let f = cluster
            .retry("fetch", || {
                cluster.fetch(topic, partition, next, fetch_bytes as i32, Duration::ZERO)
            })
            .await
            .map_err(|e| MirrorError::kafka(cluster.name(), e))?;
        let batches = split_batches(&f.records).map_err(|e| MirrorError::BadBatch {
            topic: topic.to_string(),
            partition,
            offset: next,
            detail: e.to_string(),
        })?;
        let Some(last) = batches.last() else { break };
        let new_next = last.header.next_offset();
        let recs = decode(&batches).map_err(|detail| MirrorError::BadBatch {
            topic: topic.to_string(),
            partition,
            offset: next,
            detail,
        })?;
        out.extend(
            recs.into_iter()
                .filter(|r| r.offset < to && (first || r.offset >= next)),
        );
        first = false;
        next = new_next;
    }
    Ok(out)
}
