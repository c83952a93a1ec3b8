//! One client request on one stream: decode it, check the allow-list, answer from the
//! local cluster. A malformed request resets only its stream.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use quinn::{RecvStream, SendStream, VarInt};

use super::{Client, Ctx};
use crate::kafka::batch::{parse_header, HEADER_LEN};
use crate::kafka::error::KafkaError;
use crate::peer::frame::{ErrorCode, Frame, PartitionInfo, TopicInfo, VERSION};
use crate::peer::io::{self, code, Frames, ReadFail};
use crate::source::reader::PartitionReader;
use crate::verify::leaf::LeafHasher;
use crate::verify::tree::{NodeId, Tree};

/// The largest request frame taken (requests are names and numbers).
const REQUEST_LIMIT: usize = 1 << 20;
/// The largest answer a fetch may ask for (a frame holds it whole).
const MAX_FETCH: usize = 64 << 20;
/// How much a push reads from the cluster at a time.
const PUSH_BYTES: usize = 1 << 20;
/// The most leaves a tree request may have (a hash each, 32 bytes, kept per stream).
const MAX_LEAVES: u64 = 1 << 20;
/// Bytes per local fetch while hashing.
const HASH_FETCH: usize = 8 << 20;

/// Why a request failed.
enum Fail {
    /// The stream is gone (the client reset it or the connection closed).
    Gone,
    /// The client sent what it must not: the stream is reset.
    Bad(String),
    /// An answer the client gets as an error frame.
    Refuse(Frame),
}

impl From<KafkaError> for Fail {
    fn from(e: KafkaError) -> Fail {
        Fail::Refuse(kafka_error(&e))
    }
}

impl Fail {
    /// An error frame carrying a Kafka error code.
    fn with_kafka(self, code: i16) -> Fail {
        match self {
            Fail::Refuse(Frame::Error { message, .. }) => Fail::Refuse(Frame::Error {
                code: ErrorCode::Kafka,
                kafka: code,
                message,
            }),
            other => other,
        }
    }
}

fn refuse(code: ErrorCode, message: String) -> Fail {
    Fail::Refuse(Frame::Error {
        code,
        kafka: 0,
        message,
    })
}

/// A cluster error as the client should see it: Kafka's code where there is one,
/// "unavailable" (retriable) for lost connections and timeouts.
fn kafka_error(e: &KafkaError) -> Frame {
    let (code, kafka) = match e.code() {
        Some(c) => (ErrorCode::Kafka, c.code()),
        None if e.is_retriable() => (ErrorCode::Unavailable, 0),
        None => match e {
            KafkaError::UnknownTopic { .. } => (ErrorCode::UnknownTopic, 0),
            _ => (ErrorCode::Internal, 0),
        },
    };
    Frame::Error {
        code,
        kafka,
        message: e.to_string(),
    }
}

pub(super) async fn stream(
    ctx: Arc<Ctx>,
    client: Arc<Client>,
    mut send: SendStream,
    recv: RecvStream,
) {
    let mut frames = Frames::new(recv).limited(REQUEST_LIMIT);
    let req = match frames.next().await {
        Ok(Some(f)) => f,
        Ok(None) | Err(ReadFail::Stream(_)) => return,
        Err(ReadFail::Frame(e)) => {
            tracing::warn!(client = %client.allowed.name, error = %e, "malformed request; stream reset");
            let _ = send.reset(VarInt::from_u32(code::BAD_FRAME));
            return;
        }
    };
    // Older fetches' records go first, pushes, heads and small answers before them
    // all: a fetch's head goes out at once, its records then take their place.
    let records = priority(&req, send.id().index());
    let _ = send.set_priority(i32::MAX);
    let r = match req {
        Frame::Hello { min, max, .. } => hello(&ctx, &mut send, min, max).await,
        Frame::List {
            topics,
            configs,
            bounds,
        } => list(&ctx, &client, &mut send, topics, configs, bounds).await,
        Frame::Fetch {
            topic,
            partition,
            offset,
            end,
            max_bytes,
            max_wait_ms,
        } => {
            let wait = Duration::from_millis(max_wait_ms.min(30_000) as u64);
            fetch(
                &ctx, &client, &mut send, &topic, partition, offset, end, max_bytes, wait, records,
            )
            .await
        }
        Frame::Subscribe {
            topic,
            partition,
            offset,
            max_wait_ms,
        } => {
            // At least a few ms: a zero wait would poll the brokers in a loop.
            let wait = Duration::from_millis(max_wait_ms.clamp(5, 30_000) as u64);
            subscribe(&ctx, &client, &mut send, &topic, partition, offset, wait).await
        }
        Frame::Tree {
            topic,
            partition,
            from,
            to,
            leaf_offsets,
        } => {
            tree(
                &ctx,
                &client,
                &mut send,
                &mut frames,
                &topic,
                partition,
                from,
                to,
                leaf_offsets,
            )
            .await
        }
        other => Err(Fail::Bad(format!("{other:?} is not a request"))),
    };
    match r {
        Ok(()) => {
            let _ = send.finish();
        }
        Err(Fail::Gone) => {}
        Err(Fail::Bad(why)) => {
            tracing::warn!(client = %client.allowed.name, reason = %why, "bad request; stream reset");
            let _ = send.reset(VarInt::from_u32(code::BAD_FRAME));
        }
        Err(Fail::Refuse(f)) => {
            if let Frame::Error { code, message, .. } = &f {
                tracing::debug!(client = %client.allowed.name, ?code, %message, "request refused");
            }
            if io::send(&mut send, &f).await.is_ok() {
                let _ = send.finish();
            }
        }
    }
}

