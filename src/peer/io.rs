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
