//! The driver of a partition's catch-up in pieces: sends the fetches [`Pieces`] plans
//! over the source broker's connection pool, many at once, feeds the answers back and
//! passes the reassembled, in-order batches to the writer.
//!
//! Its end moves: every answer, and every answer's head, reports the high watermark,
//! and what lies below it is planned at once. Once everything known is in, a live
//! partition sends one probe at its end on a pooled connection, held at the broker
//! for the tail wait, until [`Tailing`] says the data stopped coming (docs/live.md).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::mode::{Next, Tailing};
use super::partition::{Chunk, Job, KIB, MAX_FETCH};
use super::pieces::{MidBatch, Outcome, Pieces, Request};
use super::tasks::PieceTasks;
use crate::kafka::batch::{split_valid, RawBatch};
use crate::kafka::client::Fetched;
use crate::kafka::connection::ConnStats;
use crate::kafka::error::KafkaError;
use crate::kafka::fetch_mux::OnHead;
use crate::kafka::peek::Head;
use crate::mirror::error::MirrorError;
use crate::mirror::Shared;
use crate::source::Lease;

type Permit = Arc<OwnedSemaphorePermit>;
type Answer = (
    Request,
    Option<Permit>,
    Duration,
    Result<Fetched, KafkaError>,
);

/// Most pieces a backlog of unknown record sizes is first cut into ...
const SCATTER: i64 = 64;
/// ... and the fewest offsets each of them spans.
const SCATTER_SPACING: i64 = 1024;
/// How many of them are asked for before the first answer tells the record sizes.
const SCATTER_WINDOW: i64 = 16;
/// How often the driver looks for slow pieces to fetch a second time.
const STEAL_CHECK: Duration = Duration::from_millis(250);
/// Least time before a stuck piece is copied: far behind, pieces are large and
/// copies cost link time; live, a piece is a few round trips of data and every record
/// behind it waits (decision 43).
const FAR_STEAL_MS: u64 = 2_000;
const LIVE_STEAL_MS: u64 = 600;
/// How often the driver logs where it stands (at debug).
const STATE_EVERY: Duration = Duration::from_secs(1);

/// What the sequential reader knows when it hands over.
pub(super) struct Start {
    pub offset: i64,
    pub high_watermark: i64,
    /// Average bytes per offset of recent data, for cutting pieces; `None` when no
    /// data was read yet (a partition that starts far behind).
    pub bytes_per_offset: Option<f64>,
    /// Largest batch seen: every fetch must be able to hold one.
    pub largest_batch: usize,
    /// The partition is live (its data keeps coming), not far behind: the operator's
    /// log hears of it at debug only.
    pub live: bool,
}

