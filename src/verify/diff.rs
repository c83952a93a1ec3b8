//! The driver of `wanmirror diff`: reads both sides of each partition pair, hashes
//! leaves, walks the trees and narrows differing leaves down to records.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::error::VerifyError;
use super::hashing::hash_range;
use super::leaf::{leaf_range, narrow, Hash, Leaf};
use super::tree::{NodeId, Tree};
use super::walk::Walk;
use crate::peer::client::RemoteTree;
use crate::source::reader::PartitionReader;
use crate::source::Source;

/// One side of a comparison: a topic in a cluster (read through its brokers, or
/// through a peer that hashes it where it is).
#[derive(Clone)]
pub struct Side {
    pub source: Source,
    pub topic: String,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub partition: Option<i32>,
    pub from: Option<i64>,
    pub to: Option<i64>,
    /// Offsets per leaf.
    pub leaf_offsets: i64,
    /// Partitions compared at once.
    pub parallel: usize,
    pub fetch_bytes: usize,
}

/// A run of differing leaves, narrowed to the records that differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Range {
    /// Offsets covered by the differing leaves, `[from, to)`.
    pub from: i64,
    pub to: i64,
    /// First and last offset whose record differs (or exists on one side only).
    pub first: i64,
    pub last: i64,
    pub source_records: u64,
    pub dest_records: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionDiff {
    pub source_topic: String,
    pub dest_topic: String,
    pub partition: i32,
    /// The offsets compared, `[from, to)`.
    pub from: i64,
    pub to: i64,
    pub source_log_start: i64,
    pub source_end: i64,
    pub dest_log_start: i64,
    pub dest_end: i64,
    pub leaves: u64,
    pub identical: bool,
    pub ranges: Vec<Range>,
    /// Differences of the logs' bounds, in words.
    pub notes: Vec<String>,
    pub bytes_read: u64,
    /// Node hashes the comparison asked of each side (what would cross the WAN).
    pub nodes_compared: u64,
    pub seconds: f64,
}

/// Progress shown while reading (a terminal progress bar, or nothing).
pub trait Progress: Send + Sync {
    fn add_total(&self, offsets: u64);
    fn advance(&self, offsets: u64);
}

/// Compares `source` and `dest` partition by partition.
pub async fn topic(
    source: Side,
    dest: Side,
    opts: Options,
    progress: Arc<dyn Progress>,
) -> Result<Vec<PartitionDiff>, VerifyError> {
    let count = |side: &Side| {
        let side = side.clone();
        async move {
            let n = side
                .source
                .partition_count(&side.topic)
                .await
                .map_err(|e| VerifyError::kafka(side.source.name(), e))?;
            n.ok_or_else(|| VerifyError::NoTopic {
                cluster: side.source.name().to_string(),
                topic: side.topic.clone(),
            })
        }
    };
    let (ns, nd) = (count(&source).await?, count(&dest).await?);
    if ns != nd {
        return Err(VerifyError::PartitionCount {
            topic: source.topic.clone(),
            source_cluster: source.source.name().to_string(),
            source_partitions: ns,
            dest_cluster: dest.source.name().to_string(),
            dest_partitions: nd,
        });
    }
    let parts: Vec<i32> = match opts.partition {
        Some(p) if p < 0 || p as usize >= ns => {
            return Err(VerifyError::NoPartition {
                topic: source.topic.clone(),
                partition: p,
            })
        }
        Some(p) => vec![p],
        None => (0..ns as i32).collect(),
    };
    // Partitions in parallel, a few at a time: each holds only its leaf hashes.
    let limit = Arc::new(Semaphore::new(opts.parallel.max(1)));
    let mut tasks = JoinSet::new();
    for p in parts {
        let (source, dest, opts, progress) =
            (source.clone(), dest.clone(), opts.clone(), progress.clone());
        let limit = limit.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            partition(&source, &dest, p, &opts, progress.as_ref()).await
        });
    }
    let mut out = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(r) => out.push(r?),
            Err(e) => {
                return Err(VerifyError::Compare {
                    topic: source.topic.clone(),
                    partition: -1,
                    detail: format!("comparison task failed: {e}"),
                })
            }
        }
    }
    out.sort_by_key(|d| d.partition);
    Ok(out)
}

fn reader<'a>(side: &'a Side, p: i32, opts: &Options) -> PartitionReader<'a> {
    PartitionReader {
        source: &side.source,
        topic: &side.topic,
        partition: p,
        fetch_bytes: opts.fetch_bytes,
    }
}

/// Log start and end of one side.
async fn bounds(side: &Side, p: i32) -> Result<(i64, i64), VerifyError> {
    let c = &side.source;
    let err = |e| VerifyError::kafka(c.name(), e);
    c.retry("log bounds", || c.bounds(&side.topic, p))
        .await
        .map_err(err)
}

