//! Catch-up by offset-range pieces: which ranges of a lagging partition to fetch, in
//! parallel over many connections, and the reassembly of the answers into the one
//! in-order stream of batches the writer needs. Pure: no I/O, time is passed in.
//!
//! A fetch at offset `f` answers with whole batches in log order. Brokers differ on a
//! fetch inside a batch: Kafka starts with the batch holding `f`, tansu with the next
//! one. Either way the answer lists *every* batch whose base offset lies in
//! `[f, c)`, where `c` is the end of its last batch. So an answer "covers" `[f, c)`, and
//! a covered range holds exactly the source batches whose base offset lies in it. Covered
//! ranges never overlap (later answers only fill what is still uncovered), so
//! concatenating them in order gives every batch exactly once, in order, whatever
//! order answers arrive in, and however pieces were cut, duplicated or retried.
//!
//! What is not covered yet is requested again: the rest of a piece whose answer was
//! cut short, a piece whose fetch failed, a piece that is slow (another connection
//! fetches it too: work stealing).

use std::collections::{BTreeMap, BTreeSet};

use crate::kafka::batch::RawBatch;

/// What the reassembler needs to know of a batch.
pub trait Span {
    fn base(&self) -> i64;
    /// One past the last offset.
    fn next(&self) -> i64;
}

impl Span for RawBatch {
    fn base(&self) -> i64 {
        self.header.base_offset
    }
    fn next(&self) -> i64 {
        self.header.next_offset()
    }
}

/// A fetch to send: read from `start`; the range planned ends at `end` (the caller
/// sizes its byte limit from it, answers may cover less or more).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub id: u64,
    pub start: i64,
    pub end: i64,
    /// A second fetch of a slow piece's range.
    pub duplicate: bool,
}

/// How the source answers a fetch whose offset lies inside a batch, as far as seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MidBatch {
    Unknown,
    /// With the next batch (tansu).
    Next,
    /// With the batch holding the offset (Kafka).
    Holding,
}

impl MidBatch {
    /// Learns from an answer to a fetch at `offset` whose first batch starts at `base`.
    /// A batch starting below the offset is proof of `Holding`, and final. One starting
    /// above suggests `Next`, but may also follow a hole in the offsets (compaction).
    pub fn observe(self, offset: i64, base: i64) -> MidBatch {
        match self {
            _ if base < offset => MidBatch::Holding,
            MidBatch::Unknown if base > offset => MidBatch::Next,
            seen => seen,
        }
    }
}

/// What an answer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Some or all of the range is now covered (or was already).
    Covered,
    /// No batch came back for the range at the head of the stream: the next batch is
    /// larger than the byte limit. The caller must ask for more bytes.
    TooSmall,
    /// No batch came back for a range further on. Its start may sit inside a batch
    /// (tansu then answers nothing for the log's last batch); it is asked again only
    /// once everything before it is in.
    Deferred,
    /// The answer is for a fetch no longer in flight (failed, or a duplicate's twin).
    Unknown,
    /// A tail probe ([`Pieces::probe`]) found no new data.
    Empty,
}

struct Segment<B, T> {
    end: i64,
    batches: Vec<B>,
    token: Option<T>,
}

#[derive(Debug, Clone, Copy)]
struct Flight {
    /// The fetch offset.
    start: i64,
    /// Where the range this fetch brings begins: `start`, or lower once its head shows
    /// that the broker answers with the batch holding `start` (Kafka).
    from: i64,
    end: i64,
    /// `start` was not a known batch start when the fetch went out: on a broker that
    /// answers with the batch holding the offset, the answer begins below it.
    blind: bool,
    /// The head of its answer arrived ([`Pieces::on_head`]).
    headed: bool,
    issued_ms: u64,
    /// When bytes of its answer last arrived, if the driver can see them arrive.
    progress_ms: Option<u64>,
    duplicate: bool,
    /// A duplicate of this flight was issued (at most one).
    stolen: bool,
    /// The other fetch of the same range (a duplicate and its original): once either
    /// answer covers the other's start, the other brings nothing new.
    twin: Option<u64>,
}

/// Plan and reassembly for one partition's catch-up. `B` is a batch, `T` a token held
/// until the data it came with is handed out (the memory permit).
pub struct Pieces<B, T> {
    /// The first offset wanted; a batch holding it is included even if it starts below.
    origin: i64,
    /// Everything below has been handed out.
    emitted: i64,
    /// Ranges below have been planned.
    frontier: i64,
    /// Plan up to here (the source's end when the catch-up started, or later).
    target: i64,
    piece_len: i64,
    /// New pieces are planned only while the frontier is less than this far ahead of
    /// the head: the share of the memory budget this partition may fill.
    window: i64,
    covered: BTreeMap<i64, Segment<B, T>>,
    flights: BTreeMap<u64, Flight>,
    deferred: BTreeSet<i64>,
    /// A corrupt batch starts here: hand out nothing at or past it.
    stop: Option<i64>,
    next_id: u64,
    /// Moving average of answer times, for deciding what is slow.
    avg_ms: f64,
    /// Set when the broker answers a fetch inside a batch with the next batch and each
    /// fetch brings one batch of about this many offsets: see [`Pieces::set_split`].
    split: Option<i64>,
    /// Batch starts learnt from the heads of answers still arriving
    /// ([`Pieces::on_first_batch`]), at or above the head.
    starts: BTreeSet<i64>,
    /// How the source answers a fetch inside a batch (from answers and heads).
    mid_batch: MidBatch,
    /// Every fetch asks for one batch ([`Pieces::set_one_batch`]).
    one_batch: bool,
    /// Moving average of the time from sending a fetch to its answer's head.
    avg_head_ms: f64,
    /// The tail probe in flight, if any ([`Pieces::probe`]).
    probe: Option<u64>,
    /// The least time before a stuck piece gets a second copy ([`Pieces::set_min_steal_ms`]).
    min_steal_ms: f64,
}

/// Slow means this many times the average answer time (at least `MIN_STEAL_MS`; the
/// time includes waiting for a pooled connection).
const SLOW_FACTOR: f64 = 2.0;
const MIN_STEAL_MS: f64 = 2_000.0;
/// In the end game, late means this share of the average answer time: connections are
/// falling idle, and the last answer ends the whole catch-up.
const LATE_FACTOR: f64 = 0.5;
/// In-flight pieces at or below which the end game starts.
const ENDGAME_FLIGHTS: usize = 16;
/// A range that ends where a blind fetch begins waits for that fetch's head at most
/// this many times the average head time, within these bounds.
const HEAD_WAIT_FACTOR: f64 = 2.0;
const MIN_HEAD_WAIT_MS: f64 = 1_000.0;
const MAX_HEAD_WAIT_MS: f64 = 3_000.0;

impl<B: Span, T: Clone> Pieces<B, T> {
    /// A catch-up of `[start, target)` in pieces of `piece_len` offsets.
    pub fn new(start: i64, target: i64, piece_len: i64) -> Self {
        Pieces {
            origin: start,
            emitted: start,
            frontier: start,
            target: target.max(start),
            piece_len: piece_len.max(1),
            window: i64::MAX,
            covered: BTreeMap::new(),
            flights: BTreeMap::new(),
            deferred: BTreeSet::new(),
            stop: None,
            next_id: 0,
            avg_ms: 0.0,
            split: None,
            starts: BTreeSet::new(),
            mid_batch: MidBatch::Unknown,
            one_batch: true,
            avg_head_ms: 0.0,
            probe: None,
            min_steal_ms: MIN_STEAL_MS,
        }
    }

    /// How the source answers a fetch inside a batch, as far as the driver has seen
    /// (heads tell it too, see [`Pieces::on_head`]; `Holding` is final). With
    /// `Holding` (Kafka), planning waits briefly for heads: see
    /// [`Pieces::awaits_head`] and [`Pieces::may_plan_now`].
    pub fn set_mid_batch(&mut self, style: MidBatch) {
        if self.mid_batch != MidBatch::Holding {
            self.mid_batch = style;
        }
    }

    /// Whether every fetch asks for one batch (the driver's sizing): only then does a
    /// head tell where an answer ends.
    pub fn set_one_batch(&mut self, one: bool) {
        self.one_batch = one;
    }

    pub fn emitted(&self) -> i64 {
        self.emitted
    }

    pub fn in_flight(&self) -> usize {
        self.flights.len()
    }

    /// Received ranges waiting for something before them, for the state log line.
    pub fn waiting(&self) -> usize {
        self.covered.len()
    }

    /// How long the oldest fetch of the range at the head has been out, if any is.
    pub fn head_age(&self, now_ms: u64) -> Option<u64> {
        self.flights
            .values()
            .filter(|f| f.from <= self.emitted && self.emitted < f.end)
            .map(|f| now_ms.saturating_sub(f.issued_ms))
            .max()
    }

