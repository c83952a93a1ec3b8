//! A pool of connections to one source broker for catch-up fetches and the long polls
//! of live partitions.
//!
//! A caller leases an idle connection ([`Lease`], at most [`DEPTH`] requests on each);
//! when none is idle it waits for one to free up (the sign that more connections would
//! help) and, below the target size, the pool opens the missing connections at once.
//! A background task sizes the pool with [`Sizer`] from the goodput of each window and
//! reports per-connection goodput and RTT.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::sizer::{rtt_median_max, window_after, Change, PoolConfig, Sizer, Window};
use crate::kafka::client::Fetched;
use crate::kafka::connection::{ConnStats, Connection, SocketOptions};
use crate::kafka::error::Result;
use crate::kafka::fetch_mux::{fetch_request, send_fetch, send_fetch_early, Answers, OnHead};

/// Requests in flight per connection. One: a piece queued behind another waits for
/// that whole transfer, which on a lossy path doubles the time until it can be handed
/// on, and in-order hand-over makes every later piece wait as well. The cost is one
/// idle round trip per piece on each connection, which more connections make up for.
pub const DEPTH: usize = 1;

struct Slot {
    id: u64,
    conn: Connection,
    in_flight: usize,
    /// Surplus after a shrink: takes no new requests, closes when idle.
    draining: bool,
    /// Bytes counted at the last window, for this connection's goodput.
    seen: u64,
    opened: Instant,
}

struct Inner {
    slots: Vec<Slot>,
    connecting: usize,
    target: usize,
    next_id: u64,
    /// Bytes of connections that are gone, so the pool total never goes back.
    retired: u64,
    /// Most connections in use at once since the last window.
    peak: usize,
}

pub struct Pool {
    cluster: String,
    broker: i32,
    addr: String,
    opts: SocketOptions,
    inner: Mutex<Inner>,
    freed: Notify,
    /// Set when a request found no idle connection during the current window.
    waited: AtomicBool,
    /// Set when a partition of this broker switched between tailing and pieces during
    /// the current window (see [`Window::switched`]).
    switched: AtomicBool,
    /// Largest size the pool may reach (urgent requests may open up to it).
    max: usize,
    /// What the last sizing window measured, for the metrics endpoint.
    figures: std::sync::Mutex<PoolFigures>,
}

/// A pool's state as of its last sizing window (1-5 s old).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PoolFigures {
    /// Connections open.
    pub connections: usize,
    /// The size the sizer aims at.
    pub target: usize,
    /// Response bytes received per second over the window, all connections.
    pub goodput_bytes_per_sec: f64,
    /// Median and largest smoothed RTT of the open connections (the kernel's), in ms.
    pub rtt_median_ms: f64,
    pub rtt_max_ms: f64,
}

/// One connection as the pool report shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnReport {
    pub id: u64,
    pub in_flight: usize,
    pub bytes_per_sec: f64,
    pub srtt_ms: f64,
    pub age_secs: u64,
}

impl Pool {
    /// Creates the pool and its sizing task; the task ends when the pool is dropped.
    pub fn spawn(
        cluster: &str,
        broker: i32,
        addr: &str,
        opts: SocketOptions,
        cfg: PoolConfig,
        report_every: Duration,
    ) -> Arc<Pool> {
        let sizer = Sizer::new(cfg);
        let pool = Arc::new(Pool {
            cluster: cluster.to_string(),
            broker,
            addr: addr.to_string(),
            opts,
            inner: Mutex::new(Inner {
                slots: Vec::new(),
                connecting: 0,
                target: sizer.size(),
                next_id: 0,
                retired: 0,
                peak: 0,
            }),
            freed: Notify::new(),
            waited: AtomicBool::new(false),
            switched: AtomicBool::new(false),
            max: cfg.max.max(1),
            figures: std::sync::Mutex::new(PoolFigures {
                target: sizer.size(),
                ..PoolFigures::default()
            }),
        });
        tokio::spawn(size_loop(Arc::downgrade(&pool), sizer, report_every));
        pool
    }

    /// The broker this pool fetches from.
    pub fn broker(&self) -> i32 {
        self.broker
    }

