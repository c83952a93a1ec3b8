//! The peer's pool of QUIC connections, sized by goodput as the TCP pool is.
//!
//! Each connection has a congestion controller of its own, so on a lossy path a few
//! carry more than one; how many pays depends on RTT, loss and the controller. The
//! same pure [`Sizer`] the TCP pool uses decides, fed one window at a time from the
//! connections' own counters: bytes received over UDP, and the catch-up fetches in
//! flight. Growing opens connections as requests reach the new slots; shrinking
//! stops new requests on the surplus slots, and a surplus connection closes once no
//! stream is open on it (a subscription keeps it until the partition stops tailing).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::client::Peer;
use super::io::close;
use crate::transport::pool::PoolFigures;
use crate::transport::sizer::{PoolConfig, Sizer, Window};

/// Subscriptions one connection is given at most: half of what serve admits by
/// default (`max_streams`, 256), leaving room for fetches and a hashing spread that
/// is never even.
pub const SUBSCRIPTIONS_PER_CONNECTION: usize = 128;

/// Connections `subs` subscriptions need.
pub fn for_subscriptions(subs: usize) -> usize {
    subs.div_ceil(SUBSCRIPTIONS_PER_CONNECTION)
}

/// The pool's bounds for at most `max` connections: it starts at half, so a first
/// probe can double it.
pub fn pool_config(max: usize) -> PoolConfig {
    let max = max.clamp(1, 8);
    PoolConfig {
        min: 1,
        max,
        initial: max.div_ceil(2),
    }
}

/// Starts the sizing task (once, with the first catch-up).
pub(super) fn start(peer: &Arc<Peer>) {
    let sizer = Sizer::new(pool_config(peer.slots.len()));
    let every = peer.settings().report_every;
    tokio::spawn(size_loop(Arc::downgrade(peer), sizer, every));
}

/// One open connection's counters at a window's end.
struct Sample {
    /// The connection (a slot's connection may have been replaced since the last
    /// window: its bytes count from zero then).
    id: usize,
    rx_bytes: u64,
    rtt: Duration,
    cwnd: u64,
    mtu: u16,
    lost_packets: u64,
    congestion_events: u64,
}

/// Reads every slot's connection; closes the surplus ones nothing is open on.
async fn sample(peer: &Peer) -> Vec<Option<Sample>> {
    let active = peer.active();
    let mut out = Vec::with_capacity(peer.slots.len());
    for (i, slot) in peer.slots.iter().enumerate() {
        let mut held = slot.conn.lock().await;
        let Some(c) = held.as_ref().filter(|c| c.close_reason().is_none()) else {
            out.push(None);
            continue;
        };
        if i >= active && slot.open.load(Ordering::Relaxed) == 0 {
            tracing::debug!(peer = %peer.addr(), connection = i, "closing a surplus peer connection");
            c.close(quinn::VarInt::from_u32(close::DONE), b"pool shrank");
            *held = None;
            out.push(None);
            continue;
        }
        let st = c.stats();
        out.push(Some(Sample {
            id: c.stable_id(),
            rx_bytes: st.udp_rx.bytes,
            rtt: st.path.rtt,
            cwnd: st.path.cwnd,
            mtu: st.path.current_mtu,
            lost_packets: st.path.lost_packets,
            congestion_events: st.path.congestion_events,
        }));
    }
    out
}

/// Bytes and losses since the last window, per slot, from monotonic per-connection
/// counters: a slot whose connection changed counts its new one from zero.
fn deltas(last: &mut [Option<(usize, u64, u64)>], now: &[Option<Sample>]) -> (u64, u64) {
    let (mut bytes, mut lost) = (0, 0);
    for (prev, s) in last.iter_mut().zip(now) {
        let Some(s) = s else {
            *prev = None;
            continue;
        };
        let (b0, l0) = match *prev {
            Some((id, b, l)) if id == s.id => (b, l),
            _ => (0, 0),
        };
        bytes += s.rx_bytes.saturating_sub(b0);
        lost += s.lost_packets.saturating_sub(l0);
        *prev = Some((s.id, s.rx_bytes, s.lost_packets));
    }
    (bytes, lost)
}

