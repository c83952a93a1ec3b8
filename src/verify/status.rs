//! `wanmirror status`: for every mirrored partition, the source end, the destination
//! end, the lag, and the offset-map deviations recorded for it. It reads both clusters
//! and keeps no state of its own, so it answers the same whether a mirror runs or not.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use serde::Serialize;
use tokio::task::JoinSet;

use super::error::VerifyError;
use crate::kafka::client::Cluster;
use crate::mirror::offset_map::{Deviation, OffsetMap};
use crate::source::Source;

/// Partitions whose offsets are asked for at once: two round trips each, so on a long
/// path one at a time would take minutes for a few thousand partitions.
const PARALLEL: usize = 32;

/// One mirrored partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionStatus {
    pub source_topic: String,
    pub dest_topic: String,
    pub partition: i32,
    pub source_start: i64,
    pub source_end: i64,
    /// `None` while the destination has no such partition (not mirrored yet).
    pub dest_end: Option<i64>,
    /// Offsets still to copy: the source end minus the destination end (offsets are
    /// identical on both sides), or minus the source start where nothing is copied yet.
    pub lag: i64,
    /// Destination offset ranges holding fillers instead of source records.
    pub deviations: Vec<Filled>,
}

/// A range of filler records from the offset map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Filled {
    pub first_offset: i64,
    pub last_offset: i64,
    /// "pad" (below the source's log start) or "gap" (missing inside the source log).
    pub kind: String,
}

/// The whole answer.
#[derive(Debug, Serialize)]
pub struct Status {
    pub source_cluster: String,
    pub dest_cluster: String,
    /// Every partition exactly at the source end.
    pub caught_up: bool,
    /// Offsets behind, summed over the lagging partitions.
    pub lag: i64,
    /// Partitions whose destination ends past the source: the source lost records the
    /// copy holds (a mirror stops such a partition as diverged).
    pub ahead: usize,
    pub partitions: Vec<PartitionStatus>,
    /// With `[groups]`: whether each synced consumer group is ready to fail over.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<crate::groups::status::GroupReport>>,
}

/// Reads every partition of `pairs` (source topic, destination topic) on both sides,
/// and the offset map topic `map_topic` of the destination.
pub async fn status(
    source: Source,
    dest: Arc<Cluster>,
    pairs: Vec<(String, String)>,
    map_topic: &str,
) -> Result<Status, VerifyError> {
    let (devs, _) = OffsetMap::new(dest.clone(), map_topic)
        .read_all()
        .await
        .map_err(|e| VerifyError::Usage(format!("reading the offset map: {e}")))?;
    let mut work = Vec::new();
    for (st, dt) in pairs {
        let count = source
            .partition_count(&st)
            .await
            .map_err(|e| VerifyError::kafka(source.name(), e))?
            .ok_or_else(|| VerifyError::NoTopic {
                cluster: source.name().to_string(),
                topic: st.clone(),
            })?;
        let dest_parts = dest
            .topic(&dt)
            .await
            .map_err(|e| VerifyError::kafka(dest.name(), e))?
            .map_or(0, |t| t.partitions.len());
        for p in 0..count as i32 {
            work.push((st.clone(), dt.clone(), p, (p as usize) < dest_parts));
        }
    }
    let mut rows = Vec::with_capacity(work.len());
    let mut set = JoinSet::new();
    let mut queue = work.into_iter();
    loop {
        while set.len() < PARALLEL {
            let Some((st, dt, p, on_dest)) = queue.next() else {
                break;
            };
            let (s, d) = (source.clone(), dest.clone());
            set.spawn(async move {
                // The destination first: read while a mirror runs, a destination read
                // after the source could be past it, a lag below zero that is not one.
                let dest_end = if on_dest {
                    Some(
                        d.end_offset(&dt, p)
                            .await
                            .map_err(|e| VerifyError::kafka(d.name(), e))?,
                    )
                } else {
                    None
                };
                let (start, end) = s
                    .bounds(&st, p)
                    .await
                    .map_err(|e| VerifyError::kafka(s.name(), e))?;
                Ok::<_, VerifyError>(row(st, dt, p, (start, end), dest_end))
            });
        }
        match set.join_next().await {
            None => break,
            Some(Ok(r)) => rows.push(r?),
            Some(Err(e)) => return Err(VerifyError::Usage(format!("status task failed: {e}"))),
        }
    }
    rows.sort_by(|a, b| (&a.source_topic, a.partition).cmp(&(&b.source_topic, b.partition)));
    attach(&mut rows, devs);
    Ok(Status::new(source.name(), dest.name(), rows))
}

fn row(
    source_topic: String,
    dest_topic: String,
    partition: i32,
    (source_start, source_end): (i64, i64),
    dest_end: Option<i64>,
) -> PartitionStatus {
    PartitionStatus {
        source_topic,
        dest_topic,
        partition,
        source_start,
        source_end,
        dest_end,
        lag: source_end - dest_end.unwrap_or(source_start),
        deviations: vec![],
    }
}

/// Hands each deviation to its partition's row, in offset order.
fn attach(rows: &mut [PartitionStatus], devs: Vec<Deviation>) {
    let mut by_partition: BTreeMap<(String, i32), Vec<Filled>> = BTreeMap::new();
    for d in devs {
        by_partition
            .entry((d.topic, d.partition))
            .or_default()
            .push(Filled {
                first_offset: d.first_offset,
                last_offset: d.last_offset,
                kind: d.kind,
            });
    }
    for r in rows {
        if let Some(mut f) = by_partition.remove(&(r.dest_topic.clone(), r.partition)) {
            f.sort_by_key(|f| f.first_offset);
            r.deviations = f;
        }
    }
}

