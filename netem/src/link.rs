//! The impairment model of one direction of the link, as a pure state machine:
//! packet (arrival time, size, two random numbers) in, verdict out. Time is passed in
//! as nanoseconds so the model is tested without clocks.
//!
//! Order of effects, as on a real path: random loss, then the bottleneck (a FIFO queue
//! of `queue_bytes` drained at `rate`; a packet that does not fit is tail-dropped),
//! then propagation delay with jitter. Jitter never reorders: a packet is never
//! delivered before the one ahead of it.

use serde::{Deserialize, Serialize};

/// Impairments of one direction.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// One-way propagation delay.
    pub delay_ns: u64,
    /// Uniform jitter: each packet's delay varies by up to ± this much.
    pub jitter_ns: u64,
    /// Probability of losing a packet, 0..1.
    pub loss: f64,
    /// Bottleneck rate in bits per second; 0 means unlimited.
    pub rate_bps: u64,
    /// Bottleneck queue size in bytes.
    pub queue_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver at this time (ns, same clock as the input).
    Deliver(u64),
    /// Lost on the path (random loss).
    Lost,
    /// Dropped at the bottleneck: the queue is full.
    QueueFull,
}

/// Counters kept by the model.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
    pub delivered_bytes: u64,
    pub lost: u64,
    pub queue_drops: u64,
}

#[derive(Debug, Clone)]
pub struct Direction {
    params: Params,
    /// When the bottleneck finishes sending everything accepted so far.
    busy_until: u64,
    /// Delivery time of the last accepted packet (no reordering).
    last_delivery: u64,
    pub counters: Counters,
}

impl Direction {
    pub fn new(params: Params) -> Self {
        Direction {
            params,
            busy_until: 0,
            last_delivery: 0,
            counters: Counters::default(),
        }
    }

    /// Bytes waiting in the bottleneck queue at `now`.
    pub fn backlog(&self, now: u64) -> u64 {
        if self.params.rate_bps == 0 || self.busy_until <= now {
            return 0;
        }
        ((self.busy_until - now) as u128 * self.params.rate_bps as u128 / 8 / 1_000_000_000) as u64
    }

    /// Decides the fate of a packet of `size` bytes arriving at `now`.
    /// `loss_draw` and `jitter_draw` are uniform in [0, 1).
    pub fn on_packet(&mut self, now: u64, size: u64, loss_draw: f64, jitter_draw: f64) -> Verdict {
        self.counters.packets += 1;
        self.counters.bytes += size;
        if loss_draw < self.params.loss {
            self.counters.lost += 1;
            return Verdict::Lost;
        }
        let departure = if self.params.rate_bps == 0 {
            now
        } else {
            if self.backlog(now) + size > self.params.queue_bytes.max(size) {
                self.counters.queue_drops += 1;
                return Verdict::QueueFull;
            }
            let tx_ns = (size as u128 * 8 * 1_000_000_000 / self.params.rate_bps as u128) as u64;
            self.busy_until = self.busy_until.max(now) + tx_ns;
            self.busy_until
        };
        let j = self.params.jitter_ns as f64;
        let delay = (self.params.delay_ns as f64 + (jitter_draw * 2.0 - 1.0) * j).max(0.0) as u64;
        let at = (departure + delay).max(self.last_delivery);
        self.last_delivery = at;
        self.counters.delivered_bytes += size;
        Verdict::Deliver(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;

    fn p(delay_ms: u64, loss: f64, rate_bps: u64, queue: u64) -> Params {
        Params {
            delay_ns: delay_ms * MS,
            jitter_ns: 0,
            loss,
            rate_bps,
            queue_bytes: queue,
        }
    }

    #[test]
    fn delays_by_the_one_way_delay() {
        let mut d = Direction::new(p(50, 0.0, 0, 0));
        assert_eq!(
            d.on_packet(1000, 1500, 0.5, 0.5),
            Verdict::Deliver(1000 + 50 * MS)
        );
    }

    #[test]
    fn loses_when_the_draw_is_below_the_loss_rate() {
        let mut d = Direction::new(p(0, 0.01, 0, 0));
        assert_eq!(d.on_packet(0, 100, 0.005, 0.5), Verdict::Lost);
        assert!(matches!(
            d.on_packet(0, 100, 0.02, 0.5),
            Verdict::Deliver(_)
        ));
        assert_eq!(d.counters.lost, 1);
    }

    #[test]
    fn serialises_back_to_back_packets_at_the_rate() {
        // 8 Mbit/s: a 1000-byte packet takes 1 ms.
        let mut d = Direction::new(p(0, 0.0, 8_000_000, 1 << 20));
        let times: Vec<u64> = (0..5)
            .map(|_| match d.on_packet(0, 1000, 0.5, 0.5) {
                Verdict::Deliver(t) => t,
                v => panic!("{v:?}"),
            })
            .collect();
        assert_eq!(times, vec![MS, 2 * MS, 3 * MS, 4 * MS, 5 * MS]);
    }

    #[test]
    fn tail_drops_when_the_queue_is_full() {
        let mut d = Direction::new(p(0, 0.0, 8_000_000, 3000));
        let v: Vec<Verdict> = (0..5).map(|_| d.on_packet(0, 1000, 0.5, 0.5)).collect();
        assert_eq!(v.iter().filter(|v| **v == Verdict::QueueFull).count(), 2);
        // Once drained, packets are accepted again.
        assert!(matches!(
            d.on_packet(10 * MS, 1000, 0.5, 0.5),
            Verdict::Deliver(_)
        ));
    }

    proptest! {
        /// Jitter never reorders, stays within bounds, and loss never exceeds input.
        #[test]
        fn never_reorders_and_keeps_jitter_bounds(
            gaps in proptest::collection::vec(0u64..2 * MS, 1..200),
            draws in proptest::collection::vec((0f64..1.0, 0f64..1.0), 200),
        ) {
            let params = Params { delay_ns: 20 * MS, jitter_ns: 5 * MS, loss: 0.1, rate_bps: 0, queue_bytes: 0 };
            let mut d = Direction::new(params);
            let mut now = 0;
            let mut last = 0;
            for (gap, (l, j)) in gaps.iter().zip(draws.iter()) {
                now += gap;
                if let Verdict::Deliver(at) = d.on_packet(now, 100, *l, *j) {
                    prop_assert!(at >= last);
                    prop_assert!(at >= now + 15 * MS);
                    last = at;
                }
            }
            prop_assert!(d.counters.lost <= d.counters.packets);
        }

        /// The delivered rate never exceeds the cap.
        #[test]
        fn delivered_rate_never_exceeds_the_cap(sizes in proptest::collection::vec(40u64..1500, 10..300)) {
            let rate = 10_000_000u64;
            let mut d = Direction::new(Params { delay_ns: 0, jitter_ns: 0, loss: 0.0, rate_bps: rate, queue_bytes: 1 << 30 });
            let mut last = 0;
            let mut bytes = 0;
            for s in &sizes {
                if let Verdict::Deliver(at) = d.on_packet(0, *s, 0.5, 0.5) { last = at; bytes += s; }
            }
            let min_ns = (bytes as u128 * 8 * 1_000_000_000 / rate as u128) as u64;
            prop_assert!(last + 1 >= min_ns);
        }
    }
}