    /// The pool as of its last sizing window.
    pub fn figures(&self) -> PoolFigures {
        *self.figures.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// A partition of this broker switched between tailing and pieces: the demand on
    /// the pool changes, which the sizer must not take for the pool's doing.
    pub fn note_switch(&self) {
        self.switched.store(true, Ordering::Relaxed);
    }

    /// A place for one request on a connection, held until the lease is dropped. A
    /// caller that decides what to fetch only once it has a connection asks the most
    /// urgent thing at that moment, instead of queueing a plan made earlier.
    pub async fn lease(self: &Arc<Self>, urgent: bool) -> Result<Lease> {
        let asked = Instant::now();
        let (id, conn) = self.checkout(urgent).await?;
        Ok(Lease {
            pool: self.clone(),
            id,
            conn,
            queued: asked.elapsed(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection with room for one more request. Below the target size the pool
    /// opens the missing connections at once, in the background, and the caller takes
    /// the first that is free; the first connection, and one for an urgent request
    /// (which may go up to the pool's maximum rather than queue), are opened by the
    /// caller itself, so it gets that one and learns why if it cannot be opened.
    async fn checkout(self: &Arc<Self>, urgent: bool) -> Result<(u64, Connection)> {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let inline = {
                let mut g = self.lock();
                let inner = &mut *g;
                retire_dead(inner);
                if let Some(s) = inner
                    .slots
                    .iter_mut()
                    .find(|s| s.in_flight < DEPTH && !s.draining)
                {
                    s.in_flight += 1;
                    let taken = (s.id, s.conn.clone());
                    inner.note_use();
                    return Ok(taken);
                }
                // No idle connection: a connection more would have started this at once.
                self.waited.store(true, Ordering::Relaxed);
                let live = inner.slots.iter().filter(|s| !s.draining).count();
                let limit = if urgent { self.max } else { inner.target };
                let missing = limit.saturating_sub(live + inner.connecting);
                if missing == 0 {
                    false
                } else if urgent || live == 0 {
                    inner.connecting += 1;
                    true
                } else {
                    inner.connecting += missing;
                    for _ in 0..missing {
                        tokio::spawn(open_spare(self.clone()));
                    }
                    false
                }
            };
            if !inline {
                freed.await;
                continue;
            }
            let opening = Opening { pool: self };
            let res = Connection::connect(&self.addr, &self.opts).await;
            let mut g = opening.done();
            match res {
                Ok(conn) => {
                    let id = g.add(conn.clone(), 1);
                    g.note_use();
                    return Ok((id, conn));
                }
                // With nothing open the caller learns why (and retries), and wakes
                // the other waiters, which would otherwise wait for a connection that
                // will not come; with connections open it waits for those.
                Err(e) if g.slots.is_empty() && g.connecting == 0 => {
                    drop(g);
                    self.freed.notify_waiters();
                    return Err(e);
                }
                Err(e) => g.failed(&self.cluster, self.broker, &e),
            }
        }
    }

    fn checkin(&self, id: u64) {
        let mut g = self.lock();
        if let Some(i) = g.slots.iter().position(|s| s.id == id) {
            g.slots[i].in_flight -= 1;
            if g.slots[i].draining {
                if g.slots[i].in_flight == 0 {
                    let s = g.slots.swap_remove(i);
                    g.retired += s.conn.stats().bytes_in.load(Ordering::Relaxed);
                }
                return;
            }
        }
        drop(g);
        self.freed.notify_one();
    }

    /// Total response bytes, connections draining, peak use and per-connection
    /// reports since the last call.
    fn sample(&self, window: Duration) -> (u64, usize, usize, Vec<ConnReport>) {
        let mut g = self.lock();
        retire_dead(&mut g);
        let draining = g.slots.iter().filter(|s| s.draining).count();
        // The next window starts with what is in use now.
        let in_use = g.slots.iter().filter(|s| s.in_flight > 0).count();
        let peak = std::mem::replace(&mut g.peak, in_use).max(in_use);
        let secs = window.as_secs_f64().max(1e-3);
        let mut total = g.retired;
        let mut reports = Vec::with_capacity(g.slots.len());
        for s in g.slots.iter_mut() {
            let st = s.conn.stats();
            let bytes = st.bytes_in.load(Ordering::Relaxed);
            total += bytes;
            reports.push(ConnReport {
                id: s.id,
                in_flight: s.in_flight,
                bytes_per_sec: (bytes - s.seen) as f64 / secs,
                srtt_ms: st.srtt_us.load(Ordering::Relaxed) as f64 / 1000.0,
                age_secs: s.opened.elapsed().as_secs(),
            });
            s.seen = bytes;
        }
        (total, draining, peak, reports)
    }

    fn set_target(&self, n: usize) {
        let mut g = self.lock();
        g.target = n;
        // Surplus connections drain: idle ones close now, busy ones after their
        // requests are answered. Growing again revives draining ones first.
        let mut open = g.slots.iter().filter(|s| !s.draining).count();
        for s in g.slots.iter_mut() {
            if open > n && !s.draining {
                s.draining = true;
                open -= 1;
            } else if open < n && s.draining {
                s.draining = false;
                open += 1;
            }
        }
        let mut i = 0;
        while i < g.slots.len() {
            if g.slots[i].draining && g.slots[i].in_flight == 0 {
                let s = g.slots.swap_remove(i);
                g.retired += s.conn.stats().bytes_in.load(Ordering::Relaxed);
            } else {
                i += 1;
            }
        }
        drop(g);
        // Waiters may now open connections.
        self.freed.notify_waiters();
    }
}

impl Inner {
    /// A request took a place: the window's peak use may have grown.
    fn note_use(&mut self) {
        let in_use = self.slots.iter().filter(|s| s.in_flight > 0).count();
        self.peak = self.peak.max(in_use);
    }

    /// A new connection with `in_flight` requests on it; returns its id.
    fn add(&mut self, conn: Connection, in_flight: usize) -> u64 {
        self.next_id += 1;
        self.slots.push(Slot {
            id: self.next_id,
            conn,
            in_flight,
            draining: false,
            seen: 0,
            opened: Instant::now(),
        });
        self.next_id
    }

    /// A connection could not be opened: the broker takes no more for now, so the
    /// target comes down to what is open.
    fn failed(&mut self, cluster: &str, broker: i32, e: &crate::kafka::error::KafkaError) {
        tracing::debug!(cluster, broker, error = %e, "pool connection failed");
        if self.target > self.slots.len().max(1) {
            self.target = self.slots.len().max(1);
        }
    }
}

/// Opens one connection of those the pool is short of and offers it to a waiter.
async fn open_spare(pool: Arc<Pool>) {
    let opening = Opening { pool: &pool };
    let res = Connection::connect(&pool.addr, &pool.opts).await;
    let mut g = opening.done();
    match res {
        Ok(conn) => {
            g.add(conn, 0);
            drop(g);
            pool.freed.notify_one();
        }
        Err(e) => {
            g.failed(&pool.cluster, pool.broker, &e);
            drop(g);
            // Waiters re-check: with nothing open one of them connects itself and
            // learns why it fails.
            pool.freed.notify_waiters();
        }
    }
}

/// One connection being opened, counted in `connecting`. A caller cancelled while it
/// connects (an aborted piece task) drops this, which takes the count back and wakes
/// the waiters; without it the pool would believe a connection is still on its way and
/// never open the one it is short of.
struct Opening<'a> {
    pool: &'a Pool,
}

impl<'a> Opening<'a> {
    /// The connect finished: the count goes back under the lock the caller goes on with.
    fn done(self) -> std::sync::MutexGuard<'a, Inner> {
        let pool = self.pool;
        std::mem::forget(self);
        let mut g = pool.lock();
        g.connecting -= 1;
        g
    }
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        self.pool.lock().connecting -= 1;
        self.pool.freed.notify_waiters();
    }
}

fn retire_dead(inner: &mut Inner) {
    let mut i = 0;
    while i < inner.slots.len() {
        if inner.slots[i].conn.is_alive() {
            i += 1;
        } else {
            let s = inner.slots.swap_remove(i);
            inner.retired += s.conn.stats().bytes_in.load(Ordering::Relaxed);
        }
    }
}

/// A request's place on a pooled connection (see [`Pool::lease`]). Dropping it,
/// also when the caller is cancelled, gives the place back.
pub struct Lease {
    pool: Arc<Pool>,
    id: u64,
    conn: Connection,
    queued: Duration,
}

impl Lease {
    /// The counters of the leased connection: its bytes in grow while the answer to
    /// this lease's fetch arrives (one request per connection, see [`DEPTH`]).
    pub fn progress(&self) -> Arc<ConnStats> {
        self.conn.stats_handle()
    }

