//! Replication latency: for every mirrored batch, the time the destination
//! acknowledged it minus the batch's max timestamp (its newest record's CreateTime, or
//! the source's LogAppendTime). Kept per source topic in HDR histograms (2
//! significant digits, 1 ms to 30 days): one summarised, then reset, at each progress
//! line, and a sliding window of the last [`WINDOW_MS`] for the metrics endpoint (two
//! halves; the older is dropped when the newer one's half is over). Pure apart from
//! the lock: the caller passes the times.
//!
//! What it measures is the age of the data when it became readable in the destination,
//! so during a catch-up of old data it is that data's age; clocks of the two DCs are
//! compared, so their skew is in the figure (NTP keeps it to milliseconds).

use std::collections::BTreeMap;
use std::sync::Mutex;

use hdrhistogram::Histogram;

/// Longest latency recorded as itself; longer ones count as this.
const MAX_MS: u64 = 30 * 24 * 3600 * 1000;

/// The sliding window the metrics endpoint reports over.
pub const WINDOW_MS: i64 = 60_000;

/// One topic's latencies over an interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub batches: u64,
    pub p50_ms: u64,
    pub p99_ms: u64,
    pub p999_ms: u64,
    pub max_ms: u64,
}

impl Summary {
    fn of(h: &Histogram<u64>) -> Summary {
        Summary {
            batches: h.len(),
            p50_ms: h.value_at_quantile(0.5),
            p99_ms: h.value_at_quantile(0.99),
            p999_ms: h.value_at_quantile(0.999),
            max_ms: h.max(),
        }
    }
}

/// A topic's window: the half that started at `since` (ms) and the one before it.
struct Halves {
    since: i64,
    now: Histogram<u64>,
    before: Histogram<u64>,
}

impl Halves {
    fn new(at: i64) -> Halves {
        Halves {
            since: at,
            now: histogram(),
            before: histogram(),
        }
    }

    /// Moves on to the half holding `at`.
    fn roll(&mut self, at: i64) {
        let half = WINDOW_MS / 2;
        if at - self.since >= 2 * half {
            self.now.reset();
            self.before.reset();
            self.since = at;
        } else if at - self.since >= half {
            std::mem::swap(&mut self.now, &mut self.before);
            self.now.reset();
            self.since += half;
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MS, 2).expect("valid histogram bounds")
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {} ms, p99 {} ms, max {} ms ({} batches)",
            self.p50_ms, self.p99_ms, self.max_ms, self.batches
        )
    }
}

#[derive(Default)]
pub struct Latencies {
    by_topic: Mutex<BTreeMap<String, Histogram<u64>>>,
    window: Mutex<BTreeMap<String, Halves>>,
}

impl Latencies {
    /// A batch whose newest record is stamped `max_timestamp_ms` was acknowledged by
    /// the destination at `acked_ms` (both milliseconds since the epoch). Batches
    /// without a timestamp (-1) are not counted; a timestamp in the future (clock
    /// skew) counts as 0.
    pub fn record(&self, topic: &str, max_timestamp_ms: i64, acked_ms: i64) {
        if max_timestamp_ms < 0 {
            return;
        }
        let ms = (acked_ms - max_timestamp_ms).max(0) as u64;
        let v = ms.clamp(1, MAX_MS);
        let mut map = self.by_topic.lock().unwrap_or_else(|p| p.into_inner());
        let h = match map.get_mut(topic) {
            Some(h) => h,
            None => map.entry(topic.to_string()).or_insert_with(histogram),
        };
        h.saturating_record(v);
        drop(map);
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let w = match window.get_mut(topic) {
            Some(w) => w,
            None => window
                .entry(topic.to_string())
                .or_insert_with(|| Halves::new(acked_ms)),
        };
        w.roll(acked_ms);
        w.now.saturating_record(v);
    }

    /// The summary per topic over the sliding window ending at `now_ms`, without
    /// resetting anything. Topics with no batch in the window are left out.
    pub fn window(&self, now_ms: i64) -> BTreeMap<String, Summary> {
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = BTreeMap::new();
        for (t, w) in window.iter_mut() {
            w.roll(now_ms);
            let mut both = w.now.clone();
            let _ = both.add(&w.before);
            if !both.is_empty() {
                out.insert(t.clone(), Summary::of(&both));
            }
        }
        out
    }

    /// The summary per topic since the last call, and a fresh start. Topics with no
    /// batch in the interval are left out.
    pub fn take(&self) -> BTreeMap<String, Summary> {
        let mut map = self.by_topic.lock().unwrap_or_else(|p| p.into_inner());
        let out = map
            .iter()
            .filter(|(_, h)| !h.is_empty())
            .map(|(t, h)| (t.clone(), Summary::of(h)))
            .collect();
        map.values_mut().for_each(Histogram::reset);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarises_per_topic_and_resets() {
        let l = Latencies::default();
        for i in 1..=100 {
            l.record("a", 1_000, 1_000 + i * 10);
        }
        l.record("b", 5_000, 5_250);
        let s = l.take();
        assert_eq!(s.len(), 2);
        let a = s["a"];
        assert_eq!(a.batches, 100);
        // Two significant digits: within 1 %.
        assert!((495..=505).contains(&a.p50_ms), "{a:?}");
        assert!((985..=995).contains(&a.p99_ms), "{a:?}");
        assert!((995..=1_005).contains(&a.max_ms), "{a:?}");
        assert_eq!((s["b"].batches, s["b"].p50_ms), (1, 250));
        assert!(l.take().is_empty(), "reset after each summary");
    }

    #[test]
    fn skew_and_missing_timestamps() {
        let l = Latencies::default();
        l.record("a", -1, 1_000);
        assert!(l.take().is_empty());
        l.record("a", 2_000, 1_000);
        assert_eq!(
            l.take()["a"].max_ms,
            1,
            "a future timestamp counts as (at most) 1 ms"
        );
        l.record("a", 0, i64::MAX);
        assert!(l.take()["a"].max_ms >= MAX_MS, "saturates, does not fail");
    }

    #[test]
    fn the_window_keeps_the_last_minute_and_no_more() {
        let l = Latencies::default();
        let t0 = 1_000_000i64;
        // 10 batches at 100 ms, then 10 at 5,000 ms 40 s later.
        for i in 0..10 {
            l.record("a", t0 + i - 100, t0 + i);
        }
        for i in 0..10 {
            l.record("a", t0 + 40_000 + i - 5_000, t0 + 40_000 + i);
        }
        let w = l.window(t0 + 40_100)["a"];
        assert_eq!(w.batches, 20);
        assert!((99..=101).contains(&w.p50_ms), "{w:?}");
        assert!((4_950..=5_050).contains(&w.max_ms), "{w:?}");
        // The progress line's reset leaves the window alone.
        assert_eq!(l.take()["a"].batches, 20);
        assert_eq!(l.window(t0 + 40_100)["a"].batches, 20);
        // Past the first half's end plus a half: only the later batches are left.
        let w = l.window(t0 + 61_000)["a"];
        assert_eq!(w.batches, 10, "{w:?}");
        assert!(w.p50_ms >= 4_950, "{w:?}");
        // Nothing for a whole window: gone.
        assert!(l.window(t0 + 200_000).is_empty());
    }
}
