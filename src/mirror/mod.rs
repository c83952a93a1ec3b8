//! The mirror pipeline: topic planning, per-partition drivers, the sink, progress.
//!
//! `run` wires it together: validate everything (writing nothing), fence earlier
//! instances, create destination topics, then drive one task per partition until a
//! signal (or, in stop-at-end mode, until every partition reached the source end).

pub mod catch_up;
pub mod cursor;
pub mod error;
pub mod fence;
pub mod latency;
pub mod limits;
pub mod metrics;
pub mod mode;
pub mod offset_map;
pub mod partition;
pub mod pieces;
pub mod progress;
pub mod sink;
pub mod tail;
mod tasks;
pub mod topics;
pub mod watermark;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

use crate::config::{Config, TopicFilter};
use crate::kafka::client::Cluster;
use crate::kafka::connection::SocketOptions;
use crate::transport::limit::Limit;
use crate::transport::sizer::PoolConfig;
use error::MirrorError;
use offset_map::OffsetMap;
use partition::Job;

/// State shared by every partition task.
pub struct Shared {
    pub config: Config,
    pub filter: TopicFilter,
    pub source: Arc<Cluster>,
    pub dest: Arc<Cluster>,
    pub map: Arc<OffsetMap>,
    /// Producer id and epoch from the fencing lock.
    pub producer: (i64, i16),
    /// In-flight byte budget, in KiB permits.
    pub budget: Arc<Semaphore>,
    pub shutdown: watch::Receiver<bool>,
    pub stop_at_end: bool,
    pub stats: Stats,
    /// Partitions catching up in pieces right now; they share the memory budget.
    pub catch_ups: AtomicUsize,
}

/// Progress counters read by the periodic progress log and the metrics endpoint.
#[derive(Default)]
pub struct Stats {
    bytes: AtomicU64,
    parts: Mutex<BTreeMap<Job, PartStats>>,
    /// Replication latency of the batches written since the last progress line, and
    /// over a sliding window for the metrics endpoint.
    pub latency: latency::Latencies,
    /// Produce latency (request sent to acknowledgement, retries included), keyed by
    /// the destination cluster's name, for the metrics endpoint.
    pub produce: latency::Latencies,
}

/// One partition as last seen by its writer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartStats {
    /// Destination end offset.
    pub end: i64,
    /// The source's high watermark in the last answer.
    pub high_watermark: i64,
    /// Records and bytes written by this process (fillers included).
    pub records: u64,
    pub bytes: u64,
    pub state: PartState,
    /// Errors that interrupted or stopped the partition, by `MirrorError::kind`.
    pub errors: BTreeMap<&'static str, u64>,
}

fn running_state(end: i64, high_watermark: i64) -> PartState {
    if end >= high_watermark {
        PartState::Tailing
    } else {
        PartState::CatchingUp
    }
}

/// Where a partition is, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PartState {
    /// Reading both ends and checking the destination's tail (also after a restart).
    #[default]
    Resuming,
    /// Behind the source's high watermark.
    CatchingUp,
    /// At the source's high watermark, waiting for more.
    Tailing,
    /// Stopped for good by an error.
    Stopped,
}

impl PartState {
    pub const ALL: [PartState; 4] = [
        PartState::Resuming,
        PartState::CatchingUp,
        PartState::Tailing,
        PartState::Stopped,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PartState::Resuming => "resuming",
            PartState::CatchingUp => "catching_up",
            PartState::Tailing => "tailing",
            PartState::Stopped => "stopped",
        }
    }
}

impl Stats {
    /// Where a partition starts (or restarts): counted from here on.
    pub fn start(&self, job: &Job, end: i64, high_watermark: i64) {
        let mut parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
        let e = parts.entry(job.clone()).or_default();
        e.end = end;
        e.high_watermark = high_watermark;
        e.state = PartState::Resuming;
    }

