//! The Prometheus endpoint (`[metrics] listen`): `GET /metrics` answers with what the
//! mirror knows at that moment, in the OpenMetrics text format written by the
//! prometheus-client crate. Every metric is documented in docs/metrics.md.
//!
//! The figures are read from the counters the mirror keeps anyway (`Stats`, the
//! latency histograms, the memory budget) when a scrape comes, so mirroring pays
//! nothing for an endpoint nobody scrapes. The HTTP side is the least a scraper needs:
//! one request per connection, a GET of `/metrics`, answered and closed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::offset_map::now_ms;
use super::{PartState, Shared};
use crate::transport::pool::PoolFigures;

type Labels = Vec<(String, String)>;

/// The whole exposition, as a scrape gets it; `pools` are the source's catch-up
/// pools open now, by their `broker` label.
pub fn render(shared: &Shared, pools: &[(String, PoolFigures)]) -> String {
    let mut reg = <Registry>::default();
    let cluster = shared.config.source.name.clone();
    let part = |topic: &str, p: i32| -> Labels {
        vec![
            ("source_cluster".into(), cluster.clone()),
            ("topic".into(), topic.to_string()),
            ("partition".into(), p.to_string()),
        ]
    };
    let lag = Family::<Labels, Gauge>::default();
    let lag_bytes = Family::<Labels, Gauge>::default();
    let src_end = Family::<Labels, Gauge>::default();
    let dest_end = Family::<Labels, Gauge>::default();
    let verified = Family::<Labels, Gauge>::default();
    let records = Family::<Labels, Counter>::default();
    let bytes = Family::<Labels, Counter>::default();
    let state = Family::<Labels, Gauge>::default();
    let errors = Family::<Labels, Counter>::default();
    for (job, s) in shared.stats.partitions() {
        let l = part(&job.source_topic, job.partition);
        let behind = (s.high_watermark - s.end).max(0);
        lag.get_or_create(&l).set(behind);
        // Estimated from the bytes per offset written so far; absent until the
        // partition wrote something to estimate from.
        if s.records > 0 {
            let per_offset = s.bytes as f64 / s.records as f64;
            lag_bytes
                .get_or_create(&l)
                .set((behind as f64 * per_offset).round() as i64);
        }
        src_end.get_or_create(&l).set(s.high_watermark);
        dest_end.get_or_create(&l).set(s.end);
        if s.verified > 0 {
            verified.get_or_create(&l).set(s.verified);
        }
        records.get_or_create(&l).inc_by(s.records);
        bytes.get_or_create(&l).inc_by(s.bytes);
        // Every state, 1 for the current one: `== 1` selects, and a change shows.
        for st in PartState::ALL {
            let mut ls = l.clone();
            ls.push(("state".into(), st.name().into()));
            state.get_or_create(&ls).set(i64::from(st == s.state));
        }
        for (kind, n) in &s.errors {
            let mut lk = l.clone();
            lk.push(("kind".into(), kind.to_string()));
            errors.get_or_create(&lk).inc_by(*n);
        }
    }
    reg.register(
        "wanmirror_partition_state",
        "1 for the partition's current state (resuming, catching_up, tailing, stopped), 0 for the others",
        state,
    );
    reg.register(
        "wanmirror_partition_errors",
        "Errors that interrupted (and were retried) or stopped the partition, by kind",
        errors,
    );
    reg.register(
        "wanmirror_partition_lag_offsets",
        "Offsets the destination is behind the source's high watermark, as last seen by the partition's writer",
        lag,
    );
    reg.register(
        "wanmirror_partition_lag_bytes",
        "The lag in offsets times the partition's mean batch bytes per offset written so far (an estimate; absent before the first write)",
        lag_bytes,
    );
    reg.register(
        "wanmirror_partition_source_end_offset",
        "The source's high watermark in the partition's last fetch answer",
        src_end,
    );
    reg.register(
        "wanmirror_partition_verified_offset",
        "Continuous reconciliation (through a peer) found the copy identical to the source below this offset",
        verified,
    );
    reg.register(
        "wanmirror_partition_dest_end_offset",
        "The destination's end offset after the partition's last write",
        dest_end,
    );
    reg.register(
        "wanmirror_mirrored_records",
        "Records written to the destination by this process (filler records included)",
        records,
    );
    reg.register(
        "wanmirror_mirrored_bytes",
        "Batch bytes written to the destination by this process",
        bytes,
    );

    let latency = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    let batches = Family::<Labels, Gauge>::default();
    for (topic, s) in shared.stats.latency.window(now_ms()) {
        let t = |q: &str| -> Labels {
            vec![
                ("source_cluster".into(), cluster.clone()),
                ("topic".into(), topic.clone()),
                ("quantile".into(), q.to_string()),
            ]
        };
        for (q, v) in [
            ("0.5", s.p50_ms),
            ("0.99", s.p99_ms),
            ("0.999", s.p999_ms),
            ("1", s.max_ms),
        ] {
            latency.get_or_create(&t(q)).set(v as f64 / 1000.0);
        }
        batches
            .get_or_create(&vec![
                ("source_cluster".into(), cluster.clone()),
                ("topic".into(), topic.clone()),
            ])
            .set(s.batches as i64);
    }
    reg.register(
        "wanmirror_replication_latency_seconds",
        "Destination acknowledgement time minus each batch's max timestamp, quantiles over the last 60 s (quantile 1 is the maximum)",
        latency,
    );
    reg.register(
        "wanmirror_replication_latency_batches",
        "Batches the replication latency quantiles cover (the last 60 s)",
        batches,
    );

    let budget = Gauge::<i64>::default();
    let total_kib =
        (shared.config.mirror.in_flight_bytes / 1024).min(tokio::sync::Semaphore::MAX_PERMITS);
    let used_kib = total_kib.saturating_sub(shared.budget.available_permits());
    budget.set((used_kib * 1024) as i64);
    reg.register(
        "wanmirror_in_flight_bytes",
        "Bytes of the in-flight budget (mirror.in_flight_bytes) reserved by fetches in flight (a tailing partition holds one while it long-polls) and by data not yet acknowledged by the destination",
        budget,
    );
    let catch_ups = Gauge::<i64>::default();
    catch_ups.set(shared.catch_ups.load(Ordering::Relaxed) as i64);
    reg.register(
        "wanmirror_partitions_catching_up",
        "Partitions catching up in pieces over the connection pool right now",
        catch_ups,
    );

    let produce = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    let produced = Family::<Labels, Gauge>::default();
    for (dest, s) in shared.stats.produce.window(now_ms()) {
        let d = |q: Option<&str>| -> Labels {
            let mut l = vec![("destination_cluster".into(), dest.clone())];
            if let Some(q) = q {
                l.push(("quantile".into(), q.to_string()));
            }
            l
        };
        for (q, v) in [("0.5", s.p50_ms), ("0.99", s.p99_ms), ("1", s.max_ms)] {
            produce.get_or_create(&d(Some(q))).set(v as f64 / 1000.0);
        }
        produced.get_or_create(&d(None)).set(s.batches as i64);
    }
    reg.register(
        "wanmirror_produce_latency_seconds",
        "Produce request sent to acknowledgement by the destination (retries included), quantiles over the last 60 s, 1 ms resolution",
        produce,
    );
    reg.register(
        "wanmirror_produce_requests",
        "Produce requests the produce latency quantiles cover (the last 60 s)",
        produced,
    );

    let conns = Family::<Labels, Gauge>::default();
    let target = Family::<Labels, Gauge>::default();
    let goodput = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    let rtt = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    for (broker, f) in pools {
        let b = || -> Labels {
            vec![
                ("source_cluster".into(), cluster.clone()),
                ("broker".into(), broker.clone()),
            ]
        };
        conns.get_or_create(&b()).set(f.connections as i64);
        target.get_or_create(&b()).set(f.target as i64);
        goodput.get_or_create(&b()).set(f.goodput_bytes_per_sec);
        for (q, v) in [("0.5", f.rtt_median_ms), ("1", f.rtt_max_ms)] {
            let mut l = b();
            l.push(("quantile".into(), q.into()));
            rtt.get_or_create(&l).set(v / 1000.0);
        }
    }
    reg.register(
        "wanmirror_pool_connections",
        "Catch-up connections open to the source broker",
        conns,
    );
    reg.register(
        "wanmirror_pool_target_connections",
        "The size the pool's sizer aims at for the source broker",
        target,
    );
    reg.register(
        "wanmirror_pool_goodput_bytes_per_second",
        "Response bytes per second received over the broker's pool in its last sizing window (1-5 s)",
        goodput,
    );
    reg.register(
        "wanmirror_pool_rtt_seconds",
        "The kernel's smoothed RTT of the pool's connections: median (quantile 0.5) and largest (quantile 1)",
        rtt,
    );

    register_groups(&mut reg, shared);

    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &reg);
    out
}

