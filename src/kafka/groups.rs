//! Consumer groups as an administrator sees them: which groups a cluster has, what they
//! committed, whether they have members, and committing offsets for a group that has
//! none (the consumer-group offset sync, `groups/sync.rs`).

use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::admin::CoordinatorKind;
use super::client::{throttle, Cluster};
use super::connection::broker_err;
use super::error::{KafkaError, Result};

/// One committed offset of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub topic: String,
    pub partition: i32,
    /// The next offset the application reads; below 0 means nothing committed.
    pub offset: i64,
    /// The application's commit metadata.
    pub metadata: Option<String>,
}

/// A group a broker coordinates, as ListGroups names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub id: String,
    /// "consumer" for Kafka consumers, empty for groups that only commit offsets.
    pub protocol_type: String,
}

/// A group's state and members, as DescribeGroups gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    /// Empty when the coordinator does not know the group.
    pub state: String,
    pub protocol_type: String,
    pub members: usize,
    /// The members' ids.
    pub member_ids: Vec<String>,
    /// Each member's assignment of the current generation, as its leader wrote it
    /// (empty while the group rebalances, on Kafka).
    pub assignments: Vec<(String, bytes::Bytes)>,
}

/// A partition whose commit the broker refused.
#[derive(Debug)]
pub struct Refused {
    pub topic: String,
    pub partition: i32,
    pub error: KafkaError,
}

fn group_id(g: &str) -> GroupId {
    GroupId(StrBytes::from_string(g.to_string()))
}

impl Cluster {
    /// The connection to `group`'s coordinator, waiting out a coordinator not there
    /// yet (Kafka creates its offsets topic on the first lookup).
    pub(super) async fn group_coordinator(
        &self,
        group: &str,
    ) -> Result<super::connection::Connection> {
        self.retry("find coordinator", || {
            self.coordinator_of(group, CoordinatorKind::Group)
        })
        .await
    }

