//! The consumer-group offset sync: every `interval_secs`, the committed offsets of the
//! source's groups named in `[groups] sync` are committed in the destination under the
//! same group id, for the mirrored topics under their destination names. What is
//! committed is decided by `plan.rs`; this is its driver, and the tally that the log,
//! the metrics endpoint and the status command read.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::ResponseError;
use tokio::sync::watch;

use super::plan::{plan, Committed, DestGroup, Inputs, Plan};
use crate::config::{Config, ConfigError, GroupFilter, TopicFilter};
use crate::kafka::client::Cluster;
use crate::kafka::error::KafkaError;
use crate::kafka::groups::Listed;

/// Protocol types of the groups an application's consumers form: "consumer" for group
/// management, empty for a client that only commits. Other types (Connect workers,
/// another mirror's workers) are never synced, whatever their name.
pub const APPLICATION_TYPES: [&str; 2] = ["consumer", ""];

/// What the sync needs from the mirror.
pub struct Syncer {
    pub source: Arc<Cluster>,
    pub dest: Arc<Cluster>,
    pub groups: GroupFilter,
    pub topics: TopicFilter,
    /// The destination name of a source topic (`mirror.rename`).
    pub rename: Box<dyn Fn(&str) -> String + Send + Sync>,
    pub tally: Arc<Tally>,
    /// When set, rounds run only while it is true (in a mirror group: on the leader).
    pub gate: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// The last outcome of one group's sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Committed `committed` offsets (`clamped` of them at the destination end);
    /// `unchanged` were in place already.
    Synced {
        committed: usize,
        clamped: usize,
        unchanged: usize,
        pending: usize,
    },
    /// Left alone, and why.
    Skipped(String),
    /// A cluster failed; the next round tries again.
    Failed(String),
}

impl Outcome {
    /// The `result` label of the metrics: synced, skipped or failed.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Synced { .. } => "synced",
            Outcome::Skipped(_) => "skipped",
            Outcome::Failed(_) => "failed",
        }
    }
}

/// Per group: the last outcome and counts over the process's life.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupTally {
    pub last: Option<Outcome>,
    /// Rounds by outcome name.
    pub rounds: BTreeMap<&'static str, u64>,
    /// Offsets committed, and those of them clamped to the destination end.
    pub committed: u64,
    pub clamped: u64,
}

/// Every synced group's tally.
#[derive(Debug, Default)]
pub struct Tally {
    groups: Mutex<BTreeMap<String, GroupTally>>,
}

impl Tally {
    fn record(&self, group: &str, o: &Outcome) {
        let mut g = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        let t = g.entry(group.to_string()).or_default();
        *t.rounds.entry(o.name()).or_default() += 1;
        if let Outcome::Synced {
            committed, clamped, ..
        } = o
        {
            t.committed += *committed as u64;
            t.clamped += *clamped as u64;
        }
        t.last = Some(o.clone());
    }

