//! How many catch-up fetches go to a peer at once.
//!
//! Serve sends older answers first (docs/peer-protocol.md, "Order of answers"), so a
//! fetch waits behind the answers asked for before it. Too many places and the last
//! waits for seconds with no byte in, pieces wait in memory and slow ones are fetched
//! twice; too few and the link idles between answers. The places cover what the link
//! answers in a round trip plus [`QUEUE`]: enough to keep it full, little to wait for.
//! Sized once per pool window from the answers it saw (`pool.rs`), shrinking at most
//! by half per window ([`step`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Link time queued ahead of a new fetch, beyond the round trip.
pub const QUEUE: Duration = Duration::from_secs(1);
/// Fewest places: a fetch per connection or so, however slow the link.
pub const MIN_PLACES: usize = 8;
/// Places before the first window measured anything.
pub const FIRST_PLACES: usize = 64;

/// The places for a window in which `answers_per_sec` fetches were answered (with
/// data) at a round trip of `rtt`: by Little's law, what keeps each fetch in the
/// system for `rtt + QUEUE` at that rate. `None` when nothing was answered (keep what
/// there is). Between [`MIN_PLACES`] and `max` (at least 1).
///
/// Self-correcting: when the places limit the rate, each fetch takes about a round
/// trip and a transfer, less than `rtt + QUEUE`, so the result exceeds the places in
/// use and the next window has more; once the link is full, fetches wait their turn
/// and it settles where a new one waits about `QUEUE`.
pub fn target(answers_per_sec: f64, rtt: Duration, max: usize) -> Option<usize> {
    if answers_per_sec.is_nan() || answers_per_sec <= 0.0 || answers_per_sec.is_infinite() {
        return None;
    }
    let want = (answers_per_sec * (rtt + QUEUE).as_secs_f64()).ceil();
    let max = max.max(1);
    Some((want.min(max as f64) as usize).clamp(MIN_PLACES.min(max), max))
}

/// The places for the next window: [`target`], but a shrink goes at most halfway.
/// A window's rate can be far below what the link carries: the first one starts
/// before any fetch is asked (the destination is still being set up), and one that
/// sees a burst of retries answers little. Cut at once to its target, a start ran
/// for a whole window at 8 places where 50 were needed. Growth is never held back:
/// places that limit the rate show it in the next window.
pub fn step(current: usize, target: usize) -> usize {
    if target < current {
        target.max(current / 2)
    } else {
        target
    }
}

/// The places: a semaphore whose size follows [`target`]. A shrink takes free
/// permits at once and the rest as leases end.
pub struct Places {
    sem: Arc<Semaphore>,
    /// What the places are meant to be now.
    limit: AtomicUsize,
    /// Permits still out that are not to come back (a shrink past the free ones).
    owed: Arc<AtomicUsize>,
    /// Urgent fetches out without a place.
    extra: Arc<AtomicUsize>,
}

/// One place, held while its fetch runs; `None` inside for an urgent fetch that
/// found no free place and went anyway (counted in `extra`).
pub struct Place {
    permit: Option<OwnedSemaphorePermit>,
    owed: Arc<AtomicUsize>,
    extra: Option<Arc<AtomicUsize>>,
}

/// Urgent fetches that may go without a place at once: a head per partition and a
/// few copies of stalled pieces, but not without bound (each waits in serve's queue).
pub fn extra_for(limit: usize) -> usize {
    (limit / 2).max(MIN_PLACES)
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Some(e) = self.extra.take() {
            e.fetch_sub(1, Ordering::AcqRel);
        }
        let Some(p) = self.permit.take() else { return };
        // Owed to a shrink: this permit leaves the semaphore instead of coming back.
        let took = self
            .owed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |o| o.checked_sub(1));
        if took.is_ok() {
            p.forget();
        }
    }
}

