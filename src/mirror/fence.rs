//! The fence watch: notices that a newer instance took the fencing lock.
//!
//! On tansu a write under an older epoch is refused, so an older instance learns it was
//! fenced from its next write. Apache Kafka checks an idempotent write only against the
//! partition's own producer state, and the partitions are written under the epoch of
//! their own sequence (`sink::lineage`), so there a newer instance's epoch never reaches
//! the older one's writes. The older instance asks the transaction coordinator instead
//! (DescribeTransactions, which reads the epoch without bumping it) every few seconds.
//! Until then both copy the same batches under one sequence, which the broker appends
//! once, so the overlap costs bandwidth, not correctness.

use std::sync::Arc;
use std::time::Duration;

use crate::kafka::client::Cluster;
use crate::kafka::error::KafkaError;

/// How often the coordinator is asked: one small request, to one broker.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Resolves, with a description, once the fencing lock `fence_id` has moved past `ours`
/// (producer id, epoch); never where the destination cannot say.
pub async fn fenced(
    dest: Arc<Cluster>,
    fence_id: String,
    ours: (i64, i16),
    every: Duration,
) -> String {
    loop {
        tokio::time::sleep(every).await;
        match dest.fencing_epoch(&fence_id).await {
            Ok(Some(now)) if moved(ours, now) => {
                return format!(
                    "{}: fencing lock {fence_id} is now held by producer {} epoch {}, ours was producer {} epoch {}",
                    dest.name(),
                    now.0,
                    now.1,
                    ours.0,
                    ours.1
                );
            }
            Ok(_) => {}
            Err(KafkaError::UnsupportedApi { .. }) => {
                tracing::debug!(cluster = %dest.name(), "no DescribeTransactions here; the destination refuses older epochs' writes itself");
                return std::future::pending().await;
            }
            Err(e) => {
                tracing::debug!(cluster = %dest.name(), error = %e, "fence check failed; will retry")
            }
        }
    }
}

/// Whether the lock moved on from `ours`: a newer epoch, or another producer id (the
/// transactional id expired and was taken again).
fn moved(ours: (i64, i16), now: (i64, i16)) -> bool {
    now.0 != ours.0 || now.1 > ours.1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_epoch_or_another_producer_id_is_a_fence() {
        assert!(!moved((7, 3), (7, 3)));
        assert!(moved((7, 3), (7, 4)));
        assert!(moved((7, 3), (8, 0)));
        // An older epoch cannot be the coordinator's after ours was given out.
        assert!(!moved((7, 3), (7, 2)));
    }
}
