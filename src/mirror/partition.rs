//! The driver of one partition: resume from the destination end, verify the tail,
//! then fetch -> plan -> write until shutdown. Fetching runs one step ahead of writing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};

use crate::config::StartPolicy;
use crate::kafka::backoff::Backoff;
use crate::kafka::batch::{split_valid, RawBatch};
use crate::kafka::error::KafkaError;
use crate::mirror::catch_up;
use crate::mirror::cursor::{Cursor, Refusal};
use crate::mirror::error::MirrorError;
use crate::mirror::mode::{Mode, Tailing};
use crate::mirror::reconcile;
use crate::mirror::sink::{lineage, PartitionSink};
use crate::mirror::tail::{last_batch, verify_tail};
use crate::mirror::watermark::{Verdict, Watermark};
use crate::mirror::Shared;
use crate::source::Source;

/// One source partition and where it goes.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Job {
    pub source_topic: String,
    pub dest_topic: String,
    pub partition: i32,
}

pub(super) enum Chunk {
    Data {
        batches: Vec<RawBatch>,
        high_watermark: i64,
        /// Memory reservations, returned when the destination acknowledged the data.
        _permits: Vec<Arc<OwnedSemaphorePermit>>,
    },
    /// The source no longer holds offsets below `log_start`.
    Gone {
        log_start: i64,
    },
    /// Stop-at-end mode: the source end was reached.
    End,
    Failed(MirrorError),
}

pub(super) const KIB: usize = 1024;
/// A partition starting at least this many offsets behind catches up in pieces at
/// once (its record sizes, hence its backlog in bytes, are not known yet).
const START_SPLIT_OFFSETS: i64 = 4096;
/// A shared long poll's answer at least this large (or half the fetch size, if that
/// is less) makes the partition live (`mode`).
const LIVE_BYTES: usize = 64 * KIB;
/// What a partition asks for on the broker's shared long poll. Small: the shared
/// answer crosses one connection for every tailing partition of the broker (at 1 %
/// loss ~0.18 MB/s), and a full one only says the partition is busy (`mode`), whose
/// data then goes out in pieces over the pool. With 1 MiB each, eight partitions
/// that woke up at once made an 8 MiB answer that took most of a minute.
const SHARED_ASK: usize = 16 * KIB;
/// Upper bound of a grown fetch: larger than any batch a broker accepts by default.
pub(super) const MAX_FETCH: usize = 64 << 20;

/// What a partition's task holds while it runs.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The producer id and epoch of the fencing lock over this partition.
    pub producer: (i64, i16),
    /// Turns true when the partition must stop (shutdown, or lost to another member
    /// of the group): the produce in flight finishes, nothing more is written.
    pub stop: watch::Receiver<bool>,
}