/// Catches up from `start.offset` in pieces, and on while the data keeps coming
/// (`tailing`; not in stop-at-end mode). Returns the offset to continue from
/// sequentially and the highest high watermark the answers reported, or `None` when
/// the writer is gone or a failure was passed on.
pub(super) async fn run(
    shared: &Arc<Shared>,
    job: &Job,
    start: Start,
    tailing: &mut Tailing,
    tx: &mpsc::Sender<Chunk>,
) -> Option<(i64, i64)> {
    let t = &shared.config.transport;
    let budget_kib = (shared.config.mirror.in_flight_bytes / KIB) as u32;
    let tail_wait = Duration::from_millis(shared.config.mirror.tail_wait_ms);
    let mut size = Sizing::new(t.piece_bytes, start.largest_batch);
    let len = |bytes: usize, bpo: f64| ((bytes as f64 / bpo.max(1e-3)).ceil() as i64).max(1);
    // With nothing known of the data yet, the backlog is first cut into a few wide
    // pieces each asked for one batch: their answers, all arriving about one round
    // trip later, tell the record sizes, and the rest of each piece is fetched as
    // remainders of the right size. (Fetching one batch first and waiting for it
    // costs a whole slow-started transfer on a lossy path.)
    let mut bpo = start.bytes_per_offset.unwrap_or(0.0);
    // Average offsets per batch, for keeping pieces longer than a batch.
    let mut batch_span = 0.0f64;
    let mut mid_batch = MidBatch::Unknown;
    let first_len = match start.bytes_per_offset {
        Some(b) => len(size.piece_bytes(), b),
        None => {
            size.scatter = true;
            let span = start.high_watermark - start.offset;
            // On Kafka a wide piece starting inside a batch receives that batch, which
            // the piece before would fetch too if its rest went out before this
            // piece's head said where that batch begins (`Pieces` waits for heads,
            // but briefly): keep them few on short backlogs.
            (span / (span / SCATTER_SPACING).clamp(2, SCATTER)).max(1)
        }
    };
    let mut pieces: Pieces<RawBatch, Permit> =
        Pieces::new(start.offset, start.high_watermark, first_len);
    if size.scatter {
        // Until record sizes are known, no further out than the first few pieces:
        // answers far ahead of the head wait in memory for everything before them.
        pieces.set_window(SCATTER_WINDOW * first_len);
    }
    let mut high_watermark = start.high_watermark;
    let mut tasks: PieceTasks<Answer> = PieceTasks::new();
    let clock = Instant::now();
    let now = || clock.elapsed().as_millis() as u64;
    // What was wrong with the first corrupt batch met, for the error once it is reached.
    let mut corrupt: Option<String> = None;
    // For the closing log line: answers taken, and the connections that carried them.
    let mut answers = 0u64;
    let mut duplicates = 0u64;
    // Bytes answers carried, and bytes handed on: the difference crossed the WAN for
    // nothing (duplicates, overlaps).
    let mut fetched_bytes = 0u64;
    let mut used_bytes = 0u64;
    let mut conns = std::collections::HashSet::new();
    let (topic, p) = (&job.source_topic, job.partition);
    if start.live {
        tracing::debug!(
            topic = %topic, partition = p, from = start.offset, to = start.high_watermark,
            "partition live: fetching its tail in pieces and probes over the pool"
        );
    } else {
        tracing::info!(
            topic = %topic, partition = p, from = start.offset, to = start.high_watermark,
            piece_offsets = first_len, piece_bytes = size.piece_bytes(),
            "partition far behind; catching up in parallel pieces"
        );
    }
    // The pool's demand changes with this partition's mode: its sizer must not judge
    // a growth on this window (`transport::sizer`).
    shared.source.note_switch(topic, p).await;
    // What follows once everything known is in: a probe, or the end of this catch-up.
    let mut after = if shared.stop_at_end || tailing.pushes() {
        Next::Leave
    } else {
        Next::Probe
    };
    let mut probes = 0u64;
    let mut probe_id: Option<u64> = None;
    // Heads of answers still arriving: (request id, the head, whether the request
    // asked for one batch).
    // Unbounded in type only: at most one head per request in flight, and requests
    // are bounded by the budget.
    let (heads_tx, mut heads_rx) = mpsc::unbounded_channel::<(u64, Head, bool)>();
    // A fetch goes on the connection leased for it, if any; pieces the writer waits for
    // (the head, duplicates of slow ones) are urgent and skip the queue. Retries go
    // through the pool afresh (the leader may have moved). A probe is held at the
    // broker for `wait`. Returns the leased connection's counters, to watch the answer
    // arrive.
    let launch = |tasks: &mut PieceTasks<Answer>,
                  r: Request,
                  bytes: usize,
                  permit: Option<Permit>,
                  lease: Option<Lease>,
                  urgent: bool,
                  wait: Duration| {
        tracing::debug!(
            topic = %topic, partition = p, id = r.id, start = r.start, end = r.end,
            duplicate = r.duplicate, urgent, ask_bytes = bytes, wait_ms = wait.as_millis() as u64,
            "piece sent"
        );
        let progress = lease.as_ref().map(Lease::progress);
        let shared = shared.clone();
        let topic = topic.clone();
        // A one-batch ask brings just the batch its head names: what lies past it can
        // be asked for as soon as the head is in, seconds before the whole answer. Any
        // head says where the answer begins (below the fetch offset on Kafka).
        let heads = heads_tx.clone();
        let (id, one_batch) = (r.id, bytes == 1);
        let on_first = move || -> Option<OnHead> {
            let tx = heads.clone();
            Some(Box::new(move |head| {
                let _ = tx.send((id, head, one_batch));
            }))
        };
        tasks.spawn(id, async move {
            let sent = Instant::now();
            let src = &shared.source;
            let first = match lease {
                Some(l) => match l.fetch(&topic, p, r.start, bytes as i32, wait, on_first()).await {
                    Ok(f) => Some(f),
                    Err(e) => {
                        tracing::debug!(topic = %topic, partition = p, offset = r.start, error = %e, "leased fetch failed; retrying through the pool");
                        None
                    }
                },
                None => None,
            };
            let res = match first {
                Some(f) => Ok(f),
                None => {
                    src.retry("fetch piece", || async {
                        src.lease(&topic, p, urgent)
                            .await?
                            .fetch(&topic, p, r.start, bytes as i32, wait, on_first())
                            .await
                    })
                    .await
                }
            };
            (r, permit, sent.elapsed(), res)
        });
        progress
    };
    // Leased fetches whose answers are watched as they arrive: request id -> the
    // connection's counters and the bytes seen there last. (After a failed leased
    // fetch the retry goes elsewhere and the old connection may carry another fetch:
    // its bytes then count for this one, which at worst delays a duplicate.)
    let mut watched: HashMap<u64, (Arc<ConnStats>, u64)> = HashMap::new();
    // Work beyond the head waits for memory and then for a free pooled connection, and
    // is planned only once both are there: a piece planned earlier and queued for a
    // connection would hold memory for nothing, and by the time a connection frees up
    // the range at the head may need it more.
    let mut grant: Option<Pin<Box<dyn Future<Output = Grant> + Send>>> = None;
    shared.catch_ups.fetch_add(1, Ordering::Relaxed);
    let _count = CountGuard(&shared.catch_ups);
    let mut last_state = Instant::now();
    loop {
        if last_state.elapsed() >= STATE_EVERY {
            last_state = Instant::now();
            tracing::debug!(
                topic = %topic, partition = p, emitted = pieces.emitted(),
                in_flight = pieces.in_flight(), waiting = pieces.waiting(),
                head_age_ms = pieces.head_age(now()), asking = grant.is_some(),
                wants = pieces.wants_more(now()),
                budget_free_mib = shared.budget.available_permits() / 1024, "catch-up state"
            );
        }
        if bpo > 0.0 {
            // Far from the end, pieces are sized for goodput; near it, for latency:
            // a record waits for at most one short transfer (docs/live.md).
            let far = (high_watermark - pieces.emitted()) as f64 * bpo > t.split_bytes as f64;
            size.live = !far;
            size.configured = if far {
                t.piece_bytes
            } else {
                t.live_piece_bytes.min(t.piece_bytes)
            };
            pieces.set_min_steal_ms(if far { FAR_STEAL_MS } else { LIVE_STEAL_MS });
            // A piece must hold a batch start or its answer is a batch that belongs to
            // (and is fetched by) the next piece too.
            let by_bytes = len(size.piece_bytes(), bpo);
            pieces.set_piece_len(by_bytes.max((2.0 * batch_span) as i64));
            let split = mid_batch == MidBatch::Next && size.one_batch_each();
            pieces.set_split(split.then_some(batch_span.round() as i64));
            pieces.set_one_batch(size.one_batch_each());
        }
        let reserve = ((size.piece_bytes() / KIB).max(1) as u32).min(budget_kib);
        // A fair share of the budget: one slow head must not hold all of it while
        // other partitions have nothing in flight.
        let share =
            shared.config.mirror.in_flight_bytes / shared.catch_ups.load(Ordering::Relaxed).max(1);
        if bpo > 0.0 {
            pieces.set_window((share as f64 / bpo) as i64);
        }
        // The head goes at once, without a permit; the rest as grants come in.
        while let Some(r) = pieces.next_request(now(), false) {
            duplicates += r.duplicate as u64;
            let bytes = size.ask(true, est(&r, bpo), r.end >= high_watermark);
            launch(&mut tasks, r, bytes, None, None, true, Duration::ZERO);
        }
        if pieces.is_done() {
            if after == Next::Leave {
                break;
            }
            // Everything known is in: one probe at the end, on a pooled connection of
            // its own, held at the broker for the tail wait.
            if let Some(r) = pieces.probe(now()) {
                probes += 1;
                probe_id = Some(r.id);
                let bytes = size.ask(true, None, true);
                // Not urgent: nothing waits for it, and an urgent request may open a
                // connection past the sizer's target.
                launch(&mut tasks, r, bytes, None, None, false, tail_wait);
            }
        }
        if grant.is_none() && pieces.wants_more(now()) {
            grant = Some(Box::pin(ask_grant(
                shared.clone(),
                topic.clone(),
                p,
                reserve,
            )));
        }
        tokio::select! {
            joined = tasks.next(), if !tasks.is_empty() => {
                let (r, permit, took, res) = match joined {
                    Some(Ok(answer)) => answer,
                    Some(Err(lost)) => {
                        // A bug, not a network fault: say so loudly, and hand the
                        // range to the sequential reader rather than re-plan it into
                        // the same panic.
                        tracing::error!(topic = %topic, partition = p, id = lost.request, offset = pieces.emitted(), why = %lost.why, "catch-up piece task panicked; continuing sequentially");
                        watched.remove(&lost.request);
                        pieces.on_failed(lost.request);
                        if !emit(&mut pieces, high_watermark, tx, &mut used_bytes).await {
                            return None;
                        }
                        shared.source.note_switch(topic, p).await;
                        return Some((pieces.emitted(), high_watermark));
                    }
                    None => continue,
                };
                let id = r.id;
                watched.remove(&id);
                match res {
                    Ok(f) => {
                        answers += 1;
                        fetched_bytes += f.records.len() as u64;
                        conns.insert(f.conn);
                        high_watermark = high_watermark.max(f.high_watermark);
                        let (batches, bad) = split_valid(&f.records);
                        tracing::debug!(
                            topic = %topic, partition = p, id, conn = f.conn, bytes = f.records.len(),
                            took_ms = took.as_millis() as u64, queued_ms = f.queued.as_millis() as u64,
                            first = batches.first().map(|b| b.header.base_offset),
                            next = batches.last().map(|b| b.header.next_offset()),
                            "piece answer"
                        );
                        if let Some(largest) = batches.iter().map(|b| b.bytes.len()).max() {
                            size.saw_batch(largest);
                            size.scatter = false;
                        }
                        if let Some(first) = batches.first() {
                            let seen = mid_batch.observe(r.start, first.header.base_offset);
                            if seen != mid_batch {
                                // Which branch of the piece rules runs depends on this
                                // (decisions 27-29): say which one, once per change.
                                tracing::info!(
                                    topic = %topic, partition = p, style = ?seen, fetch = r.start,
                                    first = first.header.base_offset,
                                    "source answers a fetch inside a batch with {}",
                                    if seen == MidBatch::Holding { "the batch holding it" } else { "the next batch" }
                                );
                            }
                            mid_batch = seen;
                            pieces.set_mid_batch(seen);
                        }
                        if let (Some(first), Some(last)) = (batches.first(), batches.last()) {
                            let span = (last.header.next_offset() - first.header.base_offset).max(1);
                            let got: usize = batches.iter().map(|b| b.bytes.len()).sum();
                            let here = got as f64 / span as f64;
                            bpo = if bpo > 0.0 { bpo * 0.8 + here * 0.2 } else { here };
                            let per_batch = span as f64 / batches.len() as f64;
                            batch_span = if batch_span > 0.0 { batch_span * 0.8 + per_batch * 0.2 } else { per_batch };
                        }
                        if probe_id == Some(id) {
                            probe_id = None;
                            after = if shared.stop_at_end { Next::Leave } else { tailing.on_probe(f.records.len()) };
                        } else if !batches.is_empty() {
                            tailing.on_data();
                        }
                        // Before the answer: a probe's claim past the end shrinks first.
                        pieces.on_high_watermark(high_watermark);
                        let waiting_before = pieces.waiting();
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
                            size.head_too_small();
                        }
                        if waiting_before == 0 && pieces.waiting() > 0 {
                            // An answer overtook an earlier piece's: it waits in memory
                            // (the chaos tests look for this line at each kill).
                            tracing::debug!(topic = %topic, partition = p, id, emitted = pieces.emitted(), "pieces out of order");
                        }
                    }
                    Err(e) => {
                        // Retries are spent: hand back to the sequential reader, which
                        // meets the same error and handles it (log start moved, leader
                        // gone, ...) or reports it.
                        tracing::info!(topic = %topic, partition = p, offset = pieces.emitted(), error = %e, "catch-up piece failed; continuing sequentially");
                        pieces.on_failed(id);
                        if !emit(&mut pieces, high_watermark, tx, &mut used_bytes).await {
                            return None;
                        }
                        shared.source.note_switch(topic, p).await;
                        return Some((pieces.emitted(), high_watermark));
                    }
                }
            }
            granted = async { grant.as_mut().expect("guarded").await }, if grant.is_some() => {
                grant = None;
                let (permit, lease) = granted?;
                // Nothing to do by now (answers came in meanwhile): both go back.
                if let Some(r) = pieces.next_request(now(), true) {
                    let head = r.start == pieces.emitted();
                    let bytes = size.ask(head, est(&r, bpo), r.end >= high_watermark);
                    duplicates += r.duplicate as u64;
                    let id = r.id;
                    if let Some(st) = launch(&mut tasks, r, bytes, Some(Arc::new(permit)), lease, head || r.duplicate, Duration::ZERO) {
                        let seen = st.bytes_in.load(Ordering::Relaxed);
                        watched.insert(id, (st, seen));
                        pieces.on_progress(id, now());
                    }
                }
            }
            Some((id, head, one_batch)) = heads_rx.recv() => {
                tracing::debug!(topic = %topic, partition = p, id, first = ?head.first, high_watermark = head.high_watermark, "piece head");
                // The end moves a whole transfer before the answer is in.
                high_watermark = high_watermark.max(head.high_watermark);
                pieces.on_high_watermark(high_watermark);
                match head.first {
                    Some((base, next)) if one_batch => pieces.on_first_batch(id, base, next, now()),
                    Some((base, _)) => pieces.on_head(id, base, now()),
                    None => {}
                }
            }
            _ = tokio::time::sleep(STEAL_CHECK) => {}
            _ = tx.closed() => return None,
        }
        for (id, (st, seen)) in watched.iter_mut() {
            let bytes = st.bytes_in.load(Ordering::Relaxed);
            if bytes != *seen {
                *seen = bytes;
                pieces.on_progress(*id, now());
            }
        }
        if !emit(&mut pieces, high_watermark, tx, &mut used_bytes).await {
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
    let wasted_bytes = fetched_bytes.saturating_sub(used_bytes);
    if start.live {
        tracing::debug!(
            topic = %topic, partition = p, end = pieces.emitted(), answers, duplicates, probes,
            fetched_bytes, wasted_bytes, connections = conns.len(),
            "partition quiet again: back to the shared long poll"
        );
    } else {
        tracing::info!(
            topic = %topic, partition = p, end = pieces.emitted(), answers, duplicates, probes,
            fetched_bytes, wasted_bytes, connections = conns.len(), "parallel catch-up finished"
        );
    }
    shared.source.note_switch(topic, p).await;
    Some((pieces.emitted(), high_watermark))
}

/// Estimated bytes of a request's range, once record sizes are known.
fn est(r: &Request, bpo: f64) -> Option<usize> {
    (bpo > 0.0).then(|| ((r.end - r.start) as f64 * bpo) as usize)
}

/// Memory for one piece and a place on a pooled connection to fetch it on (`None`
/// when no place could be had: the fetch then goes through the pool's retries).
/// `None` overall when the budget is gone (shutting down).
type Grant = Option<(OwnedSemaphorePermit, Option<Lease>)>;

async fn ask_grant(shared: Arc<Shared>, topic: String, partition: i32, reserve: u32) -> Grant {
    let permit = shared
        .budget
        .clone()
        .acquire_many_owned(reserve)
        .await
        .ok()?;
    let lease = shared.source.lease(&topic, partition, false).await.ok();
    Some((permit, lease))
}

/// Counts a running catch-up; uncounts it however the catch-up ends.
struct CountGuard<'a>(&'a AtomicUsize);

