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
pub mod reconcile;
mod running;
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
use crate::groups::member;
use crate::kafka::client::Cluster;
use crate::kafka::connection::SocketOptions;
use crate::kafka::limit::Limit;
use crate::source::Source;
use crate::transport::sizer::PoolConfig;
use error::MirrorError;
use offset_map::OffsetMap;
use partition::Job;

/// State shared by every partition task.
pub struct Shared {
    pub config: Config,
    pub filter: TopicFilter,
    pub source: Source,
    pub dest: Arc<Cluster>,
    /// The destination as a reader of batches (the resume check, reconciliation):
    /// one, so that its catch-up pool is shared, not one per partition.
    pub dest_reader: Source,
    pub map: Arc<OffsetMap>,
    /// How partitions are fenced against other writers.
    pub fencing: Fencing,
    /// In-flight byte budget, in KiB permits.
    pub budget: Arc<Semaphore>,
    pub shutdown: watch::Receiver<bool>,
    pub stop_at_end: bool,
    pub stats: Stats,
    /// Partitions catching up in pieces right now; they share the memory budget.
    pub catch_ups: AtomicUsize,
}

/// How partitions are fenced against other writers (docs/offsets.md, "Fencing").
#[derive(Debug, Clone)]
pub enum Fencing {
    /// One lock for the whole instance (`mirror.fence_id`): its producer id and epoch.
    Instance((i64, i16)),
    /// A lock per partition, `{prefix}.{topic}.{partition}`, taken when the partition
    /// comes to this member: mirror workers in a group (`[group]`).
    PerPartition(String),
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
    /// The consumer-group offset sync's outcomes, by group.
    pub groups: Arc<crate::groups::sync::Tally>,
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
    /// The copy up to here was checked against the source by continuous
    /// reconciliation (0: not yet, or not on).
    pub verified: i64,
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

