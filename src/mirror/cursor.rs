//! The append planner: turns fetched source batches into the exact steps that keep the
//! destination offset-identical. Pure logic, no I/O; the partition driver executes it.

use crate::config::GapPolicy;
use crate::kafka::batch::RawBatch;

/// One thing to write to the destination, in order.
#[derive(Debug, Clone)]
pub enum Step {
    /// Copy the batch as bytes: it starts exactly at the destination end and is dense.
    Append(RawBatch),
    /// Source offsets `[from, to)` do not exist; write one filler record per offset.
    Fill { from: i64, to: i64, timestamp: i64 },
    /// Rebuild the batch from offset `from`, filling its inner holes (slow path).
    Densify { batch: RawBatch, from: i64 },
}

impl Step {
    /// Offset right after what this step writes.
    pub fn end(&self) -> i64 {
        match self {
            Step::Append(b) | Step::Densify { batch: b, .. } => b.header.next_offset(),
            Step::Fill { to, .. } => *to,
        }
    }
}

/// Why the planner stopped. The driver adds topic and partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Transactional data or control markers: not mirrored by this version.
    Transactional { offset: i64 },
    /// Offsets `[from, to)` are missing and `gap_policy = "refuse"`.
    Gap { from: i64, to: i64 },
}

/// Tracks the next destination offset and plans steps for incoming batches.
#[derive(Debug, Clone)]
pub struct Cursor {
    next: i64,
    gap_policy: GapPolicy,
}

impl Cursor {
    pub fn new(next: i64, gap_policy: GapPolicy) -> Self {
        Cursor { next, gap_policy }
    }

    /// The offset the next written record must get.
    pub fn next(&self) -> i64 {
        self.next
    }

    /// Plans `batches` (in fetch order). Batches wholly below the cursor are dropped as
    /// already written; on refusal the steps planned before it are still returned so
    /// that everything up to the problem is copied.
    pub fn plan(&mut self, batches: &[RawBatch]) -> (Vec<Step>, Option<Refusal>) {
        let mut steps = Vec::new();
        for b in batches {
            let h = &b.header;
            if h.last_offset() < self.next {
                continue;
            }
            if h.is_transactional() || h.is_control() {
                return (
                    steps,
                    Some(Refusal::Transactional {
                        offset: h.base_offset.max(self.next),
                    }),
                );
            }
            if h.base_offset > self.next {
                if self.gap_policy == GapPolicy::Refuse {
                    return (
                        steps,
                        Some(Refusal::Gap {
                            from: self.next,
                            to: h.base_offset,
                        }),
                    );
                }
                steps.push(Step::Fill {
                    from: self.next,
                    to: h.base_offset,
                    timestamp: h.base_timestamp,
                });
                self.next = h.base_offset;
            }
            if h.base_offset == self.next && h.is_dense() {
                steps.push(Step::Append(b.clone()));
            } else {
                if !h.is_dense() && self.gap_policy == GapPolicy::Refuse {
                    return (
                        steps,
                        Some(Refusal::Gap {
                            from: self.next,
                            to: h.next_offset(),
                        }),
                    );
                }
                steps.push(Step::Densify {
                    batch: b.clone(),
                    from: self.next,
                });
            }
            self.next = h.next_offset();
        }
        (steps, None)
    }