impl Drop for CountGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How many bytes a piece is, and how many to ask a broker for.
///
/// Brokers differ in what a byte limit means: Kafka sends exactly that many bytes of
/// log, the last batch cut off (dropped here, and fetched again with the rest), tansu
/// includes that batch whole. Asking for one largest batch less than the piece makes
/// tansu answer about the piece and Kafka a little less (the rest is fetched as a
/// remainder), so neither sends much beyond the piece: bytes beyond it cross the WAN
/// twice. (A one-byte ask brings exactly the first batch on both.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sizing {
    /// The piece size: `piece_bytes` far from the end, `live_piece_bytes` near it.
    configured: usize,
    largest: usize,
    /// At least this much at the head, doubled when nothing came back there.
    head_floor: usize,
    /// No batch seen yet: ask for one batch per piece.
    scatter: bool,
    /// Near the end (live): pieces are small and the end moves (see [`Sizing::ask`]).
    live: bool,
}

impl Sizing {
    fn new(configured: usize, largest: usize) -> Sizing {
        Sizing {
            configured,
            largest: largest.min(MAX_FETCH),
            head_floor: 1,
            scatter: false,
            live: false,
        }
    }

    /// A piece holds at least one whole batch.
    fn piece_bytes(&self) -> usize {
        self.configured.max(self.largest).min(MAX_FETCH)
    }