/// The consumer-group offset sync (`[groups]`): rounds by result, offsets committed
/// and clamped, per group.
fn register_groups(reg: &mut Registry, shared: &Shared) {
    let rounds = Family::<Labels, Counter>::default();
    let committed = Family::<Labels, Counter>::default();
    let clamped = Family::<Labels, Counter>::default();
    for (group, t) in shared.stats.groups.snapshot() {
        let g = || -> Labels { vec![("group".into(), group.clone())] };
        for result in ["synced", "skipped", "failed"] {
            let mut l = g();
            l.push(("result".into(), result.into()));
            rounds
                .get_or_create(&l)
                .inc_by(t.rounds.get(result).copied().unwrap_or(0));
        }
        committed.get_or_create(&g()).inc_by(t.committed);
        clamped.get_or_create(&g()).inc_by(t.clamped);
    }
    reg.register(
        "wanmirror_group_sync_rounds",
        "Rounds of the consumer-group offset sync per group, by result: synced (in sync after the round), skipped (members in the destination, or not a consumer group), failed (a cluster error; retried next round)",
        rounds,
    );
    reg.register(
        "wanmirror_group_offsets_committed",
        "Offsets the sync committed in the destination for the group",
        committed,
    );
    reg.register(
        "wanmirror_group_offsets_clamped",
        "Offsets committed at the destination end because the source's committed offset was above it",
        clamped,
    );
}

