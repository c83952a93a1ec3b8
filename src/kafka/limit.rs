//! The bandwidth cap (`[transport] max_mbit`): one token bucket for everything the
//! mirror reads from the source cluster, every connection and pool together.
//!
//! Reads take tokens as their bytes arrive; a read that finds the bucket in debt waits
//! until the debt is paid back at the configured rate. The reader falling behind fills
//! the socket's receive buffer, and TCP's flow control then slows the sender: the cap
//! holds on the wire, not only in our buffers. The bucket is pure (the caller passes
//! the time); [`Limit`] is its shared, async face.
//!
//! The pool sizer is told when the cap held reads back (`Limit::waits`): goodput
//! is the cap's then, not the pool's, and growing the pool would only add connections
//! that share the same budget (decision 60).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A token bucket in bytes. Tokens may go negative (debt): a read is never split, and
/// the reader that went into debt waits it out.
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// `rate` bytes per second, holding at most `burst` bytes of credit.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Bucket {
        Bucket {
            rate,
            burst,
            tokens: burst,
            at: now,
        }
    }

    /// Takes `n` bytes at `now`; returns how long the taker must wait before going on
    /// (zero while credit lasts).
    pub fn take(&mut self, n: usize, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = self.at.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// The cap of one source cluster, shared by its connections.
#[derive(Debug)]
pub struct Limit {
    bucket: Mutex<Bucket>,
    /// Reads that had to wait, ever: a pool compares it with what it saw last.
    waits: AtomicU64,
    pub mbit: u64,
}

impl Limit {
    /// A cap of `mbit` megabits (10^6 bits) per second. The burst is 50 ms of it (at
    /// least 64 KiB): short enough that the cap holds over any second, long enough
    /// that reads of a few segments do not wait one by one.
    pub fn new(mbit: u64) -> Limit {
        let rate = mbit as f64 * 1e6 / 8.0;
        let burst = (rate * 0.05).max(64.0 * 1024.0);
        Limit {
            bucket: Mutex::new(Bucket::new(rate, burst, Instant::now())),
            waits: AtomicU64::new(0),
            mbit,
        }
    }

    /// Accounts for `n` bytes just read, waiting if the cap is reached.
    pub async fn take(&self, n: usize) {
        let wait = self
            .bucket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(n, Instant::now());
        if !wait.is_zero() {
            self.waits.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(wait).await;
        }
    }

    /// How many reads the cap held back so far: it held some back in a window if
    /// this moved during it.
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }
}

/// Under a cap, what the source's catch-up connections start with: (receive buffer
/// bytes, pool size). Reads are throttled, but TCP goes on filling each connection's
/// receive buffer at link speed until it is full: with autotuned buffers (several MB
/// each) on dozens of connections, a whole backlog of a few hundred MB crosses the
/// link uncapped before the reads catch up with it. Fixed buffers that hold together
/// a quarter of a second at the cap bound that excess; a pool of at most 16 keeps them
/// large enough to fill the cap on a 250 ms path (where they do not, goodput is below
/// the cap and the sizer grows the pool).
pub fn capped_connections(mbit: u64, pool_initial: usize, pool_min: usize) -> (usize, usize) {
    let initial = pool_initial.min(16).max(pool_min).max(1);
    let rate = mbit as f64 * 1e6 / 8.0;
    let each = ((rate * 0.25) / initial as f64) as usize;
    (each.max(128 * 1024), initial)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_buffers_hold_a_quarter_second_at_the_cap() {
        // 100 Mbit/s: 3.1 MB over 16 connections.
        let (each, n) = capped_connections(100, 64, 1);
        assert_eq!(n, 16);
        assert_eq!(each, 195_312);
        // A slow cap: never below 128 KiB each; the configured floor is kept.
        assert_eq!(capped_connections(1, 64, 1).0, 128 * 1024);
        assert_eq!(capped_connections(1, 64, 20).1, 20);
        assert_eq!(capped_connections(100, 4, 1).1, 4);
    }
    use proptest::prelude::*;

    #[test]
    fn credit_first_then_waits_in_proportion_to_the_debt() {
        let t0 = Instant::now();
        let mut b = Bucket::new(1000.0, 500.0, t0);
        assert_eq!(b.take(500, t0), Duration::ZERO);
        assert_eq!(b.take(250, t0), Duration::from_millis(250));
        // Half a second later 500 bytes came back: the debt of 250 is paid, 250 left.
        assert_eq!(b.take(250, t0 + Duration::from_millis(500)), Duration::ZERO);
        // Credit never exceeds the burst, however long the pause.
        assert_eq!(
            b.take(600, t0 + Duration::from_secs(60)),
            Duration::from_millis(100)
        );
    }

    proptest! {
        /// Whatever the read sizes, readers that wait what they are told never get
        /// more than the rate over the time passed, plus the burst.
        #[test]
        fn waiting_as_told_holds_the_rate(
            reads in proptest::collection::vec((1usize..200_000, 0u64..50), 1..300),
            rate in 10_000u64..10_000_000,
        ) {
            let t0 = Instant::now();
            let burst = rate as f64 * 0.05;
            let mut b = Bucket::new(rate as f64, burst, t0);
            let mut now = t0;
            let mut taken = 0f64;
            for (n, pause_ms) in reads {
                now += Duration::from_millis(pause_ms);
                let wait = b.take(n, now);
                taken += n as f64;
                now += wait;
                let allowed = rate as f64 * (now - t0).as_secs_f64() + burst;
                prop_assert!(taken <= allowed + 1.0, "{taken} > {allowed}");
            }
        }
    }
}
