//! What mirror workers tell each other through the group coordinator (pure): each
//! member's JoinGroup metadata (what it owns, with weights, and which topics it knows)
//! and the leader's SyncGroup assignments. JSON: a few KB per member, readable with
//! any tool that dumps a group, and a version field for later changes.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::assign::{assign, Claim, Part};
use crate::mirror::partition::Job;

/// The group's protocol type: a group of this id made by any other client (an
/// application's consumers, Connect) refuses our JoinGroup.
pub const PROTOCOL_TYPE: &str = "wanmirror";
/// The assignment strategy (`assign.rs`).
pub const STRATEGY: &str = "sticky-bytes-1";
const VERSION: u32 = 1;

/// A member's JoinGroup metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub version: u32,
    /// The partitions it mirrored in the last generation, and their weights.
    pub owned: Vec<Owned>,
    /// Every topic it would mirror, with its partition count.
    pub topics: Vec<Known>,
    /// Counts the member's joins with fresh figures: a join meant to start a
    /// rebalance always sends bytes the coordinator has not seen.
    #[serde(default)]
    pub round: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owned {
    pub source_topic: String,
    pub dest_topic: String,
    pub partition: i32,
    /// Backlog bytes plus a minute of recent throughput (`assign.rs`).
    pub weight: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Known {
    pub source_topic: String,
    pub dest_topic: String,
    pub partitions: i32,
}

/// The leader's answer to one member.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assigned {
    pub version: u32,
    pub jobs: Vec<Job>,
}

impl Metadata {
    pub fn new(owned: Vec<Owned>, topics: Vec<Known>) -> Metadata {
        Metadata {
            version: VERSION,
            owned,
            topics,
            round: 0,
        }
    }

    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// `None` for bytes that are not our metadata (a member of a later version, or
    /// garbage): the leader then counts that member as owning and knowing nothing.
    pub fn decode(b: &[u8]) -> Option<Metadata> {
        serde_json::from_slice(b).ok()
    }
}

impl Assigned {
    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn decode(b: &[u8]) -> Option<Assigned> {
        // An empty assignment (a member the leader did not know of) is no work.
        if b.is_empty() {
            return Some(Assigned::default());
        }
        serde_json::from_slice(b).ok()
    }
}

/// The leader's work: every member's assignment from their metadata. The partitions
/// assigned are every partition of every topic any member knows (the largest count
/// reported), so a topic one member's discovery found is assigned at once.
pub fn leader_assign(members: &[(String, Option<Metadata>)]) -> BTreeMap<String, Assigned> {
    let mut topics: BTreeMap<String, (String, i32)> = BTreeMap::new();
    for (_, m) in members {
        for k in m.iter().flat_map(|m| &m.topics) {
            let e = topics
                .entry(k.dest_topic.clone())
                .or_insert((k.source_topic.clone(), 0));
            e.1 = e.1.max(k.partitions);
        }
    }
    let all: BTreeSet<Part> = topics
        .iter()
        .flat_map(|(dt, (_, n))| {
            (0..*n).map(move |p| Part {
                topic: dt.clone(),
                partition: p,
            })
        })
        .collect();
    let claims: Vec<Claim> = members
        .iter()
        .map(|(id, m)| Claim {
            member: id.clone(),
            owned: m
                .iter()
                .flat_map(|m| &m.owned)
                .map(|o| {
                    (
                        Part {
                            topic: o.dest_topic.clone(),
                            partition: o.partition,
                        },
                        o.weight,
                    )
                })
                .collect(),
        })
        .collect();
    assign(&claims, &all)
        .into_iter()
        .map(|(member, parts)| {
            let jobs = parts
                .into_iter()
                .filter_map(|p| {
                    let (st, _) = topics.get(&p.topic)?;
                    Some(Job {
                        source_topic: st.clone(),
                        dest_topic: p.topic,
                        partition: p.partition,
                    })
                })
                .collect();
            (
                member,
                Assigned {
                    version: VERSION,
                    jobs,
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(t: &str, n: i32) -> Known {
        Known {
            source_topic: t.into(),
            dest_topic: format!("dc-a.{t}"),
            partitions: n,
        }
    }

    #[test]
    fn metadata_and_assignments_round_trip_and_garbage_is_none() {
        let m = Metadata::new(
            vec![Owned {
                source_topic: "orders".into(),
                dest_topic: "dc-a.orders".into(),
                partition: 3,
                weight: 77,
            }],
            vec![known("orders", 4)],
        );
        assert_eq!(Metadata::decode(&m.encode()), Some(m));
        assert_eq!(Metadata::decode(b"\x00\x01consumer"), None);
        assert_eq!(Assigned::decode(b""), Some(Assigned::default()));
        let a = Assigned {
            version: 1,
            jobs: vec![Job {
                source_topic: "orders".into(),
                dest_topic: "dc-a.orders".into(),
                partition: 1,
            }],
        };
        assert_eq!(Assigned::decode(&a.encode()), Some(a));
    }

    #[test]
    fn the_leader_assigns_every_known_partition_once_and_keeps_owners() {
        let a = Metadata::new(
            vec![Owned {
                source_topic: "orders".into(),
                dest_topic: "dc-a.orders".into(),
                partition: 2,
                weight: 0,
            }],
            vec![known("orders", 4)],
        );
        // b's discovery already saw the new topic and partition growth.
        let b = Metadata::new(vec![], vec![known("orders", 6), known("new", 2)]);
        let out = leader_assign(&[
            ("a".into(), Some(a)),
            ("b".into(), Some(b)),
            ("c".into(), None),
        ]);
        let all: Vec<&Job> = out.values().flat_map(|x| &x.jobs).collect();
        assert_eq!(all.len(), 8);
        assert!(out["a"]
            .jobs
            .iter()
            .any(|j| j.partition == 2 && j.source_topic == "orders"));
        assert!(all
            .iter()
            .any(|j| j.dest_topic == "dc-a.new" && j.source_topic == "new"));
        assert!(
            out.values().all(|x| (2..=3).contains(&x.jobs.len())),
            "{out:?}"
        );
    }
}