    /// Whether every fetch asks for one batch (batches are large next to a piece).
    /// Not near the end: there a piece asks for its range whatever the batch size
    /// (see [`Sizing::ask`]).
    fn one_batch_each(&self) -> bool {
        self.scatter || (!self.live && self.piece_bytes() < 2 * self.largest)
    }

    /// Near the end with batch sizes known: pieces ask for their range (see `ask`).
    fn sizes_live(&self) -> bool {
        self.live && !self.scatter
    }

    /// Bytes to ask for a range estimated at `range_bytes` (if known); `at_end` when
    /// the range reaches the end known so far (or is the tail probe).
    fn ask(&self, head: bool, range_bytes: Option<usize>, at_end: bool) -> usize {
        let want = range_bytes.map_or(self.piece_bytes(), |r| r.min(self.piece_bytes()));
        let floor = if head { self.head_floor } else { 1 };
        if self.sizes_live() {
            // Near the end a piece asks for its whole range, and one reaching the end
            // for a whole live piece: nothing lies past the end to be fetched twice,
            // and what is appended meanwhile comes along. The one-batch rule below,
            // judged against the largest batch ever seen (a start-up burst's), made
            // every live fetch bring one small batch: hundreds of requests a second,
            // each a linear scan of the partition on tansu (docs/live.md).
            let ask = if at_end {
                self.configured.max(want)
            } else {
                want
            };
            return ask.max(floor);
        }
        // Pieces of a batch or two are fetched one batch per request: a second batch
        // asked for by byte count may well be the next piece's.
        let ask = if self.scatter || want < 2 * self.largest {
            1
        } else {
            want.saturating_sub(self.largest).max(1)
        };
        ask.max(floor)
    }

