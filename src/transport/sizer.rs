//! Adaptive pool size: grow while aggregate goodput rises, fall back when it does not.
//!
//! One TCP connection on a long, lossy path is capped by its sender's congestion
//! control, so more connections carry more, until the link (or a broker) is full.
//! Where that point lies depends on RTT and loss, which change, so the pool probes:
//! it grows, looks at the goodput of the next window, and keeps the growth only if it
//! paid. Growth doubles until the first probe fails (like slow start), then steps by a
//! quarter. The sizer is pure: the pool's driver feeds one sample per window.
//!
//! Two traps shape the rules. New connections carry more than their share until their
//! first losses (slow start overshoots), so a sample taken just after a doubling
//! flatters the smaller pool: while doubling, a growth that did not lose is kept. And
//! a pool told to shrink drains (busy connections close when answered, seconds on a
//! lossy path), so a smaller size is judged only once the pool has come down to it.
//!
//! A live stream adds two more. Its pieces go out in bursts, so the pool rarely waits
//! for a connection and would look idle between them: it shrinks only below what was
//! in use in the recent past, never under the bursts' own peak (connections closed
//! then must be opened and slow-started again at the next burst). And when
//! partitions switch between tailing and pieces, a window's goodput swings with the
//! demand, not the pool: a growth is not judged on such a window (docs/live.md).

/// Bounds and starting point of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    pub min: usize,
    pub max: usize,
    /// Size used when demand first appears.
    pub initial: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            min: 1,
            max: 256,
            initial: 64,
        }
    }
}

/// What one window looked like.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Goodput of the whole pool in the window, response bytes per second (a rate:
    /// windows last five RTTs, and RTTs grow with the pool).
    pub rate: u64,
    /// Whether requests found no idle connection: more connections could have
    /// started them sooner.
    pub busy: bool,
    /// Connections still closing after a shrink (they finish their requests first).
    pub draining: usize,
    /// Most connections in use at once during the window.
    pub peak: usize,
    /// Whether some partition switched between tailing and pieces in the window: the
    /// demand changed, so the window's goodput does not measure the pool.
    pub switched: bool,
    /// Whether the bandwidth cap held reads back in the window: the goodput is the
    /// cap's, and more connections would only share it.
    pub limited: bool,
}

/// Why the size changed, for the operator's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Grew,
    /// The last growth did not raise goodput; back to the size before it.
    Reverted,
    /// Nobody waited for a connection: fewer will do.
    Idle,
    /// A revert cost goodput (the sample that led to it was taken while the smaller
    /// pool still carried transfers begun at the larger size): back to the larger.
    Restored,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Stable; probe again when `left` windows have passed and the pool is busy.
    Hold { left: u32 },
    /// Just grew from `prev`; `before` is the goodput measured at `prev`; `put_off`
    /// windows were not comparable (demand switched) and did not count.
    Grown {
        prev: usize,
        before: u64,
        put_off: u32,
    },
}

/// How long the window after one with this median RTT lasts: five RTTs, 1 to 5 s. A
/// window must span many round trips to mean anything on a lossy path.
pub fn window_after(median_rtt_ms: f64) -> std::time::Duration {
    std::time::Duration::from_secs_f64((median_rtt_ms * 5.0 / 1000.0).clamp(1.0, 5.0))
}

/// Median and largest of the connections' RTTs in ms (zeros, which mean "not
/// measured yet", left out); (0, 0) when none was measured.
pub fn rtt_median_max(mut rtts: Vec<f64>) -> (f64, f64) {
    rtts.retain(|r| *r > 0.0);
    if rtts.is_empty() {
        return (0.0, 0.0);
    }
    rtts.sort_by(f64::total_cmp);
    (rtts[rtts.len() / 2], rtts[rtts.len() - 1])
}

/// Windows to wait after a failed probe before trying again.
const HOLD_WINDOWS: u32 = 4;
/// A growth that raised goodput by at least this share is kept.
const KEEP_GAIN: f64 = 0.05;
/// While doubling, a growth that lost less than this share is kept: the sample it is
/// compared with was taken while the smaller pool's connections were young, before
/// their first losses, and overstates what that pool carries for long. In one run at
/// 200 ms and 1 % loss, 128 young connections carried 23 MB/s, 256 carried 24, and
/// after the revert to 128 the pool settled at 14.
const RAMP_SLACK: f64 = 0.10;
/// Idle windows in a row before the pool shrinks. Long: a catch-up that waits on
/// one slow piece asks for nothing for seconds, and connections closed then must be
/// opened and slow-started again when it goes on.
const IDLE_WINDOWS: u32 = 15;

