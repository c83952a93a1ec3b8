//! What one round of consumer-group offset sync commits in the destination, decided
//! from what both clusters said (pure; the driver is `sync.rs`).
//!
//! Offsets are identical on both sides, so a source group's committed offset is valid
//! unchanged in the destination: no translation. Four rules keep the copy safe for the
//! application that fails over (docs/offsets.md, "Consumer group offsets"):
//! - a group with members in the destination is left alone: it failed over already;
//! - an offset above the destination's end is clamped to the end: the consumer may
//!   re-read records the mirror has not copied yet, it never skips one;
//! - a destination commit is never moved back: a group that consumed in the
//!   destination and stopped for a moment keeps its progress;
//! - offsets of topics that are not mirrored are ignored.

use std::collections::BTreeMap;

pub use crate::kafka::groups::Committed;

/// A group as its destination coordinator describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestGroup {
    /// Unknown to the coordinator, or without members (`Empty`, `Dead`): ours to write.
    Quiet,
    /// Members are in it (`Stable`, `PreparingRebalance`, ...): never touched.
    Live { state: String, members: usize },
}

impl DestGroup {
    /// From DescribeGroups' state (empty for a group the broker does not know).
    pub fn from_state(state: &str, members: usize) -> DestGroup {
        match state {
            "" | "Empty" | "Dead" if members == 0 => DestGroup::Quiet,
            _ => DestGroup::Live {
                state: state.to_string(),
                members,
            },
        }
    }
}

/// What the clusters said about one group, for one round.
pub struct Inputs<'a> {
    /// The group's committed offsets in the source.
    pub source: &'a [Committed],
    pub dest: &'a DestGroup,
    /// The destination topic a source topic is mirrored to; `None` if it is not.
    pub mirrored: &'a dyn Fn(&str) -> Option<String>,
    /// End offsets of destination partitions, by (destination topic, partition).
    /// A partition missing here is not (yet) in the destination.
    pub dest_ends: &'a BTreeMap<(String, i32), i64>,
    /// What the group has committed in the destination already.
    pub dest_committed: &'a BTreeMap<(String, i32), i64>,
}

/// One OffsetCommit entry for the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Under the destination topic's name, with the source's metadata.
    pub at: Committed,
    /// The source's offset, where it was above the destination end.
    pub clamped_from: Option<i64>,
}

/// The round's decision for one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Live in the destination: nothing is written.
    Skip {
        reason: String,
    },
    Sync(Sync),
}

/// The commits of a group in sync, and what was left out and why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sync {
    pub commits: Vec<Commit>,
    /// Offsets of topics the mirror does not copy.
    pub not_mirrored: usize,
    /// Offsets of mirrored partitions the destination does not have yet.
    pub not_in_destination: usize,
    /// Offsets the destination has already, or is ahead of.
    pub unchanged: usize,
}

impl Sync {
    pub fn clamped(&self) -> usize {
        self.commits
            .iter()
            .filter(|c| c.clamped_from.is_some())
            .count()
    }
}