/// Runs one partition until told to stop, the end (stop-at-end mode) or an error.
pub async fn run(shared: Arc<Shared>, job: Job, grant: Grant) -> Result<(), MirrorError> {
    let src = &shared.source;
    let dst = &shared.dest;
    let (st, p) = (&job.source_topic, job.partition);
    let dt = &job.dest_topic;
    let derr = |e| MirrorError::kafka(dst.name(), e);

    let dest_end = dst
        .retry("end offset", || dst.end_offset(dt, p))
        .await
        .map_err(derr)?;
    let Some((src_start, src_end)) =
        source_bounds_reaching(&shared, &job, dest_end, &grant.stop).await?
    else {
        return Ok(()); // shut down while waiting
    };
    tracing::info!(
        topic = %st, partition = p, dest_topic = %dt, dest_end, src_start, src_end,
        "partition resuming from destination end"
    );
    shared.stats.start(&job, dest_end, src_end);
    if dest_end > 0 {
        verify_tail(&shared, &job, dest_end, src_start).await?;
    }

    let cfg = &shared.config.mirror;
    let (producer_id, own_epoch) = grant.producer;
    // Continue the producer sequence of the partition's last batch where it is ours:
    // every write is then conditional on nobody having written since (sink::lineage).
    let last = last_batch(&shared.dest_reader, dt, p, dest_end, cfg.fetch_bytes).await?;
    let (producer_epoch, sequence) = lineage(last.as_ref(), producer_id, own_epoch);
    let mut cursor = Cursor::new(dest_end, cfg.gap_policy);
    let mut sink = PartitionSink {
        dest: dst.clone(),
        map: shared.map.clone(),
        topic: dt.clone(),
        partition: p,
        source_cluster: src.name().to_string(),
        source_topic: st.clone(),
        producer_id,
        producer_epoch,
        own_epoch,
        sequence,
        end: dest_end,
        fetch_bytes: cfg.fetch_bytes,
        acked: Vec::new(),
        produced: Vec::new(),
        fills: Default::default(),
        reader: shared.dest_reader.clone(),
    };
    pad_to(&shared, &job, &mut cursor, &mut sink, src_start).await?;
    // Resumed: caught up or behind from here (a caught-up partition may get no data
    // for a long time), fillers counted.
    shared.stats.record(&job, sink.end, src_end, 0);

    let (tx, mut rx) = mpsc::channel(4);
    let fetcher = tokio::spawn(fetch_loop(
        shared.clone(),
        job.clone(),
        cursor.next(),
        src_end,
        tx,
    ));
    let _abort = AbortOnDrop(fetcher);
    // Through a peer, what is copied is checked against the source by hashes from
    // time to time (what was there before this start had its tail checked above).
    let (written_tx, written_rx) = watch::channel(sink.end);
    let interval = cfg.verify_interval_secs;
    let mut reconciler = match src {
        Source::Peer(_) if interval > 0 => Some(tokio::spawn(reconcile::run(
            shared.clone(),
            job.clone(),
            sink.end,
            Duration::from_secs(interval),
            written_rx,
            sink.fills.clone(),
        ))),
        _ => None,
    };
    let _abort_reconciler = reconciler
        .as_ref()
        .map(|h| AbortHandleOnDrop(h.abort_handle()));
    let mut shutdown = grant.stop.clone();
    let mut caught_up = false;
    loop {
        let chunk = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return Ok(()),
            c = rx.recv() => c,
            e = async { reconciler.as_mut().expect("guarded").await }, if reconciler.is_some() => {
                reconciler = None;
                match e {
                    Ok(e) => return Err(e),
                    // Aborted or panicked: the partition goes on unchecked, loudly.
                    Err(j) => {
                        tracing::error!(topic = %st, partition = p, error = %j, "continuous reconciliation ended");
                        continue;
                    }
                }
            }
        };
        match chunk {
            None | Some(Chunk::End) => {
                tracing::info!(topic = %st, partition = p, end = cursor.next(), "partition reached the source end");
                return Ok(());
            }
            Some(Chunk::Failed(e)) => return Err(e),
            Some(Chunk::Gone { log_start }) => {
                pad_to(&shared, &job, &mut cursor, &mut sink, log_start).await?;
                shared.stats.advanced(&job, sink.end);
            }
            Some(Chunk::Data {
                batches,
                high_watermark,
                _permits,
            }) => {
                let (steps, refusal) = cursor.plan(&batches);
                let bytes = sink.write(steps).await?;
                written_tx.send_replace(sink.end);
                shared.stats.record(&job, sink.end, high_watermark, bytes);
                for (ts, at) in sink.take_acked() {
                    shared.stats.latency.record(st, ts, at);
                }
                for (sent, at) in sink.take_produced() {
                    shared.stats.produce.record(shared.dest.name(), sent, at);
                }
                if let Some(r) = refusal {
                    return Err(refused(&job, r));
                }
                let now_caught_up = sink.end >= high_watermark;
                if now_caught_up != caught_up {
                    caught_up = now_caught_up;
                    if caught_up {
                        tracing::info!(topic = %st, partition = p, end = sink.end, "partition caught up; tailing");
                    } else {
                        tracing::info!(topic = %st, partition = p, end = sink.end, high_watermark, "partition behind; catching up");
                    }
                }
            }
        }
    }
}

/// Ends a peer's push subscription of the partition when dropped.
struct ForgetTail(Source, String, i32);
impl Drop for ForgetTail {
    fn drop(&mut self) {
        self.0.forget_tail(&self.1, self.2);
    }
}