    /// The largest batch of an answer. `largest` follows the batches of now: it
    /// jumps up to a larger one and decays by a sixteenth per answer toward smaller
    /// ones. Kept as the largest ever, one start-up burst of 600 KB batches made a
    /// live stream of 8 KB batches go one batch per fetch for good (docs/live.md).
    /// Too small an estimate costs little: every broker answers with at least the
    /// first batch whole, and a batch cut at the end of an answer is fetched again.
    fn saw_batch(&mut self, bytes: usize) {
        let decayed = self.largest - self.largest / 16;
        self.largest = decayed.max(bytes).min(MAX_FETCH);
    }

    fn head_too_small(&mut self) {
        // Twice what the head asked: near the end that was a whole live piece (not
        // `piece_bytes`, which a burst's batch may have made large).
        let asked = if self.sizes_live() {
            self.configured.max(self.head_floor)
        } else {
            self.ask(true, None, false)
        };
        self.head_floor = (asked * 2).min(MAX_FETCH);
    }
}

/// Passes what is in order to the writer; false when the writer is gone.
async fn emit(
    pieces: &mut Pieces<RawBatch, Permit>,
    high_watermark: i64,
    tx: &mpsc::Sender<Chunk>,
    used: &mut u64,
) -> bool {
    let (batches, permits) = pieces.pop_ready();
    *used += batches.iter().map(|b| b.bytes.len() as u64).sum::<u64>();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_one_batch_less_than_the_piece() {
        let s = Sizing::new(256 * 1024, 16 * 1024);
        assert_eq!(s.piece_bytes(), 256 * 1024);
        assert_eq!(s.ask(false, None, false), 240 * 1024);
        // A short remainder asks for about its own size, not a whole piece.
        assert_eq!(s.ask(false, Some(64 * 1024), false), 48 * 1024);
        assert_eq!(s.ask(false, Some(20 * 1024), false), 1);
        // Batches as large as a piece: one batch per piece, asked for with the
        // smallest limit (every broker returns at least one whole batch).
        let mut s = Sizing::new(256 * 1024, 0);
        s.saw_batch(1 << 20);
        assert_eq!(s.piece_bytes(), 1 << 20);
        assert_eq!(s.ask(false, None, false), 1);
    }

    #[test]
    fn live_pieces_ask_for_their_range_whatever_batches_were_seen() {
        // A start-up burst brought a 256 KiB batch; the live stream's batches are a
        // few KB. Far from the end that keeps one batch per fetch; near it, it must not.
        let mut s = Sizing::new(64 * 1024, 0);
        s.saw_batch(256 * 1024);
        assert!(s.one_batch_each());
        assert_eq!(s.ask(false, Some(20 * 1024), false), 1);
        s.live = true;
        assert!(!s.one_batch_each());
        // A range inside what is known: its own size.
        assert_eq!(s.ask(false, Some(20 * 1024), false), 20 * 1024);
        assert_eq!(s.ask(true, Some(48 * 1024), false), 48 * 1024);
        // Reaching the end (or the probe): a whole live piece, more than the range.
        assert_eq!(s.ask(true, Some(8 * 1024), true), 64 * 1024);
        assert_eq!(s.ask(true, None, true), 256 * 1024);
        // The head's floor still applies after an empty answer there.
        let mut t = s;
        t.head_too_small();
        assert_eq!(t.ask(true, Some(1024), false), 128 * 1024);
        assert_eq!(t.ask(false, Some(1024), false), 1024);
        t.head_too_small();
        assert_eq!(t.ask(true, Some(1024), true), 256 * 1024);
        // And once the stream's own batches have been seen for a while, the burst's
        // batch no longer sizes anything, far from the end either.
        for _ in 0..60 {
            s.saw_batch(8 * 1024);
        }
        assert!(s.largest < 16 * 1024, "{}", s.largest);
        s.live = false;
        assert!(!s.one_batch_each());
        assert_eq!(s.piece_bytes(), 64 * 1024);
        // A large batch counts at once.
        s.saw_batch(300 * 1024);
        assert_eq!(s.piece_bytes(), 300 * 1024);
        assert!(s.one_batch_each());
        // Until a batch is seen, one batch per fetch, live or not.
        let mut s = Sizing::new(64 * 1024, 0);
        s.scatter = true;
        s.live = true;
        assert!(s.one_batch_each());
        assert_eq!(s.ask(false, Some(20 * 1024), false), 1);
    }

    #[test]
    fn the_head_asks_for_more_after_an_empty_answer() {
        let mut s = Sizing::new(1024, 1024);
        assert_eq!(s.ask(true, None, false), 1);
        s.head_too_small();
        s.head_too_small();
        assert_eq!(s.ask(true, None, false), 4);
        assert_eq!(s.ask(false, None, false), 1);
        for _ in 0..40 {
            s.head_too_small();
        }
        assert_eq!(s.ask(true, None, false), MAX_FETCH);
    }
}
