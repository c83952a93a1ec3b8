//! The partition tasks of a run, started and stopped one by one (a group member gains
//! and loses partitions at every rebalance), each under a supervisor that takes the
//! partition's fencing lock and restarts it after transient failures.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::error::MirrorError;
use super::partition::{self, Grant, Job};
use super::{Fencing, Shared};

/// Running partition tasks, each with its own stop switch.
#[derive(Default)]
pub struct Running {
    set: JoinSet<(Job, Result<(), MirrorError>)>,
    stops: BTreeMap<Job, watch::Sender<bool>>,
    /// Partitions stopped because another member owns them now: their figures leave
    /// the metrics when their task ends.
    released: BTreeSet<Job>,
    /// Partitions given back while their task was stopping: started again when it
    /// has ended.
    again: BTreeSet<Job>,
}

impl Running {
    /// Starts `job` unless it runs already; one told to stop starts again once it
    /// has.
    pub fn start(&mut self, shared: &Arc<Shared>, job: Job) {
        self.released.remove(&job);
        if let Some(tx) = self.stops.get(&job) {
            if *tx.borrow() {
                self.again.insert(job);
            }
            return;
        }
        let (tx, rx) = watch::channel(false);
        self.stops.insert(job.clone(), tx);
        let s = shared.clone();
        self.set.spawn(async move {
            let r = supervise(s, job.clone(), rx).await;
            (job, r)
        });
    }

    /// Tells `job` to stop after the produce in flight; `released`: it now belongs to
    /// another member.
    pub fn stop(&mut self, job: &Job, released: bool) {
        if let Some(tx) = self.stops.get(job) {
            let _ = tx.send(true);
            if released {
                self.released.insert(job.clone());
            }
            self.again.remove(job);
        }
    }

    pub fn stop_all(&mut self, released: bool) {
        let jobs: Vec<Job> = self.stops.keys().cloned().collect();
        for j in jobs {
            self.stop(&j, released);
        }
    }

    /// The partitions with a task, stopping ones included.
    pub fn jobs(&self) -> BTreeSet<Job> {
        self.stops.keys().cloned().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// The next task to end (`None` when none runs). A panicked task is reported as
    /// stopped by the runtime's message and counted as no result.
    pub async fn next_done(
        &mut self,
        shared: &Arc<Shared>,
    ) -> Option<(Job, Result<(), MirrorError>)> {
        loop {
            match self.set.join_next().await? {
                Ok((job, r)) => {
                    self.stops.remove(&job);
                    if self.released.remove(&job) {
                        shared.stats.forget(&job);
                        // Its last write refused because the new owner took the lock
                        // first: the handover, not an error.
                        if matches!(r, Err(MirrorError::Fenced { .. })) {
                            return Some((job, Ok(())));
                        }
                    }
                    if self.again.remove(&job) {
                        // Given back while it stopped: it runs again, whatever ended it.
                        self.start(shared, job.clone());
                        return Some((job, Ok(())));
                    }
                    return Some((job, r));
                }
                Err(e) => tracing::error!(error = %e, "a partition task failed"),
            }
        }
    }
}

/// The producer id and epoch `job` is written under: the instance's lock, or, in a
/// group, the partition's own, taken now (which fences its previous owner).
async fn lock(shared: &Shared, job: &Job) -> Result<(i64, i16), MirrorError> {
    match &shared.fencing {
        Fencing::Instance(p) => Ok(*p),
        Fencing::PerPartition(prefix) => {
            let id = format!("{prefix}.{}.{}", job.dest_topic, job.partition);
            let dst = &shared.dest;
            let p = dst
                .retry("init producer id", || dst.init_producer_id(&id))
                .await
                .map_err(|e| MirrorError::kafka(dst.name(), e))?;
            tracing::info!(topic = %job.source_topic, partition = job.partition, fence_id = %id, producer_id = p.0, epoch = p.1, "holding the partition's fencing lock");
            Ok(p)
        }
    }
}

/// Restarts a partition after transient failures (a cluster unreachable for longer than
/// the retry helper's deadline, a TLS or login failure of a new connection, or another
/// instance of our producer lineage that wrote first and is about to be fenced); stops
/// it for good on anything else. In a group, a partition fenced by another member ends
/// with `Fenced` at once: that member owns it now.
async fn supervise(
    shared: Arc<Shared>,
    job: Job,
    stop: watch::Receiver<bool>,
) -> Result<(), MirrorError> {
    let group = matches!(shared.fencing, Fencing::PerPartition(_));
    loop {
        // A partition given up meanwhile must not take its lock again: that would
        // fence the member that owns it now.
        if *stop.borrow() {
            return Ok(());
        }
        let mut sd = stop.clone();
        let locked = tokio::select! {
            biased;
            _ = sd.wait_for(|s| *s) => return Ok(()),
            l = lock(&shared, &job) => l,
        };
        let run = match locked {
            Ok(producer) => {
                let grant = Grant {
                    producer,
                    stop: stop.clone(),
                };
                partition::run(shared.clone(), job.clone(), grant).await
            }
            Err(e) => Err(e),
        };
        let why = match run {
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
            // The run loop drops the partition (its figures too) and goes on.
            Err(e @ MirrorError::Fenced { .. }) if group => {
                tracing::warn!(topic = %job.source_topic, partition = job.partition, error = %e, "the partition's fencing lock was taken by another member: dropping the partition, its write refused");
                return Err(e);
            }
            Err(e) => {
                shared.stats.error(&job, e.kind(), true);
                return Err(e);
            }
            Ok(()) => return Ok(()),
        };
        tracing::warn!(topic = %job.source_topic, partition = job.partition, error = %why, "partition interrupted; restarting in 5 s");
        tokio::select! {
            _ = sd.wait_for(|s| *s) => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}
