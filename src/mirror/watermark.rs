//! A source whose high watermark falls below what was already copied.
//!
//! Kafka lets a high watermark step back for a while: a new leader may not yet know
//! the old leader's watermark (until its followers caught up, up to
//! `replica.lag.time.max.ms`), and answers a fetch between the two with no data and
//! no error. A watermark that stays below our offset for the whole grace
//! (`watermark_grace_secs`) means something else: the source log no longer holds
//! records we copied. Kafka answers a fetch past its log end with
//! OFFSET_OUT_OF_RANGE, which the fetch loop handles; tansu answers with its lower
//! watermark and no error. Without this check the fetch loop long-polled such a
//! partition forever without a word; with it, the partition stops with `Diverged`.
//! Nothing is written meanwhile: an answer below our offset carries nothing to write.
//! The same grace applies at a partition's (re)start, to a source end below the
//! destination's.

use std::time::{Duration, Instant};

/// Watches the high watermarks of one partition's answers against its offset.
#[derive(Debug)]
pub struct Watermark {
    grace: Duration,
    below_since: Option<Instant>,
}

/// What an answer's high watermark says about the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// At or above our offset.
    Fine,
    /// Below our offset, for less than the grace so far: ask again later. `first` on
    /// the first answer below (the one worth a log line).
    Below { first: bool },
    /// Below our offset for longer than the grace: the source lost records we copied.
    Lost { for_ms: u64 },
}

impl Watermark {
    pub fn new(grace: Duration) -> Watermark {
        Watermark {
            grace,
            below_since: None,
        }
    }

    /// One answer for a fetch at `offset`, carrying `high_watermark`, seen at `now`.
    pub fn on_answer(&mut self, offset: i64, high_watermark: i64, now: Instant) -> Verdict {
        if high_watermark >= offset {
            self.below_since = None;
            return Verdict::Fine;
        }
        let first = self.below_since.is_none();
        let since = *self.below_since.get_or_insert(now);
        let below = now.saturating_duration_since(since);
        if below > self.grace {
            Verdict::Lost {
                for_ms: below.as_millis() as u64,
            }
        } else {
            Verdict::Below { first }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_watermark_that_steps_back_for_a_moment_is_ridden_out() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut w = Watermark::new(ms(2000));
        assert_eq!(w.on_answer(100, 100, t0), Verdict::Fine);
        assert_eq!(
            w.on_answer(100, 90, t0 + ms(10)),
            Verdict::Below { first: true }
        );
        assert_eq!(
            w.on_answer(100, 95, t0 + ms(1500)),
            Verdict::Below { first: false }
        );
        assert_eq!(w.on_answer(100, 120, t0 + ms(1900)), Verdict::Fine);
        // The clock starts again at the next drop.
        assert_eq!(
            w.on_answer(120, 110, t0 + ms(3000)),
            Verdict::Below { first: true }
        );
        assert_eq!(
            w.on_answer(120, 110, t0 + ms(4500)),
            Verdict::Below { first: false }
        );
    }

    #[test]
    fn a_watermark_that_stays_below_is_a_lost_log() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut w = Watermark::new(ms(2000));
        assert_eq!(w.on_answer(300, 0, t0), Verdict::Below { first: true });
        assert_eq!(
            w.on_answer(300, 50, t0 + ms(2000)),
            Verdict::Below { first: false }
        );
        assert_eq!(
            w.on_answer(300, 50, t0 + ms(2001)),
            Verdict::Lost { for_ms: 2001 }
        );
    }

    proptest! {
        /// Over any sequence of answers: `Lost` comes exactly when every answer of the
        /// last grace-plus window was below its offset, and never for an answer at or
        /// above it.
        #[test]
        fn lost_means_below_for_longer_than_the_grace(
            steps in proptest::collection::vec((0u64..800, -5i64..5), 1..40),
        ) {
            let t0 = Instant::now();
            let grace = Duration::from_millis(1000);
            let mut w = Watermark::new(grace);
            let (mut at, offset) = (0u64, 1000i64);
            let mut first_below: Option<u64> = None;
            for (dt, delta) in steps {
                at += dt;
                let hw = offset + delta;
                let v = w.on_answer(offset, hw, t0 + Duration::from_millis(at));
                if hw >= offset {
                    first_below = None;
                    prop_assert_eq!(v, Verdict::Fine);
                    continue;
                }
                let first = first_below.is_none();
                let since = *first_below.get_or_insert(at);
                if at - since > 1000 {
                    prop_assert_eq!(v, Verdict::Lost { for_ms: at - since });
                } else {
                    prop_assert_eq!(v, Verdict::Below { first });
                }
            }
        }
    }
}