struct AbortHandleOnDrop(tokio::task::AbortHandle);
impl Drop for AbortHandleOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn refused(job: &Job, r: Refusal) -> MirrorError {
    match r {
        Refusal::Transactional { offset } => MirrorError::BadBatch {
            topic: job.source_topic.clone(),
            partition: job.partition,
            offset,
            detail: "transactional batches and control markers are not mirrored by this version"
                .into(),
        },
        Refusal::Gap { from, to } => MirrorError::PolicyRefused {
            topic: job.source_topic.clone(),
            partition: job.partition,
            offset: from,
            detail: format!("source offsets {from}..{to} do not exist (compaction)"),
            setting: "mirror.gap_policy = \"fill\"",
        },
    }
}

/// Applies the start policy when the source log starts above the destination end.
async fn pad_to(
    shared: &Shared,
    job: &Job,
    cursor: &mut Cursor,
    sink: &mut PartitionSink,
    log_start: i64,
) -> Result<(), MirrorError> {
    let from = cursor.next();
    if log_start <= from {
        return Ok(());
    }
    let cfg = &shared.config.mirror;
    let count = log_start - from;
    if cfg.start_policy == StartPolicy::Refuse || count > cfg.max_pad_records {
        return Err(MirrorError::PolicyRefused {
            topic: job.source_topic.clone(),
            partition: job.partition,
            offset: from,
            detail: format!(
                "the source log starts at {log_start}, above the destination end {from} ({count} offsets missing)"
            ),
            setting: if cfg.start_policy == StartPolicy::Refuse {
                "mirror.start_policy = \"pad\""
            } else {
                "mirror.max_pad_records"
            },
        });
    }
    cursor.skip_to(log_start);
    sink.fill(from, log_start, crate::mirror::offset_map::now_ms(), "pad")
        .await
}

/// After an answer with data but no whole batch: the next fetch size (doubled, up to
/// the largest), and at the largest size already, how long to wait first (longer
/// each time in a row: asking again at once would only spin).
fn no_whole_batch(
    max_bytes: usize,
    fetch_bytes: usize,
    starved: &mut Backoff,
) -> (usize, Option<Duration>) {
    let wait = (max_bytes >= MAX_FETCH).then(|| starved.next_delay());
    ((max_bytes * 2).max(fetch_bytes).min(MAX_FETCH), wait)
}