/// The send priority of the answer to `req`, the `index`th stream the client opened
/// on its connection (QUIC sends the highest first).
///
/// A fetch's records go oldest first (its head goes before them all, as everything
/// else does): with equal priorities QUIC sends streams round robin, so
/// every answer in flight arrives at once near the end of them all, and the piece the
/// writer waits for takes as long as the last. Oldest first, the first asked for
/// arrives at the link's full rate, the rest in order behind it (decision 67).
/// Everything else goes before any fetch: a push is a live record someone waits for,
/// and hellos, listings and tree nodes are small.
fn priority(req: &Frame, index: u64) -> i32 {
    match req {
        Frame::Fetch { .. } => {
            // Past 2^31 streams on one connection, the last ones share the lowest.
            -(index.min(i32::MAX as u64) as i32)
        }
        _ => i32::MAX,
    }
}

async fn put(send: &mut SendStream, f: &Frame) -> Result<(), Fail> {
    io::send(send, f).await.map_err(|_| Fail::Gone)
}

fn allowed(client: &Client, topic: &str) -> Result<(), Fail> {
    if client.allowed.allows(topic) {
        return Ok(());
    }
    tracing::warn!(client = %client.allowed.name, %topic, "refused: topic outside the client's allow-list");
    Err(refuse(
        ErrorCode::NotAllowed,
        format!(
            "topic {topic:?} is not in the topics client {:?} may read",
            client.allowed.name
        ),
    ))
}

async fn hello(ctx: &Ctx, send: &mut SendStream, min: u16, max: u16) -> Result<(), Fail> {
    if !(min..=max).contains(&VERSION) {
        return Err(refuse(
            ErrorCode::Version,
            format!("this server speaks protocol version {VERSION}, the client {min}..={max}"),
        ));
    }
    put(
        send,
        &Frame::Welcome {
            version: VERSION,
            cluster: ctx.cluster.clone(),
            agent: format!("wanmirror serve {}", env!("CARGO_PKG_VERSION")),
        },
    )
    .await
}

async fn list(
    ctx: &Ctx,
    client: &Client,
    send: &mut SendStream,
    names: Vec<String>,
    configs: bool,
    bounds: bool,
) -> Result<(), Fail> {
    for n in &names {
        allowed(client, n)?;
    }
    let src = &ctx.source;
    let all = src.topics().await?;
    let mut out = Vec::new();
    for t in all {
        let wanted = if names.is_empty() {
            !t.internal && client.allowed.allows(&t.name)
        } else {
            names.contains(&t.name)
        };
        if !wanted {
            continue;
        }
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let (log_start, end) = if bounds {
                src.retry("log bounds", || src.bounds(&t.name, p.index))
                    .await?
            } else {
                (-1, -1)
            };
            partitions.push(PartitionInfo {
                index: p.index,
                log_start,
                end,
            });
        }
        partitions.sort_by_key(|p| p.index);
        let configs = if configs {
            src.topic_configs(&t.name).await?.into_iter().collect()
        } else {
            Vec::new()
        };
        out.push(TopicInfo {
            name: t.name,
            configs,
            partitions,
        });
    }
    put(send, &Frame::Topics { topics: out }).await
}