    /// Every group of the cluster: ListGroups on each broker, since each lists only the
    /// groups it coordinates.
    pub async fn list_groups(&self) -> Result<Vec<Listed>> {
        self.refresh(Some(&[])).await?;
        let mut out = Vec::new();
        for id in self.broker_ids().await {
            let conn = self.broker_conn(id).await?;
            let resp = conn.send(&ListGroupsRequest::default()).await?;
            throttle(resp.throttle_time_ms).await;
            if resp.error_code != 0 {
                return Err(broker_err(
                    "ListGroups",
                    resp.error_code,
                    Some(format!("broker {id} at {}", conn.addr())),
                ));
            }
            out.extend(resp.groups.into_iter().map(|g| Listed {
                id: g.group_id.0.to_string(),
                protocol_type: g.protocol_type.to_string(),
            }));
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out.dedup_by(|a, b| a.id == b.id);
        Ok(out)
    }

    /// The offsets `group` committed in `topics` (name, partitions); a partition
    /// without a commit comes back with offset -1. The topics are always named:
    /// tansu 0.6 answers a request for every topic (a null list) without its topics
    /// field.
    pub async fn committed(
        &self,
        group: &str,
        topics: &[(String, Vec<i32>)],
    ) -> Result<Vec<Committed>> {
        self.retry("offset fetch", || self.committed_once(group, topics))
            .await
    }

    async fn committed_once(
        &self,
        group: &str,
        topics: &[(String, Vec<i32>)],
    ) -> Result<Vec<Committed>> {
        let conn = self.group_coordinator(group).await?;
        let req = OffsetFetchRequest::default()
            .with_group_id(group_id(group))
            .with_topics(Some(
                topics
                    .iter()
                    .map(|(t, ps)| {
                        OffsetFetchRequestTopic::default()
                            .with_name(TopicName(StrBytes::from_string(t.clone())))
                            .with_partition_indexes(ps.clone())
                    })
                    .collect(),
            ));
        let resp = conn.send(&req).await?;
        throttle(resp.throttle_time_ms).await;
        if resp.error_code != 0 {
            return Err(broker_err(
                "OffsetFetch",
                resp.error_code,
                Some(format!("group {group}")),
            ));
        }
        let mut out = Vec::new();
        for t in resp.topics {
            for p in t.partitions {
                // A partition-level error (e.g. an unstable offset) leaves the
                // partition out of this round; the next one asks again.
                if p.error_code != 0 {
                    tracing::debug!(group, topic = %t.name.0, partition = p.partition_index, code = p.error_code, "offset not readable this round");
                    continue;
                }
                out.push(Committed {
                    topic: t.name.0.to_string(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    metadata: p.metadata.map(|m| m.to_string()),
                });
            }
        }
        Ok(out)
    }

    /// The group's state, protocol type and member count.
    pub async fn describe_group(&self, group: &str) -> Result<Described> {
        self.retry("describe group", || self.describe_group_once(group))
            .await
    }

    async fn describe_group_once(&self, group: &str) -> Result<Described> {
        let conn = self.group_coordinator(group).await?;
        let req = DescribeGroupsRequest::default().with_groups(vec![group_id(group)]);
        let resp = conn.send(&req).await?;
        throttle(resp.throttle_time_ms).await;
        let g = resp
            .groups
            .into_iter()
            .find(|g| g.group_id.0.as_str() == group)
            .ok_or_else(|| KafkaError::Decode {
                addr: conn.addr().to_string(),
                api: "DescribeGroups",
                reason: format!("no answer for group {group}"),
            })?;
        match g.error_code {
            0 => {}
            // GROUP_ID_NOT_FOUND for a group of the new consumer protocol (KIP-848),
            // which DescribeGroups does not describe: members unknown, so counted as
            // live (never written).
            69 if g
                .error_message
                .as_ref()
                .is_some_and(|m| m.contains("not a classic group")) =>
            {
                return Ok(Described {
                    state: "NotClassic".into(),
                    protocol_type: "consumer".into(),
                    members: 1,
                    member_ids: Vec::new(),
                    assignments: Vec::new(),
                })
            }
            // GROUP_ID_NOT_FOUND (newer coordinators): a group nobody created yet.
            69 => {
                return Ok(Described {
                    state: String::new(),
                    protocol_type: String::new(),
                    members: 0,
                    member_ids: Vec::new(),
                    assignments: Vec::new(),
                })
            }
            code => {
                return Err(broker_err(
                    "DescribeGroups",
                    code,
                    Some(format!("group {group}")),
                ))
            }
        }
        Ok(Described {
            state: g.group_state.to_string(),
            protocol_type: g.protocol_type.to_string(),
            members: g.members.len(),
            member_ids: g.members.iter().map(|m| m.member_id.to_string()).collect(),
            assignments: g
                .members
                .into_iter()
                .map(|m| (m.member_id.to_string(), m.member_assignment))
                .collect(),
        })
    }

    /// Commits offsets for `group` as an administrator (no generation, no member), as
    /// only a group without members accepts. Returns the partitions refused.
    pub async fn commit_offsets(&self, group: &str, commits: &[Committed]) -> Result<Vec<Refused>> {
        if commits.is_empty() {
            return Ok(Vec::new());
        }
        self.retry("offset commit", || self.commit_once(group, commits))
            .await
    }

    async fn commit_once(&self, group: &str, commits: &[Committed]) -> Result<Vec<Refused>> {
        let conn = self.group_coordinator(group).await?;
        let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
        for c in commits {
            let p = OffsetCommitRequestPartition::default()
                .with_partition_index(c.partition)
                .with_committed_offset(c.offset)
                // The source's leader epochs mean nothing here: -1 keeps a consumer
                // from validating the offset against a foreign epoch.
                .with_committed_leader_epoch(-1)
                .with_committed_metadata(
                    c.metadata
                        .as_deref()
                        .map(|m| StrBytes::from_string(m.to_string())),
                );
            match topics.iter_mut().find(|t| t.name.0.as_str() == c.topic) {
                Some(t) => t.partitions.push(p),
                None => topics.push(
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(StrBytes::from_string(c.topic.clone())))
                        .with_partitions(vec![p]),
                ),
            }
        }
        let req = OffsetCommitRequest::default()
            .with_group_id(group_id(group))
            .with_generation_id_or_member_epoch(-1)
            .with_member_id(StrBytes::from_static_str(""))
            .with_group_instance_id(None)
            .with_retention_time_ms(-1)
            .with_topics(topics);
        let resp = conn.send(&req).await?;
        throttle(resp.throttle_time_ms).await;
        let mut refused = Vec::new();
        let mut answered = 0;
        for t in resp.topics {
            for p in t.partitions {
                answered += 1;
                if p.error_code != 0 {
                    refused.push(Refused {
                        topic: t.name.0.to_string(),
                        partition: p.partition_index,
                        error: super::client::partition_err(
                            "OffsetCommit",
                            t.name.0.as_str(),
                            p.partition_index,
                            p.error_code,
                        ),
                    });
                }
            }
        }
        if answered != commits.len() {
            return Err(KafkaError::Decode {
                addr: conn.addr().to_string(),
                api: "OffsetCommit",
                reason: format!(
                    "group {group}: {answered} partitions answered, {} committed",
                    commits.len()
                ),
            });
        }
        Ok(refused)
    }
}