/// Decides one group's round.
pub fn plan(i: &Inputs) -> Plan {
    if let DestGroup::Live { state, members } = i.dest {
        return Plan::Skip {
            reason: format!("it is active in the destination (state {state}, {members} member(s))"),
        };
    }
    let mut out = Sync::default();
    for c in i.source {
        if c.offset < 0 {
            continue;
        }
        let Some(topic) = (i.mirrored)(&c.topic) else {
            out.not_mirrored += 1;
            continue;
        };
        let key = (topic, c.partition);
        let Some(&end) = i.dest_ends.get(&key) else {
            out.not_in_destination += 1;
            continue;
        };
        let offset = c.offset.min(end);
        if i.dest_committed.get(&key).is_some_and(|&d| d >= offset) {
            out.unchanged += 1;
            continue;
        }
        out.commits.push(Commit {
            at: Committed {
                topic: key.0,
                partition: c.partition,
                offset,
                metadata: c.metadata.clone(),
            },
            clamped_from: (c.offset > end).then_some(c.offset),
        });
    }
    Plan::Sync(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn committed(topic: &str, partition: i32, offset: i64) -> Committed {
        Committed {
            topic: topic.into(),
            partition,
            offset,
            metadata: Some(format!("m{offset}")),
        }
    }

    fn rename(t: &str) -> Option<String> {
        t.starts_with("orders").then(|| format!("dc-a.{t}"))
    }

    fn ends(e: &[(&str, i32, i64)]) -> BTreeMap<(String, i32), i64> {
        e.iter()
            .map(|(t, p, o)| ((t.to_string(), *p), *o))
            .collect()
    }

    fn sync(p: Plan) -> Sync {
        match p {
            Plan::Sync(s) => s,
            Plan::Skip { reason } => panic!("skipped: {reason}"),
        }
    }

    #[test]
    fn copies_offsets_unchanged_under_destination_names_with_metadata() {
        let src = [committed("orders", 0, 40), committed("orders", 1, 7)];
        let de = ends(&[("dc-a.orders", 0, 100), ("dc-a.orders", 1, 100)]);
        let s = sync(plan(&Inputs {
            source: &src,
            dest: &DestGroup::Quiet,
            mirrored: &rename,
            dest_ends: &de,
            dest_committed: &BTreeMap::new(),
        }));
        assert_eq!(
            s.commits,
            vec![
                Commit {
                    at: Committed {
                        topic: "dc-a.orders".into(),
                        partition: 0,
                        offset: 40,
                        metadata: Some("m40".into()),
                    },
                    clamped_from: None
                },
                Commit {
                    at: Committed {
                        topic: "dc-a.orders".into(),
                        partition: 1,
                        offset: 7,
                        metadata: Some("m7".into()),
                    },
                    clamped_from: None
                },
            ]
        );
        assert_eq!(s.clamped(), 0);
    }

    #[test]
    fn a_live_destination_group_is_left_alone() {
        let src = [committed("orders", 0, 40)];
        let de = ends(&[("dc-a.orders", 0, 100)]);
        for (state, n) in [("Stable", 2), ("PreparingRebalance", 1), ("Empty", 1)] {
            let p = plan(&Inputs {
                source: &src,
                dest: &DestGroup::from_state(state, n),
                mirrored: &rename,
                dest_ends: &de,
                dest_committed: &BTreeMap::new(),
            });
            assert!(
                matches!(&p, Plan::Skip { reason } if reason.contains(state)),
                "{p:?}"
            );
        }
        for state in ["", "Empty", "Dead"] {
            assert_eq!(DestGroup::from_state(state, 0), DestGroup::Quiet);
        }
    }

    #[test]
    fn above_the_destination_end_is_clamped_to_it() {
        let src = [committed("orders", 0, 150)];
        let de = ends(&[("dc-a.orders", 0, 100)]);
        let s = sync(plan(&Inputs {
            source: &src,
            dest: &DestGroup::Quiet,
            mirrored: &rename,
            dest_ends: &de,
            dest_committed: &BTreeMap::new(),
        }));
        assert_eq!(s.commits[0].at.offset, 100);
        assert_eq!(s.commits[0].clamped_from, Some(150));
        assert_eq!(s.clamped(), 1);
    }

    #[test]
    fn unmirrored_missing_unset_and_unchanged_are_counted_not_written() {
        let src = [
            committed("payments", 0, 5),
            committed("orders", 3, 5),
            committed("orders", 0, -1),
            committed("orders", 1, 20),
            committed("orders", 2, 20),
        ];
        let de = ends(&[
            ("dc-a.orders", 0, 100),
            ("dc-a.orders", 1, 100),
            ("dc-a.orders", 2, 100),
        ]);
        let dc = ends(&[("dc-a.orders", 1, 20), ("dc-a.orders", 2, 30)]);
        let s = sync(plan(&Inputs {
            source: &src,
            dest: &DestGroup::Quiet,
            mirrored: &rename,
            dest_ends: &de,
            dest_committed: &dc,
        }));
        assert!(s.commits.is_empty(), "{s:?}");
        assert_eq!(
            (s.not_mirrored, s.not_in_destination, s.unchanged),
            (1, 1, 2)
        );
    }

    proptest! {
        /// Whatever the clusters say: a commit is never above the destination end,
        /// never below what the destination had, equals the source's offset unless
        /// clamped, and only mirrored partitions present in the destination get one.
        #[test]
        fn commits_never_skip_a_record_nor_move_back(
            rows in proptest::collection::vec(
                (0..2usize, 0..4i32, -1..300i64, proptest::option::of(0..300i64), proptest::option::of(0..300i64)),
                0..20,
            )
        ) {
            let topics = ["orders", "payments"];
            let mut src = Vec::new();
            let mut de = BTreeMap::new();
            let mut dc = BTreeMap::new();
            let mut seen = std::collections::BTreeSet::new();
            for (t, p, o, end, had) in &rows {
                // OffsetFetch answers once per partition.
                if !seen.insert((*t, *p)) {
                    continue;
                }
                src.push(committed(topics[*t], *p, *o));
                if let Some(e) = end {
                    de.insert((format!("dc-a.{}", topics[*t]), *p), *e);
                }
                if let Some(h) = had {
                    dc.insert((format!("dc-a.{}", topics[*t]), *p), *h);
                }
            }
            let s = sync(plan(&Inputs {
                source: &src,
                dest: &DestGroup::Quiet,
                mirrored: &rename,
                dest_ends: &de,
                dest_committed: &dc,
            }));
            let handled = s.commits.len() + s.not_mirrored + s.not_in_destination + s.unchanged;
            prop_assert_eq!(handled, src.iter().filter(|c| c.offset >= 0).count());
            for Commit { at: c, clamped_from } in &s.commits {
                let key = (c.topic.clone(), c.partition);
                prop_assert!(c.topic.starts_with("dc-a.orders"));
                let end = de[&key];
                prop_assert!(c.offset <= end);
                prop_assert!(dc.get(&key).is_none_or(|&h| h < c.offset));
                let from = src.iter().find(|x| format!("dc-a.{}", x.topic) == c.topic
                    && x.partition == c.partition && x.offset.min(end) == c.offset);
                prop_assert!(from.is_some());
                let from = from.unwrap();
                prop_assert_eq!(clamped_from.is_some(), from.offset > end);
                prop_assert_eq!(&c.metadata, &from.metadata);
            }
        }
    }
}