/// Binds the endpoint; the caller reports a failure before anything is mirrored.
pub async fn bind(listen: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(listen).await
}

/// Scrapes answered at once; more connections wait in the listen queue. Within the
/// fixed allowance of the start-up file-descriptor check (`limits::BASE_FDS`).
pub const MAX_SCRAPES: usize = 8;

/// Answers scrapes until the process ends.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPES));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Ok((sock, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            // A client that sends nothing does not hold a task for long.
            let _ = tokio::time::timeout(Duration::from_secs(10), answer(sock, &shared)).await;
            drop(slot);
        });
    }
}

async fn answer(mut sock: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    // The head ends at an empty line (CRLF, or a bare LF from lenient clients).
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = sock.read(&mut buf).await?;
        if n == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or_default();
    let mut words = line.split(|&b| b == b' ');
    let (method, path) = (words.next(), words.next());
    let (status, kind, body) = match (method, path) {
        (Some(b"GET"), Some(p)) if p == b"/metrics" || p.starts_with(b"/metrics?") => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            render(shared, &shared.source.pool_figures().await),
        ),
        (Some(b"GET"), _) => (
            "404 Not Found",
            "text/plain",
            "only /metrics is served\n".into(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET is served\n".into(),
        ),
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(reply.as_bytes()).await?;
    sock.shutdown().await
}
