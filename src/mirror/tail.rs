//! Resume-time check: the destination's last batch must hold the same records as the
//! source at the same offsets (content, not CRC: producer fields differ by design).

use std::collections::BTreeMap;

use crate::kafka::batch::BatchHeader;
use crate::kafka::error::KafkaError;
use crate::kafka::records::Content;
use crate::mirror::error::MirrorError;
use crate::mirror::partition::Job;
use crate::mirror::Shared;
use crate::source::reader::PartitionReader;
use crate::source::Source;

/// Compares the records of the destination's last batch with the source.
pub async fn verify_tail(
    shared: &Shared,
    job: &Job,
    dest_end: i64,
    src_start: i64,
) -> Result<(), MirrorError> {
    let p = job.partition;
    let fetch_bytes = shared.config.mirror.fetch_bytes;
    let dest_recs = PartitionReader {
        source: &shared.dest_reader,
        topic: &job.dest_topic,
        partition: p,
        fetch_bytes,
    }
    .records(dest_end - 1, dest_end)
    .await
    .map_err(|e| read_err(shared.dest.name(), e))?;
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
    let src_recs: BTreeMap<i64, Content> = PartitionReader {
        source: &shared.source,
        topic: &job.source_topic,
        partition: p,
        fetch_bytes,
    }
    .records(from, dest_end)
    .await
    .map_err(|e| read_err(shared.source.name(), e))?
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

/// A reader's errors in mirror terms: corrupt data stops the partition for good.
fn read_err(cluster: &str, e: KafkaError) -> MirrorError {
    match e {
        KafkaError::Corrupt {
            topic,
            partition,
            offset,
            detail,
        } => MirrorError::BadBatch {
            topic,
            partition,
            offset,
            detail,
        },
        e => MirrorError::kafka(cluster, e),
    }
}

/// The header of the last batch below `end` in a partition, if there is one.
pub async fn last_batch(
    source: &Source,
    topic: &str,
    partition: i32,
    end: i64,
    fetch_bytes: usize,
) -> Result<Option<BatchHeader>, MirrorError> {
    let r = PartitionReader {
        source,
        topic,
        partition,
        fetch_bytes,
    };
    let log_start = r
        .log_start()
        .await
        .map_err(|e| read_err(source.name(), e))?;
    if end <= log_start {
        return Ok(None);
    }
    let batches = r
        .batches_from(end - 1, log_start)
        .await
        .map_err(|e| read_err(source.name(), e))?;
    Ok(batches
        .first()
        .filter(|b| b.header.base_offset < end)
        .map(|b| b.header))
}
