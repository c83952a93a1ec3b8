//! Frames on QUIC streams: the thin async side of `frame.rs`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use quinn::{ReadError, RecvStream, SendStream, WriteError};

use super::frame::{self, Frame, FrameError};
use crate::kafka::connection::ConnStats;

/// Why no frame could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadFail {
    #[error("{0}")]
    Stream(#[from] ReadError),
    #[error("{0}")]
    Frame(#[from] FrameError),
}

/// The frames arriving on one stream.
pub struct Frames {
    recv: RecvStream,
    buf: BytesMut,
    /// Counts the bytes as they arrive (a piece's progress, for work stealing).
    counter: Option<Arc<ConnStats>>,
    /// The largest frame taken from this stream.
    limit: usize,
    /// Counts the stream (on its connection, as a subscription) while the frames
    /// are read.
    _holds: Vec<Hold>,
}

/// Counts one open stream on a connection while held: the client's pool closes a
/// connection it no longer wants only once nothing is open on it.
pub struct Hold(Arc<AtomicUsize>);

impl Hold {
    pub fn new(count: &Arc<AtomicUsize>) -> Hold {
        count.fetch_add(1, Ordering::Relaxed);
        Hold(count.clone())
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Frames {
    pub fn new(recv: RecvStream) -> Frames {
        Frames {
            recv,
            buf: BytesMut::new(),
            counter: None,
            limit: frame::MAX_FRAME,
            _holds: Vec::new(),
        }
    }

    /// Frames larger than `limit` are refused before they are buffered.
    pub fn limited(mut self, limit: usize) -> Frames {
        self.limit = limit;
        self
    }

    pub fn counting(mut self, c: Arc<ConnStats>) -> Frames {
        self.counter = Some(c);
        self
    }

    /// Keeps `h` (a count the stream is in) until the frames are dropped.
    pub fn holding(mut self, h: Hold) -> Frames {
        self._holds.push(h);
        self
    }

    /// The next frame; `None` when the stream ended cleanly between frames.
    pub async fn next(&mut self) -> Result<Option<Frame>, ReadFail> {
        loop {
            if let Some(f) = frame::decode_limited(&mut self.buf, self.limit)? {
                return Ok(Some(f));
            }
            // Room for the rest of the frame at once: a 64 MiB answer then grows
            // the buffer once, not by doubling.
            if let Some(len) = frame::pending_len(&self.buf).filter(|l| *l <= self.limit) {
                self.buf.reserve((len + 4).saturating_sub(self.buf.len()));
            }
            match self.recv.read_chunk(usize::MAX, true).await? {
                Some(chunk) => {
                    if let Some(c) = &self.counter {
                        c.bytes_in
                            .fetch_add(chunk.bytes.len() as u64, Ordering::Relaxed);
                    }
                    self.buf.extend_from_slice(&chunk.bytes);
                }
                None => {
                    frame::finish(&self.buf)?;
                    return Ok(None);
                }
            }
        }
    }

    /// Stops the sender (the rest of the stream is not wanted).
    pub fn stop(&mut self, code: u32) {
        let _ = self.recv.stop(quinn::VarInt::from_u32(code));
    }
}

/// Sends one frame.
pub async fn send(s: &mut SendStream, f: &Frame) -> Result<(), WriteError> {
    s.write_chunk(f.to_bytes()).await
}

/// Sends a `Batches` frame without copying its records.
pub async fn send_batches(
    s: &mut SendStream,
    high_watermark: i64,
    records: Bytes,
) -> Result<(), WriteError> {
    let mut parts = Frame::batches_parts(high_watermark, records);
    s.write_all_chunks(&mut parts).await
}

/// Whether an answer has stalled, from a counter of bytes arriving for it (for a peer
/// fetch: on its connection, any stream, since older answers go first).
///
/// A connection's streams share its congestion window, so on a slow path a large
/// answer arrives slowly or waits behind others: what counts is whether bytes still
/// come, not how long the whole answer takes. (A deadline on the whole answer
/// turned a slow link into a livelock: every answer timed out before it was whole,
/// and was asked for again.)
#[derive(Debug, Clone)]
pub struct StallWatch {
    last: u64,
    since: std::time::Instant,
    started: bool,
    /// How long the first byte may take (the server may wait for data first).
    first: std::time::Duration,
    /// How long the bytes may stop once they came.
    quiet: std::time::Duration,
}

impl StallWatch {
    pub fn new(
        now: std::time::Instant,
        first: std::time::Duration,
        quiet: std::time::Duration,
    ) -> StallWatch {
        StallWatch {
            last: 0,
            since: now,
            started: false,
            first,
            quiet,
        }
    }

    /// Takes the counter's value at `now`; true once it has not grown for too long.
    pub fn stalled(&mut self, now: std::time::Instant, bytes: u64) -> bool {
        if bytes != self.last {
            self.last = bytes;
            self.since = now;
            self.started = true;
            return false;
        }
        let limit = if self.started { self.quiet } else { self.first };
        now.saturating_duration_since(self.since) >= limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn an_answer_stalls_only_when_its_bytes_stop() {
        let t0 = Instant::now();
        let s = |x: u64| t0 + Duration::from_secs(x);
        let mut w = StallWatch::new(t0, Duration::from_secs(40), Duration::from_secs(30));
        // Before the first byte: the longer wait.
        assert!(!w.stalled(s(39), 0));
        assert!(w.clone().stalled(s(40), 0));
        // Bytes trickling in keep it alive however long the whole takes.
        for i in 1..=100 {
            assert!(!w.stalled(s(39 + 20 * i), i));
        }
        // Then silence: stalled after `quiet`, counted from the last byte.
        let last = s(39 + 2000);
        assert!(!w.stalled(last + Duration::from_secs(29), 100));
        assert!(w.stalled(last + Duration::from_secs(30), 100));
    }
}

/// Stream error codes (QUIC `RESET_STREAM` / `STOP_SENDING`).
pub mod code {
    /// The stream carried a frame that does not decode or does not belong there.
    pub const BAD_FRAME: u32 = 1;
    /// The reader no longer wants the stream (a subscription given up).
    pub const CANCELLED: u32 = 2;
}

/// Connection close codes.
pub mod close {
    /// The client's certificate names no configured client.
    pub const UNKNOWN_CLIENT: u32 = 0x10;
    /// The server is shutting down.
    pub const SHUTDOWN: u32 = 0x12;
    /// The client is going away.
    pub const DONE: u32 = 0x13;
    /// The client holds as many connections as it may.
    pub const LIMIT: u32 = 0x14;
}