    pub fn snapshot(&self) -> BTreeMap<String, GroupTally> {
        self.groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A cluster's error, named by the cluster.
fn on(cluster: &Cluster, e: KafkaError) -> String {
    format!("{}: {e}", cluster.name())
}

impl Syncer {
    /// The sync `config` asks for between `source` and `dest`; `None` without
    /// `[groups]`.
    pub fn from_config(
        config: &Config,
        source: Arc<Cluster>,
        dest: Arc<Cluster>,
        tally: Arc<Tally>,
    ) -> Result<Option<Syncer>, ConfigError> {
        let Some(groups) = config.group_filter()? else {
            return Ok(None);
        };
        let topics = config.filter(&config.path)?;
        let config = config.clone();
        Ok(Some(Syncer {
            source,
            dest,
            groups,
            topics,
            rename: Box::new(move |t| config.dest_topic(t)),
            tally,
            gate: None,
        }))
    }

    /// Rounds every `every` until `shutdown` turns true.
    pub async fn run(self, every: Duration, mut shutdown: watch::Receiver<bool>) {
        loop {
            if self
                .gate
                .as_ref()
                .is_none_or(|g| g.load(std::sync::atomic::Ordering::Relaxed))
            {
                self.round().await;
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    /// One round over every matching source group; outcomes go to the tally and the log.
    pub async fn round(&self) {
        let (listed, topics) = match tokio::try_join!(self.named_groups(), self.mirrored_topics()) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "group offset sync: cannot list the source's groups or topics; will retry");
                return;
            }
        };
        for Listed { id, protocol_type } in listed {
            let outcome = if APPLICATION_TYPES.contains(&protocol_type.as_str()) {
                self.sync_group(&id, &topics).await
            } else {
                Outcome::Skipped(format!(
                    "its protocol type in the source is {protocol_type:?}, not a consumer group"
                ))
            };
            log(
                &id,
                &outcome,
                self.tally.snapshot().get(&id).and_then(|t| t.last.as_ref()),
            );
            self.tally.record(&id, &outcome);
        }
    }

    /// The source's groups that `[groups] sync` names, with their protocol types.
    pub async fn named_groups(&self) -> Result<Vec<Listed>, String> {
        let listed = self
            .source
            .list_groups()
            .await
            .map_err(|e| on(&self.source, e))?;
        Ok(listed
            .into_iter()
            .filter(|g| self.groups.matches(&g.id))
            .collect())
    }

    /// The mirrored source topics and their partitions, with the destination names:
    /// what a round asks both clusters' committed offsets for.
    pub async fn mirrored_topics(&self) -> Result<Topics, String> {
        let metas = self
            .source
            .refresh(None)
            .await
            .map_err(|e| on(&self.source, e))?;
        let mut t = Topics::default();
        for m in metas.into_iter().filter(|m| !m.internal) {
            let Some(dest) = self.mirrored(&m.name) else {
                continue;
            };
            let parts: Vec<i32> = m.partitions.iter().map(|p| p.index).collect();
            t.dest.push((dest, parts.clone()));
            t.source.push((m.name, parts));
        }
        Ok(t)
    }

    /// What both clusters say about `group` now, for the mirrored `topics`.
    pub async fn look(&self, group: &str, topics: &Topics) -> Result<Look, String> {
        let described = self
            .dest
            .describe_group(group)
            .await
            .map_err(|e| on(&self.dest, e))?;
        let source = self
            .source
            .committed(group, &topics.source)
            .await
            .map_err(|e| on(&self.source, e))?;
        let dest_committed = self
            .dest
            .committed(group, &topics.dest)
            .await
            .map_err(|e| on(&self.dest, e))?
            .into_iter()
            .filter(|c| c.offset >= 0)
            .map(|c| ((c.topic, c.partition), c.offset))
            .collect();
        let mut dest_ends = BTreeMap::new();
        for c in &source {
            let Some(topic) = self.mirrored(&c.topic) else {
                continue;
            };
            match self.dest.end_offset(&topic, c.partition).await {
                Ok(end) => {
                    dest_ends.insert((topic, c.partition), end);
                }
                // Not in the destination (yet): the plan counts it as pending.
                Err(KafkaError::UnknownTopic { .. }) => {}
                Err(e) if e.code() == Some(ResponseError::UnknownTopicOrPartition) => {}
                Err(e) => return Err(on(&self.dest, e)),
            }
        }
        Ok(Look {
            dest: DestGroup::from_state(&described.state, described.members),
            dest_protocol_type: described.protocol_type,
            source,
            dest_committed,
            dest_ends,
        })
    }

    /// The destination name of a mirrored source topic.
    pub fn mirrored(&self, topic: &str) -> Option<String> {
        self.topics.matches(topic).then(|| (self.rename)(topic))
    }

    /// What a round would do with what `look` found.
    pub fn plan(&self, look: &Look) -> Plan {
        if look.dest == DestGroup::Quiet
            && !APPLICATION_TYPES.contains(&look.dest_protocol_type.as_str())
        {
            return Plan::Skip {
                reason: format!(
                    "the destination has a group of that id with protocol type {:?}",
                    look.dest_protocol_type
                ),
            };
        }
        plan(&Inputs {
            source: &look.source,
            dest: &look.dest,
            mirrored: &|t| self.mirrored(t),
            dest_ends: &look.dest_ends,
            dest_committed: &look.dest_committed,
        })
    }

    async fn sync_group(&self, group: &str, topics: &Topics) -> Outcome {
        let look = match self.look(group, topics).await {
            Ok(l) => l,
            Err(e) => return Outcome::Failed(e),
        };
        let sync = match self.plan(&look) {
            Plan::Skip { reason } => return Outcome::Skipped(reason),
            Plan::Sync(s) => s,
        };
        for c in &sync.commits {
            if let Some(from) = c.clamped_from {
                tracing::info!(group, topic = %c.at.topic, partition = c.at.partition, committed = from, written = c.at.offset, "group offset sync: the source's offset is above the destination end; committing the end");
            }
        }
        let at: Vec<_> = sync.commits.iter().map(|c| c.at.clone()).collect();
        match self.dest.commit_offsets(group, &at).await {
            Ok(refused) if refused.is_empty() => Outcome::Synced {
                committed: at.len(),
                clamped: sync.clamped(),
                unchanged: sync.unchanged,
                pending: sync.not_in_destination,
            },
            // Members joined between the look and the commit: the coordinator refuses
            // a commit without their generation, which is what keeps them safe.
            Ok(refused)
                if refused.iter().all(|r| {
                    matches!(
                        r.error.code(),
                        Some(
                            ResponseError::UnknownMemberId
                                | ResponseError::IllegalGeneration
                                | ResponseError::RebalanceInProgress
                        )
                    )
                }) =>
            {
                Outcome::Skipped(format!(
                    "members joined it in the destination meanwhile: {} of {} commits refused ({})",
                    refused.len(),
                    at.len(),
                    refused[0].error
                ))
            }
            Ok(refused) => Outcome::Failed(format!(
                "{}: {} of {} commits refused (first: {}); the others were committed",
                self.dest.name(),
                refused.len(),
                at.len(),
                refused[0].error
            )),
            Err(e) => Outcome::Failed(on(&self.dest, e)),
        }
    }
}

/// The mirrored topics with their partitions, under their source and destination
/// names.
#[derive(Debug, Clone, Default)]
pub struct Topics {
    pub source: Vec<(String, Vec<i32>)>,
    pub dest: Vec<(String, Vec<i32>)>,
}

/// What both clusters said about a group at one moment.
#[derive(Debug, Clone)]
pub struct Look {
    pub dest: DestGroup,
    /// The destination group's protocol type ("consumer", empty, or another's).
    pub dest_protocol_type: String,
    /// The group's commits in the source.
    pub source: Vec<Committed>,
    /// Its commits in the destination, by (destination topic, partition).
    pub dest_committed: BTreeMap<(String, i32), i64>,
    /// Ends of the destination partitions its mirrored commits concern.
    pub dest_ends: BTreeMap<(String, i32), i64>,
}

/// One line per group and round where something happened or changed; a group that
/// stays in sync is logged at debug.
fn log(group: &str, o: &Outcome, before: Option<&Outcome>) {
    match o {
        Outcome::Synced {
            committed: 0,
            pending,
            ..
        } => {
            tracing::debug!(group, pending, "group offset sync: already in sync")
        }
        Outcome::Synced {
            committed,
            clamped,
            unchanged,
            pending,
        } => tracing::info!(
            group,
            committed,
            clamped,
            unchanged,
            pending,
            "group offset sync: committed in the destination"
        ),
        Outcome::Skipped(why) if before != Some(o) => {
            tracing::info!(group, "group offset sync: skipped: {why}")
        }
        Outcome::Skipped(why) => tracing::debug!(group, "group offset sync: skipped: {why}"),
        Outcome::Failed(e) => {
            tracing::warn!(group, error = %e, "group offset sync failed; will retry")
        }
    }
}
