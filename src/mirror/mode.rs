//! When a tailing partition's data goes out in pieces over the pool, and when it goes
//! back to the broker's shared long poll. Pure: the partition driver feeds it what
//! answers brought.
//!
//! A partition at the end of its log waits for new data with a long poll. Quiet
//! partitions share one long poll per broker (one request for all of them). A busy one
//! must not: at 1 % loss one connection carries ~0.18 MB/s, so a partition written at
//! 1 MB/s whose data crosses on that shared connection falls further behind with every
//! round trip. A busy partition is therefore *live*: a catch-up whose end keeps moving
//! (`catch_up`), its data fetched in pieces over the pool as soon as an answer reports
//! it, and, whenever everything known is in, one probe at its end on a pooled
//! connection of its own. It stays live while probes keep finding data, and goes back
//! to the shared long poll after a few empty ones in a row.

/// Where a tailing partition's fetches go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Long polls on the broker's shared connection.
    Shared,
    /// Pieces and probes over the pool.
    Live,
}

/// What a live partition does once everything known is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Send one more probe at the end.
    Probe,
    /// Back to the shared long poll.
    Leave,
}

/// Empty probes in a row before a live partition goes back to the shared long poll.
/// A probe waits up to `tail_wait_ms` at the broker (500 ms by default; the bench
/// uses 20 ms on tansu, which sleeps out long polls), so this is a pause of three
/// round trips plus three tail waits: a steady stream has data every round trip, and
/// a burst that ended leaves the pooled connection soon.
pub const QUIET_PROBES: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tailing {
    mode: Mode,
    /// Empty probes in a row.
    quiet: u32,
    /// Bytes a shared answer must bring to make the partition live.
    live_bytes: usize,
    /// The source pushes the tail (a peer's subscription): no answer costs a round
    /// trip, so a busy partition stays on it; pieces are for backlogs only.
    push: bool,
}

impl Tailing {
    /// `live_bytes`: a shared long poll bringing this much (or half of what it asked
    /// for, if that is less) shows a busy partition. At RTT 100 ms an answer holds
    /// about a round trip's worth of new data, so 64 KiB is ~0.6 MB/s, about three
    /// times what one connection carries at 1 % loss.
    pub fn new(live_bytes: usize) -> Tailing {
        Tailing {
            mode: Mode::Shared,
            quiet: 0,
            live_bytes: live_bytes.max(1),
            push: false,
        }
    }

    /// Tailing a source that pushes new batches as they are appended (a peer): the
    /// partition never goes live, and a catch-up that reaches the end goes back to
    /// the push at once instead of probing.
    pub fn pushed() -> Tailing {
        Tailing {
            push: true,
            ..Tailing::new(usize::MAX)
        }
    }

    /// Whether the source pushes the tail.
    pub fn pushes(&self) -> bool {
        self.push
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// A long poll on the shared connection brought `bytes` of the `asked`, and the
    /// log's end lies `behind` offsets past what it brought. Returns the mode for what
    /// follows.
    pub fn on_shared_answer(&mut self, bytes: usize, asked: usize, behind: i64) -> Mode {
        if self.push {
            return Mode::Shared;
        }
        let busy = bytes >= self.live_bytes.min(asked / 2).max(1) || behind > 0;
        if busy {
            self.mode = Mode::Live;
            self.quiet = 0;
        }
        self.mode
    }

    /// Data arrived other than by a probe (pieces of a catch-up whose end kept
    /// moving): the partition is live, and its quiet count starts over.
    pub fn on_data(&mut self) {
        self.mode = Mode::Live;
        self.quiet = 0;
    }

    /// A probe at the end came back with `bytes`. Decides what follows.
    pub fn on_probe(&mut self, bytes: usize) -> Next {
        if self.push {
            self.mode = Mode::Shared;
            return Next::Leave;
        }
        if bytes > 0 {
            self.on_data();
            return Next::Probe;
        }
        self.quiet += 1;
        if self.quiet >= QUIET_PROBES {
            self.mode = Mode::Shared;
            self.quiet = 0;
            return Next::Leave;
        }
        Next::Probe
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_pushed_tail_never_goes_live_and_leaves_a_catch_up_at_once() {
        let mut t = Tailing::pushed();
        assert!(t.pushes());
        assert_eq!(
            t.on_shared_answer(10 << 20, 1 << 20, 1_000_000),
            Mode::Shared
        );
        assert_eq!(t.on_probe(1 << 20), Next::Leave);
        assert_eq!(t.mode(), Mode::Shared);
        assert!(!Tailing::new(1).pushes());
    }

    #[test]
    fn a_large_shared_answer_makes_the_partition_live() {
        let mut t = Tailing::new(64 * 1024);
        assert_eq!(t.on_shared_answer(10_000, 1 << 20, 0), Mode::Shared);
        assert_eq!(t.on_shared_answer(64 * 1024, 1 << 20, 0), Mode::Live);
        // Half of a small ask is enough; so is an answer cut short by its limit.
        let mut t = Tailing::new(64 * 1024);
        assert_eq!(t.on_shared_answer(8_000, 16_000, 0), Mode::Live);
        let mut t = Tailing::new(64 * 1024);
        assert_eq!(t.on_shared_answer(100, 1 << 20, 5), Mode::Live);
        // An empty answer never does.
        let mut t = Tailing::new(1);
        assert_eq!(t.on_shared_answer(0, 0, 0), Mode::Shared);
    }

    #[test]
    fn a_live_partition_leaves_after_quiet_probes_in_a_row() {
        let mut t = Tailing::new(1024);
        t.on_shared_answer(4096, 1 << 20, 0);
        assert_eq!(t.on_probe(0), Next::Probe);
        assert_eq!(t.on_probe(0), Next::Probe);
        // Data starts the count over.
        assert_eq!(t.on_probe(10), Next::Probe);
        assert_eq!(t.on_probe(0), Next::Probe);
        t.on_data();
        for _ in 1..QUIET_PROBES {
            assert_eq!(t.on_probe(0), Next::Probe);
        }
        assert_eq!(t.on_probe(0), Next::Leave);
        assert_eq!(t.mode(), Mode::Shared);
    }

    proptest! {
        /// Over any run of probe answers: a live partition leaves exactly when the
        /// last `QUIET_PROBES` answers were empty and no data came since the previous
        /// leave, and never while data keeps coming.
        #[test]
        fn leaves_only_after_quiet_probes(answers in proptest::collection::vec(
            prop_oneof![3 => Just(0usize), 1 => 1usize..100_000], 0..200)) {
            let mut t = Tailing::new(64 * 1024);
            t.on_data();
            let mut empty_run = 0u32;
            for bytes in answers {
                if t.mode() == Mode::Shared {
                    t.on_data();
                    empty_run = 0;
                }
                let next = t.on_probe(bytes);
                empty_run = if bytes == 0 { empty_run + 1 } else { 0 };
                prop_assert_eq!(next == Next::Leave, empty_run == QUIET_PROBES);
                prop_assert_eq!(t.mode() == Mode::Shared, next == Next::Leave);
                if next == Next::Leave {
                    empty_run = 0;
                }
            }
        }
    }
}