    pub fn set_piece_len(&mut self, len: i64) {
        self.piece_len = len.max(1);
    }

    /// `Some(span)`: the broker answers a fetch inside a batch with the next batch, and
    /// fetches bring one batch each, of about `span` offsets. A range of several
    /// batches starting at a known batch start `s` is then fetched at `s` and at `s + 1`
    /// at once: the second answer is the second batch, without knowing where it starts.
    /// Otherwise such a range goes one batch per round trip, and on a lossy path one
    /// batch can take seconds. (On a broker that answers with the batch holding the
    /// offset, as Kafka does, the fetch at `s + 1` would bring the first batch again.)
    pub fn set_split(&mut self, span: Option<i64>) {
        self.split = span.filter(|s| *s > 0);
    }

    /// The least time (default `MIN_STEAL_MS`) a piece must be slow and silent before
    /// it gets a second copy. A live partition's pieces are small and every record
    /// behind a stuck one waits: there a copy after a few round trips costs little and
    /// saves a retransmission back-off of a second or more.
    pub fn set_min_steal_ms(&mut self, ms: u64) {
        self.min_steal_ms = ms as f64;
    }

    /// Limits how far ahead of the head new pieces are planned (in offsets).
    pub fn set_window(&mut self, offsets: i64) {
        self.window = offsets.max(1);
    }

    fn may_plan(&self) -> bool {
        self.frontier < self.target
            && (self.frontier == self.emitted
                || (self.frontier - self.emitted < self.window && !self.short_pending()))
    }

    /// Whether planning now would cut a short piece (less than `piece_len` known past
    /// the frontier) while another short fetch is out. A live end moves up with every
    /// answer by a few KB: cutting a piece each time makes a fetch per batch, each a
    /// round trip on a lossy connection. One short piece at a time, and full ones as
    /// soon as a piece's worth is known, keeps latency to one short transfer.
    fn short_pending(&self) -> bool {
        self.target - self.frontier < self.piece_len
            && self
                .flights
                .iter()
                .any(|(id, f)| Some(*id) != self.probe && f.end - f.start < self.piece_len)
    }

    /// Whether a new piece may be planned at the frontier now. On Kafka a short
    /// one-batch fetch (the rest of a piece) that ends there brings the batch holding
    /// its start, and that batch may run past the frontier: a piece cut there before
    /// the fetch's head tells where the batch ends would bring it again. (Full pieces
    /// span two batches or more, so theirs rarely does. A larger ask's head does not
    /// tell where its answer ends, so there is nothing to wait for.
    /// [`Pieces::awaits_head`] is the same wait seen from the other side.)
    fn may_plan_now(&self, now_ms: u64) -> bool {
        self.may_plan()
            && !(self.one_batch
                && self.frontier > self.emitted
                && self.waits_for(now_ms, |f| {
                    f.end == self.frontier && f.end - f.start < self.piece_len
                }))
    }

    /// Moves the target up (the source grew while we caught up).
    pub fn extend(&mut self, target: i64) {
        if self.stop.is_none() {
            self.target = self.target.max(target);
        }
    }

    /// A live partition's tail: everything known was handed out and nothing is in
    /// flight, so one fetch at the head (the caller holds it at the broker for the tail
    /// wait) learns of new data. It claims a piece's length past the end; its answer's
    /// high watermark ([`Pieces::on_high_watermark`], from the head or the whole
    /// answer) trims that claim to what exists, and what lies past it is planned as
    /// pieces at once, before the probe's own answer is in.
    pub fn probe(&mut self, now_ms: u64) -> Option<Request> {
        if !self.is_done() || self.stop.is_some() || !self.covered.is_empty() {
            return None;
        }
        let start = self.emitted;
        let end = start + self.piece_len;
        self.frontier = end;
        let r = self.fly(start, end, now_ms, false, None);
        self.probe = Some(r.id);
        Some(r)
    }

    /// Whether the tail probe is in flight.
    pub fn probing(&self) -> bool {
        self.probe.is_some_and(|id| self.flights.contains_key(&id))
    }

    /// A high watermark some answer (or an answer's head) reported. The target moves up
    /// to it; a tail probe's claim past it shrinks to it (nothing lies there yet).
    pub fn on_high_watermark(&mut self, hw: i64) {
        self.extend(hw);
        let Some(f) = self.probe.and_then(|id| self.flights.get_mut(&id)) else {
            return;
        };
        let to = hw.max(f.start + 1);
        if f.end > to {
            f.end = to;
            self.frontier = to;
        }
    }

    /// True when everything up to the target was handed out and nothing is in flight,
    /// or when a corrupt batch was reached.
    pub fn is_done(&self) -> bool {
        self.stopped().is_some() || (self.flights.is_empty() && self.emitted >= self.target)
    }

    /// The corrupt batch's offset once everything before it was handed out.
    pub fn stopped(&self) -> Option<i64> {
        self.stop.filter(|s| self.emitted >= *s)
    }

    /// Whether [`Pieces::next_request`] could give work if a permit were at hand.
    pub fn wants_more(&self, now_ms: u64) -> bool {
        self.stopped().is_none()
            && (self.gap(false, now_ms).is_some()
                || self.may_plan_now(now_ms)
                || self.steal_candidate(now_ms).is_some())
    }

    /// The next fetch to send. Without a permit only the fetch the stream waits for
    /// (the range at its head) may go, so memory stays bounded and the head never
    /// starves while later data holds every permit.
    pub fn next_request(&mut self, now_ms: u64, permit: bool) -> Option<Request> {
        if self.stop.is_some_and(|s| self.emitted >= s) {
            return None;
        }
        if let Some((start, end)) = self.gap(!permit, now_ms) {
            if let Some(span) = self.split {
                // Several batches, or, in the last stretch, possibly a second one: a
                // wasted fetch costs little once connections fall idle, a chain of two
                // costs a whole transfer at the end of the catch-up.
                let several =
                    2 * (end - start) >= 3 * span || (self.winding_down() && end - start > 1);
                if several && self.batch_starts_at(start) {
                    return Some(self.fly(start, start + 1, now_ms, false, None));
                }
            }
            // A gap starts where an answer ended, at a batch start; a cut inside it
            // does not, and a stub with no batch start of its own is answered with
            // the next range's batch (fetched twice). Cutting pays anyway (the parts
            // go in parallel, and a gap at the head holds up everything behind it),
            // but only while the stub is at least half a piece (a batch or more).
            let end = if 2 * (end - start) >= 3 * self.piece_len {
                start + self.piece_len
            } else {
                end
            };
            return Some(self.fly(start, end, now_ms, false, None));
        }
        // A new piece needs a permit, unless the head itself is still unplanned.
        if (permit || self.frontier == self.emitted) && self.may_plan_now(now_ms) {
            let start = self.frontier;
            let end = (start + self.piece_len).min(self.target);
            self.frontier = end;
            return Some(self.fly(start, end, now_ms, false, None));
        }
        let (id, start, end) = self.steal_candidate(now_ms)?;
        if !permit && start != self.emitted {
            return None;
        }
        let dup = self.fly(start, end, now_ms, true, Some(id));
        if let Some(f) = self.flights.get_mut(&id) {
            f.stolen = true;
            f.twin = Some(dup.id);
        }
        Some(dup)
    }

    /// All planned and only the last few pieces out: connections are falling idle.
    fn winding_down(&self) -> bool {
        self.frontier >= self.target && self.flights.len() <= ENDGAME_FLIGHTS
    }

    /// Whether a batch is known to start at `at`: where the stream's head or a received
    /// range ends (the offset after a batch), or where the first batch of an answer
    /// still arriving ends. The origin may lie inside a batch.
    fn batch_starts_at(&self, at: i64) -> bool {
        (at == self.emitted && at != self.origin)
            || self.starts.contains(&at)
            || self
                .covered
                .range(..at)
                .next_back()
                .is_some_and(|(_, seg)| seg.end == at)
    }

    fn fly(
        &mut self,
        start: i64,
        end: i64,
        now_ms: u64,
        duplicate: bool,
        twin: Option<u64>,
    ) -> Request {
        self.next_id += 1;
        let id = self.next_id;
        let blind = !self.batch_starts_at(start);
        self.flights.insert(
            id,
            Flight {
                start,
                from: start,
                end,
                blind,
                headed: false,
                issued_ms: now_ms,
                progress_ms: None,
                duplicate,
                stolen: false,
                twin,
            },
        );
        Request {
            id,
            start,
            end,
            duplicate,
        }
    }

