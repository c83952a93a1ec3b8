//! Continuous reconciliation through a peer: every `verify_interval_secs`, the part of
//! a partition copied since the last check is compared with the source by Merkle
//! hashes built in the source DC (`serve`) and here. Only hashes cross the WAN; a
//! difference stops the partition naming the range, as the resume-time check does.
//!
//! Ranges the mirror filled itself (offsets the source does not have: gaps, padding)
//! differ from the source by design and are left out: what is compared is the copy
//! of what the source holds.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::error::MirrorError;
use super::partition::Job;
use super::Shared;
use crate::verify::diff::{compare, Options, Progress, Side};

/// Offsets per leaf: the diff's default.
const LEAF_OFFSETS: i64 = 4096;

/// The sub-ranges of `[from, to)` outside `fills` (inclusive `[first, last]` ranges
/// the mirror wrote fillers into), in order.
pub fn segments(from: i64, to: i64, fills: &[(i64, i64)]) -> Vec<(i64, i64)> {
    let mut fills: Vec<(i64, i64)> = fills
        .iter()
        .filter(|(a, b)| a <= b && *b >= from && *a < to)
        .copied()
        .collect();
    fills.sort_unstable();
    let mut out = Vec::new();
    let mut at = from;
    for (a, b) in fills {
        if a > at {
            out.push((at, a.min(to)));
        }
        at = at.max(b.saturating_add(1));
        if at >= to {
            break;
        }
    }
    if at < to {
        out.push((at, to));
    }
    out
}

struct Quiet;
impl Progress for Quiet {
    fn add_total(&self, _: u64) {}
    fn advance(&self, _: u64) {}
}

/// Checks the partition's copy from `start` on, every `interval`, as the writer's
/// end (`written`) moves. Returns only with the error that stops the partition; the
/// caller drops it when the partition ends.
pub async fn run(
    shared: Arc<Shared>,
    job: Job,
    start: i64,
    interval: Duration,
    mut written: watch::Receiver<i64>,
    fills: Arc<Mutex<Vec<(i64, i64)>>>,
) -> MirrorError {
    let source = Side {
        source: shared.source.clone(),
        topic: job.source_topic.clone(),
    };
    let dest = Side {
        source: shared.dest_reader.clone(),
        topic: job.dest_topic.clone(),
    };
    let opts = Options {
        partition: Some(job.partition),
        from: None,
        to: None,
        leaf_offsets: LEAF_OFFSETS,
        parallel: 1,
        fetch_bytes: shared.config.mirror.fetch_bytes,
    };
    // Compaction removes records on each side on its own schedule: a compacted
    // topic's copy differs from its source in time without being wrong.
    match shared.source.topic_configs(&job.source_topic).await {
        Ok(c)
            if c.get("cleanup.policy")
                .is_some_and(|v| v.contains("compact")) =>
        {
            tracing::info!(topic = %job.source_topic, partition = job.partition, "compacted topic: not checked by continuous reconciliation (wanmirror diff compares it)");
            return std::future::pending().await;
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(topic = %job.source_topic, error = %e, "cannot read the topic's configs; checking it as not compacted")
        }
    }
    let mut verified = start;
    loop {
        tokio::time::sleep(interval).await;
        let end = *written.borrow_and_update();
        // Retention may have removed the start of the range on either side since
        // it was copied: what is gone is not compared.
        let starts = tokio::try_join!(
            source.source.log_start(&source.topic, job.partition),
            dest.source.log_start(&dest.topic, job.partition)
        );
        match starts {
            Ok((a, b)) => verified = verified.max(a).max(b),
            Err(e) => {
                tracing::warn!(topic = %job.source_topic, partition = job.partition, error = %e, "reconciliation could not read the log starts; will try again");
                continue;
            }
        }
        if end <= verified {
            continue;
        }
        let parts = segments(
            verified,
            end,
            &fills.lock().unwrap_or_else(|p| p.into_inner()),
        );
        let started = Instant::now();
        let mut leaves = 0;
        let mut failed = false;
        for (a, b) in parts {
            match compare(&source, &dest, job.partition, a, b, &opts, (b, b), &Quiet).await {
                Ok(c) => {
                    leaves += c.leaves;
                    if let Some(r) = c.ranges.first() {
                        return MirrorError::Diverged {
                            topic: job.source_topic.clone(),
                            partition: job.partition,
                            offset: r.first,
                            detail: format!(
                                "continuous reconciliation: destination offsets {}..{} differ from the source (first difference at {}, last at {}; {} records in the source, {} in the destination)",
                                r.from, r.to, r.first, r.last, r.source_records, r.dest_records
                            ),
                        };
                    }
                }
                Err(e) => {
                    // A lost connection or a leader change: try the same range again
                    // next time.
                    tracing::warn!(topic = %job.source_topic, partition = job.partition, from = a, to = b, error = %e, "reconciliation could not compare; will try again");
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            continue;
        }
        tracing::info!(
            topic = %job.source_topic, partition = job.partition, from = verified, to = end,
            leaves, ms = started.elapsed().as_millis() as u64,
            "copy verified against the source (hashes through the peer)"
        );
        verified = end;
        shared.stats.verified(&job, end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fills_are_cut_out() {
        assert_eq!(segments(0, 100, &[]), vec![(0, 100)]);
        assert_eq!(segments(0, 100, &[(10, 19)]), vec![(0, 10), (20, 100)]);
        assert_eq!(segments(0, 100, &[(0, 9), (90, 200)]), vec![(10, 90)]);
        assert_eq!(
            segments(50, 100, &[(10, 60), (70, 70)]),
            vec![(61, 70), (71, 100)]
        );
        assert_eq!(segments(0, 100, &[(0, 99)]), Vec::<(i64, i64)>::new());
        assert_eq!(segments(5, 5, &[]), Vec::<(i64, i64)>::new());
    }

    proptest! {
        /// Every offset of the range is in exactly one segment or one fill, segments
        /// are ordered, disjoint and non-empty.
        #[test]
        fn segments_and_fills_cover_the_range_once(
            from in 0i64..200, len in 0i64..300,
            fills in prop::collection::vec((0i64..600, 0i64..40), 0..6),
        ) {
            let to = from + len;
            let fills: Vec<(i64, i64)> = fills.into_iter().map(|(a, l)| (a, a + l)).collect();
            let segs = segments(from, to, &fills);
            let mut last = from;
            for (a, b) in &segs {
                prop_assert!(a < b && *a >= last && *b <= to);
                last = *b;
            }
            for o in from..to {
                let in_seg = segs.iter().filter(|(a, b)| (*a..*b).contains(&o)).count();
                let in_fill = fills.iter().any(|(a, b)| (*a..=*b).contains(&o));
                prop_assert_eq!(in_seg, usize::from(!in_fill), "offset {}", o);
            }
        }
    }
}