async fn fetch_loop(
    shared: Arc<Shared>,
    job: Job,
    mut offset: i64,
    src_end: i64,
    tx: mpsc::Sender<Chunk>,
) {
    let src = &shared.source;
    let cfg = &shared.config.mirror;
    let (topic, p) = (&job.source_topic, job.partition);
    // However this loop ends (an error, a stop, the task aborted), a peer stops
    // pushing the partition's tail.
    let _forget = ForgetTail(src.clone(), topic.clone(), p);
    let mut max_bytes = cfg.fetch_bytes;
    // For answers that bring data but no whole batch even at the largest fetch.
    let mut starved = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    let mut high_watermark = src_end;
    // A peer pushes the tail on a stream of its own: no round trip per answer.
    let mut tailing = match src {
        Source::Peer(_) => Tailing::pushed(),
        Source::Brokers(_) => Tailing::new(LIVE_BYTES),
    };
    let mut watermark = Watermark::new(Duration::from_secs(cfg.watermark_grace_secs));
    let mut below = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    // Far behind from the start: straight to the parallel catch-up.
    if src_end - offset >= START_SPLIT_OFFSETS {
        let start = catch_up::Start {
            offset,
            high_watermark: src_end,
            bytes_per_offset: None,
            largest_batch: 0,
            live: false,
        };
        match catch_up_then(&shared, &job, start, &mut tailing, &tx).await {
            Some((next, hw)) => (offset, high_watermark) = (next, hw),
            None => return,
        }
    }
    // What recent data looked like, for cutting a backlog into pieces.
    let mut bytes_per_offset = 1.0f64;
    let mut largest_batch = 0usize;
    // A single permit request larger than the whole budget would never be granted.
    let budget_kib = (cfg.in_flight_bytes / KIB) as u32;
    loop {
        let reserve = ((max_bytes / KIB).max(1) as u32).min(budget_kib);
        let Ok(mut permit) = shared.budget.clone().acquire_many_owned(reserve).await else {
            return;
        };
        // Only a fetch at the end waits for new data, on the broker's shared long-poll
        // connection (a live partition's probes go over the pool, see `catch_up`).
        // Reads behind the end go over the pool: one partition's megabytes must not
        // queue on the connection every quiet tailing partition shares.
        // A pushed tail brings what lies behind the end too, already on its way.
        let at_tail = offset >= high_watermark || tailing.pushes();
        // Grown past `fetch_bytes`: a batch larger than that is next. A push takes
        // what arrived, up to the fetch size, at each read.
        let tail_ask = if max_bytes > cfg.fetch_bytes || tailing.pushes() {
            max_bytes
        } else {
            SHARED_ASK.min(max_bytes)
        };
        let res = src
            .retry("fetch", || async {
                let wait = Duration::from_millis(cfg.tail_wait_ms);
                if at_tail {
                    src.fetch(topic, p, offset, tail_ask as i32, wait).await
                } else {
                    src.fetch_piece(topic, p, offset, max_bytes as i32, true, None)
                        .await
                }
            })
            .await;
        let mut live = false;
        let msg = match res {
            Ok(f) => {
                high_watermark = f.high_watermark;
                shared.stats.seen(&job, high_watermark);
                match watermark.on_answer(offset, f.high_watermark, Instant::now()) {
                    Verdict::Fine => below.reset(),
                    Verdict::Below { first } => {
                        // Nothing to copy below our offset; a new leader may not know
                        // the old watermark yet. Ask again, more slowly each time.
                        if first {
                            tracing::warn!(
                                topic = %topic, partition = p, offset, high_watermark,
                                "the source's high watermark is below what was already copied; waiting"
                            );
                        }
                        drop(permit);
                        tokio::time::sleep(below.next_delay()).await;
                        continue;
                    }
                    Verdict::Lost { for_ms } => {
                        let _ = tx
                            .send(Chunk::Failed(MirrorError::Diverged {
                                topic: topic.clone(),
                                partition: p,
                                offset,
                                detail: format!(
                                    "the source's high watermark {high_watermark} stayed below this offset for {for_ms} ms: the source lost records already copied (truncated or recreated?)"
                                ),
                            }))
                            .await;
                        return;
                    }
                }
                let (batches, bad) = split_valid(&f.records);
                if at_tail {
                    let next = batches.last().map_or(offset, |b| b.header.next_offset());
                    let behind = f.high_watermark - next;
                    live =
                        tailing.on_shared_answer(f.records.len(), tail_ask, behind) == Mode::Live;
                    if live {
                        tracing::debug!(
                            topic = %topic, partition = p, offset, bytes = f.records.len(),
                            high_watermark, "data keeps coming: the partition goes live"
                        );
                    }
                }
                tracing::debug!(
                    topic = %topic, partition = p, offset, asked = if at_tail { tail_ask } else { max_bytes }, bytes = f.records.len(),
                    batches = batches.len(), next = batches.last().map(|b| b.header.next_offset()),
                    high_watermark, "fetched"
                );
                if let Some(e) = bad {
                    // Copy what came before the bad batch, then stop at it.
                    if !batches.is_empty() {
                        let _ = tx
                            .send(Chunk::Data {
                                batches,
                                high_watermark: f.high_watermark,
                                _permits: vec![Arc::new(permit)],
                            })
                            .await;
                    }
                    let _ = tx
                        .send(Chunk::Failed(MirrorError::BadBatch {
                            topic: topic.clone(),
                            partition: p,
                            offset: e.offset(),
                            detail: e.to_string(),
                        }))
                        .await;
                    return;
                }
                let Some(last) = batches.last() else {
                    if offset < f.high_watermark && live {
                        // A busy partition whose shared answer brought no whole batch
                        // (tansu may bring none for a small ask): its data goes out in
                        // pieces over the pool at once, not as one large fetch on one
                        // connection, which at 1 % loss takes seconds per MiB.
                        drop(permit);
                        let start = catch_up::Start {
                            offset,
                            high_watermark,
                            bytes_per_offset: (largest_batch > 0).then_some(bytes_per_offset),
                            largest_batch,
                            live: true,
                        };
                        match catch_up_then(&shared, &job, start, &mut tailing, &tx).await {
                            Some((next, hw)) => (offset, high_watermark) = (next, hw),
                            None => return,
                        }
                        continue;
                    }
                    if offset < f.high_watermark && tailing.pushes() {
                        // A push still on its way (the high watermark came with an
                        // earlier one): not a batch too large for the fetch size.
                        continue;
                    }
                    if offset < f.high_watermark {
                        // Data exists but no whole batch came back: the next batch is
                        // larger than the fetch size (some brokers then return a cut
                        // batch, others nothing). Ask for more; at the largest size,
                        // asking again at once would only spin: wait, longer each time.
                        let (grown, wait) =
                            no_whole_batch(max_bytes, cfg.fetch_bytes, &mut starved);
                        if let Some(wait) = wait {
                            tracing::warn!(
                                topic = %topic, partition = p, offset, high_watermark = f.high_watermark,
                                max_bytes, wait_ms = wait.as_millis() as u64,
                                "the source answers with data but no whole batch even at the largest fetch; retrying"
                            );
                            drop(permit);
                            tokio::time::sleep(wait).await;
                        }
                        max_bytes = grown;
                        continue;
                    }
                    if shared.stop_at_end {
                        let _ = tx.send(Chunk::End).await;
                        return;
                    }
                    continue;
                };
                let span = (last.header.next_offset() - batches[0].header.base_offset).max(1);
                offset = last.header.next_offset();
                max_bytes = cfg.fetch_bytes;
                starved.reset();
                let size = f.records.len();
                largest_batch =
                    largest_batch.max(batches.iter().map(|b| b.bytes.len()).max().unwrap_or(0));
                bytes_per_offset = size as f64 / span as f64;
                let reserved = reserve as usize * KIB;
                if size > reserved {
                    // Trade the reservation for one of the right size in a single
                    // acquire: holding part while waiting for more deadlocks when every
                    // partition does it at once.
                    let needed = ((size / KIB + 1) as u32).min(budget_kib);
                    drop(permit);
                    permit = match shared.budget.clone().acquire_many_owned(needed).await {
                        Ok(p) => p,
                        Err(_) => return,
                    };
                }
                Chunk::Data {
                    batches,
                    high_watermark: f.high_watermark,
                    _permits: vec![Arc::new(permit)],
                }
            }
            Err(KafkaError::Partition {
                code: ResponseError::OffsetOutOfRange,
                ..
            }) => match src.retry("log start", || src.log_start(topic, p)).await {
                Ok(start) if start > offset => {
                    offset = start;
                    Chunk::Gone { log_start: start }
                }
                Ok(_) => Chunk::Failed(MirrorError::Diverged {
                    topic: topic.clone(),
                    partition: p,
                    offset,
                    detail: "the source log ends below this offset (truncated source?)".into(),
                }),
                Err(e) => Chunk::Failed(MirrorError::kafka(src.name(), e)),
            },
            Err(e) => Chunk::Failed(MirrorError::kafka(src.name(), e)),
        };
        let stop = matches!(msg, Chunk::Failed(_));
        let data = matches!(msg, Chunk::Data { .. });
        if tx.send(msg).await.is_err() || stop {
            return;
        }
        // Far behind, or live: fetch the rest in parallel pieces over the pool.
        let behind = (high_watermark - offset) as f64 * bytes_per_offset;
        let far = behind > shared.config.transport.split_bytes as f64;
        if data && (far || live) {
            let start = catch_up::Start {
                offset,
                high_watermark,
                bytes_per_offset: Some(bytes_per_offset),
                largest_batch,
                live: !far,
            };
            match catch_up_then(&shared, &job, start, &mut tailing, &tx).await {
                Some((next, hw)) => (offset, high_watermark) = (next, hw),
                None => return,
            }
        }
    }
}