    /// Sends one fetch on the leased connection and gives the place back. The broker
    /// holds it for up to `max_wait` when nothing is there yet (a live partition's tail
    /// probe, docs/live.md; zero for catch-up pieces). `on_head` learns the answer's high watermark and first batch as soon as its head is in.
    pub async fn fetch(
        self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: i32,
        max_wait: Duration,
        on_head: Option<OnHead>,
    ) -> Result<Fetched> {
        let req = fetch_request(
            std::iter::once((topic, partition, offset, max_bytes)),
            max_wait,
        );
        let answers = match on_head {
            Some(f) => send_fetch_early(&self.conn, &req, max_wait, f).await?,
            None => send_fetch(&self.conn, &req, max_wait).await?,
        };
        self.take(answers, topic, partition)
    }

    /// The partition's answer, marked with the connection and time queued.
    fn take(&self, mut answers: Answers, topic: &str, partition: i32) -> Result<Fetched> {
        let mut f = answers.take(self.conn.addr(), topic, partition)?;
        f.conn = self.id;
        f.queued = self.queued;
        Ok(f)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.checkin(self.id);
    }
}

async fn size_loop(pool: Weak<Pool>, mut sizer: Sizer, report_every: Duration) {
    let mut last_total = 0u64;
    let mut last = Instant::now();
    let mut last_report = Instant::now();
    let mut window = Duration::from_secs(1);
    let mut last_waits = 0u64;
    loop {
        tokio::time::sleep(window).await;
        let Some(pool) = pool.upgrade() else { return };
        let elapsed = last.elapsed();
        last = Instant::now();
        let (total, draining, peak, reports) = pool.sample(elapsed);
        let bytes = total.saturating_sub(last_total);
        last_total = total;
        let busy = pool.waited.swap(false, Ordering::Relaxed);
        let switched = pool.switched.swap(false, Ordering::Relaxed);
        let (median_rtt, max_rtt) = rtt_median_max(reports.iter().map(|r| r.srtt_ms).collect());
        window = window_after(median_rtt);
        let goodput = bytes as f64 / elapsed.as_secs_f64();
        // The cap is shared by every pool of the cluster: each compares the count of
        // held-back reads with what it saw at its own last window.
        let limited = pool.opts.limit.as_ref().is_some_and(|l| {
            let n = l.waits();
            let moved = n != last_waits;
            last_waits = n;
            moved
        });
        let sample = Window {
            rate: goodput as u64,
            busy,
            draining,
            peak,
            switched,
            limited,
        };
        // `from` is the sizer's last target; `open` the connections there are (fewer
        // while new ones still connect). Logged as `from`, the open count made a single
        // step read as several doublings (from=16 to=104 in a Kafka chaos run).
        let before = sizer.size();
        if let Some(change) = sizer.observe(sample) {
            tracing::info!(
                cluster = %pool.cluster, broker = pool.broker, addr = %pool.addr,
                from = before, to = sizer.size(), open = reports.len(), change = ?change, peak_in_use = peak,
                goodput_mb_s = format!("{:.2}", goodput / 1e6),
                "fetch pool resized"
            );
            if change == Change::Idle && sizer.size() < reports.len() {
                tracing::debug!(cluster = %pool.cluster, broker = pool.broker, "closing idle pool connections");
            }
            pool.set_target(sizer.size());
        }
        *pool.figures.lock().unwrap_or_else(|p| p.into_inner()) = PoolFigures {
            connections: reports.len(),
            target: sizer.size(),
            goodput_bytes_per_sec: goodput,
            rtt_median_ms: median_rtt,
            rtt_max_ms: max_rtt,
        };
        if last_report.elapsed() >= report_every && !reports.is_empty() {
            last_report = Instant::now();
            tracing::info!(
                cluster = %pool.cluster, broker = pool.broker, addr = %pool.addr,
                connections = reports.len(), target = sizer.size(),
                goodput_mb_s = format!("{:.2}", goodput / 1e6),
                rtt_ms_median = format!("{median_rtt:.1}"), rtt_ms_max = format!("{max_rtt:.1}"),
                "fetch pool"
            );
            for r in &reports {
                tracing::debug!(
                    cluster = %pool.cluster, broker = pool.broker, conn = r.id,
                    in_flight = r.in_flight, goodput_kb_s = format!("{:.1}", r.bytes_per_sec / 1e3),
                    rtt_ms = format!("{:.1}", r.srtt_ms), age_s = r.age_secs,
                    "fetch pool connection"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// A lease cancelled while its connection is being opened (the broker accepted
    /// but never finished the version handshake) gives the count back: the pool must
    /// not wait forever for a connection nobody is opening.
    #[tokio::test]
    async fn a_cancelled_connect_is_not_counted_as_opening() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                held.push(s);
            }
        });
        let cfg = PoolConfig {
            min: 1,
            max: 4,
            initial: 1,
        };
        let pool = Pool::spawn(
            "test",
            1,
            &addr,
            SocketOptions::default(),
            cfg,
            Duration::from_secs(60),
        );
        let p = pool.clone();
        let lease = tokio::spawn(async move { p.lease(true).await.map(|_| ()) });
        let start = Instant::now();
        while pool.lock().connecting == 0 {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the connect never started"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        lease.abort();
        assert!(lease.await.unwrap_err().is_cancelled());
        assert_eq!(
            pool.lock().connecting,
            0,
            "the aborted connect is still counted"
        );
        server.abort();
    }
}