impl Status {
    pub fn new(
        source_cluster: &str,
        dest_cluster: &str,
        partitions: Vec<PartitionStatus>,
    ) -> Status {
        Status {
            source_cluster: source_cluster.to_string(),
            dest_cluster: dest_cluster.to_string(),
            caught_up: partitions.iter().all(|r| r.lag == 0),
            lag: partitions.iter().map(|r| r.lag.max(0)).sum(),
            ahead: partitions.iter().filter(|r| r.lag < 0).count(),
            partitions,
            groups: None,
        }
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// One line per partition, aligned, and a summary line.
    pub fn table(&self) -> String {
        let head = [
            "source topic",
            "destination topic",
            "partition",
            "source end",
            "dest end",
            "lag",
            "deviations",
        ];
        let cells: Vec<[String; 7]> = self
            .partitions
            .iter()
            .map(|r| {
                [
                    r.source_topic.clone(),
                    r.dest_topic.clone(),
                    r.partition.to_string(),
                    r.source_end.to_string(),
                    r.dest_end.map_or("-".into(), |e| e.to_string()),
                    r.lag.to_string(),
                    deviations(&r.deviations),
                ]
            })
            .collect();
        let mut width = head.map(str::len);
        for c in &cells {
            for (w, s) in width.iter_mut().zip(c) {
                *w = (*w).max(s.len());
            }
        }
        let mut out = format!("{} -> {}\n", self.source_cluster, self.dest_cluster);
        let line = |out: &mut String, c: &[&str]| {
            let mut l = String::new();
            for (i, (s, w)) in c.iter().zip(width).enumerate() {
                // Names left, numbers right; the last column is not padded.
                match i {
                    0 | 1 => {
                        let _ = write!(l, "{s:<w$}  ");
                    }
                    6 => l.push_str(s),
                    _ => {
                        let _ = write!(l, "{s:>w$}  ");
                    }
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(&mut out, &head);
        for c in &cells {
            line(&mut out, &c.each_ref().map(String::as_str));
        }
        let lagging = self.partitions.iter().filter(|r| r.lag > 0).count();
        let _ = write!(
            out,
            "{} partitions, {} lagging, {} offsets behind",
            self.partitions.len(),
            lagging,
            self.lag
        );
        if self.ahead > 0 {
            let _ = write!(
                out,
                "; {} ahead of the source (the source lost records the copy holds)",
                self.ahead
            );
        }
        if let Some(g) = &self.groups {
            out.push('\n');
            out.push_str(&crate::groups::status::table(g));
        }
        out
    }
}

fn deviations(f: &[Filled]) -> String {
    if f.is_empty() {
        return "-".into();
    }
    f.iter()
        .map(|f| format!("{} {}-{}", f.kind, f.first_offset, f.last_offset))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(topic: &str, partition: i32, first: i64, last: i64, kind: &str) -> Deviation {
        Deviation {
            topic: topic.into(),
            partition,
            first_offset: first,
            last_offset: last,
            kind: kind.into(),
            source_cluster: "dc-a".into(),
            source_topic: "t".into(),
        }
    }

    #[test]
    fn lag_counts_from_the_destination_end_or_the_source_start() {
        let copied = row("t".into(), "dc-a.t".into(), 0, (10, 100), Some(60));
        assert_eq!(copied.lag, 40);
        let none_yet = row("t".into(), "dc-a.t".into(), 1, (10, 100), None);
        assert_eq!(none_yet.lag, 90);
        let done = row("t".into(), "dc-a.t".into(), 2, (10, 100), Some(100));
        assert_eq!(done.lag, 0);
    }

    #[test]
    fn deviations_go_to_their_destination_partition_in_offset_order() {
        let mut rows = vec![
            row("t".into(), "dc-a.t".into(), 0, (0, 20), Some(20)),
            row("t".into(), "dc-a.t".into(), 1, (0, 20), Some(20)),
        ];
        attach(
            &mut rows,
            vec![
                dev("dc-a.t", 0, 7, 7, "gap"),
                dev("dc-a.t", 0, 4, 5, "gap"),
                dev("dc-a.other", 1, 0, 9, "pad"),
            ],
        );
        let ranges: Vec<_> = rows[0].deviations.iter().map(|f| f.first_offset).collect();
        assert_eq!(ranges, vec![4, 7]);
        assert!(rows[1].deviations.is_empty());
        let s = Status::new("dc-a", "dc-b", rows);
        assert!(s.caught_up);
        let t = s.table();
        assert!(t.contains("gap 4-5, gap 7-7"), "{t}");
        assert!(
            t.ends_with("2 partitions, 0 lagging, 0 offsets behind"),
            "{t}"
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 5, "{t}");
        // Aligned: every row's last column starts under its heading.
        let at = lines[1].find("deviations").unwrap();
        assert_eq!(&lines[2][at..], "gap 4-5, gap 7-7", "{t}");
        assert_eq!(&lines[3][at..], "-", "{t}");
    }

    /// A destination past the source is neither caught up nor lagging: it is named.
    #[test]
    fn a_destination_past_the_source_is_not_caught_up() {
        let rows = vec![
            row("t".into(), "dc-a.t".into(), 0, (0, 50), Some(300)),
            row("t".into(), "dc-a.t".into(), 1, (0, 20), Some(20)),
        ];
        let s = Status::new("dc-a", "dc-b", rows);
        assert!(!s.caught_up);
        assert_eq!((s.lag, s.ahead), (0, 1));
        assert!(
            s.table()
                .ends_with("1 ahead of the source (the source lost records the copy holds)"),
            "{}",
            s.table()
        );
    }
}