impl Places {
    pub fn new(initial: usize) -> Places {
        let n = initial.max(1);
        Places {
            sem: Arc::new(Semaphore::new(n)),
            limit: AtomicUsize::new(n),
            owed: Arc::new(AtomicUsize::new(0)),
            extra: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// A place, waiting for one. An `urgent` fetch (what the writer waits for) takes
    /// a free one, or goes without while fewer than [`extra_for`] others do, or waits
    /// like the rest. (`None` only if the semaphore were closed; it never is.)
    pub async fn acquire(&self, urgent: bool) -> Option<Place> {
        let place = |permit, extra| Place {
            permit,
            owed: self.owed.clone(),
            extra,
        };
        if urgent {
            if let Ok(p) = self.sem.clone().try_acquire_owned() {
                return Some(place(Some(p), None));
            }
            let cap = extra_for(self.limit());
            let went = self
                .extra
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < cap).then_some(n + 1)
                });
            if went.is_ok() {
                return Some(place(None, Some(self.extra.clone())));
            }
        }
        let p = self.sem.clone().acquire_owned().await.ok()?;
        Some(place(Some(p), None))
    }

    /// Makes the places `to` (at least 1). Only the sizing task calls it.
    pub fn resize(&self, to: usize) {
        let to = to.max(1);
        let from = self.limit.swap(to, Ordering::Relaxed);
        if to > from {
            // Cancel what is still owed first; add the rest.
            let mut add = to - from;
            let _ = self
                .owed
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |o| {
                    let cancel = o.min(to - from);
                    add = to - from - cancel;
                    Some(o - cancel)
                });
            self.sem.add_permits(add);
        } else if to < from {
            let mut cut = from - to;
            while cut > 0 {
                match self.sem.try_acquire() {
                    Ok(p) => {
                        p.forget();
                        cut -= 1;
                    }
                    Err(_) => break,
                }
            }
            self.owed.fetch_add(cut, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS100: Duration = Duration::from_millis(100);

    #[test]
    fn places_hold_each_fetch_for_a_round_trip_and_a_second() {
        // 25 answers a second (1 MB each on a 200 Mbit/s link), 100 ms: 27.5.
        assert_eq!(target(25.0, MS100, 256), Some(28));
        // A queue in the path lengthens the round trip and adds places.
        assert_eq!(target(25.0, Duration::from_millis(435), 256), Some(36));
        // A slow link keeps the floor; small answers reach the ceiling.
        assert_eq!(target(1.4, MS100, 256), Some(MIN_PLACES));
        assert_eq!(target(6_000.0, MS100, 256), Some(256));
        // A ceiling below the floor wins.
        assert_eq!(target(0.1, MS100, 3), Some(3));
        assert_eq!(target(0.1, MS100, 0), Some(1));
        // Nothing answered: nothing to go by.
        assert_eq!(target(0.0, MS100, 256), None);
        assert_eq!(target(f64::NAN, MS100, 256), None);
        assert_eq!(target(f64::INFINITY, MS100, 256), None);
    }

    #[test]
    fn places_limiting_the_rate_grow_in_the_next_window() {
        // 16 places, each fetch a 100 ms round trip and a 40 ms transfer: 16 answers
        // per 140 ms, so the next window has several times more.
        assert!(target(16.0 / 0.14, MS100, 256).unwrap() > 16 * 5);
        // Once the link is full and each fetch waits a second behind the others, the
        // places stay where they are: 36 in flight, answered 36 per 1.435 s.
        let rtt = Duration::from_millis(435);
        assert_eq!(target(36.0 / 1.435, rtt, 256), Some(36));
    }

    #[test]
    fn places_shrink_at_most_by_half_a_window() {
        // The first window's few answers (7 a second: it began before the first
        // fetch) take 64 places to 32, not to 8; the next window's rate decides.
        let first = target(7.0, MS100, 256).unwrap();
        assert_eq!(first, MIN_PLACES);
        assert_eq!(step(FIRST_PLACES, first), 32);
        assert_eq!(step(32, first), 16);
        assert_eq!(step(16, first), 8);
        assert_eq!(step(8, first), 8);
        // Growth is at once, and so is a small cut.
        assert_eq!(step(8, 46), 46);
        assert_eq!(step(46, 40), 40);
    }

    proptest! {
        #[test]
        fn a_step_never_cuts_more_than_half_and_reaches_its_target(
            current in 1usize..5_000, to in 1usize..5_000,
        ) {
            let next = step(current, to);
            prop_assert!(next >= to);
            prop_assert!(next >= current / 2);
            prop_assert!(next <= current.max(to));
            // Held at the same target, the places reach it within log2 windows.
            let mut at = current;
            for _ in 0..14 {
                at = step(at, to);
            }
            prop_assert_eq!(at, to);
        }

        #[test]
        fn places_stay_in_bounds_and_grow_with_the_rate(
            rate in 0.001f64..1e6, more in 0.0f64..1e6, rtt_ms in 0u64..5_000,
            max in 0usize..5_000,
        ) {
            let rtt = Duration::from_millis(rtt_ms);
            let a = target(rate, rtt, max).unwrap();
            let b = target(rate + more, rtt, max).unwrap();
            prop_assert!(a >= 1 && a <= max.max(1));
            prop_assert!(a >= MIN_PLACES.min(max.max(1)));
            prop_assert!(b >= a);
        }
    }

    #[tokio::test]
    async fn a_shrink_takes_free_places_at_once_and_the_rest_as_fetches_end() {
        let p = Places::new(4);
        let held: Vec<Place> = futures_all(&p, 3).await;
        // One free place goes now, two more are owed.
        p.resize(1);
        assert_eq!(p.sem.available_permits(), 0);
        assert_eq!(p.owed.load(Ordering::Relaxed), 2);
        let mut held = held.into_iter();
        drop(held.next());
        drop(held.next());
        assert_eq!(p.owed.load(Ordering::Relaxed), 0);
        assert_eq!(p.sem.available_permits(), 0);
        // The last one comes back: the one place left.
        drop(held.next());
        assert_eq!(p.sem.available_permits(), 1);
        assert_eq!(p.limit(), 1);
    }

    #[tokio::test]
    async fn a_growth_cancels_what_is_owed_before_adding() {
        let p = Places::new(4);
        let held = futures_all(&p, 4).await;
        p.resize(1);
        assert_eq!(p.owed.load(Ordering::Relaxed), 3);
        p.resize(3);
        assert_eq!(p.owed.load(Ordering::Relaxed), 1);
        assert_eq!(p.sem.available_permits(), 0);
        p.resize(6);
        assert_eq!(p.owed.load(Ordering::Relaxed), 0);
        assert_eq!(p.sem.available_permits(), 2);
        drop(held);
        assert_eq!(p.sem.available_permits(), 6);
    }

    #[tokio::test]
    async fn urgent_fetches_go_without_a_free_place_up_to_a_bound() {
        let p = Places::new(1);
        let a = p.acquire(false).await.unwrap();
        let mut urgent = Vec::new();
        for _ in 0..extra_for(1) {
            let u = p.acquire(true).await.unwrap();
            assert!(u.permit.is_none());
            urgent.push(u);
        }
        assert_eq!(p.extra.load(Ordering::Relaxed), MIN_PLACES);
        // One more urgent fetch waits like the others, and gets the place once free.
        let waiting = tokio::time::timeout(Duration::from_millis(50), p.acquire(true)).await;
        assert!(waiting.is_err());
        drop(urgent.pop());
        assert_eq!(p.extra.load(Ordering::Relaxed), MIN_PLACES - 1);
        assert!(p.acquire(true).await.unwrap().permit.is_none());
        drop(urgent);
        assert_eq!(p.extra.load(Ordering::Relaxed), 0);
        // Places without permits give none back.
        assert_eq!(p.sem.available_permits(), 0);
        drop(a);
        assert_eq!(p.sem.available_permits(), 1);
        // A free place goes to an urgent fetch first.
        assert!(p.acquire(true).await.unwrap().permit.is_some());
        // A waiting fetch is served once a place frees.
        let a = p.acquire(false).await.unwrap();
        let waiter = tokio::spawn({
            let sem = p.sem.clone();
            async move { sem.acquire_owned().await.is_ok() }
        });
        tokio::task::yield_now().await;
        drop(a);
        assert!(waiter.await.unwrap());
    }

    async fn futures_all(p: &Places, n: usize) -> Vec<Place> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(p.acquire(false).await.unwrap());
        }
        v
    }
}