/// The source's log bounds, once its end reaches the destination's `dest_end`. A
/// source end below it is waited out for the watermark grace (a new leader's high
/// watermark may lag); past it, the source lost what we copied: `Diverged`. `None`
/// when the mirror shuts down meanwhile.
async fn source_bounds_reaching(
    shared: &Shared,
    job: &Job,
    dest_end: i64,
    stop: &watch::Receiver<bool>,
) -> Result<Option<(i64, i64)>, MirrorError> {
    let src = &shared.source;
    let (st, p) = (&job.source_topic, job.partition);
    let grace = Duration::from_secs(shared.config.mirror.watermark_grace_secs);
    let mut watermark = Watermark::new(grace);
    let mut below = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    loop {
        let (start, end) = src
            .retry("log bounds", || src.bounds(st, p))
            .await
            .map_err(|e| MirrorError::kafka(src.name(), e))?;
        match watermark.on_answer(dest_end, end, Instant::now()) {
            Verdict::Fine => return Ok(Some((start, end))),
            Verdict::Below { first } => {
                if first {
                    tracing::warn!(
                        topic = %st, partition = p, dest_end, src_end = end,
                        "the source ends below the destination; waiting"
                    );
                }
                // The grace can be a minute: a shutdown must not wait for it.
                let mut sd = stop.clone();
                tokio::select! {
                    _ = sd.wait_for(|s| *s) => return Ok(None),
                    _ = tokio::time::sleep(below.next_delay()) => {}
                }
            }
            Verdict::Lost { for_ms } => {
                return Err(MirrorError::Diverged {
                    topic: job.dest_topic.clone(),
                    partition: p,
                    offset: end,
                    detail: format!(
                        "destination ends at {dest_end} but the source only at {end}, for {for_ms} ms; the destination holds records the source does not"
                    ),
                })
            }
        }
    }
}

