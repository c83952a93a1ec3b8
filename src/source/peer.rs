//! Tailing through a peer: the server pushes each partition's new batches on a
//! subscription stream as they are appended, so a record crosses the WAN once, one
//! way, with no poll round trip (docs/peer-protocol.md, "Subscribe").

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// The peer connection it is on, and since when the pool no longer keeps it.
    slot: usize,
    surplus_since: Option<Instant>,
    /// Counts it in the pool's subscriptions until dropped (here, not in the task,
    /// which ends only after the abort: the pool sees a move at once).
    _count: Hold,
    task: JoinHandle<()>,
}

/// How long a subscription on a surplus connection waits for a moment with nothing
/// pushed waiting before it moves anyway (a busy partition may never have one).
const MOVE_WITHIN: Duration = Duration::from_secs(10);

impl Sub {
    /// Whether to open it again on another connection: its own is past the `slots`
    /// the pool keeps for subscriptions, and nothing pushed waits to be read (so
    /// little crosses twice), or it has waited for that long enough.
    fn must_move(&mut self, slots: usize) -> bool {
        if self.slot < slots {
            self.surplus_since = None;
            return false;
        }
        let since = *self.surplus_since.get_or_insert_with(Instant::now);
        (self.held.is_none() && self.rx.is_empty()) || since.elapsed() >= MOVE_WITHIN
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
            Some(mut s) if s.next == offset => {
                if s.must_move(self.peer.subscription_slots()) {
                    // The pool shrank under it: opened again from the same offset on
                    // a connection the pool keeps, so the surplus one can close.
                    tracing::debug!(%topic, partition, offset, connection = s.slot, "moving a subscription off a surplus peer connection");
                    drop(s);
                    self.open(topic, partition, offset, max_wait).await?
                } else {
                    s
                }
            }
            // Another offset (the reader went back): the old one ends before the new
            // one opens, so its pushes stop at once.
            Some(old) => {
                drop(old);
                self.open(topic, partition, offset, max_wait).await?
            }
            None => self.open(topic, partition, offset, max_wait).await?,
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
            surplus_since: None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn sub(slot: usize) -> (Sub, mpsc::Sender<Result<(i64, Bytes)>>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let s = Sub {
            next: 0,
            high_watermark: 0,
            rx,
            held: None,
            slot,
            surplus_since: None,
            _count: Hold::new(&Arc::new(AtomicUsize::new(0))),
            task: tokio::spawn(async {}),
        };
        (s, tx)
    }

    #[tokio::test]
    async fn a_subscription_moves_off_a_surplus_slot_between_pushes_or_after_waiting() {
        let (mut s, tx) = sub(2);
        // Its slot is kept: it stays, pushes waiting or not.
        assert!(!s.must_move(3));
        tx.send(Ok((1, Bytes::new()))).await.unwrap();
        assert!(!s.must_move(3));
        // The pool shrank past it with a push waiting: not yet.
        assert!(!s.must_move(2));
        assert!(s.surplus_since.is_some());
        // Waited long enough: it moves even so.
        s.surplus_since = Some(Instant::now() - MOVE_WITHIN);
        assert!(s.must_move(2));
        // Kept again, the wait starts over; with nothing waiting it moves at once.
        assert!(!s.must_move(3));
        assert!(s.surplus_since.is_none());
        s.rx.recv().await.unwrap().unwrap();
        assert!(s.must_move(2));
        // Held bytes count as waiting.
        let (mut s, _tx) = sub(1);
        s.held = Some((1, Bytes::from_static(b"x")));
        assert!(!s.must_move(1));
    }
}
