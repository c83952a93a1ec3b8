//! Fetch multiplexing: every partition fetch for one broker shares one Fetch request.
//!
//! Brokers answer the requests of one connection strictly in order, so a long poll for
//! an idle partition would hold up every other partition queued behind it. Like the
//! Java consumer, we send one Fetch per broker covering all partitions that want data,
//! on a connection of its own (so metadata and produce traffic never wait behind a
//! long poll). Requests that arrive while one is in flight go into the next round.

use std::collections::HashMap;
use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::sync::{mpsc, oneshot};

use super::client::Fetched;
use super::connection::{broker_err, Connection, SocketOptions};
use super::error::{KafkaError, Result};
use super::peek;

/// Largest total response we ask a broker for in one round.
const MAX_RESPONSE: i32 = 64 << 20;

/// One partition's wish for data.
struct Want {
    topic: String,
    partition: i32,
    offset: i64,
    max_bytes: i32,
    /// How long this caller is willing to let the broker wait for new data.
    max_wait: Duration,
    reply: oneshot::Sender<Result<Fetched>>,
}

/// Handle to the fetch loop of one broker.
#[derive(Clone)]
pub struct FetchMux {
    addr: String,
    tx: mpsc::Sender<Want>,
}

impl FetchMux {
    pub fn spawn(addr: &str, opts: SocketOptions) -> FetchMux {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(addr.to_string(), opts, rx));
        FetchMux {
            addr: addr.to_string(),
            tx,
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: i32,
        max_wait: Duration,
    ) -> Result<Fetched> {
        let (reply, rx) = oneshot::channel();
        let lost = || KafkaError::ConnectionLost {
            addr: self.addr.clone(),
            reason: "fetch loop stopped".into(),
        };
        self.tx
            .send(Want {
                topic: topic.to_string(),
                partition,
                offset,
                max_bytes,
                max_wait,
                reply,
            })
            .await
            .map_err(|_| lost())?;
        rx.await.map_err(|_| lost())?
    }
}

async fn run(addr: String, opts: SocketOptions, mut rx: mpsc::Receiver<Want>) {
    let mut conn: Option<Connection> = None;
    let mut rounds = Rounds::default();
    loop {
        let mut arrivals = Vec::new();
        if rounds.is_idle() {
            match rx.recv().await {
                Some(w) => arrivals.push(w),
                None => return,
            }
        }
        while arrivals.len() < MAX_ROUND {
            match rx.try_recv() {
                Ok(w) => arrivals.push(w),
                Err(_) => break,
            }
        }
        let now = rounds.next(arrivals);
        if now.is_empty() {
            continue;
        }
        let c = match conn.as_ref().filter(|c| c.is_alive()) {
            Some(c) => c.clone(),
            None => match Connection::connect(&addr, &opts).await {
                Ok(c) => {
                    conn = Some(c.clone());
                    c
                }
                Err(e) => {
                    let reason = e.to_string();
                    for w in now.into_iter().chain(rounds.carried.drain(..)) {
                        let _ = w.reply.send(Err(KafkaError::ConnectionLost {
                            addr: addr.clone(),
                            reason: reason.clone(),
                        }));
                    }
                    continue;
                }
            },
        };
        round_trip(&c, now).await;
    }
}

/// Most wishes one round takes from the queue; the rest wait for the next.
const MAX_ROUND: usize = 4096;
/// Wishes queued for a broker's fetch loop before callers wait to add more.
const QUEUE: usize = 1024;

/// Which wishes go out together. A partition may appear once per Fetch, so a second
/// wish for it waits for the next round, together with whatever arrives meanwhile:
/// sending it alone would hold every other partition behind its long poll.
#[derive(Default)]
struct Rounds {
    carried: std::collections::VecDeque<Want>,
}

impl Rounds {
    fn is_idle(&self) -> bool {
        self.carried.is_empty()
    }