    /// An error ended a run of the partition; `stopped` when it is not restarted.
    pub fn error(&self, job: &Job, kind: &'static str, stopped: bool) {
        let mut parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
        // Created here only if it failed before reading both ends: its offsets are
        // then unknown (0), and its state and errors still show.
        let e = parts.entry(job.clone()).or_default();
        *e.errors.entry(kind).or_insert(0) += 1;
        if stopped {
            e.state = PartState::Stopped;
        }
    }

    /// A write that moved the destination end to `end`.
    pub fn record(&self, job: &Job, end: i64, high_watermark: i64, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        let mut parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
        let e = parts.entry(job.clone()).or_default();
        e.records += (end - e.end).max(0) as u64;
        e.bytes += bytes;
        e.end = end;
        e.high_watermark = high_watermark;
        e.state = running_state(end, high_watermark);
    }

    /// Fillers written up to `end`, the high watermark unchanged.
    pub fn advanced(&self, job: &Job, end: i64) {
        let hw = self
            .parts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(job)
            .map_or(end, |e| e.high_watermark);
        self.record(job, end, hw, 0);
    }

    /// A fetch answer's high watermark: the lag grows while nothing is written.
    pub fn seen(&self, job: &Job, high_watermark: i64) {
        let mut parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = parts.get_mut(job) {
            e.high_watermark = high_watermark;
            if e.state != PartState::Stopped {
                e.state = running_state(e.end, high_watermark);
            }
        }
    }

    /// Every partition seen, in order.
    pub fn partitions(&self) -> Vec<(Job, PartStats)> {
        let parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
        parts.iter().map(|(j, s)| (j.clone(), s.clone())).collect()
    }

    /// Lag (source high watermark - destination end) summed per topic.
    fn lag_by_topic(&self) -> BTreeMap<String, i64> {
        let mut out = BTreeMap::new();
        for (job, s) in self.parts.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            *out.entry(job.source_topic.clone()).or_insert(0) += (s.high_watermark - s.end).max(0);
        }
        out
    }
}

/// How a run ended; the binary maps it to an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Clean stop (signal, or stop-at-end reached everywhere).
    Clean,
    /// At least one partition stopped with an error; others may have run on.
    PartitionsFailed,
    /// Another instance took over the fencing lock.
    Fenced,
}

/// Errors before any data moves: the operator must fix something.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    /// The process may not open as many files as the configured connections need.
    #[error("{0}")]
    Limits(String),
    /// The metrics endpoint cannot listen where configured.
    #[error("{0}")]
    Metrics(String),
}

pub struct RunOptions {
    pub stop_at_end: bool,
}