async fn size_loop(peer: Weak<Peer>, mut sizer: Sizer, report_every: Duration) {
    let mut window = Duration::from_secs(1);
    let mut last = Instant::now();
    let mut last_report = Instant::now();
    let mut counted: Vec<Option<(usize, u64, u64)>> = Vec::new();
    loop {
        tokio::time::sleep(window).await;
        let Some(peer) = peer.upgrade() else { return };
        let now = sample(&peer).await;
        let elapsed = last.elapsed();
        last = Instant::now();
        counted.resize(now.len(), None);
        let (bytes, lost) = deltas(&mut counted, &now);
        let open: Vec<&Sample> = now.iter().flatten().collect();
        let mut rtts: Vec<f64> = open.iter().map(|s| s.rtt.as_secs_f64() * 1e3).collect();
        rtts.sort_by(f64::total_cmp);
        let (median_rtt, max_rtt) = match rtts.len() {
            0 => (0.0, 0.0),
            n => (rtts[n / 2], rtts[n - 1]),
        };
        // As the TCP pool: a window spans many round trips, or it means nothing on a
        // lossy path.
        window = Duration::from_secs_f64((median_rtt * 5.0 / 1000.0).clamp(1.0, 5.0));
        let goodput = bytes as f64 / elapsed.as_secs_f64().max(1e-3);
        let in_flight = peer.fetching.load(Ordering::Relaxed);
        let peak = peer.peak_fetching.swap(in_flight, Ordering::Relaxed);
        let before = sizer.size();
        // Busy while catch-up fetches are in flight: each connection brings its own
        // congestion window, so more may carry them sooner. Pushes alone are not
        // demand (they wait for appends, not for the link).
        // Never shrunk below what the subscriptions need.
        let subs = peer.subscriptions.load(Ordering::Relaxed);
        let sample = Window {
            rate: goodput as u64,
            busy: peak > 0,
            draining: 0,
            peak: peak.min(before).max(for_subscriptions(subs)),
            switched: false,
            limited: false,
        };
        if let Some(change) = sizer.observe(sample) {
            tracing::info!(
                peer = %peer.addr(), from = before, to = sizer.size(), open = open.len(),
                change = ?change, goodput_mb_s = format!("{:.2}", goodput / 1e6),
                "peer connection pool resized"
            );
            peer.target.store(sizer.size(), Ordering::Relaxed);
        }
        *peer.figures.lock().unwrap_or_else(|p| p.into_inner()) = PoolFigures {
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
            let congestion: u64 = open.iter().map(|s| s.congestion_events).sum();
            tracing::info!(
                peer = %peer.addr(), connections = open.len(), target = sizer.size(),
                fetches_in_flight = in_flight, subscriptions = subs, goodput_mb_s = format!("{:.2}", goodput / 1e6),
                rtt_ms_median = format!("{median_rtt:.1}"), rtt_ms_max = format!("{max_rtt:.1}"),
                cwnd_kb = cwnd / 1024, mtu, lost_packets = lost, congestion_events = congestion,
                "peer connection pool"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(id: usize, rx: u64, lost: u64) -> Option<Sample> {
        Some(Sample {
            id,
            rx_bytes: rx,
            rtt: Duration::from_millis(100),
            cwnd: 0,
            mtu: 1200,
            lost_packets: lost,
            congestion_events: 0,
        })
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
    fn subscriptions_keep_a_connection_per_128() {
        assert_eq!(for_subscriptions(0), 0);
        assert_eq!(for_subscriptions(1), 1);
        assert_eq!(for_subscriptions(128), 1);
        assert_eq!(for_subscriptions(129), 2);
        assert_eq!(for_subscriptions(1000), 8);
    }

    #[test]
    fn a_window_counts_what_each_connection_received_since_the_last() {
        let mut last = vec![None, None, None];
        assert_eq!(
            deltas(&mut last, &[s(1, 100, 1), None, s(3, 50, 0)]),
            (150, 1)
        );
        assert_eq!(
            deltas(&mut last, &[s(1, 160, 3), None, s(3, 50, 0)]),
            (60, 2)
        );
        // Slot 0 reconnected: its new connection counts from zero. Slot 2 closed, then
        // a connection opened there again counts whole.
        assert_eq!(deltas(&mut last, &[s(7, 30, 0), s(8, 5, 0), None]), (35, 0));
        assert_eq!(
            deltas(&mut last, &[s(7, 40, 0), s(8, 5, 0), s(3, 70, 0)]),
            (80, 0)
        );
    }
}