    /// Continuous reconciliation found the copy right up to `to`.
    pub fn verified(&self, job: &Job, to: i64) {
        if let Some(p) = self
            .parts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(job)
        {
            p.verified = p.verified.max(to);
        }
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

    /// Each partition's weight for the group's assignment (`groups/assign.rs`): its
    /// backlog in bytes (lag times bytes per offset so far) plus a minute of what it
    /// wrote over the last `over`; `written` keeps the byte counts between calls.
    pub fn weights(&self, written: &mut BTreeMap<Job, u64>, over: Duration) -> BTreeMap<Job, u64> {
        let parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = BTreeMap::new();
        for (job, s) in parts.iter() {
            let per_offset = if s.records > 0 {
                s.bytes as f64 / s.records as f64
            } else {
                0.0
            };
            let backlog = ((s.high_watermark - s.end).max(0) as f64 * per_offset) as u64;
            let before = written.insert(job.clone(), s.bytes).unwrap_or(s.bytes);
            let minute =
                (s.bytes.saturating_sub(before) as f64 * 60.0 / over.as_secs_f64().max(1.0)) as u64;
            out.insert(job.clone(), backlog.saturating_add(minute));
        }
        out
    }

    /// Drops a partition's figures: another member mirrors it now.
    pub fn forget(&self, job: &Job) {
        self.parts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(job);
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
    /// The mirror group (`[group]`) cannot be joined.
    #[error(transparent)]
    Group(#[from] crate::groups::error::GroupError),
}

pub struct RunOptions {
    pub stop_at_end: bool,
}

/// Runs the mirror until a signal or, with `stop_at_end`, until it caught up.
pub async fn run(config: Config, opts: RunOptions) -> Result<Outcome, StartError> {
    let started = std::time::Instant::now();
    if opts.stop_at_end && config.group.is_some() {
        return Err(StartError::Config(crate::config::ConfigError::Invalid {
            path: config.path.clone(),
            field: "group",
            message: "--stop-at-end cannot be used with [group]: a member's partitions change with the group; run one process without [group] to copy to the end".into(),
        }));
    }
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
    let (mut recv_buffer, mut initial) = (sock.recv_buffer, t.pool_initial);
    if let Some(m) = t.max_mbit {
        let (each, n) = crate::kafka::limit::capped_connections(m, t.pool_initial, t.pool_min);
        // A receive buffer set by the operator wins.
        recv_buffer = recv_buffer.or(Some(each));
        initial = n;
        tracing::info!(cluster = %config.source.name, max_mbit = m, recv_buffer_bytes = recv_buffer.unwrap_or(0), pool_initial = initial, "bandwidth cap on reads from the source");
    }
    let source = crate::source::from_config(
        &config.source,
        &config.path,
        SocketOptions {
            security: source_security,
            limit,
            recv_buffer,
            ..sock.clone()
        },
        PoolConfig {
            min: t.pool_min,
            max: t.pool_max,
            initial,
        },
        Duration::from_secs(config.mirror.progress_interval_secs),
    )?;
    if let Some(p) = &config.source.peer {
        tracing::info!(cluster = %config.source.name, peer = %p, max_connections = config.source.peer_connections, congestion = ?config.source.peer_congestion, "source read through a peer over QUIC");
    }
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
        .topics()
        .await
        .map_err(|e| MirrorError::kafka(source.name(), e))?;
    source.warm();
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
    let group_settings = config.group.as_ref().map(|g| member::Settings {
        id: g.id.clone(),
        session: Duration::from_millis(g.session_timeout_ms),
        rebalance: Duration::from_millis(g.session_timeout_ms),
    });
    let mut shared = Shared {
        filter,
        source,
        dest_reader: Source::from(dest.clone()),
        dest,
        map,
        fencing: Fencing::PerPartition(config.fence_id()),
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
    let roster = Arc::new(std::sync::Mutex::new(member::Roster::default()));
    // A member mirrors what the group assigns; an instance alone, every partition.
    let (events_tx, mut events) = mpsc::unbounded_channel::<member::Event>();
    let rejoin = Arc::new(tokio::sync::Notify::new());
    let (leave_tx, leave_rx) = watch::channel(false);
    let leading = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut membership = None;
    // A group member joins before anything is written: a group id taken by another
    // client, or a coordinator out of reach, is an error at start. Its heartbeats
    // start at once (preparing many topics can outlast a session).
    if let Some(settings) = group_settings {
        roster.lock().unwrap_or_else(|e| e.into_inner()).topics = plans
            .iter()
            .map(|p| known(&p.source.name, &p.dest_topic, p.source.partitions.len()))
            .collect();
        let mut m = member::Member::new(
            shared.dest.clone(),
            settings.clone(),
            roster.clone(),
            leading.clone(),
        );
        // A JoinGroup may be held for a rebalance timeout (the session) while the
        // others rejoin: the coordinator is unreachable only past that and more.
        let first = m
            .join(settings.session * 2 + Duration::from_secs(5))
            .await?;
        tracing::info!(group = %settings.id, partitions = first.len(), "joined the mirror group");
        let _ = events_tx.send(member::Event::Assigned {
            generation: m.generation(),
            jobs: first,
        });
        membership = Some(tokio::spawn(m.run(
            events_tx.clone(),
            rejoin.clone(),
            leave_rx,
        )));
        // An instance running without [group] under the same fence_id stops: the
        // members write under locks of their own, which would not fence it. (After
        // the heartbeats started: this may be retried for a while.)
        let fence = shared.config.fence_id();
        let dst = shared.dest.clone();
        dst.retry("init producer id", || dst.init_producer_id(&fence))
            .await
            .map_err(|e| MirrorError::kafka(dst.name(), e))?;
    } else {
        // Fencing: bumping the epoch of our transactional id makes every earlier
        // instance's writes fail with PRODUCER_FENCED.
        let fence = shared.config.fence_id();
        let dst = shared.dest.clone();
        let producer = dst
            .retry("init producer id", || dst.init_producer_id(&fence))
            .await
            .map_err(|e| MirrorError::kafka(dst.name(), e))?;
        tracing::info!(fence_id = %fence, producer_id = producer.0, epoch = producer.1, "holding the fencing lock");
        shared.fencing = Fencing::Instance(producer);
    }
    shared
        .map
        .ensure(shared.config.mirror.replication_factor)
        .await?;

    let mut known_topics: BTreeMap<String, (String, usize)> = BTreeMap::new();
    let mut jobs = Vec::new();
    for plan in &plans {
        jobs.extend(topics::prepare(&shared, plan).await?);
        known_topics.insert(
            plan.source.name.clone(),
            (plan.dest_topic.clone(), plan.source.partitions.len()),
        );
    }
    let shared = Arc::new(shared);
    // Unbounded in type only: it carries one job per partition, ever (discovery sends
    // new partitions once).
    let (job_tx, mut job_rx) = mpsc::unbounded_channel::<Job>();
    let mut background = JoinSet::new();
    background.spawn(progress_loop(shared.clone()));
    if let Some(l) = metrics_listener {
        tracing::info!(addr = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), "serving metrics at /metrics");
        background.spawn(metrics::serve(l, shared.clone()));
    }
    if !opts.stop_at_end {
        background.spawn(discovery_loop(shared.clone(), known_topics, job_tx.clone()));
    }
    // In stop-at-end mode the groups are synced once, after the copy caught up.
    // Config validation refuses [groups] with a peer source: group offsets are read
    // from the source's brokers.
    let syncer = match shared.source.brokers() {
        Some(b) => crate::groups::sync::Syncer::from_config(
            &shared.config,
            b.clone(),
            shared.dest.clone(),
            shared.stats.groups.clone(),
        )?,
        None => None,
    };
    let syncer = match syncer {
        Some(mut s) if !opts.stop_at_end => {
            // In a group, the leader syncs: one writer, so never backwards.
            if membership.is_some() {
                s.gate = Some(leading.clone());
            }
            let every = Duration::from_secs(
                shared
                    .config
                    .groups
                    .as_ref()
                    .map_or(10, |g| g.interval_secs),
            );
            tracing::info!(patterns = ?shared.config.groups.as_ref().map(|g| &g.sync), every_secs = every.as_secs(), "syncing consumer-group offsets");
            background.spawn(s.run(every, shared.shutdown.clone()));
            None
        }
        other => other,
    };

    let mut running = running::Running::default();
    if membership.is_none() {
        for j in jobs {
            let _ = job_tx.send(j);
        }
    }
    drop(job_tx);
    drop(events_tx);

    let mut failed = false;
    let mut fenced = false;
    let mut signals = Signals::new();
    let mut receiving = true;
    let fence_watch = async {
        match shared.fencing.clone() {
            Fencing::Instance(producer) => {
                fence::fenced(
                    shared.dest.clone(),
                    shared.config.fence_id(),
                    producer,
                    fence::CHECK_EVERY,
                )
                .await
            }
            // In a group each partition's lock fences its writes itself.
            Fencing::PerPartition(_) => std::future::pending().await,
        }
    };
    tokio::pin!(fence_watch);
    let in_group = membership.is_some();
    let mut weigh = tokio::time::interval(WEIGH_EVERY);
    let mut written = BTreeMap::new();
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
                Some(job) if in_group => {
                    // Discovery found a topic or partitions: the group assigns them.
                    if grown(&roster, &job) {
                        rejoin.notify_one();
                    }
                }
                Some(job) => running.start(&shared, job),
                None => {
                    receiving = false;
                    if running.is_empty() && opts.stop_at_end {
                        break;
                    }
                }
            },
            Some(ev) = events.recv() => match latest(ev, &mut events) {
                member::Event::Assigned { jobs, .. } => {
                    for j in running.jobs().difference(&jobs) {
                        running.stop(j, true);
                    }
                    for j in jobs {
                        running.start(&shared, j);
                    }
                }
                member::Event::Lost { .. } => running.stop_all(true),
            },
            _ = weigh.tick(), if in_group => {
                let w = shared.stats.weights(&mut written, WEIGH_EVERY);
                roster.lock().unwrap_or_else(|e| e.into_inner()).weights = w;
            }
            Some((job, r)) = running.next_done(&shared) => {
                match r {
                    Ok(()) => {}
                    // Its lock was taken: the group's assignment says by whom (a
                    // zombie's lock is taken back when it restarts here).
                    Err(MirrorError::Fenced { .. }) if in_group => {
                        shared.stats.forget(&job);
                        rejoin.notify_one();
                    }
                    Err(e @ MirrorError::Fenced { .. }) => {
                        tracing::error!(error = %e, "stopping");
                        fenced = true;
                        break;
                    }
                    Err(e) => {
                        tracing::error!(topic = %job.source_topic, partition = job.partition, error = %e, "partition stopped");
                        failed = true;
                    }
                }
                if running.is_empty() && !receiving && opts.stop_at_end {
                    break;
                }
            }
            done = ended(&mut membership) => {
                membership = None;
                if let Ok(Err(e)) = done {
                    tracing::error!(error = %e, "left the mirror group");
                    failed = true;
                    break;
                }
            }
        }
    }
    running.stop_all(false);
    let _ = shutdown_tx.send(true);
    while let Some((job, r)) = running.next_done(&shared).await {
        if let Err(e) = r {
            if matches!(e, MirrorError::Fenced { .. }) && in_group {
                shared.stats.forget(&job);
            } else if matches!(e, MirrorError::Fenced { .. }) {
                fenced = true;
            } else {
                tracing::error!(topic = %job.source_topic, partition = job.partition, error = %e, "partition stopped");
                failed = true;
            }
        }
    }
    // The group hears of our leaving once our writes are done.
    let _ = leave_tx.send(true);
    if let Some(h) = membership {
        let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
    }
    background.abort_all();
    if let Some(s) = syncer.filter(|_| !fenced && !failed) {
        s.round().await;
    }
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

/// The newest of the member's events waiting: each says all there is (what to
/// mirror, or nothing), so older ones would only start partitions that a newer
/// generation gave to others.
fn latest(
    mut ev: member::Event,
    events: &mut mpsc::UnboundedReceiver<member::Event>,
) -> member::Event {
    while let Ok(newer) = events.try_recv() {
        ev = newer;
    }
    ev
}

/// How often a group member updates the weights it reports at the next rebalance.
const WEIGH_EVERY: Duration = Duration::from_secs(5);

/// Waits for the membership task to end; never without one.
async fn ended<T>(h: &mut Option<tokio::task::JoinHandle<T>>) -> Result<T, tokio::task::JoinError> {
    match h {
        Some(h) => h.await,
        None => std::future::pending().await,
    }
}

/// Adds a partition found by discovery to what this member reports; whether it is
/// new to the group (a rebalance assigns it).
fn grown(roster: &std::sync::Mutex<member::Roster>, job: &Job) -> bool {
    let mut r = roster.lock().unwrap_or_else(|e| e.into_inner());
    let n = job.partition + 1;
    if r.topics
        .iter()
        .any(|t| t.dest_topic == job.dest_topic && t.partitions >= n)
    {
        return false;
    }
    r.topics.retain(|t| t.dest_topic != job.dest_topic);
    r.topics
        .insert(known(&job.source_topic, &job.dest_topic, n as usize));
    true
}

/// A topic as a group member reports it.
fn known(
    source_topic: &str,
    dest_topic: &str,
    partitions: usize,
) -> crate::groups::protocol::Known {
    crate::groups::protocol::Known {
        source_topic: source_topic.to_string(),
        dest_topic: dest_topic.to_string(),
        partitions: partitions as i32,
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