    /// Source offsets below `log_start` are gone; jump the cursor there.
    /// Returns the padding range to write, if any.
    pub fn skip_to(&mut self, log_start: i64) -> Option<(i64, i64)> {
        if log_start > self.next {
            let r = (self.next, log_start);
            self.next = log_start;
            Some(r)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::batch::{assemble, parse_header, BatchHeader};
    use proptest::prelude::*;

    fn batch(base: i64, count: i32, span: i32, attrs: i16) -> RawBatch {
        let bytes = assemble(
            &BatchHeader {
                base_offset: base,
                batch_length: 0,
                partition_leader_epoch: 0,
                magic: 2,
                crc: 0,
                attributes: attrs,
                last_offset_delta: span - 1,
                base_timestamp: base * 10,
                max_timestamp: base * 10,
                producer_id: -1,
                producer_epoch: -1,
                base_sequence: -1,
                record_count: count,
            },
            b"",
        );
        RawBatch {
            header: parse_header(&bytes).unwrap(),
            bytes,
        }
    }

    fn kinds(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|s| match s {
                Step::Append(b) => format!("A{}", b.header.base_offset),
                Step::Fill { from, to, .. } => format!("F{from}-{to}"),
                Step::Densify { batch, from } => format!("D{}@{from}", batch.header.base_offset),
            })
            .collect()
    }

    #[test]
    fn appends_contiguous_batches_as_bytes() {
        let mut c = Cursor::new(0, GapPolicy::Fill);
        let (s, r) = c.plan(&[batch(0, 3, 3, 0), batch(3, 2, 2, 0)]);
        assert_eq!(kinds(&s), ["A0", "A3"]);
        assert_eq!((r, c.next()), (None, 5));
    }

    #[test]
    fn drops_batches_already_written() {
        let mut c = Cursor::new(5, GapPolicy::Fill);
        let (s, _) = c.plan(&[batch(0, 3, 3, 0), batch(3, 2, 2, 0), batch(5, 1, 1, 0)]);
        assert_eq!(kinds(&s), ["A5"]);
    }

    #[test]
    fn fills_a_gap_between_batches() {
        let mut c = Cursor::new(0, GapPolicy::Fill);
        let (s, _) = c.plan(&[batch(0, 2, 2, 0), batch(5, 1, 1, 0)]);
        assert_eq!(kinds(&s), ["A0", "F2-5", "A5"]);
    }

    #[test]
    fn densifies_holes_inside_a_batch_and_a_resume_point_inside_a_batch() {
        let mut c = Cursor::new(0, GapPolicy::Fill);
        let (s, _) = c.plan(&[batch(0, 2, 4, 0)]);
        assert_eq!(kinds(&s), ["D0@0"]);
        let mut c = Cursor::new(2, GapPolicy::Refuse);
        let (s, r) = c.plan(&[batch(0, 4, 4, 0)]);
        assert_eq!((kinds(&s), r), (vec!["D0@2".to_string()], None));
    }

    #[test]
    fn refuses_gaps_when_told_to_after_copying_what_came_before() {
        let mut c = Cursor::new(0, GapPolicy::Refuse);
        let (s, r) = c.plan(&[batch(0, 2, 2, 0), batch(4, 1, 1, 0)]);
        assert_eq!(kinds(&s), ["A0"]);
        assert_eq!(r, Some(Refusal::Gap { from: 2, to: 4 }));
    }

    #[test]
    fn refuses_transactional_batches() {
        let mut c = Cursor::new(0, GapPolicy::Fill);
        let (s, r) = c.plan(&[batch(0, 1, 1, 0x10)]);
        assert!(s.is_empty());
        assert_eq!(r, Some(Refusal::Transactional { offset: 0 }));
    }

    #[test]
    fn skip_to_pads_only_forward() {
        let mut c = Cursor::new(3, GapPolicy::Fill);
        assert_eq!(c.skip_to(2), None);
        assert_eq!(c.skip_to(10), Some((3, 10)));
        assert_eq!(c.next(), 10);
    }

    proptest! {
        /// Whatever overlapping, repeated or gapped fetches arrive, the planned steps
        /// cover offsets start.. exactly once, in order, with no hole, and each keeps
        /// every record at its source offset: a batch is copied as bytes only when it
        /// is dense and starts where the destination ends (a batch with holes copied
        /// as it is would shift every later offset), fillers stand only where the
        /// source has no batch, and a rebuilt batch holds the offset it starts at.
        #[test]
        fn steps_tile_the_offsets_exactly_once(
            spans in proptest::collection::vec((1i32..5, 0i64..3, 1i32..4), 1..30),
            replays in proptest::collection::vec((0usize..30, 1usize..5), 0..10),
            start in 0i64..5,
        ) {
            // Build a source log: batches with gaps before them and holes inside.
            let mut log = Vec::new();
            let mut o = 0i64;
            for (span, gap, count) in spans {
                o += gap;
                log.push(batch(o, count.min(span), span, 0));
                o += span as i64;
            }
            // Deliver in fetch-sized chunks, with some chunks replayed from earlier.
            let mut chunks: Vec<Vec<RawBatch>> = log.chunks(3).map(|c| c.to_vec()).collect();
            for (at, back) in replays {
                if at < chunks.len() {
                    let from = at.saturating_sub(back);
                    let replay: Vec<RawBatch> = chunks[from..=at].concat();
                    chunks.insert(at + 1, replay);
                }
            }
            let mut c = Cursor::new(start, GapPolicy::Fill);
            let mut covered = start;
            for chunk in &chunks {
                let (steps, refusal) = c.plan(chunk);
                prop_assert!(refusal.is_none());
                for s in steps {
                    let begin = match &s {
                        Step::Append(b) => b.header.base_offset,
                        Step::Fill { from, .. } => *from,
                        Step::Densify { from, .. } => *from,
                    };
                    prop_assert_eq!(begin, covered);
                    prop_assert!(s.end() > begin);
                    match &s {
                        Step::Append(b) => prop_assert!(b.header.is_dense(), "a batch with holes appended as bytes at {}", begin),
                        Step::Fill { from, to, .. } => prop_assert!(
                            log.iter().all(|b| b.header.next_offset() <= *from || b.header.base_offset >= *to),
                            "fillers over source offsets {}..{}", from, to
                        ),
                        Step::Densify { batch, from } => prop_assert!(
                            batch.header.base_offset <= *from && *from <= batch.header.last_offset(),
                            "rebuilt from {} outside its batch", from
                        ),
                    }
                    covered = s.end();
                }
            }
            prop_assert_eq!(covered, o.max(start));
        }
    }
}