    /// Claimed ranges (covered or in flight), sorted by start.
    fn claimed(&self) -> Vec<(i64, i64)> {
        let mut v: Vec<(i64, i64)> = self
            .covered
            .iter()
            .map(|(s, seg)| (*s, seg.end))
            .chain(self.flights.values().map(|f| (f.from, f.end)))
            .collect();
        v.sort_unstable();
        v
    }

    /// The lowest planned range nobody covers or fetches, skipping deferred starts
    /// (except at the head) and ranges waiting for a head ([`Pieces::awaits_head`]).
    /// `head_only`: only a range starting at the head counts.
    fn gap(&self, head_only: bool, now_ms: u64) -> Option<(i64, i64)> {
        let limit = self.stop.map_or(self.frontier, |s| s.min(self.frontier));
        let mut claimed = self.claimed().into_iter().peekable();
        let mut at = self.emitted;
        loop {
            while let Some(&(s, e)) = claimed.peek() {
                if s > at {
                    break;
                }
                at = at.max(e);
                claimed.next();
            }
            if at >= limit {
                return None;
            }
            let until = claimed.peek().map_or(limit, |(s, _)| (*s).min(limit));
            // The head never waits: it holds up the whole stream, which costs more
            // than a batch fetched twice.
            let allowed = at == self.emitted
                || (!self.deferred.contains(&at) && !self.awaits_head(until, now_ms));
            if head_only && !allowed {
                return None;
            }
            if head_only {
                return (at == self.emitted).then_some((at, until));
            }
            // Beyond the window the answer would only wait for what is before it.
            if at != self.emitted && at - self.emitted >= self.window {
                return None;
            }
            if allowed {
                return Some((at, until));
            }
            at = until;
        }
    }

    /// Whether a range ending at `until` should wait for the head of the fetch that
    /// begins there. On a broker that answers a fetch inside a batch with the batch
    /// holding it (Kafka), a fetch at a blind cut brings the batch that straddles the
    /// cut, and that batch begins inside the range before: fetching that range now
    /// would bring the batch twice (a third of all bytes, with pieces of two ~1 MB
    /// batches). Its head, which arrives well before its answer, tells where that
    /// batch begins, and so where the range before really ends. Waiting is bounded:
    /// a head that is lost or late must not hold the range up for long. (A start
    /// learnt to be a batch start after the fetch went out is not blind any more.)
    fn awaits_head(&self, until: i64, now_ms: u64) -> bool {
        self.waits_for(now_ms, |f| {
            f.from == until && f.blind && !self.batch_starts_at(f.start)
        })
    }

    /// On a broker that answers with the batch holding the offset, whether a flight
    /// matching `which` has no head yet and was sent recently enough to wait for it.
    fn waits_for(&self, now_ms: u64, which: impl Fn(&Flight) -> bool) -> bool {
        if self.mid_batch != MidBatch::Holding {
            return false;
        }
        let patience =
            (self.avg_head_ms * HEAD_WAIT_FACTOR).clamp(MIN_HEAD_WAIT_MS, MAX_HEAD_WAIT_MS);
        self.flights.values().any(|f| {
            !f.headed && (now_ms.saturating_sub(f.issued_ms) as f64) < patience && which(f)
        })
    }

    /// A flight worth fetching a second time: slow, and either holding up data that
    /// already arrived behind it, or running while there is nothing else to do (the
    /// end game). Every duplicate costs WAN bytes, so only those two qualify, and only
    /// while no bytes of its answer arrived for `MIN_STEAL_MS` (where the driver can
    /// see them): a transfer that moves is slow because it shares the link, and a copy
    /// shares it too; one that stopped is in retransmission back-off, which a fresh
    /// connection escapes.
    fn steal_candidate(&self, now_ms: u64) -> Option<(u64, i64, i64)> {
        // The end game: all planned, nothing left to ask for, and only the last few
        // pieces still out (earlier, every piece in flight would qualify).
        let endgame = self.winding_down() && self.gap(false, now_ms).is_none();
        // A piece twice as slow as usual is most likely stuck on a connection in
        // retransmission back-off (seconds, doubling) on a lossy path.
        let slow = (self.avg_ms * SLOW_FACTOR).max(self.min_steal_ms);
        // In the end game connections fall idle one by one, so a second copy costs
        // little link time: anything slower than usual gets one.
        let late = (self.avg_ms * LATE_FACTOR).max(self.min_steal_ms);
        let waiting_behind = !self.covered.is_empty();
        self.flights
            .iter()
            .filter(|(_, f)| !f.duplicate && !f.stolen)
            // A probe past the known end waits at the broker by design; a copy of it
            // would only be a second probe.
            .filter(|(id, f)| self.probe != Some(**id) || f.start < self.target)
            .filter_map(|(id, f)| {
                let age = now_ms.saturating_sub(f.issued_ms) as f64;
                let quiet = now_ms.saturating_sub(f.progress_ms.unwrap_or(f.issued_ms)) as f64;
                // From where its claim begins: a flight that claims the head from
                // below its fetch offset holds the head up too.
                let start = self.uncovered_from(f.from, f.end)?;
                let blocks = start == self.emitted && waiting_behind && age >= slow;
                let stuck = quiet >= self.min_steal_ms;
                ((blocks || (endgame && age >= late)) && stuck).then_some((*id, start, f.end))
            })
            .min_by_key(|(_, s, _)| *s)
    }

    /// The first offset in `[start, end)` not covered yet.
    fn uncovered_from(&self, start: i64, end: i64) -> Option<i64> {
        let mut at = start.max(self.emitted);
        for (s, seg) in self.covered.range(..end) {
            if seg.end <= at {
                continue;
            }
            if *s > at {
                break;
            }
            at = seg.end;
        }
        (at < end).then_some(at)
    }

    /// An answer to request `id`: the whole batches it returned, in order.
    pub fn on_answer(
        &mut self,
        id: u64,
        batches: Vec<B>,
        token: Option<T>,
        now_ms: u64,
    ) -> Outcome {
        self.answer(id, batches, None, token, now_ms)
    }

    /// An answer whose batch at `bad` is corrupt: `batches` are the valid ones before it.
    pub fn on_corrupt(
        &mut self,
        id: u64,
        batches: Vec<B>,
        bad: i64,
        token: Option<T>,
        now_ms: u64,
    ) -> Outcome {
        self.answer(id, batches, Some(bad), token, now_ms)
    }

    /// The head of the answer to request `id` arrived, `now_ms`: its first batch
    /// begins at `base`. Below the fetch offset (Kafka answered with the batch holding
    /// it), the request now claims from there: the range before ends at `base`, and
    /// its fetch does not bring that batch a second time. Only a hint for planning:
    /// what is handed out still follows the answers.
    pub fn on_head(&mut self, id: u64, base: i64, now_ms: u64) {
        let Some(f) = self.flights.get_mut(&id) else {
            return;
        };
        if f.headed {
            return;
        }
        f.headed = true;
        let took = now_ms.saturating_sub(f.issued_ms) as f64;
        let (start, twin) = (f.start, f.twin);
        // A head is as good a proof of the broker's style as an answer.
        self.mid_batch = self.mid_batch.observe(start, base);
        // Never below the head (the origin may lie inside a batch), nor above the
        // fetch offset (a batch after it says nothing about the range before).
        let from = base.clamp(self.emitted.min(start), start);
        f.from = from;
        if let Some(t) = twin.and_then(|t| self.flights.get_mut(&t)) {
            if t.start == start {
                // Its answer begins with the same batch: nothing left to wait for.
                t.from = t.from.min(from);
                t.headed = true;
            }
        }
        if self.probe != Some(id) {
            self.avg_head_ms = if self.avg_head_ms == 0.0 {
                took
            } else {
                self.avg_head_ms * 0.9 + took * 0.1
            };
        }
    }

    /// The head of the answer to request `id` arrived: its first batch is
    /// `[base, next)`, and the request asked for one batch, so that is all it brings.
    /// The rest of its range need not wait seconds for the whole answer on a lossy
    /// path: the request (and its twin, fetching from the same start) now claims only
    /// up to `next`, where a batch is known to start, so the rest is a gap to fetch at
    /// once; or, if the batch runs past its range, up to `next` as well (and the
    /// frontier moves there: no new piece is cut inside that batch). Only a hint for
    /// planning: what is handed out still follows the answers.
    pub fn on_first_batch(&mut self, id: u64, base: i64, next: i64, now_ms: u64) {
        if next <= base {
            return;
        }
        self.on_head(id, base, now_ms);
        let Some(f) = self.flights.get_mut(&id) else {
            return;
        };
        if next <= f.start || next == f.end {
            return;
        }
        // A batch that runs past the range claims the rest of it too: a fetch inside
        // it would bring it again (Kafka) or the batch after it (tansu).
        let (start, twin, grew) = (f.start, f.twin, next > f.end);
        f.end = next;
        if let Some(t) = twin.and_then(|t| self.flights.get_mut(&t)) {
            if t.start == start {
                t.end = if grew {
                    t.end.max(next)
                } else {
                    t.end.min(next)
                };
            }
        }
        self.frontier = self.frontier.max(next);
        if next > self.emitted {
            self.starts.insert(next);
        }
    }