/// Runs the mirror until a signal or, with `stop_at_end`, until it caught up.
pub async fn run(config: Config, opts: RunOptions) -> Result<Outcome, StartError> {
    let started = std::time::Instant::now();
    let filter = config.filter("config")?;
    let (source_security, dest_security) = config.securities()?;
    for (side, c, sec) in [
        ("source", &config.source, &source_security),
        ("destination", &config.destination, &dest_security),
    ] {
        tracing::info!(cluster = %c.name, security = %sec.describe(), "{side} connections");
    }
    let t = &config.transport;
    let sock = SocketOptions {
        retry_deadline: Duration::from_secs(config.mirror.retry_secs),
        recv_buffer: t.recv_buffer_bytes,
        ..SocketOptions::default()
    };
    // The cap is on what crosses the WAN: the source side only.
    let limit = t.max_mbit.map(|m| Arc::new(Limit::new(m)));
    if let Some(m) = t.max_mbit {
        tracing::info!(cluster = %config.source.name, max_mbit = m, "bandwidth cap on reads from the source");
    }
    let source = Cluster::with_pool(
        &config.source.name,
        &config.source.bootstrap,
        SocketOptions {
            security: source_security,
            limit,
            ..sock.clone()
        },
        PoolConfig {
            min: t.pool_min,
            max: t.pool_max,
            initial: t.pool_initial,
        },
        Duration::from_secs(config.mirror.progress_interval_secs),
    );
    let dest = Cluster::new(
        &config.destination.name,
        &config.destination.bootstrap,
        SocketOptions {
            congestion: t.destination_congestion.clone(),
            security: dest_security,
            ..sock
        },
    );
    dest.set_produce_lanes(t.produce_connections);
    // Both clusters must answer before anything else happens. The source's listing is
    // kept for the first plan: every round trip to it is one at start-up.
    let listing = source
        .refresh(None)
        .await
        .map_err(|e| MirrorError::kafka(source.name(), e))?;
    dest.refresh(None)
        .await
        .map_err(|e| MirrorError::kafka(dest.name(), e))?;
    // Pools open to the brokers that lead mirrored partitions (a failover may add
    // some later); writes go to every destination broker.
    let leaders: std::collections::HashSet<i32> = listing
        .iter()
        .filter(|t| filter.matches(&t.name))
        .flat_map(|t| t.partitions.iter().map(|p| p.leader))
        .collect();
    let need = limits::fds_needed(
        leaders.len().max(1),
        dest.broker_count().await,
        t.pool_max,
        t.produce_connections,
    );
    if let Err((soft, hard)) = limits::ensure_fds(need) {
        return Err(StartError::Limits(format!(
            "the open-file limit (ulimit -n) is {soft} (hard {hard}), but the configured connections may need {need} file descriptors: raise it, or lower transport.pool_max ({}) or transport.produce_connections ({})",
            t.pool_max, t.produce_connections
        )));
    }
    // The metrics port is taken before anything is written: a port in use is one
    // clear error at start, not a silent endpoint missing later.
    let metrics_listener = match &config.metrics {
        Some(m) => Some(metrics::bind(&m.listen).await.map_err(|e| {
            StartError::Metrics(format!("metrics.listen {}: cannot listen: {e}", m.listen))
        })?),
        None => None,
    };
    let map = Arc::new(OffsetMap::new(
        dest.clone(),
        &config.mirror.offset_map_topic,
    ));
    let (shutdown_tx, shutdown) = watch::channel(false);
    let budget_kib = (config.mirror.in_flight_bytes / 1024).min(Semaphore::MAX_PERMITS);
    let mut shared = Shared {
        filter,
        source,
        dest,
        map,
        producer: (-1, -1),
        budget: Arc::new(Semaphore::new(budget_kib)),
        shutdown,
        stop_at_end: opts.stop_at_end,
        stats: Stats::default(),
        catch_ups: AtomicUsize::new(0),
        config,
    };

    let plans = topics::plan(&shared, Some(listing)).await?;
    for plan in &plans {
        topics::check_count(plan)?;
    }
    if plans.is_empty() {
        tracing::warn!(patterns = ?shared.config.mirror.topics, "no source topic matches; waiting for one to appear");
    }
    // Fencing: bumping the epoch of our transactional id makes every earlier instance's
    // writes fail with PRODUCER_FENCED.
    let fence = shared.config.fence_id();
    let dst = shared.dest.clone();
    shared.producer = dst
        .retry("init producer id", || dst.init_producer_id(&fence))
        .await
        .map_err(|e| MirrorError::kafka(dst.name(), e))?;
    tracing::info!(fence_id = %fence, producer_id = shared.producer.0, epoch = shared.producer.1, "holding the fencing lock");
    shared
        .map
        .ensure(shared.config.mirror.replication_factor)
        .await?;

    let mut known: BTreeMap<String, (String, usize)> = BTreeMap::new();
    let mut jobs = Vec::new();
    for plan in &plans {
        jobs.extend(topics::prepare(&shared, plan).await?);
        known.insert(
            plan.source.name.clone(),
            (plan.dest_topic.clone(), plan.source.partitions.len()),
        );
    }
    let shared = Arc::new(shared);
    // Unbounded in type only: it carries one job per partition, ever (discovery sends
    // new partitions once).
    let (job_tx, mut job_rx) = mpsc::unbounded_channel::<Job>();
    for j in jobs {
        let _ = job_tx.send(j);
    }
    let mut background = JoinSet::new();
    background.spawn(progress_loop(shared.clone()));
    if let Some(l) = metrics_listener {
        tracing::info!(addr = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), "serving metrics at /metrics");
        background.spawn(metrics::serve(l, shared.clone()));
    }
    if !opts.stop_at_end {
        background.spawn(discovery_loop(shared.clone(), known, job_tx.clone()));
    }
    drop(job_tx);

    let mut set: JoinSet<(Job, Result<(), MirrorError>)> = JoinSet::new();
    let mut failed = false;
    let mut fenced = false;
    let mut signals = Signals::new();
    let mut receiving = true;
    let fence_watch = fence::fenced(
        shared.dest.clone(),
        fence.clone(),
        shared.producer,
        fence::CHECK_EVERY,
    );
    tokio::pin!(fence_watch);
    loop {
        tokio::select! {
            detail = &mut fence_watch => {
                tracing::error!(error = %MirrorError::Fenced { detail }, "stopping");
                fenced = true;
                break;
            }
            sig = signals.next() => {
                tracing::info!(signal = sig, "shutting down: finishing in-flight produces");
                break;
            }
            j = job_rx.recv(), if receiving => match j {
                Some(job) => {
                    let s = shared.clone();
                    set.spawn(async move { let r = supervise(s, job.clone()).await; (job, r) });
                }
                None => {
                    receiving = false;
                    if set.is_empty() && opts.stop_at_end {
                        break;
                    }
                }
            },
            Some(done) = set.join_next() => {
                if let Ok((job, Err(e))) = done {
                    if matches!(e, MirrorError::Fenced { .. }) {
                        tracing::error!(error = %e, "stopping");
                        fenced = true;
                        break;
                    }
                    tracing::error!(topic = %job.source_topic, partition = job.partition, error = %e, "partition stopped");
                    failed = true;
                }
                if set.is_empty() && !receiving && opts.stop_at_end {
                    break;
                }
            }
        }
    }
    let _ = shutdown_tx.send(true);
    while let Some(done) = set.join_next().await {
        if let Ok((job, Err(e))) = done {
            if matches!(e, MirrorError::Fenced { .. }) {
                fenced = true;
            } else {
                tracing::error!(topic = %job.source_topic, partition = job.partition, error = %e, "partition stopped");
                failed = true;
            }
        }
    }
    background.abort_all();
    // The whole run per topic in the log (a terminal's lines already show it), with
    // the latency of the last 30-60 s (the periodic lines took the rest).
    if !progress::Shown::on_terminal() {
        let latency = shared.stats.latency.window(offset_map::now_ms());
        progress::log(&progress::Progress::default().lines(
            &shared.stats.partitions(),
            &latency,
            started.elapsed(),
        ));
    }
    let total = shared.stats.bytes.load(Ordering::Relaxed);
    log_total(&shared, total, started.elapsed());
    Ok(if fenced {
        Outcome::Fenced
    } else if failed {
        Outcome::PartitionsFailed
    } else {
        Outcome::Clean
    })
}