#[derive(Debug, Clone)]
pub struct Sizer {
    cfg: PoolConfig,
    size: usize,
    phase: Phase,
    /// Windows to skip after a change: new connections need a few round trips
    /// (connect, version handshake, slow start) before their goodput counts.
    settle: u32,
    /// Growth factor: 2 until a probe first fails, then 1.25.
    doubling: bool,
    /// Consecutive windows in which nobody waited for a connection.
    idle: u32,
    /// The size the last revert came from and the goodput measured there, until the
    /// next probe: if the smaller pool carries clearly less, the revert was wrong.
    reverted: Option<(usize, u64)>,
    /// Peak use of the last `IDLE_WINDOWS` windows, newest last: an idle pool does not
    /// shrink below the largest.
    peaks: std::collections::VecDeque<usize>,
    /// The best goodput measured at this size while holding: what a growth must beat.
    /// One window's rate would let noise ratchet the pool up (a probe judged against a
    /// low sample looks like a gain); the best of several is the size's real reach.
    best: u64,
}

/// After a revert, goodput below this share of the larger pool's restores it.
const RESTORE_BELOW: f64 = 0.85;

impl Sizer {
    pub fn new(cfg: PoolConfig) -> Sizer {
        let min = cfg.min.max(1);
        let max = cfg.max.max(min);
        let cfg = PoolConfig {
            min,
            max,
            initial: cfg.initial.clamp(min, max),
        };
        Sizer {
            cfg,
            size: cfg.initial,
            phase: Phase::Hold { left: 0 },
            settle: 0,
            doubling: true,
            idle: 0,
            reverted: None,
            peaks: std::collections::VecDeque::with_capacity(IDLE_WINDOWS as usize),
            best: 0,
        }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Takes the sample of one window; returns the change made, if any.
    pub fn observe(&mut self, w: Window) -> Option<Change> {
        if self.peaks.len() == IDLE_WINDOWS as usize {
            self.peaks.pop_front();
        }
        self.peaks.push_back(w.peak);
        if self.settle > 0 {
            self.settle -= 1;
            return None;
        }
        match self.phase {
            Phase::Grown {
                prev,
                before,
                put_off,
            } => {
                if w.switched && w.busy {
                    // Demand moved under the sample: wait for a window that measures
                    // the pool, and keep the growth if none comes.
                    self.phase = if put_off + 1 >= HOLD_WINDOWS {
                        // Kept unjudged: probe on in small steps only, so a run of
                        // switches cannot double the pool up to its maximum.
                        self.doubling = false;
                        Phase::Hold { left: HOLD_WINDOWS }
                    } else {
                        Phase::Grown {
                            prev,
                            before,
                            put_off: put_off + 1,
                        }
                    };
                    return None;
                }
                let factor = if self.doubling { 2.0 } else { 1.25 };
                // Demand a gain worth a quarter of what the growth could give at best,
                // so noise does not ratchet the pool up.
                if !w.busy {
                    // Nobody waited for a connection, so the growth was not tried
                    // (connections open only on demand): judge it when demand is back.
                    self.phase = Phase::Hold { left: 0 };
                    return None;
                }
                let needed = before as f64 * (1.0 + (factor - 1.0) / 4.0);
                let rate = w.rate as f64;
                let kept = rate >= before as f64 * (1.0 + KEEP_GAIN)
                    || (self.doubling && rate >= before as f64 * (1.0 - RAMP_SLACK));
                if rate >= needed {
                    self.grow(w.rate)
                } else if kept {
                    // It helped, if less than hoped (or, while ramping, it did not
                    // hurt): keep it, and probe in small steps from here on.
                    self.doubling = false;
                    self.phase = Phase::Hold { left: HOLD_WINDOWS };
                    None
                } else {
                    self.reverted = Some((self.size, w.rate));
                    self.resize(prev);
                    self.doubling = false;
                    self.phase = Phase::Hold { left: HOLD_WINDOWS };
                    self.settle = 1;
                    Some(Change::Reverted)
                }
            }
            Phase::Hold { left } => {
                if !w.busy {
                    // Demand comes in waves (partitions switching between catch-up and
                    // tailing); shrink only after a run of idle windows.
                    self.idle += 1;
                    // Never below what the bursts of a live stream used lately.
                    let used = self.peaks.iter().copied().max().unwrap_or(0);
                    let to = (self.size - (self.size / 4).max(1))
                        .max(self.cfg.min)
                        .max(used);
                    if self.idle >= IDLE_WINDOWS && to < self.size {
                        self.resize(to);
                        // Demand that comes back after a lull ramps up fast again.
                        self.doubling = true;
                        return Some(Change::Idle);
                    }
                    return None;
                }
                self.idle = 0;
                if w.draining > 0 {
                    // Still coming down from a larger size: this is not yet the size
                    // to judge, and probing now would compare two mixed samples.
                    return None;
                }
                if !w.switched {
                    self.best = self.best.max(w.rate);
                }
                if left > 0 {
                    self.phase = Phase::Hold { left: left - 1 };
                    return None;
                }
                if w.limited {
                    // At the cap: a probe cannot pay, and its connections would
                    // only share the same budget.
                    return None;
                }
                // Judged on the best of the hold, not one window: a single low sample
                // after every revert would otherwise ratchet the pool up.
                if let Some((larger, there)) = self.reverted {
                    if (self.best as f64) < there as f64 * RESTORE_BELOW {
                        self.reverted = None;
                        self.resize(larger);
                        self.settle = 1;
                        self.phase = Phase::Hold { left: HOLD_WINDOWS };
                        return Some(Change::Restored);
                    }
                }
                self.reverted = None;
                self.grow(self.best.max(w.rate))
            }
        }
    }

    /// A new size: what was measured at the old one no longer applies.
    fn resize(&mut self, to: usize) {
        self.size = to;
        self.best = 0;
    }

    fn grow(&mut self, before: u64) -> Option<Change> {
        let to = if self.doubling {
            self.size * 2
        } else {
            self.size + (self.size / 4).max(1)
        }
        .min(self.cfg.max);
        if to == self.size {
            self.phase = Phase::Hold { left: HOLD_WINDOWS };
            return None;
        }
        self.phase = Phase::Grown {
            prev: self.size,
            before,
            put_off: 0,
        };
        self.resize(to);
        self.settle = 1;
        Some(Change::Grew)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cfg() -> PoolConfig {
        PoolConfig {
            min: 1,
            max: 256,
            initial: 16,
        }
    }

    /// A link of `cap` bytes per second where each connection carries `per`, with
    /// the pool at its size.
    fn link(n: usize, per: u64, cap: u64) -> Window {
        Window {
            rate: (n as u64 * per).min(cap),
            busy: true,
            draining: 0,
            peak: 0,
            switched: false,
            limited: false,
        }
    }

    fn run(s: &mut Sizer, windows: usize, per: u64, cap: u64) {
        for _ in 0..windows {
            let n = s.size();
            s.observe(link(n, per, cap));
        }
    }

    /// A sizer at 32 connections whose doubling has ended (16 carried 16,000, 32
    /// carried 19,000 on a link that takes 19,000), back in its hold.
    fn past_the_ramp() -> Sizer {
        let mut s = Sizer::new(cfg());
        assert_eq!(s.observe(link(16, 1_000, 19_000)), Some(Change::Grew));
        s.observe(link(32, 1_000, 19_000)); // settling
        assert_eq!(s.observe(link(32, 1_000, 19_000)), None);
        assert_eq!(s.size(), 32, "a 19 % gain is worth keeping");
        assert!(!s.doubling);
        s
    }

    /// At the bandwidth cap the pool holds its size: a probe could not pay, and its
    /// connections would only share the cap.
    #[test]
    fn a_pool_at_the_cap_does_not_probe() {
        let mut s = Sizer::new(cfg());
        let start = s.size();
        for _ in 0..100 {
            let n = s.size();
            let mut w = link(n, 1_000_000, 5_000_000);
            w.limited = true;
            assert_eq!(s.observe(w), None);
        }
        assert_eq!(s.size(), start);
    }

    #[test]
    fn grows_to_fill_the_link_and_no_further() {
        let mut s = Sizer::new(cfg());
        // 1,000 per connection, link takes 150,000: about 150 connections are needed.
        run(&mut s, 40, 1_000, 150_000);
        assert!((150..=256).contains(&s.size()), "size {}", s.size());
        // Once full it stays: further windows do not creep up to the maximum.
        let settled = s.size();
        run(&mut s, 100, 1_000, 150_000);
        assert!(s.size() <= settled.max(190), "crept to {}", s.size());
        assert!(s.size() >= 150);
    }

    #[test]
    fn a_doubling_that_loses_is_reverted() {
        let mut s = Sizer::new(cfg());
        assert_eq!(s.observe(link(16, 1_000, 10_000)), Some(Change::Grew));
        assert_eq!(s.size(), 32);
        assert_eq!(s.observe(link(32, 1_000, 10_000)), None); // settling
        assert_eq!(s.observe(link(32, 250, 10_000)), Some(Change::Reverted));
        assert_eq!(s.size(), 16);
    }

    #[test]
    fn a_doubling_without_gain_is_kept_while_ramping() {
        let mut s = Sizer::new(cfg());
        // 16 young connections carried 23,000; 32 carry 24,000, below the 5 % gain a
        // later probe must show, but the first sample was flattered by slow start.
        let young = Window {
            rate: 23_000,
            busy: true,
            draining: 0,
            peak: 0,
            switched: false,
            limited: false,
        };
        assert_eq!(s.observe(young), Some(Change::Grew));
        s.observe(link(32, 1_000, 24_000)); // settling
        assert_eq!(s.observe(link(32, 1_000, 24_000)), None);
        assert_eq!(s.size(), 32);
        // Ramping is over: the next probe is a quarter step, and one that pays
        // nothing goes back.
        for _ in 0..HOLD_WINDOWS {
            assert_eq!(s.observe(link(32, 1_000, 24_000)), None);
        }
        assert_eq!(s.observe(link(32, 1_000, 24_000)), Some(Change::Grew));
        assert_eq!(s.size(), 40);
        s.observe(link(40, 1_000, 24_000)); // settling
        assert_eq!(s.observe(link(40, 1_000, 24_000)), Some(Change::Reverted));
        assert_eq!(s.size(), 32);
    }

    #[test]
    fn a_growth_nobody_used_is_judged_when_demand_returns() {
        let mut s = Sizer::new(cfg());
        s.observe(link(16, 1_000, 1_000_000));
        s.observe(link(32, 1_000, 1_000_000)); // settling
                                               // No request waited: the new connections were never opened, so the window
                                               // says nothing about them. No verdict, and doubling goes on ...
        let quiet = Window {
            rate: 9_000,
            busy: false,
            draining: 0,
            peak: 0,
            switched: false,
            limited: false,
        };
        assert_eq!(s.observe(quiet), None);
        assert_eq!(s.size(), 32);
        assert!(s.doubling);
        // ... at the first window in which requests wait again.
        assert_eq!(s.observe(link(32, 1_000, 1_000_000)), Some(Change::Grew));
        assert_eq!(s.size(), 64);
    }

    #[test]
    fn a_revert_that_costs_goodput_is_undone_once_drained() {
        let mut s = past_the_ramp();
        for _ in 0..HOLD_WINDOWS {
            s.observe(link(32, 1_000, 19_000));
        }
        // A quarter step to 40 seems not to pay (the link had a dip) ...
        assert_eq!(s.observe(link(32, 1_000, 19_000)), Some(Change::Grew));
        s.observe(link(40, 1_000, 19_000)); // settling
        assert_eq!(s.observe(link(40, 450, 19_000)), Some(Change::Reverted));
        assert_eq!(s.size(), 32);
        s.observe(link(40, 450, 19_000)); // settling
                                          // ... while the surplus connections drain, nothing is judged, however long ...
        let draining = Window {
            rate: 10_000,
            busy: true,
            draining: 4,
            peak: 0,
            switched: false,
            limited: false,
        };
        for _ in 0..3 * HOLD_WINDOWS {
            assert_eq!(s.observe(draining), None);
        }
        // ... and once down at 32, carrying less than 85 % of what 40 did over a
        // whole hold (the best window of it, not one low sample): back.
        for _ in 0..HOLD_WINDOWS {
            assert_eq!(s.observe(link(32, 400, 19_000)), None);
        }
        assert_eq!(s.observe(link(32, 400, 19_000)), Some(Change::Restored));
        assert_eq!(s.size(), 40);
    }

    #[test]
    fn a_revert_that_costs_nothing_stays() {
        let mut s = past_the_ramp();
        for _ in 0..HOLD_WINDOWS {
            s.observe(link(32, 1_000, 19_000));
        }
        assert_eq!(s.observe(link(32, 1_000, 19_000)), Some(Change::Grew));
        s.observe(link(40, 1_000, 19_000));
        assert_eq!(s.observe(link(40, 1_000, 19_000)), Some(Change::Reverted));
        s.observe(link(32, 1_000, 19_000)); // settling
        for _ in 0..HOLD_WINDOWS {
            assert_eq!(s.observe(link(32, 1_000, 19_000)), None);
        }
        assert_eq!(s.size(), 32);
    }

    #[test]
    fn idle_pools_shrink_to_the_minimum() {
        let mut s = Sizer::new(cfg());
        for _ in 0..IDLE_WINDOWS + 40 {
            s.observe(Window {
                rate: 0,
                busy: false,
                draining: 0,
                peak: 0,
                switched: false,
                limited: false,
            });
        }
        assert_eq!(s.size(), 1);
    }

    #[test]
    fn after_a_lull_the_pool_doubles_again() {
        let mut s = Sizer::new(cfg());
        // Full at 16: the first doubling pays nothing, growth turns to small steps.
        s.observe(link(16, 1_000, 16_000));
        s.observe(link(32, 1_000, 16_000));
        s.observe(link(32, 1_000, 16_000));
        assert!(!s.doubling);
        for _ in 0..IDLE_WINDOWS + 15 {
            s.observe(Window {
                rate: 0,
                busy: false,
                draining: 0,
                peak: 0,
                switched: false,
                limited: false,
            });
        }
        let low = s.size();
        assert!(low <= 2);
        // Demand returns on a bigger link: doubling (to 128 and more within 40
        // windows), not quarter steps (which would reach about 20).
        run(&mut s, 40, 1_000, 1_000_000);
        assert!(s.size() >= 128, "from {low} only to {}", s.size());
    }

    #[test]
    fn respects_the_maximum() {
        let mut s = Sizer::new(PoolConfig {
            min: 2,
            max: 40,
            initial: 16,
        });
        run(&mut s, 50, 1_000, u64::MAX);
        assert_eq!(s.size(), 40);
    }

    #[test]
    fn bad_bounds_are_made_sane() {
        let s = Sizer::new(PoolConfig {
            min: 0,
            max: 0,
            initial: 9,
        });
        assert_eq!(s.size(), 1);
    }

    /// A live stream's window: bursts of pieces that used `peak` connections, nobody
    /// waiting.
    fn bursts(peak: usize) -> Window {
        Window {
            rate: 5_000,
            busy: false,
            draining: 0,
            peak,
            switched: false,
            limited: false,
        }
    }

    #[test]
    fn a_live_pool_never_shrinks_below_its_bursts() {
        let mut s = Sizer::new(cfg());
        run(&mut s, 6, 1_000, 1_000_000);
        let big = s.size();
        assert!(big >= 64);
        // Bursts use 40 connections now and then; between them nothing is in use.
        for i in 0..IDLE_WINDOWS * 6 {
            s.observe(bursts(if i % 10 == 0 { 40 } else { 0 }));
            assert!(s.size() >= 40, "shrank to {} under bursts of 40", s.size());
        }
        assert!(s.size() < big, "never shrank from {big}");
        // Once the bursts stop for a whole run of windows, it shrinks further.
        for _ in 0..IDLE_WINDOWS * 3 {
            s.observe(bursts(0));
        }
        assert_eq!(s.size(), 1);
    }

    #[test]
    fn a_growth_is_not_judged_while_partitions_switch_modes() {
        let mut s = past_the_ramp();
        for _ in 0..HOLD_WINDOWS {
            s.observe(link(32, 1_000, 19_000));
        }
        assert_eq!(s.observe(link(32, 1_000, 19_000)), Some(Change::Grew));
        s.observe(link(40, 1_000, 19_000)); // settling
                                            // Partitions went back to tailing: goodput halves, but not because of the pool.
        let switched = Window {
            switched: true,
            ..link(40, 250, 19_000)
        };
        for _ in 0..HOLD_WINDOWS - 1 {
            assert_eq!(s.observe(switched), None);
        }
        assert_eq!(s.size(), 40);
        // A window that measures the pool judges it.
        assert_eq!(s.observe(link(40, 250, 19_000)), Some(Change::Reverted));
        assert_eq!(s.size(), 32);
        // With no such window at all, the growth is kept.
        let mut s = past_the_ramp();
        for _ in 0..HOLD_WINDOWS {
            s.observe(link(32, 1_000, 19_000));
        }
        s.observe(link(32, 1_000, 19_000));
        s.observe(link(40, 1_000, 19_000));
        for _ in 0..HOLD_WINDOWS {
            assert_eq!(s.observe(switched), None);
        }
        assert_eq!(s.size(), 40);
        // ... and growth goes on in quarter steps, never doubling on unjudged windows.
        for _ in 0..HOLD_WINDOWS * 3 {
            assert_ne!(s.observe(switched), Some(Change::Reverted));
        }
        assert_eq!(s.size(), 50);
    }

    proptest! {
        #[test]
        fn size_stays_within_bounds(
            min in 1usize..20, extra in 0usize..300, initial in 0usize..400,
            samples in proptest::collection::vec((0u64..1_000_000, any::<bool>(), 0usize..3, 0usize..400, any::<bool>()), 0..200),
        ) {
            let max = min + extra;
            let mut s = Sizer::new(PoolConfig { min, max, initial });
            for (rate, busy, draining, peak, switched) in samples {
                s.observe(Window { rate, busy, draining, peak, switched, limited: false });
                prop_assert!(s.size() >= min && s.size() <= max);
            }
        }

        /// The live regime: whatever the windows, an idle shrink never goes below the
        /// peak use of the windows just seen, and a window in which partitions switched
        /// modes never reverts a growth.
        #[test]
        fn live_windows_neither_starve_bursts_nor_revert_on_switches(
            samples in proptest::collection::vec(
                (0u64..1_000_000, any::<bool>(), 0usize..2, 0usize..300, any::<bool>()), 0..300),
        ) {
            let mut s = Sizer::new(cfg());
            let mut recent: std::collections::VecDeque<usize> = Default::default();
            for (rate, busy, draining, peak, switched) in samples {
                if recent.len() == IDLE_WINDOWS as usize {
                    recent.pop_front();
                }
                recent.push_back(peak);
                let before = s.size();
                let w = Window { rate, busy, draining, peak, switched, limited: false };
                match s.observe(w) {
                    Some(Change::Idle) => {
                        let used = recent.iter().copied().max().unwrap_or(0);
                        prop_assert!(s.size() >= used.min(before), "{before} -> {} under a peak of {used}", s.size());
                        prop_assert!(s.size() < before);
                    }
                    Some(Change::Reverted) => prop_assert!(!switched, "reverted on a switched window"),
                    _ => {}
                }
            }
        }
    }

    /// Convergence on noisy links: each window's goodput is the link's answer times a
    /// factor drawn from 0.85..1.15 (loss, other traffic, a busy broker), 60 seeded
    /// runs of 200 windows per link. The pool must fill every link (never below 80 %
    /// of the connections needed), and noise must not ratchet it far up once there.
    #[test]
    fn converges_on_noisy_links() {
        for (per, need) in [(500u64, 8usize), (1_000, 30), (800, 100)] {
            let cap = per * need as u64;
            let (mut finals, mut grew_late) = (Vec::new(), 0);
            for seed in 0..60u64 {
                let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                let mut s = Sizer::new(cfg());
                let mut sizes = Vec::new();
                for _ in 0..200 {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let mut w = link(s.size(), per, cap);
                    w.rate = w.rate * (85 + rng % 31) / 100;
                    s.observe(w);
                    sizes.push(s.size());
                }
                // The size held, probes aside: the least of the last windows.
                let held = |at: usize| *sizes[at - 20..at].iter().min().unwrap();
                let (mid, end) = (held(100), held(200));
                assert!(
                    end * 10 >= need * 8,
                    "seed {seed}: {end} connections for a link that needs {need}"
                );
                grew_late += (end > mid + mid / 4) as usize;
                finals.push(end);
            }
            finals.sort();
            let median = finals[finals.len() / 2];
            eprintln!("need {need}: final sizes {finals:?}, {grew_late} of 60 grew more than a step in the second half");
            // Before the hold's best became the baseline, a link needing 8 ended at a
            // median of 150 connections and 54 of 60 runs kept growing. The ramp still
            // overshoots (a doubling that did not hurt is kept) and probes still keep a
            // step now and then: what is asserted is what holds today.
            assert!(
                median <= 4 * need.max(cfg().initial),
                "need {need}: median {median}"
            );
            assert!(
                grew_late <= 15,
                "need {need}: {grew_late} of 60 runs kept growing on a full link"
            );
        }
    }
}