    /// The wishes of the next round: carried ones first, then arrivals, one per
    /// partition; the others are carried again. Wishes nobody waits for are dropped.
    fn next(&mut self, arrivals: Vec<Want>) -> Vec<Want> {
        let mut seen = std::collections::HashSet::new();
        let mut now = Vec::new();
        let mut later = std::collections::VecDeque::new();
        for w in self.carried.drain(..).chain(arrivals) {
            if w.reply.is_closed() {
                continue;
            }
            if seen.insert((w.topic.clone(), w.partition)) {
                now.push(w);
            } else {
                later.push_back(w);
            }
        }
        self.carried = later;
        now
    }
}

/// Sends one Fetch for all `wants` and answers each.
async fn round_trip(conn: &Connection, wants: Vec<Want>) {
    // Wait at the broker only if every caller is fine with waiting.
    let max_wait = wants
        .iter()
        .map(|w| w.max_wait)
        .min()
        .unwrap_or(Duration::ZERO);
    let req = fetch_request(
        wants
            .iter()
            .map(|w| (w.topic.as_str(), w.partition, w.offset, w.max_bytes)),
        max_wait,
    );
    let mut answers = match send_fetch(conn, &req, max_wait).await {
        Ok(a) => a,
        Err(e) => {
            for w in wants {
                let _ = w.reply.send(Err(for_each_caller(&e, conn.addr())));
            }
            return;
        }
    };
    for w in wants {
        let answer = answers.take(conn.addr(), &w.topic, w.partition);
        let _ = w.reply.send(answer);
    }
}

/// The error of a shared request, once per caller (errors are not `Clone`).
fn for_each_caller(e: &KafkaError, addr: &str) -> KafkaError {
    match e {
        KafkaError::Broker { api, code, detail } => KafkaError::Broker {
            api,
            code: *code,
            detail: detail.clone(),
        },
        other => KafkaError::ConnectionLost {
            addr: addr.to_string(),
            reason: other.to_string(),
        },
    }
}

/// A sessionless Fetch (no incremental fetch session: every request names its
/// partitions and offsets) for `(topic, partition, offset, max_bytes)` wishes.
pub(crate) fn fetch_request<'a>(
    wants: impl Iterator<Item = (&'a str, i32, i64, i32)>,
    max_wait: Duration,
) -> FetchRequest {
    let mut by_topic: Vec<(&str, Vec<FetchPartition>)> = Vec::new();
    let mut total: i64 = 0;
    for (topic, partition, offset, max_bytes) in wants {
        total += max_bytes as i64;
        let p = FetchPartition::default()
            .with_partition(partition)
            .with_current_leader_epoch(-1)
            .with_fetch_offset(offset)
            .with_last_fetched_epoch(-1)
            .with_log_start_offset(-1)
            .with_partition_max_bytes(max_bytes);
        match by_topic.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, ps)) => ps.push(p),
            None => by_topic.push((topic, vec![p])),
        }
    }
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait.as_millis() as i32)
        .with_min_bytes(1)
        .with_max_bytes(total.clamp(1, MAX_RESPONSE as i64) as i32)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partitions(ps)
                })
                .collect(),
        )
}

/// The partitions of one Fetch response, to be taken one by one.
pub(crate) struct Answers(HashMap<(String, i32), PartitionData>);

/// Sends a Fetch and waits out any throttle the broker asks for.
pub(crate) async fn send_fetch(
    conn: &Connection,
    req: &FetchRequest,
    max_wait: Duration,
) -> Result<Answers> {
    answers(conn.send_wait(req, max_wait).await?).await
}