/// Restarts a partition after transient failures (a cluster unreachable for longer than
/// the retry helper's deadline, a TLS or login failure of a new connection, or another
/// instance of our producer lineage that wrote first and is about to be fenced); stops
/// it for good on anything else.
async fn supervise(shared: Arc<Shared>, job: Job) -> Result<(), MirrorError> {
    loop {
        let why = match partition::run(shared.clone(), job.clone()).await {
            Err(MirrorError::Kafka { cluster, source })
                if source.is_retriable() || source.is_security() =>
            {
                let kind = if source.is_security() {
                    "security"
                } else {
                    "kafka"
                };
                shared.stats.error(&job, kind, false);
                format!("{cluster}: {source}")
            }
            Err(e @ MirrorError::Raced { .. }) => {
                shared.stats.error(&job, e.kind(), false);
                e.to_string()
            }
            Err(e) => {
                shared.stats.error(&job, e.kind(), true);
                return Err(e);
            }
            Ok(()) => return Ok(()),
        };
        tracing::warn!(topic = %job.source_topic, partition = job.partition, error = %why, "partition interrupted; restarting in 5 s");
        let mut sd = shared.shutdown.clone();
        tokio::select! {
            _ = sd.changed() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

async fn discovery_loop(
    shared: Arc<Shared>,
    mut known: BTreeMap<String, (String, usize)>,
    jobs: mpsc::UnboundedSender<Job>,
) {
    let every = Duration::from_secs(shared.config.mirror.metadata_refresh_secs);
    loop {
        tokio::time::sleep(every).await;
        let plans = match topics::plan(&shared, None).await {
            Ok(p) => p,
            Err(MirrorError::Topic { topic, detail }) => {
                tracing::error!(%topic, %detail, "topic refused");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "topic discovery failed; will retry");
                continue;
            }
        };
        for plan in plans {
            let n = plan.source.partitions.len();
            let new_jobs = match known.get(&plan.source.name) {
                None => match topics::check_count(&plan) {
                    Err(e) => Err(e),
                    Ok(()) => {
                        tracing::info!(topic = %plan.source.name, partitions = n, "new source topic");
                        topics::prepare(&shared, &plan).await
                    }
                },
                Some((_, old)) if *old < n => {
                    tracing::info!(topic = %plan.source.name, from = old, to = n, "source topic gained partitions");
                    match topics::grow(&shared, &plan.dest_topic, n).await {
                        Ok(()) => topics::prepare(&shared, &plan).await.map(|js| {
                            js.into_iter()
                                .filter(|j| j.partition as usize >= *old)
                                .collect()
                        }),
                        Err(e) => Err(e),
                    }
                }
                Some(_) => continue,
            };
            match new_jobs {
                Ok(js) => {
                    known.insert(plan.source.name.clone(), (plan.dest_topic.clone(), n));
                    for j in js {
                        let _ = jobs.send(j);
                    }
                }
                Err(e) => {
                    tracing::error!(topic = %plan.source.name, error = %e, "cannot prepare topic")
                }
            }
        }
    }
}

/// Progress per topic: every `progress_interval_secs` as log lines, or every second
/// in place on a terminal (with the latency of the last 30-60 s there).
async fn progress_loop(shared: Arc<Shared>) {
    let terminal = progress::Shown::on_terminal();
    let every = if terminal {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(shared.config.mirror.progress_interval_secs)
    };
    let mut state = progress::Progress::default();
    let mut shown = progress::Shown::default();
    let mut last = 0u64;
    let mut since_total = Duration::ZERO;
    loop {
        tokio::time::sleep(every).await;
        let latency = if terminal {
            shared.stats.latency.window(offset_map::now_ms())
        } else {
            shared.stats.latency.take()
        };
        shown.show(&state.lines(&shared.stats.partitions(), &latency, every));
        since_total += every;
        let interval = Duration::from_secs(shared.config.mirror.progress_interval_secs);
        if since_total >= interval {
            let total = shared.stats.bytes.load(Ordering::Relaxed);
            log_total(&shared, total - last, since_total);
            last = total;
            since_total = Duration::ZERO;
        }
    }
}

fn log_total(shared: &Shared, bytes: u64, over: Duration) {
    let rate = bytes as f64 / over.as_secs_f64();
    tracing::info!(
        bytes_per_sec = rate as u64,
        total_bytes = shared.stats.bytes.load(Ordering::Relaxed),
        lag = shared.stats.lag_by_topic().values().sum::<i64>(),
        "progress, all topics"
    );
}

/// SIGINT and SIGTERM as one stream.
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        Signals {
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok(),
        }
    }
    async fn next(&mut self) -> &'static str {
        let term = async {
            match self.term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term => "SIGTERM",
        }
    }
}
