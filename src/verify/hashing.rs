//! Leaf hashing off the async runtime: the partition's batches are read on the
//! runtime and handed over a crossbeam channel to a worker thread, which decodes
//! (decompresses) them and hashes the records. Reading the next batches and hashing
//! the last ones then overlap, and partitions hashed at once use every core while
//! the runtime keeps the network moving.

use std::sync::Arc;

use tokio::sync::{oneshot, Semaphore};

use super::leaf::{Leaf, LeafHasher};
use crate::kafka::batch::RawBatch;
use crate::kafka::error::{KafkaError, Result};
use crate::kafka::records::decode;
use crate::source::reader::PartitionReader;

/// Batch bytes read ahead of the worker, in KiB: enough to keep it busy while the next
/// fetch is out, bounded so that a fast reader does not fill memory.
const AHEAD_KIB: usize = 32 * 1024;

/// The leaves of `[from, to)` of the partition `reader` reads, and the batch bytes
/// read. `progress` is told how many offsets each handed-over step covers.
pub async fn hash_range(
    reader: &PartitionReader<'_>,
    from: i64,
    to: i64,
    leaf_offsets: i64,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(Vec<Leaf>, u64)> {
    let ahead = Arc::new(Semaphore::new(AHEAD_KIB));
    let (tx, rx) = crossbeam_channel::unbounded::<(Vec<RawBatch>, u32)>();
    let (done_tx, done_rx) = oneshot::channel();
    let worker_ahead = ahead.clone();
    std::thread::Builder::new()
        .name("wanmirror-hash".into())
        .spawn(move || {
            let mut h = LeafHasher::new(from, to, leaf_offsets);
            for (batches, kib) in rx {
                let r = decode(&batches);
                worker_ahead.add_permits(kib as usize);
                match r {
                    Ok(recs) => recs.iter().for_each(|r| h.push(r)),
                    Err(detail) => {
                        let at = batches.first().map_or(from, |b| b.header.base_offset);
                        let _ = done_tx.send(Err((at, detail)));
                        return;
                    }
                }
            }
            let _ = done_tx.send(Ok(h.finish()));
        })
        .map_err(|e| KafkaError::Corrupt {
            topic: reader.topic.to_string(),
            partition: reader.partition,
            offset: from,
            detail: format!("cannot start a hashing thread: {e}"),
        })?;
    let mut bytes = 0u64;
    if to > from {
        let log_start = reader.log_start().await?;
        let mut batches = reader.batches_from(from, log_start).await?;
        let mut last = from;
        while let Some(b) = batches.last() {
            let next = b.header.next_offset();
            let size: usize = batches.iter().map(|b| b.bytes.len()).sum();
            bytes += size as u64;
            let kib = (size / 1024).clamp(1, AHEAD_KIB) as u32;
            ahead
                .acquire_many(kib)
                .await
                .expect("the semaphore is never closed")
                .forget();
            if tx.send((batches, kib)).is_err() {
                // The worker stopped at a corrupt batch: its error is below.
                break;
            }
            progress((next.min(to) - last).max(0) as u64);
            last = next.min(to);
            if next >= to {
                break;
            }
            batches = reader.fetch(next).await?;
        }
    }
    drop(tx);
    match done_rx.await {
        Ok(Ok(leaves)) => Ok((leaves, bytes)),
        Ok(Err((offset, detail))) => Err(KafkaError::Corrupt {
            topic: reader.topic.to_string(),
            partition: reader.partition,
            offset,
            detail,
        }),
        Err(_) => Err(KafkaError::Corrupt {
            topic: reader.topic.to_string(),
            partition: reader.partition,
            offset: from,
            detail: "the hashing thread ended without an answer".into(),
        }),
    }
}