/// A Fetch (held at the broker for up to `wait`) whose answer's head (high watermark and
/// first batch) is passed to `on_head` as soon as it is in (see `peek`), before the
/// rest.
pub(crate) async fn send_fetch_early(
    conn: &Connection,
    req: &FetchRequest,
    wait: Duration,
    on_head: OnHead,
) -> Result<Answers> {
    let version = conn.version::<FetchRequest>()?;
    let (head_tx, mut head_rx) = oneshot::channel::<bytes::Bytes>();
    let send = conn.send_with_head(req, version, wait, head_tx);
    tokio::pin!(send);
    let mut on_head = Some(on_head);
    // The answer decides when this ends (it may time out with the head never sent).
    let resp = loop {
        tokio::select! {
            // The head is sent before the whole: told first when both are in.
            biased;
            head = &mut head_rx, if on_head.is_some() => {
                let tell = on_head.take().expect("guarded");
                // Dropped unsent when the answer is short: nothing to tell early then.
                if let Some(h) = head.ok().and_then(|h| peek::head(&h, version)) {
                    tell(h);
                }
            }
            resp = &mut send => break resp,
        }
    };
    answers(resp?).await
}

/// Told the head of an answer still arriving.
pub type OnHead = Box<dyn FnOnce(peek::Head) + Send>;

async fn answers(resp: FetchResponse) -> Result<Answers> {
    if resp.throttle_time_ms > 0 {
        tokio::time::sleep(Duration::from_millis(resp.throttle_time_ms as u64)).await;
    }
    if resp.error_code != 0 {
        return Err(broker_err("Fetch", resp.error_code, None));
    }
    let mut parts = HashMap::new();
    for t in resp.responses {
        let name = t.topic.0.to_string();
        for p in t.partitions {
            parts.insert((name.clone(), p.partition_index), p);
        }
    }
    Ok(Answers(parts))
}

impl Answers {
    pub(crate) fn take(&mut self, addr: &str, topic: &str, partition: i32) -> Result<Fetched> {
        match self.0.remove(&(topic.to_string(), partition)) {
            None => Err(KafkaError::Decode {
                addr: addr.to_string(),
                api: "Fetch",
                reason: format!("no data for {topic}/{partition} in response"),
            }),
            Some(p) if p.error_code != 0 => Err(KafkaError::Partition {
                api: "Fetch",
                topic: topic.to_string(),
                partition,
                code: ResponseError::try_from_code(p.error_code)
                    .unwrap_or(ResponseError::Unknown(p.error_code)),
                detail: None,
            }),
            Some(p) => Ok(Fetched {
                records: p.records.unwrap_or_default(),
                high_watermark: p.high_watermark,
                conn: 0,
                queued: Duration::ZERO,
            }),
        }
    }
}

#[cfg(test)]
mod rounds_tests {
    use super::*;

    fn want(
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> (Want, oneshot::Receiver<Result<Fetched>>) {
        let (reply, rx) = oneshot::channel();
        let w = Want {
            topic: topic.into(),
            partition,
            offset,
            max_bytes: 1,
            max_wait: Duration::from_secs(5),
            reply,
        };
        (w, rx)
    }

    fn names(ws: &[Want]) -> Vec<(String, i32, i64)> {
        ws.iter()
            .map(|w| (w.topic.clone(), w.partition, w.offset))
            .collect()
    }

    #[test]
    fn a_second_wish_for_a_partition_joins_the_next_round_with_new_arrivals() {
        let mut r = Rounds::default();
        let (a, _ra) = want("t", 0, 10);
        let (a2, _ra2) = want("t", 0, 20);
        let (b, _rb) = want("t", 1, 5);
        let now = r.next(vec![a, a2, b]);
        assert_eq!(names(&now), vec![("t".into(), 0, 10), ("t".into(), 1, 5)]);
        assert!(!r.is_idle());
        // The carried wish goes out with what arrived meanwhile, in one request,
        // rather than alone before them.
        let (c, _rc) = want("u", 0, 1);
        let now = r.next(vec![c]);
        assert_eq!(names(&now), vec![("t".into(), 0, 20), ("u".into(), 0, 1)]);
        assert!(r.is_idle());
    }

    #[test]
    fn wishes_nobody_waits_for_are_dropped() {
        let mut r = Rounds::default();
        let (a, ra) = want("t", 0, 10);
        let (b, _rb) = want("t", 1, 10);
        drop(ra);
        assert_eq!(names(&r.next(vec![a, b])), vec![("t".into(), 1, 10)]);
    }
}
