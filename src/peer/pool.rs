//! The client's pool of QUIC connections to a peer, sized by goodput as the TCP pool
//! is.
//!
//! Each connection has a congestion controller of its own, so on a lossy path a few
//! carry more than one; how many pays depends on RTT, loss and the controller. The
//! same pure [`Sizer`] the TCP pool uses decides, fed one window at a time from the
//! connections' own counters: bytes received over UDP, and the catch-up fetches in
//! flight. Growing opens the new slots' connections at once (`Peer::warm`), so
//! their first fetches do not wait for a handshake; shrinking
//! stops new requests on the surplus slots, and a surplus connection closes once no
//! stream is open on it (a subscription there is moved, `source/peer.rs`).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::client::Peer;
use super::io::{close, Hold};
use super::places;
use crate::kafka::connection::ConnStats;
use crate::transport::pool::PoolFigures;
use crate::transport::sizer::{rtt_median_max, window_after, PoolConfig, Sizer, Window};

/// Streams the client puts on one connection at most, counting subscriptions and
/// fetches: half of what serve admits by default (`max_streams`, 256), so a spread
/// that is never even stays under it.
pub const STREAMS_PER_CONNECTION: usize = 128;

/// Connections `streams` open streams need.
pub fn for_streams(streams: usize) -> usize {
    streams.div_ceil(STREAMS_PER_CONNECTION)
}

/// The pool's bounds for at most `max` connections (1-8): it starts at half, so a
/// first probe can double it.
pub fn pool_config(max: usize) -> PoolConfig {
    let max = max.clamp(1, 8);
    PoolConfig {
        min: 1,
        max,
        initial: max.div_ceil(2),
    }
}

/// One connection place.
pub(super) struct Slot {
    pub(super) conn: Mutex<Option<quinn::Connection>>,
    /// Streams open on the slot's connection (requests in flight, subscriptions).
    pub(super) open: Arc<AtomicUsize>,
    /// Bumped with every new connection here, so a window never mixes two
    /// connections' counters.
    pub(super) generation: AtomicU64,
    /// Fetch answers' bytes received on the slot's connections: a fetch waiting its
    /// turn behind older answers (serve sends the oldest first) is not stalled while
    /// these grow (`Peer::fetch`).
    pub(super) rx: Arc<ConnStats>,
}

/// The connections and what sizes them.
pub(super) struct Pool {
    pub(super) slots: Vec<Slot>,
    /// How many slots take new requests: the sizer's size. Slots past it finish what
    /// they carry, then close.
    target: AtomicUsize,
    /// Catch-up fetches in flight now, and the most at once since the last window.
    fetching: AtomicUsize,
    peak_fetching: AtomicUsize,
    /// Catch-up answers with data taken (monotonic), for sizing the places
    /// (`places.rs`). Empty ones (a probe at the end) say nothing of the link.
    answers: AtomicU64,
    /// Subscriptions open.
    subscriptions: Arc<AtomicUsize>,
    /// A partition switched between tailing and pieces since the last window.
    switched: AtomicBool,
    /// UDP bytes sent and received by connections closed since (what crossed the WAN
    /// counts them too).
    retired_tx: AtomicU64,
    retired_rx: AtomicU64,
    figures: StdMutex<PoolFigures>,
}

impl Pool {
    pub(super) fn new(max: usize) -> Pool {
        let n = max.clamp(1, 8);
        Pool {
            slots: (0..n)
                .map(|_| Slot {
                    conn: Mutex::new(None),
                    open: Arc::new(AtomicUsize::new(0)),
                    generation: AtomicU64::new(0),
                    rx: Arc::new(ConnStats::default()),
                })
                .collect(),
            target: AtomicUsize::new(pool_config(n).initial),
            fetching: AtomicUsize::new(0),
            peak_fetching: AtomicUsize::new(0),
            answers: AtomicU64::new(0),
            subscriptions: Arc::new(AtomicUsize::new(0)),
            switched: AtomicBool::new(false),
            retired_tx: AtomicU64::new(0),
            retired_rx: AtomicU64::new(0),
            figures: StdMutex::new(PoolFigures::default()),
        }
    }

    /// Slots taking new requests now (1..=connections): the sizer's size, and never
    /// fewer than the open streams need.
    pub(super) fn active(&self) -> usize {
        let streams =
            self.subscriptions.load(Ordering::Relaxed) + self.fetching.load(Ordering::Relaxed);
        self.target
            .load(Ordering::Relaxed)
            .max(for_streams(streams))
            .clamp(1, self.slots.len())
    }

