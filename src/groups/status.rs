//! Whether each synced group is ready to fail over, for `wanmirror status`: the same
//! look at both clusters and the same plan as a sync round, without committing. A group
//! is ready ("in sync") when a round would commit nothing and every partition it
//! committed in the source is in the destination.

use std::fmt::Write as _;

use serde::Serialize;

use super::plan::{DestGroup, Plan};
use super::sync::{Look, Syncer, APPLICATION_TYPES};

/// One group's readiness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupReport {
    pub group: String,
    /// "in sync", "behind", "partly mirrored", "active in destination", "skipped",
    /// or "unknown" when a cluster could not say.
    pub verdict: String,
    /// Why, when the verdict alone does not say.
    pub detail: String,
    pub partitions: Vec<GroupPartition>,
}

/// A mirrored partition the group committed an offset for in the source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupPartition {
    pub source_topic: String,
    pub dest_topic: String,
    pub partition: i32,
    pub source_committed: i64,
    pub dest_committed: Option<i64>,
    /// `None` while the destination does not have the partition.
    pub dest_end: Option<i64>,
}

/// The readiness of every group `[groups] sync` names.
pub async fn reports(syncer: &Syncer) -> Result<Vec<GroupReport>, String> {
    let mut out = Vec::new();
    let topics = syncer.mirrored_topics().await?;
    for g in syncer.named_groups().await? {
        let report = |verdict: &str, detail: String, partitions| GroupReport {
            group: g.id.clone(),
            verdict: verdict.into(),
            detail,
            partitions,
        };
        if !APPLICATION_TYPES.contains(&g.protocol_type.as_str()) {
            out.push(report(
                "skipped",
                format!("protocol type {:?} in the source", g.protocol_type),
                vec![],
            ));
            continue;
        }
        match syncer.look(&g.id, &topics).await {
            Err(e) => out.push(report("unknown", e, vec![])),
            Ok(look) => {
                let rows = partitions(syncer, &look);
                let live = matches!(look.dest, DestGroup::Live { .. });
                let (verdict, detail) = verdict(live, &syncer.plan(&look));
                out.push(report(verdict, detail, rows));
            }
        }
    }
    Ok(out)
}

fn partitions(syncer: &Syncer, look: &Look) -> Vec<GroupPartition> {
    look.source
        .iter()
        .filter(|c| c.offset >= 0)
        .filter_map(|c| {
            let dest_topic = syncer.mirrored(&c.topic)?;
            let key = (dest_topic.clone(), c.partition);
            Some(GroupPartition {
                source_topic: c.topic.clone(),
                partition: c.partition,
                source_committed: c.offset,
                dest_committed: look.dest_committed.get(&key).copied(),
                dest_end: look.dest_ends.get(&key).copied(),
                dest_topic,
            })
        })
        .collect()
}

/// `live`: the group has members in the destination.
fn verdict(live: bool, plan: &Plan) -> (&'static str, String) {
    match plan {
        Plan::Skip { reason } if live => ("active in destination", reason.clone()),
        Plan::Skip { reason } => ("skipped", reason.clone()),
        Plan::Sync(s) if !s.commits.is_empty() => (
            "behind",
            format!("{} offset(s) to commit in the next round", s.commits.len()),
        ),
        Plan::Sync(s) if s.not_in_destination > 0 => (
            "partly mirrored",
            format!(
                "{} partition(s) not in the destination yet",
                s.not_in_destination
            ),
        ),
        Plan::Sync(_) => ("in sync", String::new()),
    }
}

/// The groups as lines under the partition table.
pub fn table(reports: &[GroupReport]) -> String {
    let mut out = String::from("consumer groups:\n");
    for r in reports {
        let _ = write!(out, "  {}: {}", r.group, r.verdict);
        if !r.detail.is_empty() {
            let _ = write!(out, " ({})", r.detail);
        }
        out.push('\n');
        for p in &r.partitions {
            let opt = |o: Option<i64>| o.map_or("-".into(), |o| o.to_string());
            let _ = writeln!(
                out,
                "    {}/{}: source committed {}, destination committed {}, destination end {}",
                p.dest_topic,
                p.partition,
                p.source_committed,
                opt(p.dest_committed),
                opt(p.dest_end)
            );
        }
    }
    if reports.is_empty() {
        out.push_str("  none of the source's groups matches [groups] sync\n");
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groups::plan::Sync;

    #[test]
    fn verdicts_follow_the_plan() {
        assert_eq!(verdict(false, &Plan::Sync(Sync::default())).0, "in sync");
        let partly = Sync {
            not_in_destination: 2,
            ..Sync::default()
        };
        assert_eq!(verdict(false, &Plan::Sync(partly)).0, "partly mirrored");
        let behind = Sync {
            commits: vec![crate::groups::plan::Commit {
                at: crate::groups::plan::Committed {
                    topic: "t".into(),
                    partition: 0,
                    offset: 3,
                    metadata: None,
                },
                clamped_from: None,
            }],
            not_in_destination: 1,
            ..Sync::default()
        };
        assert_eq!(verdict(false, &Plan::Sync(behind)).0, "behind");
        let skip = Plan::Skip {
            reason: "it is active in the destination (state Stable, 1 member(s))".into(),
        };
        assert_eq!(verdict(true, &skip).0, "active in destination");
        assert_eq!(verdict(false, &skip).0, "skipped");
    }

    #[test]
    fn the_table_names_each_group_and_partition() {
        let t = table(&[GroupReport {
            group: "app-1".into(),
            verdict: "in sync".into(),
            detail: String::new(),
            partitions: vec![GroupPartition {
                source_topic: "orders".into(),
                dest_topic: "dc-a.orders".into(),
                partition: 0,
                source_committed: 37,
                dest_committed: Some(37),
                dest_end: Some(100),
            }],
        }]);
        assert!(t.contains("app-1: in sync"), "{t}");
        assert!(
            t.contains(
                "dc-a.orders/0: source committed 37, destination committed 37, destination end 100"
            ),
            "{t}"
        );
        assert!(table(&[]).contains("none of the source's groups"));
    }
}