/// Hashes the leaves of `[from, to)` of one side.
async fn leaves(
    side: &Side,
    p: i32,
    from: i64,
    to: i64,
    opts: &Options,
    progress: &dyn Progress,
) -> Result<(Vec<Leaf>, u64), VerifyError> {
    hash_range(&reader(side, p, opts), from, to, opts.leaf_offsets, &|n| {
        progress.advance(n)
    })
    .await
    .map_err(|e| VerifyError::kafka(side.source.name(), e))
}

/// One side's tree: built here from leaves read here, or held by a peer in the
/// source DC and asked node by node (only hashes cross the WAN).
enum Hashes {
    Local(Vec<Leaf>, Tree),
    Remote(Box<RemoteTree>),
}

impl Hashes {
    async fn build(
        side: &Side,
        p: i32,
        from: i64,
        to: i64,
        opts: &Options,
        progress: &dyn Progress,
    ) -> Result<(Hashes, u64), VerifyError> {
        if let Source::Peer(peer) = &side.source {
            let t = peer
                .peer
                .tree(&side.topic, p, from, to, opts.leaf_offsets)
                .await
                .map_err(|e| VerifyError::kafka(side.source.name(), e))?;
            progress.advance((to - from).max(0) as u64);
            return Ok((Hashes::Remote(Box::new(t)), 0));
        }
        let (l, bytes) = leaves(side, p, from, to, opts, progress).await?;
        let tree = Tree::from_leaves(&l.iter().map(|x| x.hash).collect::<Vec<_>>());
        Ok((Hashes::Local(l, tree), bytes))
    }

    fn leaves(&self) -> usize {
        match self {
            Hashes::Local(l, _) => l.len(),
            Hashes::Remote(t) => t.leaves as usize,
        }
    }

    async fn answer(
        &mut self,
        side: &Side,
        ids: &[NodeId],
    ) -> Result<Vec<Option<Hash>>, VerifyError> {
        match self {
            Hashes::Local(_, t) => Ok(t.answer(ids)),
            Hashes::Remote(t) => {
                let Source::Peer(peer) = &side.source else {
                    unreachable!("a remote tree comes from a peer")
                };
                let ids: Vec<(u32, u64)> = ids
                    .iter()
                    .map(|n| (n.layer as u32, n.index as u64))
                    .collect();
                t.nodes(&peer.peer, &ids)
                    .await
                    .map_err(|e| VerifyError::kafka(side.source.name(), e))
            }
        }
    }

    /// Records in leaves `run`.
    async fn records(&mut self, side: &Side, run: &[usize]) -> Result<u64, VerifyError> {
        match self {
            Hashes::Local(l, _) => Ok(run.iter().map(|i| l[*i].records).sum()),
            Hashes::Remote(t) => {
                let Source::Peer(peer) = &side.source else {
                    unreachable!("a remote tree comes from a peer")
                };
                let (first, n) = (run[0] as u64, run.len() as u32);
                let c = t
                    .counts(&peer.peer, first, n)
                    .await
                    .map_err(|e| VerifyError::kafka(side.source.name(), e))?;
                Ok(c.iter().sum())
            }
        }
    }
}

