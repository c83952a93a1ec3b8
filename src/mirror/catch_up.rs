//! The driver of a partition's catch-up in pieces: sends the fetches [`Pieces`] plans
//! over the source broker's connection pool, many at once, feeds the answers back and
//! passes the reassembled, in-order batches to the writer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::task::JoinSet;

use super::partition::{Chunk, Job, KIB, MAX_FETCH};
use super::pieces::{Outcome, Pieces};
use crate::kafka::batch::{split_valid, RawBatch};
use crate::kafka::client::Fetched;
use crate::kafka::error::KafkaError;
use crate::mirror::error::MirrorError;
use crate::mirror::Shared;

type Permit = Arc<OwnedSemaphorePermit>;
type Answer = (u64, Option<Permit>, Result<Fetched, KafkaError>);

/// How often the driver looks for slow pieces to fetch a second time.
const STEAL_CHECK: Duration = Duration::from_millis(250);

/// What the sequential reader knows when it hands over.
pub(super) struct Start {
    pub offset: i64,
    pub high_watermark: i64,
    /// Average bytes per offset of recent data, for cutting pieces.
    pub bytes_per_offset: f64,
    /// Largest batch seen: every fetch must be able to hold one.
    pub largest_batch: usize,
}

/// Catches up from `start.offset` in pieces. Returns the offset to continue from
/// sequentially, or `None` when the writer is gone or a failure was passed on.
pub(super) async fn run(
    shared: &Arc<Shared>,
    job: &Job,
    start: Start,
    tx: &mpsc::Sender<Chunk>,
) -> Option<i64> {
    let t = &shared.config.transport;
    let budget_kib = (shared.config.mirror.in_flight_bytes / KIB) as u32;
    let mut piece_bytes = t.piece_bytes.max(start.largest_batch).min(MAX_FETCH);
    let mut bpo = start.bytes_per_offset.max(1.0);
    let len = |bytes: usize, bpo: f64| ((bytes as f64 / bpo).ceil() as i64).max(1);
    let mut pieces: Pieces<RawBatch, Permit> =
        Pieces::new(start.offset, start.high_watermark, len(piece_bytes, bpo));
    // Bytes asked for at the head; doubled when a batch there is larger.
    let mut head_bytes = piece_bytes;
    let mut high_watermark = start.high_watermark;
    let mut tasks: JoinSet<Answer> = JoinSet::new();
    let clock = Instant::now();
    let now = || clock.elapsed().as_millis() as u64;
    // What was wrong with the first corrupt batch met, for the error once it is reached.
    let mut corrupt: Option<String> = None;
    // For the closing log line: answers taken, and the connections that carried them.
    let mut answers = 0u64;
    let mut duplicates = 0u64;
    let mut conns = std::collections::HashSet::new();
    let (topic, p) = (&job.source_topic, job.partition);
    tracing::info!(
        topic = %topic, partition = p, from = start.offset, to = start.high_watermark,
        piece_offsets = len(piece_bytes, bpo), piece_bytes,
        "partition far behind; catching up in parallel pieces"
    );
    let launch = |tasks: &mut JoinSet<Answer>,
                  r: super::pieces::Request,
                  bytes: usize,
                  permit: Option<Permit>| {
        let shared = shared.clone();
        let topic = topic.clone();
        tasks.spawn(async move {
            let src = &shared.source;
            let res = src
                .retry("fetch piece", || {
                    src.fetch_piece(&topic, p, r.start, bytes as i32)
                })
                .await;
            (r.id, permit, res)
        });
    };
    loop {
        let reserve = ((piece_bytes / KIB).max(1) as u32).min(budget_kib);
        // Send all that can go now: the head without a permit, the rest with one.
        while let Some(r) = pieces.next_request(now(), false) {
            duplicates += r.duplicate as u64;
            launch(&mut tasks, r, head_bytes, None);
        }
        while pieces.wants_more(now()) {
            let Ok(permit) = shared.budget.clone().try_acquire_many_owned(reserve) else {
                break;
            };
            let Some(r) = pieces.next_request(now(), true) else {
                break;
            };
            let bytes = if r.start == pieces.emitted() {
                head_bytes
            } else {
                piece_bytes
            };
            duplicates += r.duplicate as u64;
            launch(&mut tasks, r, bytes, Some(Arc::new(permit)));
        }
        if pieces.is_done() {
            break;
        }
        let wants = pieces.wants_more(now());
        tokio::select! {
            joined = tasks.join_next(), if !tasks.is_empty() => {
                let Some(Ok((id, permit, res))) = joined else { continue };
                match res {
                    Ok(f) => {
                        answers += 1;
                        conns.insert(f.conn);
                        high_watermark = high_watermark.max(f.high_watermark);
                        let (batches, bad) = split_valid(&f.records);
                        if let Some(largest) = batches.iter().map(|b| b.bytes.len()).max() {
                            piece_bytes = piece_bytes.max(largest).min(MAX_FETCH);
                        }
                        if let (Some(first), Some(last)) = (batches.first(), batches.last()) {
                            let span = (last.header.next_offset() - first.header.base_offset).max(1);
                            let size: usize = batches.iter().map(|b| b.bytes.len()).sum();
                            bpo = bpo * 0.8 + (size as f64 / span as f64) * 0.2;
                            pieces.set_piece_len(len(piece_bytes, bpo));
                        }
                        let outcome = match bad {
                            Some(e) => {
                                if corrupt.is_none() {
                                    corrupt = Some(e.to_string());
                                }
                                pieces.on_corrupt(id, batches, e.offset(), permit, now())
                            }
                            None => pieces.on_answer(id, batches, permit, now()),
                        };
                        if outcome == Outcome::TooSmall {
                            head_bytes = (head_bytes * 2).min(MAX_FETCH);
                        }
                        // Keep going in pieces only while far behind; the last stretch
                        // is read sequentially.
                        let far = (high_watermark - pieces.emitted()) as f64 * bpo;
                        if far > t.split_bytes as f64 {
                            pieces.extend(high_watermark);
                        }
                    }
                    Err(e) => {
                        // Retries are spent: hand back to the sequential reader, which
                        // meets the same error and handles it (log start moved, leader
                        // gone, ...) or reports it.
                        tracing::info!(topic = %topic, partition = p, offset = pieces.emitted(), error = %e, "catch-up piece failed; continuing sequentially");
                        pieces.on_failed(id);
                        if !emit(&mut pieces, high_watermark, tx).await {
                            return None;
                        }
                        return Some(pieces.emitted());
                    }
                }
            }
            permit = shared.budget.clone().acquire_many_owned(reserve), if wants => {
                let Ok(permit) = permit else { return None };
                if let Some(r) = pieces.next_request(now(), true) {
                    let bytes = if r.start == pieces.emitted() { head_bytes } else { piece_bytes };
                    duplicates += r.duplicate as u64;
                    launch(&mut tasks, r, bytes, Some(Arc::new(permit)));
                }
            }
            _ = tokio::time::sleep(STEAL_CHECK) => {}
            _ = tx.closed() => return None,
        }
        if !emit(&mut pieces, high_watermark, tx).await {
            return None;
        }
        if let Some(bad) = pieces.stopped() {
            let _ = tx
                .send(Chunk::Failed(MirrorError::BadBatch {
                    topic: topic.clone(),
                    partition: p,
                    offset: bad,
                    detail: corrupt.take().unwrap_or_else(|| "corrupt batch".into()),
                }))
                .await;
            return None;
        }
    }
    tracing::info!(
        topic = %topic, partition = p, end = pieces.emitted(), answers, duplicates,
        connections = conns.len(), "parallel catch-up finished"
    );
    Some(pieces.emitted())
}

/// Passes what is in order to the writer; false when the writer is gone.
async fn emit(
    pieces: &mut Pieces<RawBatch, Permit>,
    high_watermark: i64,
    tx: &mpsc::Sender<Chunk>,
) -> bool {
    let (batches, permits) = pieces.pop_ready();
    if batches.is_empty() {
        return true;
    }
    tx.send(Chunk::Data {
        batches,
        high_watermark,
        _permits: permits,
    })
    .await
    .is_ok()
}