/// A fetch's answer: its head, then its records at the send priority `records` (see
/// [`priority`]).
#[allow(clippy::too_many_arguments)]
async fn fetch(
    ctx: &Ctx,
    client: &Client,
    send: &mut SendStream,
    topic: &str,
    partition: i32,
    offset: i64,
    end: i64,
    max_bytes: u32,
    wait: Duration,
    records: i32,
) -> Result<(), Fail> {
    allowed(client, topic)?;
    let max = (max_bytes as usize).clamp(1, MAX_FETCH);
    // Memory first: a client's fetches wait once it has its share in flight.
    let kib = ((max / 1024).max(1) as u32).min(client.budget_total());
    let _permit = client
        .budget
        .acquire_many(kib)
        .await
        .map_err(|_| Fail::Gone)?;
    let src = &ctx.source;
    let f = if wait.is_zero() {
        src.retry("fetch", || {
            src.fetch_piece(topic, partition, offset, max as i32, true, None)
        })
        .await?
    } else {
        src.fetch(topic, partition, offset, max as i32, wait)
            .await?
    };
    let (body, first) = whole_batches(&f.records, end);
    put(
        send,
        &Frame::Head {
            high_watermark: f.high_watermark,
            first,
        },
    )
    .await?;
    // The head was queued first: it leaves with the next packet, and the catch-up
    // driver plans past it a whole queue wait before the records arrive.
    let _ = send.set_priority(records);
    io::send_batches(send, f.high_watermark, body)
        .await
        .map_err(|_| Fail::Gone)
}