/// A catch-up in pieces from `start` (`catch_up::run`): where it ended, or `None` when
/// this partition's fetching is over (the writer is gone, an error was passed on, or
/// the end was reached in stop-at-end mode).
async fn catch_up_then(
    shared: &Arc<Shared>,
    job: &Job,
    start: catch_up::Start,
    tailing: &mut Tailing,
    tx: &mpsc::Sender<Chunk>,
) -> Option<(i64, i64)> {
    let (offset, high_watermark) = catch_up::run(shared, job, start, tailing, tx).await?;
    if at_end(shared, offset, high_watermark, tx).await {
        return None;
    }
    Some((offset, high_watermark))
}

/// In stop-at-end mode, whether a catch-up ended at the source's end as its last
/// answers reported it; the end is then passed on without one more fetch to confirm
/// (a round trip, plus the long poll's wait, on a long path).
async fn at_end(
    shared: &Shared,
    offset: i64,
    high_watermark: i64,
    tx: &mpsc::Sender<Chunk>,
) -> bool {
    if shared.stop_at_end && offset >= high_watermark {
        let _ = tx.send(Chunk::End).await;
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers with data but no whole batch: the fetch grows to the largest size
    /// without waiting, and from there each retry waits longer than the one before
    /// (it refetched at once, forever, before).
    #[test]
    fn a_source_with_no_whole_batch_is_asked_again_ever_more_slowly() {
        let mut starved = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        let mut size = 1 << 20;
        let mut waits = Vec::new();
        for _ in 0..16 {
            let (next, wait) = no_whole_batch(size, 1 << 20, &mut starved);
            assert!(next >= size && next <= MAX_FETCH);
            if size < MAX_FETCH {
                assert_eq!(wait, None, "waited while the fetch could still grow");
            }
            waits.extend(wait);
            size = next;
        }
        assert_eq!(size, MAX_FETCH);
        assert!(waits.len() >= 5, "{waits:?}");
        assert!(waits.windows(2).all(|w| w[1] >= w[0]), "{waits:?}");
        assert!(waits.last() > waits.first(), "{waits:?}");
        assert_eq!(waits.last(), Some(&Duration::from_secs(2)));
    }
}