    /// Bytes of the answer to request `id` arrived (or, the first time, the driver
    /// starts watching them arrive). A fetch whose bytes keep coming is not stuck, and
    /// a second copy of it would only share the link with it; see `steal_candidate`.
    pub fn on_progress(&mut self, id: u64, now_ms: u64) {
        if let Some(f) = self.flights.get_mut(&id) {
            f.progress_ms = Some(now_ms);
        }
    }

    /// A fetch failed; its range will be asked again.
    pub fn on_failed(&mut self, id: u64) {
        let Some(f) = self.flights.remove(&id) else {
            return;
        };
        if self.probe == Some(id) {
            // A failed probe learnt nothing: its claim past the end must not stay
            // planned, or the range would go out again as a piece of nothing.
            self.probe = None;
            if self.target <= f.start {
                self.frontier = self.frontier.min(f.start).max(self.emitted);
            }
        }
    }

    fn answer(
        &mut self,
        id: u64,
        batches: Vec<B>,
        bad: Option<i64>,
        token: Option<T>,
        now_ms: u64,
    ) -> Outcome {
        let Some(f) = self.flights.remove(&id) else {
            return Outcome::Unknown;
        };
        let probe = self.probe == Some(id);
        if probe {
            self.probe = None;
            if batches.is_empty() && bad.is_none() && self.target <= f.start {
                // Nothing new: the plan ends where the probe began.
                self.frontier = self.frontier.min(f.start).max(self.emitted);
                return Outcome::Empty;
            }
        }
        // A probe's time includes the broker's wait: it says nothing of transfers.
        let took = now_ms.saturating_sub(f.issued_ms) as f64;
        if !probe {
            self.avg_ms = if self.avg_ms == 0.0 {
                took
            } else {
                self.avg_ms * 0.9 + took * 0.1
            };
        }
        let end = match (bad, batches.last()) {
            (Some(b), _) => b,
            (None, Some(last)) => last.next(),
            (None, None) => f.start,
        };
        if let Some(b) = bad {
            self.stop = Some(self.stop.map_or(b, |s| s.min(b)));
            self.target = self.target.min(b).max(self.emitted);
        }
        if end <= f.start {
            if bad.is_some() {
                return Outcome::Covered;
            }
            if f.start <= self.emitted {
                return Outcome::TooSmall;
            }
            self.deferred.insert(f.start);
            return Outcome::Deferred;
        }
        // Kafka answers a fetch inside a batch with that whole batch: then the answer
        // covers from the batch's start (no other batch starts between it and the
        // fetch offset), and the range before the fetch offset need not be fetched
        // again if nothing covered it yet.
        let from = batches.first().map_or(f.start, |b| b.base().min(f.start));
        self.cover(from, end, batches, token);
        // The twin would answer with batches now in hand (it asked from the same
        // start) while its range stays claimed: the rest of the range would wait for it.
        if let Some(t) = f.twin {
            if self
                .flights
                .get(&t)
                .is_some_and(|tf| self.uncovered_from(tf.start, tf.end) != Some(tf.start))
            {
                self.flights.remove(&t);
            }
        }
        self.frontier = self.frontier.max(end);
        let stale: Vec<i64> = self.deferred.range(f.start..end).copied().collect();
        for d in stale {
            self.deferred.remove(&d);
        }
        Outcome::Covered
    }

    /// Records `[start, end)` where it is not covered yet, each new piece with the
    /// batches whose base offset lies in it.
    fn cover(&mut self, start: i64, end: i64, batches: Vec<B>, token: Option<T>) {
        let mut holes = Vec::new();
        let mut at = start.max(self.emitted);
        for (s, seg) in self.covered.range(..end) {
            if seg.end <= at {
                continue;
            }
            if *s > at {
                holes.push((at, *s));
            }
            at = at.max(seg.end);
        }
        if at < end {
            holes.push((at, end));
        }
        let mut batches = batches.into_iter().peekable();
        for (s, e) in holes {
            let mut mine = Vec::new();
            while let Some(b) = batches.peek() {
                let owned = if s == self.origin {
                    b.next() > s
                } else {
                    b.base() >= s
                };
                if b.base() >= e {
                    break;
                }
                let b = batches.next().expect("peeked");
                if owned {
                    mine.push(b);
                }
            }
            self.covered.insert(
                s,
                Segment {
                    end: e,
                    batches: mine,
                    token: token.clone(),
                },
            );
        }
    }