async fn partition(
    source: &Side,
    dest: &Side,
    p: i32,
    opts: &Options,
    progress: &dyn Progress,
) -> Result<PartitionDiff, VerifyError> {
    let started = Instant::now();
    let ((ss, se), (ds, de)) = tokio::try_join!(bounds(source, p), bounds(dest, p))?;
    // Offsets below the later log start exist on one side only because of retention,
    // which is not a difference of the copy; they are reported as a note.
    let from = opts.from.unwrap_or(ss.max(ds));
    let to = opts.to.unwrap_or(se.max(de)).max(from);
    progress.add_total(2 * (to - from) as u64);
    let c = compare(source, dest, p, from, to, opts, (se, de), progress).await?;
    let mut notes = Vec::new();
    if ss != ds {
        notes.push(format!(
            "log starts differ: source {ss}, destination {ds} (offsets below {} were not compared)",
            ss.max(ds)
        ));
    }
    if de < se {
        notes.push(format!(
            "destination ends at {de}, source at {se}: {} offsets missing at the tail",
            se - de
        ));
    } else if de > se {
        notes.push(format!(
            "destination ends at {de}, past the source end {se}: {} extra offsets",
            de - se
        ));
    }
    Ok(PartitionDiff {
        source_topic: source.topic.clone(),
        dest_topic: dest.topic.clone(),
        partition: p,
        from,
        to,
        source_log_start: ss,
        source_end: se,
        dest_log_start: ds,
        dest_end: de,
        leaves: c.leaves,
        identical: c.ranges.is_empty() && ss == ds && se == de,
        ranges: c.ranges,
        notes,
        bytes_read: c.bytes_read,
        nodes_compared: c.nodes_compared,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// What comparing one range of a partition pair found.
pub struct Compared {
    pub ranges: Vec<Range>,
    pub leaves: u64,
    pub nodes_compared: u64,
    /// Batch bytes read here (a peer's side is read where it is).
    pub bytes_read: u64,
}

/// Compares `[from, to)` of partition `p` on both sides: trees over leaves of
/// `opts.leaf_offsets`, walked top-down, differing leaves narrowed to records. `ends`:
/// each side's end offset (nothing is read past it).
#[allow(clippy::too_many_arguments)]
pub async fn compare(
    source: &Side,
    dest: &Side,
    p: i32,
    from: i64,
    to: i64,
    opts: &Options,
    (se, de): (i64, i64),
    progress: &dyn Progress,
) -> Result<Compared, VerifyError> {
    let ((mut ta, ba), (mut tb, bb)) = tokio::try_join!(
        Hashes::build(source, p, from, to, opts, progress),
        Hashes::build(dest, p, from, to, opts, progress)
    )?;
    let compare_err = |detail: String| VerifyError::Compare {
        topic: source.topic.clone(),
        partition: p,
        detail,
    };
    if ta.leaves() != tb.leaves() {
        return Err(compare_err(format!(
            "the sides hashed {} and {} leaves over the same range",
            ta.leaves(),
            tb.leaves()
        )));
    }
    let mut walk = Walk::new(tb.leaves());
    while !walk.is_done() {
        let ids = walk.wanted().to_vec();
        let (a, b) = tokio::try_join!(ta.answer(source, &ids), tb.answer(dest, &ids))?;
        walk.answer(&a, &b)
            .map_err(|e| compare_err(e.to_string()))?;
    }
    let mut ranges = Vec::new();
    for run in runs(walk.differing_leaves()) {
        let (first_leaf, last_leaf) = (run[0], run[run.len() - 1]);
        let (lo, _) = leaf_range(from, to, opts.leaf_offsets, first_leaf as u64);
        let (_, hi) = leaf_range(from, to, opts.leaf_offsets, last_leaf as u64);
        let first = narrow_leaf(source, dest, p, from, to, opts, first_leaf, (se, de)).await?;
        let last = if last_leaf == first_leaf {
            first
        } else {
            narrow_leaf(source, dest, p, from, to, opts, last_leaf, (se, de)).await?
        };
        ranges.push(Range {
            from: lo,
            to: hi,
            first: first.map_or(lo, |f| f.0),
            last: last.map_or(hi - 1, |l| l.1),
            source_records: ta.records(source, &run).await?,
            dest_records: tb.records(dest, &run).await?,
        });
    }
    Ok(Compared {
        ranges,
        leaves: tb.leaves() as u64,
        nodes_compared: walk.nodes_asked,
        bytes_read: ba + bb,
    })
}

/// Consecutive leaf indices grouped into runs.
fn runs(leaves: &[usize]) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    for &i in leaves {
        match out.last_mut() {
            Some(run) if i > 0 && run.last() == Some(&(i - 1)) => run.push(i),
            _ => out.push(vec![i]),
        }
    }
    out
}

/// First and last differing offset inside one leaf, from both sides' records. `ends`
/// are the sides' end offsets: a leaf past one side's end holds nothing there (a fetch
/// past the end would fail with OFFSET_OUT_OF_RANGE).
#[allow(clippy::too_many_arguments)]
async fn narrow_leaf(
    source: &Side,
    dest: &Side,
    p: i32,
    from: i64,
    to: i64,
    opts: &Options,
    leaf: usize,
    ends: (i64, i64),
) -> Result<Option<(i64, i64)>, VerifyError> {
    let (lo, hi) = leaf_range(from, to, opts.leaf_offsets, leaf as u64);
    let read = |side: &Side, end: i64| {
        let side = side.clone();
        let opts = opts.clone();
        async move {
            let mut recs = Vec::new();
            if lo < end {
                reader(&side, p, &opts)
                    .scan(lo, hi.min(end), |r| recs.push(r.clone()))
                    .await
                    .map_err(|e| VerifyError::kafka(side.source.name(), e))?;
            }
            Ok::<_, VerifyError>(recs)
        }
    };
    let (a, b) = tokio::try_join!(read(source, ends.0), read(dest, ends.1))?;
    Ok(narrow(&a, &b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_group_consecutive_leaves() {
        assert_eq!(runs(&[]), Vec::<Vec<usize>>::new());
        assert_eq!(
            runs(&[0, 1, 2, 5, 7, 8]),
            vec![vec![0, 1, 2], vec![5], vec![7, 8]]
        );
    }
}