    /// Slots subscriptions go on: the sizer's size, and enough for the subscriptions.
    /// Not counting fetches, whose number swings with a catch-up: subscriptions
    /// placed on a slot only a burst of fetches opened would have to move again.
    pub(super) fn subscription_slots(&self) -> usize {
        self.target
            .load(Ordering::Relaxed)
            .max(for_streams(self.subscriptions.load(Ordering::Relaxed)))
            .clamp(1, self.slots.len())
    }

    /// The slot for a new subscription: the one with the fewest streams open, so
    /// subscriptions spread evenly however the pool's size moved since the others
    /// opened; the lowest of equals, so a shrinking pool moves each one once.
    pub(super) fn least_loaded(&self) -> usize {
        (0..self.subscription_slots())
            .min_by_key(|&i| self.slots[i].open.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// Counts an open subscription while held.
    pub(super) fn subscription(&self) -> Hold {
        Hold::new(&self.subscriptions)
    }

    /// Counts a catch-up fetch in flight while held.
    pub(super) fn fetch(&self) -> Fetching<'_> {
        let now = self.fetching.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_fetching.fetch_max(now, Ordering::Relaxed);
        Fetching(self)
    }

    /// A catch-up answer of `bytes` came in.
    pub(super) fn answered(&self, bytes: usize) {
        if bytes > 0 {
            self.answers.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn note_switch(&self) {
        self.switched.store(true, Ordering::Relaxed);
    }

    /// Keeps a connection's byte counts once it is gone; call before dropping it.
    pub(super) fn retire(&self, c: &quinn::Connection) {
        let st = c.stats();
        self.retired_tx
            .fetch_add(st.udp_tx.bytes, Ordering::Relaxed);
        self.retired_rx
            .fetch_add(st.udp_rx.bytes, Ordering::Relaxed);
    }

    /// UDP bytes sent and received by every connection so far, closed ones included.
    pub(super) async fn wire_bytes(&self) -> (u64, u64) {
        // Every slot held while counting, so a connection retired meanwhile is
        // counted once: here or in the retired totals.
        let mut held = Vec::with_capacity(self.slots.len());
        for s in &self.slots {
            held.push(s.conn.lock().await);
        }
        let mut sent = self.retired_tx.load(Ordering::Relaxed);
        let mut received = self.retired_rx.load(Ordering::Relaxed);
        for c in held.iter().filter_map(|h| h.as_ref()) {
            let st = c.stats();
            sent += st.udp_tx.bytes;
            received += st.udp_rx.bytes;
        }
        (sent, received)
    }

    pub(super) fn figures(&self) -> PoolFigures {
        *self.figures.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A catch-up fetch in flight (see [`Pool::fetch`]).
pub(super) struct Fetching<'p>(&'p Pool);

impl Drop for Fetching<'_> {
    fn drop(&mut self) {
        self.0.fetching.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Starts the sizing task; it ends when the peer is dropped. (A peer exists only
/// inside a runtime: its QUIC endpoint needs one.)
pub(super) fn start(peer: &Arc<Peer>) {
    let sizer = Sizer::new(pool_config(peer.pool.slots.len()));
    let every = peer.settings().report_every;
    tokio::spawn(size_loop(Arc::downgrade(peer), sizer, every));
}

/// One open connection's counters at a window's end.
struct Sample {
    /// The slot's connection generation: counters start from zero on a new one.
    generation: u64,
    counters: Counters,
    rtt: Duration,
    cwnd: u64,
    mtu: u16,
    /// Streams still open on a surplus slot's connection (it drains).
    draining: bool,
}

/// A connection's monotonic counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Counters {
    rx_bytes: u64,
    lost_packets: u64,
    congestion_events: u64,
}

/// Reads every slot's connection; closes the surplus ones nothing is open on.
async fn sample(peer: &Peer) -> Vec<Option<Sample>> {
    let pool = &peer.pool;
    let mut out = Vec::with_capacity(pool.slots.len());
    for (i, slot) in pool.slots.iter().enumerate() {
        let mut held = slot.conn.lock().await;
        let Some(c) = held.as_ref().filter(|c| c.close_reason().is_none()) else {
            out.push(None);
            continue;
        };
        // Read under the slot's lock: a lock waited for (a connect) may have taken
        // long enough for the size to change.
        let surplus = i >= pool.active();
        let open = slot.open.load(Ordering::Relaxed);
        if surplus && open == 0 {
            tracing::debug!(peer = %peer.addr(), connection = i, "closing a surplus peer connection");
            c.close(quinn::VarInt::from_u32(close::DONE), b"pool shrank");
            pool.retire(c);
            *held = None;
            out.push(None);
            continue;
        }
        let st = c.stats();
        out.push(Some(Sample {
            generation: slot.generation.load(Ordering::Relaxed),
            counters: Counters {
                rx_bytes: st.udp_rx.bytes,
                lost_packets: st.path.lost_packets,
                congestion_events: st.path.congestion_events,
            },
            rtt: st.path.rtt,
            cwnd: st.path.cwnd,
            mtu: st.path.current_mtu,
            draining: surplus,
        }));
    }
    out
}

/// What each slot's counters grew by since the last window, summed: a slot whose
/// connection changed counts its new one from zero.
fn deltas(last: &mut [Option<(u64, Counters)>], now: &[Option<Sample>]) -> Counters {
    let mut d = Counters::default();
    for (prev, s) in last.iter_mut().zip(now) {
        let Some(s) = s else {
            *prev = None;
            continue;
        };
        let base = match *prev {
            Some((g, c)) if g == s.generation => c,
            _ => Counters::default(),
        };
        d.rx_bytes += s.counters.rx_bytes.saturating_sub(base.rx_bytes);
        d.lost_packets += s.counters.lost_packets.saturating_sub(base.lost_packets);
        d.congestion_events += s
            .counters
            .congestion_events
            .saturating_sub(base.congestion_events);
        *prev = Some((s.generation, s.counters));
    }
    d
}

async fn size_loop(peer: Weak<Peer>, mut sizer: Sizer, report_every: Duration) {
    let mut counted: Vec<Option<(u64, Counters)>> = Vec::new();
    // What the connections held before the first window is not the first window's.
    if let Some(p) = peer.upgrade() {
        let now = sample(&p).await;
        counted.resize(now.len(), None);
        deltas(&mut counted, &now);
    }
    let mut window = Duration::from_secs(1);
    let mut last = Instant::now();
    let mut last_report = Instant::now();
    let mut since_report = Counters::default();
    let mut answered = 0u64;
    loop {
        tokio::time::sleep(window).await;
        let Some(peer) = peer.upgrade() else { return };
        let pool = &peer.pool;
        let now = sample(&peer).await;
        let elapsed = last.elapsed();
        last = Instant::now();
        counted.resize(now.len(), None);
        let d = deltas(&mut counted, &now);
        since_report.lost_packets += d.lost_packets;
        since_report.congestion_events += d.congestion_events;
        let open: Vec<&Sample> = now.iter().flatten().collect();
        let (median_rtt, max_rtt) =
            rtt_median_max(open.iter().map(|s| s.rtt.as_secs_f64() * 1e3).collect());
        window = window_after(median_rtt);
        let goodput = d.rx_bytes as f64 / elapsed.as_secs_f64().max(1e-3);
        let in_flight = pool.fetching.load(Ordering::Relaxed);
        let peak = pool.peak_fetching.swap(in_flight, Ordering::Relaxed);
        let subs = pool.subscriptions.load(Ordering::Relaxed);
        let before = sizer.size();
        // Busy while catch-up fetches are in flight: each connection brings its own
        // congestion window, so more may carry them sooner. Pushes alone are not
        // demand (they wait for appends, not for the link). The peak in use is the
        // fetches (at most one connection each), and never below what the open
        // streams need.
        let sample = Window {
            rate: goodput as u64,
            busy: peak > 0,
            draining: open.iter().filter(|s| s.draining).count(),
            peak: peak.min(before).max(for_streams(subs + in_flight)),
            switched: pool.switched.swap(false, Ordering::Relaxed),
            limited: false,
        };
        if let Some(change) = sizer.observe(sample) {
            tracing::info!(
                peer = %peer.addr(), from = before, to = sizer.size(), open = open.len(),
                change = ?change, goodput_mb_s = format!("{:.2}", goodput / 1e6),
                "peer connection pool resized"
            );
            pool.target.store(sizer.size(), Ordering::Relaxed);
            // The new slots' handshakes now, not in front of their first fetches.
            if sizer.size() > before {
                peer.warm();
            }
        }
        // The fetch places follow the answers' rate and the round trip (`places.rs`).
        let now_answered = pool.answers.load(Ordering::Relaxed);
        let n = now_answered - answered;
        answered = now_answered;
        let rtt = Duration::from_secs_f64(median_rtt.max(0.0) / 1e3);
        let per_sec = n as f64 / elapsed.as_secs_f64().max(1e-3);
        if let Some(t) = places::target(per_sec, rtt, peer.settings().streams) {
            let t = places::step(peer.places.limit(), t);
            if t != peer.places.limit() {
                tracing::debug!(peer = %peer.addr(), from = peer.places.limit(), to = t, answers_per_sec = format!("{per_sec:.1}"), "peer fetch places resized");
                peer.places.resize(t);
            }
        }
        *pool.figures.lock().unwrap_or_else(|p| p.into_inner()) = PoolFigures {
            connections: open.len(),
            target: sizer.size(),
            goodput_bytes_per_sec: goodput,
            rtt_median_ms: median_rtt,
            rtt_max_ms: max_rtt,
        };
        if last_report.elapsed() >= report_every && !open.is_empty() {
            last_report = Instant::now();
            let cwnd: u64 = open.iter().map(|s| s.cwnd).sum();
            let mtu = open.iter().map(|s| s.mtu).min().unwrap_or(0);
            let seen = std::mem::take(&mut since_report);
            tracing::info!(
                peer = %peer.addr(), connections = open.len(), target = sizer.size(),
                fetches_in_flight = in_flight, fetch_places = peer.places.limit(), subscriptions = subs,
                goodput_mb_s = format!("{:.2}", goodput / 1e6),
                rtt_ms_median = format!("{median_rtt:.1}"), rtt_ms_max = format!("{max_rtt:.1}"),
                cwnd_kb = cwnd / 1024, mtu, lost_packets = seen.lost_packets,
                congestion_events = seen.congestion_events,
                "peer connection pool"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(generation: u64, rx: u64, lost: u64) -> Option<Sample> {
        Some(Sample {
            generation,
            counters: Counters {
                rx_bytes: rx,
                lost_packets: lost,
                congestion_events: lost / 2,
            },
            rtt: Duration::from_millis(100),
            cwnd: 0,
            mtu: 1200,
            draining: false,
        })
    }

    fn rx_lost(c: Counters) -> (u64, u64) {
        (c.rx_bytes, c.lost_packets)
    }

    #[test]
    fn the_pool_starts_at_half_and_never_passes_eight() {
        assert_eq!(
            pool_config(8),
            PoolConfig {
                min: 1,
                max: 8,
                initial: 4
            }
        );
        assert_eq!(pool_config(1).initial, 1);
        assert_eq!(pool_config(3).initial, 2);
        assert_eq!(pool_config(20).max, 8);
    }

    #[test]
    fn streams_keep_a_connection_per_128() {
        assert_eq!(for_streams(0), 0);
        assert_eq!(for_streams(1), 1);
        assert_eq!(for_streams(128), 1);
        assert_eq!(for_streams(129), 2);
        assert_eq!(for_streams(1000), 8);
    }

    #[test]
    fn a_window_counts_what_each_connection_received_since_the_last() {
        let mut last = vec![None, None, None];
        let d = deltas(&mut last, &[s(1, 100, 2), None, s(1, 50, 0)]);
        assert_eq!(rx_lost(d), (150, 2));
        assert_eq!(d.congestion_events, 1);
        let d = deltas(&mut last, &[s(1, 160, 4), None, s(1, 50, 0)]);
        assert_eq!(rx_lost(d), (60, 2));
        // Slot 0 reconnected (a new generation): its new connection counts from zero,
        // even with counters that happen to be larger than the old one's. Slot 2
        // closed, then a connection opened there again counts whole.
        assert_eq!(
            rx_lost(deltas(&mut last, &[s(2, 500, 0), s(1, 5, 0), None])),
            (505, 0)
        );
        assert_eq!(
            rx_lost(deltas(&mut last, &[s(2, 510, 0), s(1, 5, 0), s(2, 70, 0)])),
            (80, 0)
        );
    }

    #[test]
    fn a_subscription_goes_to_the_least_loaded_active_slot() {
        let p = Pool::new(4);
        p.target.store(3, Ordering::Relaxed);
        let loads = [2, 0, 1, 0];
        for (s, n) in p.slots.iter().zip(loads) {
            s.open.store(n, Ordering::Relaxed);
        }
        // Slot 3 is idle but past the size; of 1 and 2, slot 1 has fewer.
        assert_eq!(p.least_loaded(), 1);
        p.slots[1].open.store(5, Ordering::Relaxed);
        assert_eq!(p.least_loaded(), 2);
        // Of equals, the lowest.
        p.slots[0].open.store(1, Ordering::Relaxed);
        assert_eq!(p.least_loaded(), 0);
    }

    #[test]
    fn open_streams_keep_enough_slots_active() {
        let p = Pool::new(8);
        p.target.store(1, Ordering::Relaxed);
        assert_eq!(p.active(), 1);
        let holds: Vec<Hold> = (0..200).map(|_| p.subscription()).collect();
        assert_eq!(p.active(), 2);
        let fetches: Vec<Fetching> = (0..100).map(|_| p.fetch()).collect();
        assert_eq!(p.active(), 3);
        drop(fetches);
        drop(holds);
        assert_eq!(p.active(), 1);
        assert_eq!(p.peak_fetching.load(Ordering::Relaxed), 100);
    }
}