    /// Everything that is now contiguous from the head, in order, with the tokens of
    /// the answers it came from.
    pub fn pop_ready(&mut self) -> (Vec<B>, Vec<T>) {
        let mut batches = Vec::new();
        let mut tokens = Vec::new();
        while let Some(entry) = self.covered.first_entry() {
            if *entry.key() > self.emitted {
                break;
            }
            let seg = entry.remove();
            self.emitted = self.emitted.max(seg.end);
            batches.extend(seg.batches);
            tokens.extend(seg.token);
        }
        self.starts = self.starts.split_off(&self.emitted);
        // Flights that are wholly covered now are wasted work; forget them.
        let covered_ids: Vec<u64> = self
            .flights
            .iter()
            .filter(|(_, f)| self.uncovered_from(f.from, f.end).is_none())
            .map(|(id, _)| *id)
            .collect();
        for id in covered_ids {
            self.flights.remove(&id);
        }
        (batches, tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct B(i64, i64);
    impl Span for B {
        fn base(&self) -> i64 {
            self.0
        }
        fn next(&self) -> i64 {
            self.1
        }
    }

    /// A source log: batches of `sizes` offsets, with `gaps` missing offsets before each.
    fn log(shape: &[(i64, i64)]) -> Vec<B> {
        let mut at = 0;
        shape
            .iter()
            .map(|(gap, len)| {
                let b = B(at + gap, at + gap + len);
                at = b.1;
                b
            })
            .collect()
    }

    /// A broker's answer to a fetch at `f` of at most `n` batches. `kafka`: a fetch
    /// inside a batch starts with that batch; otherwise (tansu) with the next one.
    fn fetch(log: &[B], f: i64, n: usize, kafka: bool) -> Vec<B> {
        log.iter()
            .filter(|b| if kafka { b.1 > f } else { b.0 >= f })
            .take(n)
            .copied()
            .collect()
    }

    #[test]
    fn answers_in_any_order_give_the_log_once() {
        let src = log(&[(0, 10), (0, 10), (5, 10), (0, 10)]);
        let mut p: Pieces<B, ()> = Pieces::new(0, 45, 12);
        let reqs: Vec<Request> = (0..4).filter_map(|_| p.next_request(0, true)).collect();
        assert_eq!(reqs.len(), 4);
        assert!(p.next_request(0, true).is_none());
        for r in reqs.iter().rev() {
            p.on_answer(r.id, fetch(&src, r.start, 1, true), Some(()), 10);
        }
        let mut out = p.pop_ready().0;
        while !p.is_done() {
            let r = p.next_request(20, true).unwrap();
            p.on_answer(r.id, fetch(&src, r.start, 1, true), None, 30);
            out.extend(p.pop_ready().0);
        }
        assert_eq!(out, src);
    }

    #[test]
    fn only_the_head_may_go_without_a_permit() {
        let mut p: Pieces<B, ()> = Pieces::new(100, 1000, 50);
        let a = p.next_request(0, false).unwrap();
        assert_eq!((a.start, a.end), (100, 150));
        assert!(p.next_request(0, false).is_none());
        let b = p.next_request(0, true).unwrap();
        assert_eq!(b.start, 150);
        p.on_failed(a.id);
        let again = p.next_request(0, false).unwrap();
        assert_eq!(again.start, 100);
    }

    #[test]
    fn empty_answers_ask_for_more_at_the_head_and_wait_elsewhere() {
        let mut p: Pieces<B, ()> = Pieces::new(0, 100, 50);
        let a = p.next_request(0, true).unwrap();
        let b = p.next_request(0, true).unwrap();
        assert_eq!(p.on_answer(b.id, vec![], None, 1), Outcome::Deferred);
        assert_eq!(p.on_answer(a.id, vec![], None, 1), Outcome::TooSmall);
        // The head is asked again; the deferred start is not, until it is the head.
        let r = p.next_request(2, true).unwrap();
        assert_eq!(r.start, 0);
        assert!(
            p.next_request(2, true).is_none(),
            "deferred start asked again"
        );
        p.on_answer(r.id, vec![B(0, 60), B(60, 100)], None, 3);
        assert_eq!(p.pop_ready().0, vec![B(0, 60), B(60, 100)]);
        assert!(p.is_done());
    }

    #[test]
    fn a_kafka_answer_covers_from_the_start_of_its_first_batch() {
        let src = log(&[(0, 15), (0, 15), (0, 10)]);
        let mut p: Pieces<B, ()> = Pieces::new(0, 40, 10);
        let a = p.next_request(0, true).unwrap();
        let b = p.next_request(0, true).unwrap();
        assert_eq!((a.start, b.start), (0, 10));
        // Kafka answers the fetch at 10 with the batch holding it, [0, 15): that
        // covers the first piece's range too, so its answer is no longer needed.
        p.on_answer(b.id, fetch(&src, b.start, 1, true), None, 5);
        assert_eq!(p.pop_ready().0, vec![B(0, 15)]);
        assert_eq!(
            p.on_answer(a.id, fetch(&src, a.start, 1, true), None, 6),
            Outcome::Unknown
        );
        // The rest of the second piece is asked from the batch boundary.
        let r = p.next_request(7, true).unwrap();
        assert_eq!(r.start, 15);
    }

    #[test]
    fn a_slow_head_is_fetched_twice() {
        let mut p: Pieces<B, ()> = Pieces::new(0, 20, 10);
        let a = p.next_request(0, true).unwrap();
        let b = p.next_request(0, true).unwrap();
        p.on_answer(b.id, vec![B(10, 20)], None, 100);
        assert!(p.next_request(1_500, true).is_none(), "not slow yet");
        let dup = p.next_request(2_500, false).unwrap();
        assert!(dup.duplicate && dup.start == 0);
        p.on_answer(dup.id, vec![B(0, 10)], None, 2_550);
        assert_eq!(p.pop_ready().0, vec![B(0, 10), B(10, 20)]);
        assert!(p.is_done());
        assert_eq!(
            p.on_answer(a.id, vec![B(0, 10)], None, 3_000),
            Outcome::Unknown
        );
    }

    #[test]
    fn an_answer_frees_the_range_its_twin_still_claims() {
        let mut p: Pieces<B, ()> = Pieces::new(0, 40, 20);
        let a = p.next_request(0, true).unwrap();
        let b = p.next_request(0, true).unwrap();
        p.on_answer(b.id, vec![B(20, 30), B(30, 40)], None, 100);
        let dup = p.next_request(2_500, false).unwrap();
        assert!(dup.duplicate && (dup.start, dup.end) == (0, 20));
        // The original answers with one batch. The duplicate, asked from the same
        // start, can only bring that batch again: the rest is asked for at once
        // instead of after the duplicate's answer.
        p.on_answer(a.id, vec![B(0, 10)], None, 2_600);
        assert_eq!(p.pop_ready().0, vec![B(0, 10)]);
        let r = p.next_request(2_600, false).expect("the head is asked for");
        assert_eq!((r.start, r.duplicate), (10, false));
        assert_eq!(
            p.on_answer(dup.id, vec![B(0, 10)], None, 2_700),
            Outcome::Unknown
        );
    }

    #[test]
    fn with_next_batch_answers_a_long_gap_goes_out_twice_at_once() {
        let src = log(&[(0, 10), (0, 10), (0, 10), (0, 10)]);
        for split in [None, Some(10)] {
            let mut p: Pieces<B, ()> = Pieces::new(0, 40, 100);
            p.set_split(split);
            let r = p.next_request(0, true).unwrap();
            p.on_answer(r.id, fetch(&src, r.start, 1, false), None, 1);
            assert_eq!(p.pop_ready().0, vec![B(0, 10)]);
            let first = p.next_request(2, true).unwrap();
            let second = p.next_request(2, true);
            if split.is_none() {
                // One batch per round trip: the next one only once this one is in.
                assert_eq!((first.start, first.end), (10, 40));
                assert!(second.is_none());
                continue;
            }
            // At the batch start, and just after it: tansu answers the second fetch
            // with the batch after the first.
            assert_eq!((first.start, first.end), (10, 11));
            let second = second.unwrap();
            assert_eq!(second.start, 11);
            p.on_answer(second.id, fetch(&src, second.start, 1, false), None, 3);
            p.on_answer(first.id, fetch(&src, first.start, 1, false), None, 4);
            assert_eq!(p.pop_ready().0, vec![B(10, 20), B(20, 30)]);
        }
    }

    #[test]
    fn a_gap_after_an_unknown_start_is_not_split() {
        // The origin may lie inside a batch, and a gap after a range still in flight
        // starts wherever that range was cut.
        let mut p: Pieces<B, ()> = Pieces::new(5, 100, 50);
        p.set_split(Some(10));
        let a = p.next_request(0, true).unwrap();
        assert_eq!((a.start, a.end), (5, 55));
        let b = p.next_request(0, true).unwrap();
        assert_eq!((b.start, b.end), (55, 100));
        p.on_failed(a.id);
        let again = p.next_request(1, true).unwrap();
        assert_eq!((again.start, again.end), (5, 55));
        p.on_failed(b.id);
        p.on_answer(again.id, vec![B(0, 10)], None, 2);
        let after = p.next_request(3, true).unwrap();
        assert_eq!(
            (after.start, after.end),
            (10, 11),
            "10 is a known batch start"
        );
    }

    #[test]
    fn the_head_of_an_answer_frees_the_rest_of_its_range() {
        let src = log(&[(0, 10), (0, 10), (0, 10), (0, 10)]);
        let mut p: Pieces<B, ()> = Pieces::new(0, 40, 40);
        p.set_split(Some(10));
        let r = p.next_request(0, true).unwrap();
        assert_eq!((r.start, r.end), (0, 40));
        assert!(p.next_request(0, true).is_none(), "all claimed");
        // The answer's first bytes say it holds [0, 10): the rest goes out now, at a
        // known batch start, so split in two at once.
        p.on_first_batch(r.id, 0, 10, 1);
        let a = p.next_request(1, true).unwrap();
        let b = p.next_request(1, true).unwrap();
        assert_eq!((a.start, a.end, b.start), (10, 11, 11));
        // Hints that say nothing new, or nonsense, change nothing.
        p.on_first_batch(b.id, 20, 40, 1);
        p.on_first_batch(b.id, 25, 20, 1);
        p.on_first_batch(999, 0, 5, 1);
        assert!(p.next_request(1, true).is_none());
        p.on_answer(b.id, fetch(&src, b.start, 1, false), None, 2);
        p.on_answer(a.id, fetch(&src, a.start, 1, false), None, 2);
        p.on_answer(r.id, fetch(&src, r.start, 1, false), None, 3);
        let last = p.next_request(4, true).unwrap();
        assert_eq!(last.start, 30);
        p.on_answer(last.id, fetch(&src, last.start, 1, false), None, 5);
        assert_eq!(p.pop_ready().0, src);
        assert!(p.is_done());
    }

    #[test]
    fn the_head_of_an_answer_frees_its_twin_too() {
        let mut p: Pieces<B, ()> = Pieces::new(0, 40, 40);
        let r = p.next_request(0, true).unwrap();
        // The end game: all planned, one piece out and nothing heard of it for 10 s.
        let dup = p.next_request(10_000, true).unwrap();
        assert!(dup.duplicate);
        assert_eq!((dup.start, dup.end), (r.start, r.end));
        p.on_first_batch(dup.id, 0, 10, 10_000);
        let rest = p.next_request(10_001, true).unwrap();
        assert_eq!(
            (rest.start, rest.end),
            (10, 40),
            "neither the original nor its duplicate claims past 10"
        );
    }

    #[test]
    fn a_transfer_that_moves_is_not_fetched_twice() {
        let mut p: Pieces<B, ()> = Pieces::new(0, 40, 40);
        let r = p.next_request(0, true).unwrap();
        // End game, long past late: but its bytes arrived a moment ago.
        p.on_progress(r.id, 9_500);
        assert!(p.next_request(10_000, true).is_none());
        assert!(!p.wants_more(10_000));
        // They stopped coming: two seconds later it is stuck, and goes again.
        let dup = p.next_request(11_500, true).unwrap();
        assert!(dup.duplicate);
        assert_eq!((dup.start, dup.end), (0, 40));
    }

    #[test]
    fn the_broker_style_is_learned_from_answers() {
        let m = MidBatch::Unknown;
        assert_eq!(m.observe(10, 10), MidBatch::Unknown);
        assert_eq!(m.observe(10, 12), MidBatch::Next);
        assert_eq!(m.observe(10, 8), MidBatch::Holding);
        // Proof of Kafka's behaviour is final; a hole in the offsets proves nothing.
        assert_eq!(MidBatch::Holding.observe(10, 12), MidBatch::Holding);
        assert_eq!(MidBatch::Next.observe(10, 8), MidBatch::Holding);
    }

    #[test]
    fn a_corrupt_batch_stops_the_stream_before_it() {
        let mut p: Pieces<B, ()> = Pieces::new(0, 40, 10);
        let rs: Vec<_> = (0..4).map(|_| p.next_request(0, true).unwrap()).collect();
        p.on_answer(rs[2].id, vec![B(20, 30)], None, 1);
        p.on_corrupt(rs[1].id, vec![B(10, 15)], 15, None, 1);
        p.on_answer(rs[0].id, vec![B(0, 10)], None, 1);
        assert_eq!(p.pop_ready().0, vec![B(0, 10), B(10, 15)]);
        assert_eq!(p.stopped(), Some(15));
        assert!(p.is_done());
        assert!(p.next_request(5, true).is_none());
    }

    #[test]
    fn new_pieces_stay_within_the_window() {
        let mut p: Pieces<B, ()> = Pieces::new(0, 1_000, 10);
        p.set_window(30);
        let rs: Vec<_> = std::iter::from_fn(|| p.next_request(0, true)).collect();
        assert_eq!(rs.len(), 3, "{rs:?}");
        assert!(!p.wants_more(0));
        p.on_answer(rs[0].id, vec![B(0, 10)], None, 1);
        p.pop_ready();
        let r = p.next_request(1, true).unwrap();
        assert_eq!((r.start, r.end), (30, 40));
    }

    #[test]
    fn on_kafka_a_range_waits_for_the_head_of_the_blind_fetch_after_it() {
        let src = log(&[(0, 10), (0, 10), (0, 10), (0, 10)]);
        let mut p: Pieces<B, ()> = Pieces::new(0, 40, 15);
        p.set_mid_batch(MidBatch::Holding);
        let a = p.next_request(0, true).unwrap();
        let b = p.next_request(0, true).unwrap();
        let c = p.next_request(0, true).unwrap();
        assert_eq!((a.start, b.start, c.start), (0, 15, 30));
        // a brings [0, 10); what is left of its range, [10, 15), ends where b was cut
        // blind. b's answer will begin with the batch holding 15, which may begin
        // anywhere in [10, 15): fetching [10, 15) now could bring that batch twice.
        p.on_first_batch(a.id, 0, 10, 100);
        assert!(p.next_request(100, true).is_none(), "waits for b's head");
        // b's head: its batch is [10, 20), so nothing before it is left to fetch.
        p.on_first_batch(b.id, 10, 20, 150);
        assert!(p.next_request(150, true).is_none(), "waits for c's head");
        // c's head: 30 was a batch start after all; [20, 30) goes out, from 20.
        p.on_first_batch(c.id, 30, 40, 200);
        let d = p.next_request(200, true).unwrap();
        assert_eq!((d.start, d.end), (20, 30));
        assert!(p.next_request(200, true).is_none());
        let mut fetched = 0;
        for r in [c, a, d, b] {
            let got = fetch(&src, r.start, 1, true);
            fetched += got.len();
            p.on_answer(r.id, got, None, 300);
        }
        assert_eq!(p.pop_ready().0, src);
        assert_eq!(fetched, src.len(), "no batch fetched twice");
        assert!(p.is_done());
    }

    #[test]
    fn a_head_that_does_not_come_holds_the_range_before_only_briefly() {
        let mut p: Pieces<B, ()> = Pieces::new(0, 30, 15);
        p.set_mid_batch(MidBatch::Holding);
        let a = p.next_request(0, true).unwrap();
        p.next_request(0, true).unwrap(); // cut blind at 15
        p.on_first_batch(a.id, 0, 10, 100);
        // [10, 15) ends where the blind fetch began, whose head is lost or late:
        // after a second the range goes anyway.
        assert!(p.next_request(900, true).is_none());
        let r = p.next_request(1_100, true).unwrap();
        assert_eq!((r.start, r.end), (10, 15));
        // On tansu (a fetch inside a batch brings the next batch) nothing waits.
        let mut t: Pieces<B, ()> = Pieces::new(0, 30, 15);
        t.set_mid_batch(MidBatch::Next);
        let a = t.next_request(0, true).unwrap();
        t.next_request(0, true).unwrap();
        t.on_first_batch(a.id, 0, 10, 100);
        assert_eq!(t.next_request(100, true).map(|r| r.start), Some(10));
    }

    #[test]
    fn the_head_of_the_stream_never_waits() {
        let mut p: Pieces<B, ()> = Pieces::new(0, 30, 15);
        p.set_mid_batch(MidBatch::Holding);
        let a = p.next_request(0, true).unwrap();
        p.next_request(0, true).unwrap(); // cut blind at 15
        p.on_answer(a.id, vec![B(0, 10)], None, 100);
        p.pop_ready();
        let r = p.next_request(100, false).expect("the head goes at once");
        assert_eq!((r.start, r.end), (10, 15));
    }

    #[test]
    fn a_head_proves_the_brokers_style() {
        let mut p: Pieces<B, ()> = Pieces::new(0, 45, 15);
        let rs: Vec<_> = (0..3).map(|_| p.next_request(0, true).unwrap()).collect();
        // The fetch at 15 begins with [10, 20): Kafka's style, learnt from the head
        // before any answer. [20, 30) ends where the blind fetch at 30 began: wait.
        p.on_first_batch(rs[1].id, 10, 20, 50);
        assert!(p.next_request(60, true).is_none());
        assert_eq!(
            p.next_request(1_100, true).map(|r| (r.start, r.end)),
            Some((20, 30))
        );
        // A later "style" from the driver does not undo it.
        p.set_mid_batch(MidBatch::Unknown);
        assert!(p.waits_for(1_100, |_| true));
    }

    #[test]
    fn no_piece_is_cut_inside_the_batch_a_short_fetch_brings() {
        for one_batch in [true, false] {
            let mut p: Pieces<B, ()> = Pieces::new(0, 100, 20);
            p.set_mid_batch(MidBatch::Holding);
            p.set_one_batch(one_batch);
            let a = p.next_request(0, true).unwrap();
            p.on_first_batch(a.id, 0, 8, 10);
            // The rest of a's range, from a known batch start: its batch may run past
            // 20, where the next piece would be cut.
            let g = p.next_request(10, true).unwrap();
            assert_eq!((g.start, g.end), (8, 20));
            let next = p.next_request(20, true);
            if !one_batch {
                // A larger ask's head would not say where it ends: no wait.
                assert_eq!(next.map(|r| r.start), Some(20));
                continue;
            }
            assert!(next.is_none(), "waits for the head of [8, 20)");
            // Its batch is [8, 25): the next piece starts there.
            p.on_first_batch(g.id, 8, 25, 30);
            let r = p.next_request(30, true).unwrap();
            assert_eq!((r.start, r.end), (25, 45));
            // A head that does not come holds planning up only briefly.
            let r2 = p.next_request(30, true).unwrap();
            assert_eq!(r2.start, 45);
            p.on_first_batch(r2.id, 45, 50, 40);
            let g2 = p.next_request(40, true).unwrap();
            assert_eq!((g2.start, g2.end), (50, 65));
            assert!(p.next_request(900, true).is_none());
            assert_eq!(p.next_request(1_100, true).map(|r| r.start), Some(65));
        }
    }

    #[test]
    fn a_flight_that_claims_the_head_from_below_its_offset_is_stolen_when_stuck() {
        let mut p: Pieces<B, ()> = Pieces::new(0, 40, 20);
        p.set_mid_batch(MidBatch::Holding);
        let a = p.next_request(0, true).unwrap();
        let b = p.next_request(0, true).unwrap();
        p.on_answer(a.id, vec![B(0, 10)], None, 100);
        p.pop_ready();
        // b, fetched at 20, began with the batch holding 20, [10, 25): it claims the
        // head from 10 and is stuck. Its duplicate is fetched from 10, a batch start.
        p.on_first_batch(b.id, 10, 25, 150);
        let r = p.next_request(200, true).unwrap();
        assert_eq!((r.start, r.duplicate), (25, false), "the rest of b's range");
        p.on_answer(r.id, vec![B(25, 40)], None, 300);
        let dup = p.next_request(5_000, false).unwrap();
        assert_eq!((dup.start, dup.duplicate), (10, true));
    }

    #[test]
    fn a_resume_inside_a_batch_keeps_that_batch() {
        let src = log(&[(0, 10), (0, 10)]);
        let mut p: Pieces<B, ()> = Pieces::new(5, 20, 100);
        let r = p.next_request(0, true).unwrap();
        p.on_answer(r.id, fetch(&src, r.start, 5, true), None, 1);
        assert_eq!(p.pop_ready().0, src);
    }

    #[derive(Debug, Clone)]
    enum Ev {
        /// Answer the in-flight request at this index (modulo), with up to n batches.
        Answer(usize, usize, bool),
        Fail(usize),
        Issue(bool),
        Tick(u64),
        /// The head of the answer to the in-flight request at this index arrives: its
        /// first batch, under either broker's behaviour.
        Head(usize, bool),
        /// Bytes of the answer to the in-flight request at this index arrive.
        Progress(usize),
    }

    fn ev() -> impl Strategy<Value = Ev> {
        prop_oneof![
            4 => (any::<usize>(), 0usize..4, any::<bool>()).prop_map(|(i, n, k)| Ev::Answer(i, n, k)),
            1 => any::<usize>().prop_map(Ev::Fail),
            3 => any::<bool>().prop_map(Ev::Issue),
            1 => (0u64..3_000).prop_map(Ev::Tick),
            2 => (any::<usize>(), any::<bool>()).prop_map(|(i, k)| Ev::Head(i, k)),
            1 => any::<usize>().prop_map(Ev::Progress),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
        /// Random piece sizes, batch layouts with compaction gaps, answer order,
        /// failures, short and empty answers, duplicates, both brokers' behaviour
        /// for fetches inside a batch, with and without split fetches, answer heads
        /// arriving early, with and without waiting for heads, the end learnt late
        /// (the source grew during the catch-up): the output is the source log from
        /// the start, each batch once, in order.
        #[test]
        fn reassembles_the_source_exactly(
            shape in proptest::collection::vec((0i64..3, 1i64..20), 1..40),
            piece in 1i64..60,
            start_pick in 0usize..40,
            window in proptest::option::of(1i64..80),
            split in proptest::option::of(1i64..20),
            holding in any::<bool>(),
            events in proptest::collection::vec(ev(), 0..300),
            known_pick in 0usize..40,
            grow_at in 0usize..300,
            inside in 0i64..20,
        ) {
            let src = log(&shape);
            let end = src.last().unwrap().1;
            // Start at a batch boundary, or, on Kafka (which answers a fetch inside a
            // batch with the batch holding it), anywhere inside a batch: the batch
            // holding the start is then the first one out.
            let first = start_pick % src.len();
            let mid = holding && inside % 2 == 1;
            let start = if mid {
                src[first].0 + inside % (src[first].1 - src[first].0)
            } else {
                src[first].0
            };
            let want: Vec<B> = src.iter().filter(|b| b.1 > start).copied().collect();
            // The catch-up starts knowing only part of the log; the rest is learnt
            // (`extend`) at some event, with pieces in flight, or after them all.
            let known = src[first.max(known_pick % src.len())].1;
            let mut p: Pieces<B, u32> = Pieces::new(start, known, piece);
            p.set_split(split);
            // Waiting for heads (Kafka) must never lose data or stall for good.
            p.set_mid_batch(if holding { MidBatch::Holding } else { MidBatch::Next });
            if let Some(w) = window {
                p.set_window(w);
            }
            let mut flying: Vec<Request> = Vec::new();
            let mut out: Vec<B> = Vec::new();
            let mut now = 0u64;
            let run = |e: &Ev, p: &mut Pieces<B, u32>, flying: &mut Vec<Request>, now: &mut u64, out: &mut Vec<B>| {
                match *e {
                    Ev::Issue(permit) => {
                        if let Some(r) = p.next_request(*now, permit) {
                            flying.push(r);
                        }
                    }
                    Ev::Answer(i, n, kafka) if !flying.is_empty() => {
                        let r = flying.swap_remove(i % flying.len());
                        let kafka = kafka || mid;
                        let o = p.on_answer(r.id, fetch(&src, r.start, n, kafka), Some(7), *now);
                        if o == Outcome::TooSmall {
                            prop_assert_eq!(n, 0, "too small at {} with {} batches", r.start, n);
                        }
                    }
                    Ev::Fail(i) if !flying.is_empty() => {
                        let r = flying.swap_remove(i % flying.len());
                        p.on_failed(r.id);
                    }
                    Ev::Tick(ms) => *now += ms,
                    // The answer that follows may disagree (other broker style, fewer
                    // batches, none): the hint must never make data go missing.
                    Ev::Head(i, kafka) if !flying.is_empty() => {
                        let r = &flying[i % flying.len()];
                        if let Some(b) = fetch(&src, r.start, 1, kafka || mid).first() {
                            p.on_first_batch(r.id, b.0, b.1, *now);
                        }
                    }
                    Ev::Progress(i) if !flying.is_empty() => {
                        p.on_progress(flying[i % flying.len()].id, *now);
                    }
                    _ => {}
                }
                let (b, tokens) = p.pop_ready();
                prop_assert!(tokens.iter().all(|t| *t == 7));
                out.extend(b);
                Ok(())
            };
            for (i, e) in events.iter().enumerate() {
                if i == grow_at {
                    p.extend(end);
                }
                run(e, &mut p, &mut flying, &mut now, &mut out)?;
            }
            p.extend(end);
            // Then let everything finish: answers with at least one batch, in order of
            // issue, alternating broker behaviour.
            let mut guard = 0;
            while !p.is_done() {
                guard += 1;
                prop_assert!(guard < 10_000, "no progress: emitted {}", p.emitted());
                if let Some(r) = p.next_request(now, true) {
                    flying.push(r);
                }
                if !flying.is_empty() {
                    let kafka = guard % 2 == 0;
                    run(&Ev::Answer(0, 2, kafka), &mut p, &mut flying, &mut now, &mut out)?;
                }
                now += 1_000;
            }
            prop_assert_eq!(out, want);
        }

        /// Kafka's answers (a fetch inside a batch brings the batch holding it), one
        /// batch per answer, pieces at least as long as any batch, heads arriving in
        /// any order and answers in any order after their heads, and no head ever
        /// late (time stands still): no batch crosses the link twice, unless one of
        /// the fetches that brought it was at the head of the stream, which never
        /// waits. (Holes in the offsets are left out: a fetch inside one brings the
        /// batch after it, which nothing could have told.)
        #[test]
        fn on_kafka_heads_keep_each_batch_to_one_fetch(
            sizes in proptest::collection::vec(1i64..20, 1..40),
            extra in 0i64..40,
            steps in proptest::collection::vec((0u8..3, any::<usize>()), 0..400),
        ) {
            let shape: Vec<(i64, i64)> = sizes.iter().map(|n| (0, *n)).collect();
            let src = log(&shape);
            let end = src.last().unwrap().1;
            let longest = src.iter().map(|b| b.1 - b.0).max().unwrap();
            let mut p: Pieces<B, ()> = Pieces::new(0, end, longest + extra);
            p.set_mid_batch(MidBatch::Holding);
            // In flight, with whether its head arrived and whether it went out at the
            // head of the stream.
            let mut flying: Vec<(Request, bool, bool)> = Vec::new();
            let mut out = Vec::new();
            // Per batch: fetches that brought it, and those of them not at the head.
            let mut fetched: BTreeMap<i64, (usize, usize)> = BTreeMap::new();
            let head = |p: &mut Pieces<B, ()>, r: &Request| {
                if let Some(b) = fetch(&src, r.start, 1, true).first() {
                    p.on_first_batch(r.id, b.0, b.1, 0);
                }
            };
            let mut steps = steps.into_iter().chain(std::iter::repeat((2, 0)));
            while !p.is_done() {
                let (what, pick) = steps.next().unwrap();
                match what {
                    0 => {
                        while let Some(r) = p.next_request(0, true) {
                            flying.push((r, false, r.start == p.emitted()));
                        }
                    }
                    1 if !flying.is_empty() => {
                        let i = pick % flying.len();
                        if !flying[i].1 {
                            flying[i].1 = true;
                            head(&mut p, &flying[i].0);
                        }
                    }
                    _ if !flying.is_empty() => {
                        let (r, headed, at_head) = flying.swap_remove(pick % flying.len());
                        if !headed {
                            head(&mut p, &r);
                        }
                        let got = fetch(&src, r.start, 1, true);
                        for b in &got {
                            let e = fetched.entry(b.0).or_default();
                            e.0 += 1;
                            e.1 += usize::from(!at_head);
                        }
                        p.on_answer(r.id, got, None, 0);
                        out.extend(p.pop_ready().0);
                    }
                    _ => {
                        let r = p.next_request(0, true);
                        prop_assert!(r.is_some(), "stuck at {}", p.emitted());
                        flying.extend(r.map(|r| (r, false, r.start == p.emitted())));
                    }
                }
            }
            prop_assert_eq!(&out, &src);
            prop_assert_eq!(fetched.len(), src.len());
            for (base, (all, off_head)) in fetched {
                prop_assert!(off_head <= 1, "batch at {} fetched {} times, {} off the head", base, all, off_head);
            }
        }

        /// A corrupt batch anywhere: everything before it, exactly once, and nothing after.
        #[test]
        fn stops_exactly_at_a_corrupt_batch(
            shape in proptest::collection::vec((0i64..3, 1i64..20), 2..30),
            piece in 1i64..60,
            bad_pick in 0usize..30,
            order in proptest::collection::vec(any::<usize>(), 0..200),
        ) {
            let src = log(&shape);
            let end = src.last().unwrap().1;
            let bad = src[bad_pick % src.len()];
            let mut p: Pieces<B, ()> = Pieces::new(0, end, piece);
            let mut flying: Vec<Request> = Vec::new();
            let mut out = Vec::new();
            let answer = |p: &mut Pieces<B, ()>, r: Request| {
                let got = fetch(&src, r.start, 3, true);
                match got.iter().position(|b| *b == bad) {
                    Some(i) => p.on_corrupt(r.id, got[..i].to_vec(), bad.0, None, 0),
                    None => p.on_answer(r.id, got, None, 0),
                }
            };
            for pick in order.iter().copied().chain(std::iter::repeat(0)).take(5_000) {
                if p.is_done() {
                    break;
                }
                if let Some(r) = p.next_request(0, true) {
                    flying.push(r);
                }
                if !flying.is_empty() {
                    let r = flying.swap_remove(pick % flying.len());
                    answer(&mut p, r);
                }
                out.extend(p.pop_ready().0);
            }
            prop_assert!(p.is_done());
            prop_assert_eq!(p.stopped(), Some(bad.0));
            let want: Vec<B> = src.iter().filter(|b| b.0 < bad.0).copied().collect();
            prop_assert_eq!(out, want);
        }
    }

    #[test]
    fn a_probe_finds_new_data_and_the_rest_goes_out_at_once() {
        let src = log(&[(0, 10), (0, 10), (0, 10), (0, 10)]);
        let mut p: Pieces<B, ()> = Pieces::new(0, 10, 10);
        let r = p.next_request(0, true).unwrap();
        p.on_answer(r.id, fetch(&src, 0, 1, false), None, 10);
        assert_eq!(p.pop_ready().0, vec![B(0, 10)]);
        assert!(p.is_done());
        // Nothing new: the probe comes back empty, and the plan ends where it began.
        let probe = p.probe(20).unwrap();
        assert_eq!((probe.start, p.probing()), (10, true));
        assert!(p.probe(20).is_none(), "one probe at a time");
        p.on_high_watermark(10);
        assert_eq!(p.on_answer(probe.id, vec![], None, 40), Outcome::Empty);
        assert!(p.is_done() && !p.probing());
        // The next probe's head reports data up to 40: past the probe's claim, the
        // rest is planned before its answer is in.
        let probe = p.probe(50).unwrap();
        p.on_high_watermark(40);
        let rest = p.next_request(60, true).unwrap();
        assert_eq!((rest.start, rest.end), (20, 30));
        p.on_answer(rest.id, fetch(&src, 20, 9, false), None, 70);
        p.on_answer(probe.id, fetch(&src, 10, 1, false), None, 80);
        assert_eq!(p.pop_ready().0, src[1..].to_vec());
        assert!(p.is_done());
    }

    #[test]
    fn a_probe_claims_nothing_past_the_end() {
        let src = log(&[(0, 10), (0, 3)]);
        let mut p: Pieces<B, ()> = Pieces::new(10, 10, 100);
        let probe = p.probe(0).unwrap();
        assert_eq!((probe.start, probe.end), (10, 110));
        // The whole answer says the log ends at 13: nothing to plan past it.
        p.on_high_watermark(13);
        assert!(p.next_request(1, true).is_none());
        assert_eq!(
            p.on_answer(probe.id, fetch(&src, 10, 9, false), None, 2),
            Outcome::Covered
        );
        assert_eq!(p.pop_ready().0, vec![B(10, 13)]);
        assert!(p.is_done());
        assert!(p.next_request(3, true).is_none());
    }

    #[derive(Debug, Clone)]
    enum Live {
        /// The producer appends this many batches.
        Grow(usize),
        Issue(bool),
        /// Answer the in-flight request at this index (modulo), with up to n batches
        /// of what the log holds now, and its high watermark.
        Answer(usize, usize),
        /// The head of the in-flight request at this index arrives, with the high
        /// watermark now.
        Head(usize),
        Probe,
        Fail(usize),
        Tick(u64),
    }

    fn live_ev() -> impl Strategy<Value = Live> {
        prop_oneof![
            2 => (1usize..4).prop_map(Live::Grow),
            3 => any::<bool>().prop_map(Live::Issue),
            4 => (any::<usize>(), 0usize..4).prop_map(|(i, n)| Live::Answer(i, n)),
            2 => any::<usize>().prop_map(Live::Head),
            2 => Just(Live::Probe),
            1 => any::<usize>().prop_map(Live::Fail),
            1 => (0u64..3_000).prop_map(Live::Tick),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
        /// A live partition: the log grows while it is fetched, the end moves with
        /// every answer and head, probes go out whenever everything known is in and
        /// come back empty or with data, answers arrive in any order, some fail.
        /// What is handed out is always the log's start, in order, each batch once,
        /// and once the producer stops, all of it.
        #[test]
        fn a_moving_end_gives_the_growing_log_exactly(
            shape in proptest::collection::vec((0i64..3, 1i64..20), 2..60),
            first in 1usize..10,
            piece in 1i64..60,
            kafka in any::<bool>(),
            events in proptest::collection::vec(live_ev(), 0..300),
        ) {
            let src = log(&shape);
            let mut visible = first.min(src.len());
            let hw = |v: usize| src[..v].last().map_or(0, |b| b.1);
            let mut p: Pieces<B, u32> = Pieces::new(0, hw(visible), piece);
            p.set_mid_batch(if kafka { MidBatch::Holding } else { MidBatch::Next });
            let mut flying: Vec<Request> = Vec::new();
            let mut out: Vec<B> = Vec::new();
            let mut now = 0u64;
            let mut known = hw(visible);
            let step = |e: &Live, p: &mut Pieces<B, u32>, flying: &mut Vec<Request>, visible: &mut usize, known: &mut i64, now: &mut u64, out: &mut Vec<B>| {
                match *e {
                    Live::Grow(n) => *visible = (*visible + n).min(src.len()),
                    Live::Issue(permit) => {
                        // Nothing is asked for past the end the answers reported: such
                        // a fetch would come back empty.
                        if let Some(r) = p.next_request(*now, permit) {
                            prop_assert!(r.start < *known, "{:?} past the end {}", r, known);
                            flying.push(r);
                        }
                    }
                    Live::Probe => flying.extend(p.probe(*now)),
                    Live::Answer(i, n) if !flying.is_empty() => {
                        let r = flying.swap_remove(i % flying.len());
                        *known = hw(*visible);
                        p.on_high_watermark(*known);
                        let o = p.on_answer(r.id, fetch(&src[..*visible], r.start, n, kafka), Some(7), *now);
                        if o == Outcome::Empty {
                            prop_assert!(r.start >= hw(*visible), "empty probe at {} below the end", r.start);
                        }
                    }
                    Live::Head(i) if !flying.is_empty() => {
                        let r = flying[i % flying.len()];
                        *known = hw(*visible);
                        p.on_high_watermark(*known);
                        if let Some(b) = fetch(&src[..*visible], r.start, 1, kafka).first() {
                            p.on_head(r.id, b.0, *now);
                        }
                    }
                    Live::Fail(i) if !flying.is_empty() => {
                        let r = flying.swap_remove(i % flying.len());
                        p.on_failed(r.id);
                    }
                    Live::Tick(ms) => *now += ms,
                    _ => {}
                }
                let (b, _) = p.pop_ready();
                out.extend(b);
                prop_assert!(out.len() <= *visible);
                prop_assert_eq!(&out[..], &src[..out.len()]);
                Ok(())
            };
            for e in &events {
                step(e, &mut p, &mut flying, &mut visible, &mut known, &mut now, &mut out)?;
            }
            // The producer stops; the mirror goes on until probes find nothing new.
            visible = src.len();
            let mut guard = 0;
            while out.len() < src.len() {
                guard += 1;
                prop_assert!(guard < 10_000, "no progress: emitted {}", p.emitted());
                if p.is_done() {
                    step(&Live::Probe, &mut p, &mut flying, &mut visible, &mut known, &mut now, &mut out)?;
                }
                step(&Live::Issue(true), &mut p, &mut flying, &mut visible, &mut known, &mut now, &mut out)?;
                step(&Live::Answer(0, 2), &mut p, &mut flying, &mut visible, &mut known, &mut now, &mut out)?;
                now += 1_000;
            }
            prop_assert_eq!(out, src);
        }
    }
}
