//! Tailing through a peer: the server pushes each partition's new batches on a
//! subscription stream as they are appended, so a record crosses the WAN once, one
//! way, with no poll round trip (docs/peer-protocol.md, "Subscribe").

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::kafka::batch::split_valid;
use crate::kafka::client::Fetched;
use crate::kafka::error::Result;
use crate::peer::client::Peer;
use crate::peer::io::Hold;

/// Pushed answers a subscription may hold before the stream's flow control stops
/// the server: a few, so a slow writer does not fill memory.
const QUEUE: usize = 4;

/// A peer and the partitions' push subscriptions.
pub struct PeerSource {
    pub peer: Arc<Peer>,
    subs: Mutex<HashMap<(String, i32), Sub>>,
}

/// One partition's subscription: a task reading pushes into a queue.
struct Sub {
    /// The offset the next pushed bytes start at (what the reader asks for next).
    next: i64,
    high_watermark: i64,
    rx: mpsc::Receiver<Result<(i64, Bytes)>>,
    /// Pushed bytes beyond what one read could take.
    held: Option<(i64, Bytes)>,
    /// The peer connection it is on.
    slot: usize,
    /// Counts it in the pool's subscriptions until dropped (here, not in the task,
    /// which ends only after the abort: the pool sees a move at once).
    _count: Hold,
    task: JoinHandle<()>,
}

impl Sub {
    /// Nothing pushed is waiting to be read.
    fn idle(&self) -> bool {
        self.held.is_none() && self.rx.is_empty()
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        // Dropping the stream resets it: the server stops reading for us.
        self.task.abort();
    }
}

impl PeerSource {
    pub fn new(peer: Arc<Peer>) -> PeerSource {
        PeerSource {
            peer,
            subs: Mutex::new(HashMap::new()),
        }
    }

    fn take(&self, topic: &str, partition: i32) -> Option<Sub> {
        self.subs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(topic.to_string(), partition))
    }

    fn put(&self, topic: &str, partition: i32, sub: Sub) {
        self.subs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((topic.to_string(), partition), sub);
    }

    /// Ends the partition's subscription (it went to catch-up pieces, or stopped).
    pub fn unsubscribe(&self, topic: &str, partition: i32) {
        drop(self.take(topic, partition));
    }

    /// What was pushed for the partition from `offset` on, up to about `max_bytes`
    /// (at least one push), waiting up to `max_wait` for a push.
    pub async fn tail(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: i32,
        max_wait: Duration,
    ) -> Result<Fetched> {
        let mut sub = match self.take(topic, partition) {
            Some(s) if s.next == offset && (s.slot < self.peer.active() || !s.idle()) => s,
            Some(s) if s.next == offset => {
                // The pool shrank under it: opened again from the same offset on a
                // connection the pool keeps, so the surplus one can close. Only
                // between pushes, so that nothing crosses the WAN twice.
                tracing::debug!(%topic, partition, offset, connection = s.slot, "moving a subscription off a surplus peer connection");
                drop(s);
                self.open(topic, partition, offset, max_wait).await?
            }
            _ => self.open(topic, partition, offset, max_wait).await?,
        };
        let first = match sub.held.take() {
            Some(h) => Some(Ok(h)),
            None => match tokio::time::timeout(max_wait, sub.rx.recv()).await {
                Ok(Some(r)) => Some(r),
                Ok(None) => Some(Err(crate::kafka::error::KafkaError::ConnectionLost {
                    addr: self.peer.addr().to_string(),
                    reason: "the subscription ended".into(),
                })),
                Err(_) => None,
            },
        };
        let mut out = BytesMut::new();
        match first {
            // Nothing pushed in time: an empty answer, as a long poll gives.
            None => {}
            // The stream failed: the subscription is dropped and opened afresh on
            // the next read (the error is retriable when the connection was lost).
            Some(Err(e)) => return Err(e),
            Some(Ok((hw, records))) => {
                sub.high_watermark = sub.high_watermark.max(hw);
                out.extend_from_slice(&records);
                // More pushes already in: hand them on at once, up to the size asked.
                while out.len() < max_bytes.max(1) as usize {
                    match sub.rx.try_recv() {
                        Ok(Ok((hw, r))) => {
                            sub.high_watermark = sub.high_watermark.max(hw);
                            if out.len() + r.len() > max_bytes.max(1) as usize {
                                sub.held = Some((hw, r));
                                break;
                            }
                            out.extend_from_slice(&r);
                        }
                        Ok(Err(e)) => return Err(e),
                        Err(_) => break,
                    }
                }
            }
        }
        let records = out.freeze();
        sub.next = next_after(&records).unwrap_or(sub.next);
        let f = Fetched {
            records,
            high_watermark: sub.high_watermark,
            conn: 0,
            queued: Duration::ZERO,
        };
        self.put(topic, partition, sub);
        Ok(f)
    }

    async fn open(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_wait: Duration,
    ) -> Result<Sub> {
        // The server long-polls its brokers with the mirror's tail wait: on brokers
        // that hold a poll to its end (tansu), that wait is the push's latency floor.
        let (slot, mut frames) = self
            .peer
            .subscribe(topic, partition, offset, max_wait)
            .await?;
        // The server answers a subscription with the partition's high watermark at
        // once (an empty push), so the first read knows where the end is.
        let (hw, first) = self.peer.pushed(&mut frames, topic, partition).await?;
        tracing::debug!(%topic, partition, offset, high_watermark = hw, connection = slot, "peer subscription open");
        let (tx, rx) = mpsc::channel(QUEUE);
        let _ = tx.try_send(Ok((hw, first)));
        let peer = self.peer.clone();
        let (t, p) = (topic.to_string(), partition);
        let task = tokio::spawn(async move {
            loop {
                let r = peer.pushed(&mut frames, &t, p).await;
                let failed = r.is_err();
                if tx.send(r).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Sub {
            next: offset,
            high_watermark: hw,
            rx,
            held: None,
            slot,
            _count: self.peer.subscription(),
            task,
        })
    }
}

/// The offset after the last whole batch of `records`, if any.
fn next_after(records: &Bytes) -> Option<i64> {
    split_valid(records)
        .0
        .last()
        .map(|b| b.header.next_offset())
}