async fn subscribe(
    ctx: &Ctx,
    client: &Client,
    send: &mut SendStream,
    topic: &str,
    partition: i32,
    offset: i64,
    wait: Duration,
) -> Result<(), Fail> {
    allowed(client, topic)?;
    let src = &ctx.source;
    let (_, end) = src
        .retry("log bounds", || src.bounds(topic, partition))
        .await?;
    io::send_batches(send, end, Bytes::new())
        .await
        .map_err(|_| Fail::Gone)?;
    tracing::debug!(client = %client.allowed.name, %topic, partition, offset, "push subscription");
    let (mut next, mut hw_sent) = (offset, end);
    // Grown while the next batch is larger than what is asked (a broker answers
    // with part of it, or nothing): doubled up to the largest answer, with a short
    // pause so that the brokers are not asked in a tight loop.
    let mut ask = PUSH_BYTES;
    loop {
        // Retried with metadata refreshed (a new leader) up to the retry deadline;
        // then the client gets the error and subscribes again.
        let f = tokio::select! {
            f = src.retry("push", || src.fetch(topic, partition, next, ask as i32, wait)) => f?,
            // The client stopped the stream (it went to pieces, or is gone).
            _ = send.stopped() => return Err(Fail::Gone),
        };
        let (records, _) = whole_batches(&f.records, -1);
        if let Some(n) = last_next(&records) {
            next = next.max(n);
        }
        // Bytes that are not batches go out once, and the push ends there: the
        // mirror stops the partition naming the offset, and pushing them again would
        // only loop.
        let corrupt = last_len(&records) < records.len();
        if records.is_empty() && next < f.high_watermark {
            ask = (ask * 2).min(MAX_FETCH);
            tokio::time::sleep(Duration::from_millis(20)).await;
        } else if !records.is_empty() {
            ask = PUSH_BYTES;
        }
        if records.is_empty() && f.high_watermark == hw_sent {
            continue;
        }
        let kib = ((records.len() / 1024).max(1) as u32).min(client.budget_total());
        let _permit = client
            .budget
            .acquire_many(kib)
            .await
            .map_err(|_| Fail::Gone)?;
        hw_sent = f.high_watermark;
        io::send_batches(send, f.high_watermark, records)
            .await
            .map_err(|_| Fail::Gone)?;
        if corrupt {
            tracing::warn!(client = %client.allowed.name, %topic, partition, offset = next, "corrupt data in the source log; push ended there");
            return Ok(());
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn tree(
    ctx: &Ctx,
    client: &Client,
    send: &mut SendStream,
    frames: &mut Frames,
    topic: &str,
    partition: i32,
    from: i64,
    to: i64,
    leaf_offsets: i64,
) -> Result<(), Fail> {
    allowed(client, topic)?;
    if from < 0 || to < from || leaf_offsets <= 0 {
        return Err(refuse(
            ErrorCode::BadFrame,
            format!("no tree over [{from}, {to}) in leaves of {leaf_offsets} offsets"),
        ));
    }
    // Leaves past the log's end would hash nothing at the client's cost of nothing.
    let src = &ctx.source;
    let (_, end) = src
        .retry("log bounds", || src.bounds(topic, partition))
        .await?;
    if to > end {
        return Err(refuse(
            ErrorCode::Kafka,
            format!("{topic}/{partition}: a tree up to {to} asked, the log ends at {end}"),
        )
        .with_kafka(ResponseError::OffsetOutOfRange.code()));
    }
    let n = LeafHasher::leaf_count(from, to, leaf_offsets);
    if n > MAX_LEAVES {
        return Err(refuse(
            ErrorCode::Limit,
            format!("{n} leaves is more than the {MAX_LEAVES} a tree may have: use longer leaves"),
        ));
    }
    let started = std::time::Instant::now();
    let reader = PartitionReader {
        source: &ctx.source,
        topic,
        partition,
        fetch_bytes: HASH_FETCH,
    };
    let built = tokio::select! {
        r = crate::verify::hashing::hash_range(&reader, from, to, leaf_offsets, &|_| {}) => r,
        // The client gave up: stop reading for it.
        _ = send.stopped() => return Err(Fail::Gone),
    };
    let (leaves, _) = built?;
    let tree = Tree::from_leaves(&leaves.iter().map(|l| l.hash).collect::<Vec<_>>());
    tracing::info!(
        client = %client.allowed.name, %topic, partition, from, to, leaves = leaves.len(),
        ms = started.elapsed().as_millis() as u64, "tree built"
    );
    put(
        send,
        &Frame::TreeBuilt {
            leaves: leaves.len() as u64,
        },
    )
    .await?;
    loop {
        match frames.next().await {
            Ok(Some(Frame::Nodes { ids })) => {
                let ids: Vec<NodeId> = ids
                    .into_iter()
                    .map(|(layer, index)| NodeId {
                        layer: layer as usize,
                        index: index as usize,
                    })
                    .collect();
                put(
                    send,
                    &Frame::Hashes {
                        hashes: tree.answer(&ids),
                    },
                )
                .await?;
            }
            Ok(Some(Frame::Counts { first, count })) => {
                // Only leaves that exist: a count is never an allocation the client
                // chooses.
                let from = (first as usize).min(leaves.len());
                let to = from.saturating_add(count as usize).min(leaves.len());
                let counts = leaves[from..to].iter().map(|l| l.records).collect();
                put(send, &Frame::LeafCounts { counts }).await?;
            }
            Ok(None) => return Ok(()),
            Ok(Some(other)) => return Err(Fail::Bad(format!("{other:?} on a tree stream"))),
            Err(ReadFail::Frame(e)) => return Err(Fail::Bad(e.to_string())),
            Err(ReadFail::Stream(_)) => return Err(Fail::Gone),
        }
    }
}

impl Client {
    /// The budget's size: one request never asks for more than all of it.
    fn budget_total(&self) -> u32 {
        self.budget_kib
    }
}

/// The whole batches of a fetch answer, up to the first that starts at or past `end`
/// (-1: no end), and `[base, next)` of the first. The first batch is always kept, so
/// an answer is never empty while the log has data. A broker's partial last batch is
/// dropped here, in the source DC, instead of crossing the WAN to be dropped there.
/// Bytes whose header does not parse are passed on as they are: the mirror then
/// stops the partition naming the corrupt offset, as it does reading brokers.
fn whole_batches(records: &Bytes, end: i64) -> (Bytes, Option<(i64, i64)>) {
    let mut pos = 0usize;
    let mut first = None;
    while records.len() - pos >= HEADER_LEN {
        let Ok(h) = parse_header(&records[pos..]) else {
            return (records.clone(), first);
        };
        let size = h.size();
        if size > records.len() - pos {
            break;
        }
        if end >= 0 && h.base_offset >= end && pos > 0 {
            break;
        }
        if first.is_none() {
            first = Some((
                h.base_offset,
                h.base_offset.saturating_add(h.last_offset_delta as i64 + 1),
            ));
        }
        pos += size;
    }
    (records.slice(..pos), first)
}

/// The bytes of `records` that are whole batches with headers that parse.
fn last_len(records: &Bytes) -> usize {
    let mut pos = 0usize;
    while records.len() - pos >= HEADER_LEN {
        let Ok(h) = parse_header(&records[pos..]) else {
            break;
        };
        if h.size() > records.len() - pos {
            break;
        }
        pos += h.size();
    }
    pos
}

/// The offset after the last batch of whole batches.
fn last_next(records: &Bytes) -> Option<i64> {
    let mut pos = 0usize;
    let mut next = None;
    while records.len() - pos >= HEADER_LEN {
        // Past a header that does not parse, the last good batch's end is the answer:
        // the bytes after it go on for the mirror to name, and are not pushed again.
        let Ok(h) = parse_header(&records[pos..]) else {
            break;
        };
        if h.size() > records.len() - pos {
            break;
        }
        next = Some(h.base_offset.saturating_add(h.last_offset_delta as i64 + 1));
        pos += h.size();
    }
    next
}

#[cfg(test)]
mod tests;
