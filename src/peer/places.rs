//! How many catch-up fetches go to a peer at once.
//!
//! Serve sends older answers first (docs/peer-protocol.md, "Order of answers"), so a
//! fetch waits behind the answers asked for before it. Too many places and the last
//! waits for seconds with no byte in, pieces wait in memory and slow ones are fetched
//! twice; too few and the link idles between answers. The places cover what the link
//! carries in a round trip plus [`QUEUE`]: enough to keep it full, little to wait for.
//! Sized once per pool window from what crossed it (`pool.rs`).

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

/// The places for a link that carried `rate` bytes/s at a round trip of `rtt`, with
/// answers of `answer` bytes on average; `None` when the window saw no answer (keep
/// what there is). Between [`MIN_PLACES`] and `max` (at least 1).
///
/// Self-correcting: when the places limit the rate, each fetch takes about a round
/// trip and a transfer, less than `rtt + QUEUE`, so the result exceeds the places in
/// use and the next window has more; once the link is full, fetches wait and it
/// settles at the link's rate times `rtt + QUEUE`.
pub fn target(rate: f64, rtt: Duration, answer: f64, max: usize) -> Option<usize> {
    if answer.is_nan() || answer < 1.0 || !rate.is_finite() || rate < 0.0 {
        return None;
    }
    let want = (rate * (rtt + QUEUE).as_secs_f64() / answer).ceil();
    let max = max.max(1);
    Some((want.min(max as f64) as usize).clamp(MIN_PLACES.min(max), max))
}

/// The places: a semaphore whose size follows [`target`]. A shrink takes free
/// permits at once and the rest as leases end.
pub struct Places {
    sem: Arc<Semaphore>,
    /// What the places are meant to be now.
    limit: AtomicUsize,
    /// Permits still out that are not to come back (a shrink past the free ones).
    owed: Arc<AtomicUsize>,
}

/// One place, held while its fetch runs; `None` inside for an urgent fetch that
/// found no free place and went anyway.
pub struct Place {
    permit: Option<OwnedSemaphorePermit>,
    owed: Arc<AtomicUsize>,
}

impl Drop for Place {
    fn drop(&mut self) {
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
        }
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// A place, waiting for one; an `urgent` fetch (what the writer waits for) takes
    /// a free one or goes without. `None` once closed.
    pub async fn acquire(&self, urgent: bool) -> Option<Place> {
        let permit = if urgent {
            self.sem.clone().try_acquire_owned().ok()
        } else {
            Some(self.sem.clone().acquire_owned().await.ok()?)
        };
        Some(Place {
            permit,
            owed: self.owed.clone(),
        })
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

    pub fn close(&self) {
        self.sem.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS100: Duration = Duration::from_millis(100);

    #[test]
    fn places_cover_a_round_trip_and_a_second_of_the_link() {
        // 25 MB/s, 100 ms, 1 MB answers: 27.5 answers' worth.
        assert_eq!(target(25e6, MS100, 1e6, 256), Some(28));
        // A queue in the path lengthens the round trip and adds places.
        assert_eq!(target(25e6, Duration::from_millis(435), 1e6, 256), Some(36));
        // A slow link keeps the floor; small answers reach the ceiling.
        assert_eq!(target(1.4e6, MS100, 1e6, 256), Some(MIN_PLACES));
        assert_eq!(target(25e6, MS100, 4e3, 256), Some(256));
        // A ceiling below the floor wins.
        assert_eq!(target(1.0, MS100, 1e6, 3), Some(3));
        assert_eq!(target(1.0, MS100, 1e6, 0), Some(1));
        // Nothing answered: nothing to go by.
        assert_eq!(target(25e6, MS100, 0.0, 256), None);
        assert_eq!(target(f64::NAN, MS100, 1e6, 256), None);
        assert_eq!(target(25e6, MS100, f64::NAN, 256), None);
    }

    #[test]
    fn places_limiting_the_rate_grow_in_the_next_window() {
        // 16 places, each fetch a 100 ms round trip and a 40 ms transfer: the link
        // carried 16 answers per 140 ms, so the next window has several times more.
        let rate = 16.0 * 1e6 / 0.14;
        assert!(target(rate, MS100, 1e6, 256).unwrap() > 16 * 5);
    }

    proptest! {
        #[test]
        fn places_stay_in_bounds_and_grow_with_the_rate(
            rate in 0.0f64..1e10, more in 0.0f64..1e9, rtt_ms in 0u64..5_000,
            answer in 1.0f64..1e8, max in 0usize..5_000,
        ) {
            let rtt = Duration::from_millis(rtt_ms);
            let a = target(rate, rtt, answer, max).unwrap();
            let b = target(rate + more, rtt, answer, max).unwrap();
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
    async fn an_urgent_fetch_goes_without_a_free_place_and_gives_none_back() {
        let p = Places::new(1);
        let a = p.acquire(false).await.unwrap();
        let urgent = p.acquire(true).await.unwrap();
        assert!(urgent.permit.is_none());
        drop(urgent);
        assert_eq!(p.sem.available_permits(), 0);
        drop(a);
        assert_eq!(p.sem.available_permits(), 1);
        // A waiting fetch is served once a place frees; none after closing.
        let a = p.acquire(false).await.unwrap();
        let waiter = tokio::spawn({
            let sem = p.sem.clone();
            async move { sem.acquire_owned().await.is_ok() }
        });
        tokio::task::yield_now().await;
        drop(a);
        assert!(waiter.await.unwrap());
        p.close();
        assert!(p.acquire(false).await.is_none());
    }

    async fn futures_all(p: &Places, n: usize) -> Vec<Place> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(p.acquire(false).await.unwrap());
        }
        v
    }
}
