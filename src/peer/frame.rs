//! The peer protocol's frames (docs/peer-protocol.md): what a destination's wanmirror
//! and `wanmirror serve` say to each other on QUIC streams. Pure: frames to bytes and
//! bytes to frames, with every length and count checked against what is left, so that
//! a truncated or corrupt frame is an error and never a panic or a large allocation.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The protocol version this build speaks (the only one so far).
pub const VERSION: u16 = 1;
/// The TLS application protocol of a peer connection: a client of another protocol
/// (or a later incompatible version) fails the handshake with a clear alert.
pub const ALPN: &[u8] = b"wanmirror/1";
/// The largest frame either side accepts: the largest fetch answer (64 MiB) and its
/// header. A frame announcing more is corrupt; nothing is allocated for it.
pub const MAX_FRAME: usize = (64 << 20) + 1024;
/// A BLAKE3 hash, as `verify/leaf.rs` hashes leaves.
pub type Hash = [u8; 32];

/// One partition as `serve` sees it in its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub index: i32,
    pub log_start: i64,
    pub end: i64,
}

/// One topic the client may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    /// The topic configs a mirror copies when it creates the topic (empty when the
    /// client did not ask for them).
    pub configs: Vec<(String, String)>,
    pub partitions: Vec<PartitionInfo>,
}

/// Why a request was refused (the `code` of an [`Frame::Error`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The frame did not decode, or was not one this stream may carry.
    BadFrame,
    /// No common protocol version.
    Version,
    /// The topic is not in the client's allow-list.
    NotAllowed,
    /// The topic does not exist in the served cluster.
    UnknownTopic,
    /// The served cluster answered with a Kafka error (its code in `kafka`).
    Kafka,
    /// The served cluster could not be reached or failed; retrying may help.
    Unavailable,
    /// A per-client limit (streams, memory, bytes in flight) was reached.
    Limit,
    /// Something else went wrong on the serving side.
    Internal,
    /// A code from a later version of the protocol.
    Other(u16),
}

impl ErrorCode {
    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::BadFrame => 1,
            ErrorCode::Version => 2,
            ErrorCode::NotAllowed => 3,
            ErrorCode::UnknownTopic => 4,
            ErrorCode::Kafka => 5,
            ErrorCode::Unavailable => 6,
            ErrorCode::Limit => 7,
            ErrorCode::Internal => 8,
            ErrorCode::Other(c) => c,
        }
    }

    pub fn from_u16(c: u16) -> ErrorCode {
        match c {
            1 => ErrorCode::BadFrame,
            2 => ErrorCode::Version,
            3 => ErrorCode::NotAllowed,
            4 => ErrorCode::UnknownTopic,
            5 => ErrorCode::Kafka,
            6 => ErrorCode::Unavailable,
            7 => ErrorCode::Limit,
            8 => ErrorCode::Internal,
            c => ErrorCode::Other(c),
        }
    }
}

/// Everything either side sends. Requests open a stream; the answers follow on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Client, first stream: the versions it speaks and what it is.
    Hello { min: u16, max: u16, agent: String },
    /// Server: the version chosen, the served cluster's name and what the server is.
    Welcome {
        version: u16,
        cluster: String,
        agent: String,
    },
    /// Client: these topics (none: every topic it may read), with their configs and
    /// partition bounds or not.
    List {
        topics: Vec<String>,
        configs: bool,
        bounds: bool,
    },
    /// Server: the answer to `List`.
    Topics { topics: Vec<TopicInfo> },
    /// Client: the batches of `[offset, end)` (`end` -1: no bound), at most
    /// `max_bytes`, waiting up to `max_wait_ms` when there are none yet.
    Fetch {
        topic: String,
        partition: i32,
        offset: i64,
        end: i64,
        max_bytes: u32,
        max_wait_ms: u32,
    },
    /// Server: what an answer holds before its bytes arrive: the partition's high
    /// watermark and `[base, next)` of the first batch.
    Head {
        high_watermark: i64,
        first: Option<(i64, i64)>,
    },
    /// Server: whole batches as the source's broker stored them.
    Batches { high_watermark: i64, records: Bytes },
    /// Client: push the partition's batches from `offset` as they are appended; the
    /// server's long polls at its brokers wait up to `max_wait_ms`.
    Subscribe {
        topic: String,
        partition: i32,
        offset: i64,
        max_wait_ms: u32,
    },
    /// Client: hash `[from, to)` in leaves of `leaf_offsets` offsets.
    Tree {
        topic: String,
        partition: i32,
        from: i64,
        to: i64,
        leaf_offsets: i64,
    },
    /// Server: the tree is built; it has this many leaves.
    TreeBuilt { leaves: u64 },
    /// Client: the hashes of these nodes (layer 0: leaves).
    Nodes { ids: Vec<(u32, u64)> },
    /// Server: one hash per asked node, none where the node does not exist.
    Hashes { hashes: Vec<Option<Hash>> },
    /// Client: the record counts of leaves `[first, first + count)`.
    Counts { first: u64, count: u32 },
    /// Server: one record count per asked leaf.
    LeafCounts { counts: Vec<u64> },
    /// Server: the request failed; the stream ends after this.
    Error {
        code: ErrorCode,
        /// The Kafka error code when `code` is [`ErrorCode::Kafka`], else 0.
        kafka: i16,
        message: String,
    },
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is larger than the limit")]
    TooLarge(usize),
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    #[error("frame type {kind:#04x} ends early: {what} runs past its end")]
    Short { kind: u8, what: &'static str },
    #[error("frame type {kind:#04x} has {extra} bytes past its last field")]
    Trailing { kind: u8, extra: usize },
    #[error("frame type {kind:#04x}: {what} is not UTF-8")]
    Utf8 { kind: u8, what: &'static str },
    #[error("frame type {kind:#04x}: {what}")]
    Invalid { kind: u8, what: &'static str },
    #[error("the stream ended inside a frame ({0} bytes of it)")]
    Truncated(usize),
}

impl Frame {
    fn kind(&self) -> u8 {
        match self {
            Frame::Hello { .. } => 0x01,
            Frame::Welcome { .. } => 0x02,
            Frame::List { .. } => 0x03,
            Frame::Topics { .. } => 0x04,
            Frame::Fetch { .. } => 0x05,
            Frame::Head { .. } => 0x06,
            Frame::Batches { .. } => 0x07,
            Frame::Subscribe { .. } => 0x08,
            Frame::Tree { .. } => 0x09,
            Frame::TreeBuilt { .. } => 0x0a,
            Frame::Nodes { .. } => 0x0b,
            Frame::Hashes { .. } => 0x0c,
            Frame::Counts { .. } => 0x0d,
            Frame::LeafCounts { .. } => 0x0e,
            Frame::Error { .. } => 0x7f,
        }
    }

    /// Appends the frame: a 4-byte big-endian length of what follows, the type byte,
    /// the fields.
    pub fn encode(&self, out: &mut BytesMut) {
        let at = out.len();
        out.put_u32(0);
        out.put_u8(self.kind());
        match self {
            Frame::Hello { min, max, agent } => {
                out.put_u16(*min);
                out.put_u16(*max);
                put_str(out, agent);
            }
            Frame::Welcome {
                version,
                cluster,
                agent,
            } => {
                out.put_u16(*version);
                put_str(out, cluster);
                put_str(out, agent);
            }
            Frame::List {
                topics,
                configs,
                bounds,
            } => {
                out.put_u8(*configs as u8 | (*bounds as u8) << 1);
                out.put_u32(topics.len() as u32);
                topics.iter().for_each(|t| put_str(out, t));
            }
            Frame::Topics { topics } => {
                out.put_u32(topics.len() as u32);
                for t in topics {
                    put_str(out, &t.name);
                    out.put_u32(t.configs.len() as u32);
                    for (k, v) in &t.configs {
                        put_str(out, k);
                        put_str(out, v);
                    }
                    out.put_u32(t.partitions.len() as u32);
                    for p in &t.partitions {
                        out.put_i32(p.index);
                        out.put_i64(p.log_start);
                        out.put_i64(p.end);
                    }
                }
            }
            Frame::Fetch {
                topic,
                partition,
                offset,
                end,
                max_bytes,
                max_wait_ms,
            } => {
                put_str(out, topic);
                out.put_i32(*partition);
                out.put_i64(*offset);
                out.put_i64(*end);
                out.put_u32(*max_bytes);
                out.put_u32(*max_wait_ms);
            }
            Frame::Head {
                high_watermark,
                first,
            } => {
                out.put_i64(*high_watermark);
                match first {
                    Some((b, n)) => {
                        out.put_u8(1);
                        out.put_i64(*b);
                        out.put_i64(*n);
                    }
                    None => out.put_u8(0),
                }
            }
            Frame::Batches {
                high_watermark,
                records,
            } => {
                out.put_i64(*high_watermark);
                out.put_slice(records);
            }
            Frame::Subscribe {
                topic,
                partition,
                offset,
                max_wait_ms,
            } => {
                put_str(out, topic);
                out.put_i32(*partition);
                out.put_i64(*offset);
                out.put_u32(*max_wait_ms);
            }
            Frame::Tree {
                topic,
                partition,
                from,
                to,
                leaf_offsets,
            } => {
                put_str(out, topic);
                out.put_i32(*partition);
                out.put_i64(*from);
                out.put_i64(*to);
                out.put_i64(*leaf_offsets);
            }
            Frame::TreeBuilt { leaves } => out.put_u64(*leaves),
            Frame::Nodes { ids } => {
                out.put_u32(ids.len() as u32);
                for (layer, index) in ids {
                    out.put_u32(*layer);
                    out.put_u64(*index);
                }
            }
            Frame::Hashes { hashes } => {
                out.put_u32(hashes.len() as u32);
                for h in hashes {
                    match h {
                        Some(h) => {
                            out.put_u8(1);
                            out.put_slice(h);
                        }
                        None => out.put_u8(0),
                    }
                }
            }
            Frame::Counts { first, count } => {
                out.put_u64(*first);
                out.put_u32(*count);
            }
            Frame::LeafCounts { counts } => {
                out.put_u32(counts.len() as u32);
                counts.iter().for_each(|c| out.put_u64(*c));
            }
            Frame::Error {
                code,
                kafka,
                message,
            } => {
                out.put_u16(code.to_u16());
                out.put_i16(*kafka);
                put_str(out, message);
            }
        }
        let len = (out.len() - at - 4) as u32;
        out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// A `Batches` frame as two pieces, its header and the records, so that the
    /// records (up to 64 MiB) are sent without a copy.
    pub fn batches_parts(high_watermark: i64, records: Bytes) -> [Bytes; 2] {
        let mut head = BytesMut::with_capacity(13);
        head.put_u32((1 + 8 + records.len()) as u32);
        head.put_u8(0x07);
        head.put_i64(high_watermark);
        [head.freeze(), records]
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::new();
        self.encode(&mut b);
        b.freeze()
    }
}

fn put_str(out: &mut BytesMut, s: &str) {
    // Names and messages are short; a longer one is cut at a character boundary
    // rather than written with a wrong length.
    let mut n = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    out.put_u16(n as u16);
    out.put_slice(&s.as_bytes()[..n]);
}

/// Takes frames off the front of a stream's bytes.
///
/// `Ok(None)`: not a whole frame yet (read more). At the stream's end, [`finish`] tells
/// whether bytes were left inside a frame.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    decode_limited(buf, MAX_FRAME)
}

/// [`decode`] with a lower limit: the server takes requests, none of which is large,
/// so a client cannot make it hold megabytes per stream.
pub fn decode_limited(buf: &mut BytesMut, limit: usize) -> Result<Option<Frame>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > limit.min(MAX_FRAME) {
        return Err(FrameError::TooLarge(len));
    }
    if len == 0 {
        return Err(FrameError::Short {
            kind: 0,
            what: "the type byte",
        });
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    buf.advance(4);
    let body = buf.split_to(len).freeze();
    parse(body).map(Some)
}

/// The stream ended: an error if part of a frame is left.
pub fn finish(buf: &BytesMut) -> Result<(), FrameError> {
    match buf.len() {
        0 => Ok(()),
        n => Err(FrameError::Truncated(n)),
    }
}

/// The bytes of a frame not yet complete that a reader must still hold (for limits:
/// a peer may not make the other side buffer more than [`MAX_FRAME`]).
pub fn pending_len(buf: &[u8]) -> Option<usize> {
    (buf.len() >= 4).then(|| u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize)
}

/// One frame's fields, every read checked.
struct Fields {
    kind: u8,
    b: Bytes,
}

impl Fields {
    fn need(&self, n: usize, what: &'static str) -> Result<(), FrameError> {
        if self.b.remaining() < n {
            return Err(FrameError::Short {
                kind: self.kind,
                what,
            });
        }
        Ok(())
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, FrameError> {
        self.need(1, what)?;
        Ok(self.b.get_u8())
    }
    fn bool(&mut self, what: &'static str) -> Result<bool, FrameError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(FrameError::Invalid {
                kind: self.kind,
                what,
            }),
        }
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, FrameError> {
        self.need(2, what)?;
        Ok(self.b.get_u16())
    }
    fn i16(&mut self, what: &'static str) -> Result<i16, FrameError> {
        self.need(2, what)?;
        Ok(self.b.get_i16())
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, FrameError> {
        self.need(4, what)?;
        Ok(self.b.get_u32())
    }
    fn i32(&mut self, what: &'static str) -> Result<i32, FrameError> {
        self.need(4, what)?;
        Ok(self.b.get_i32())
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, FrameError> {
        self.need(8, what)?;
        Ok(self.b.get_u64())
    }
    fn i64(&mut self, what: &'static str) -> Result<i64, FrameError> {
        self.need(8, what)?;
        Ok(self.b.get_i64())
    }
    fn string(&mut self, what: &'static str) -> Result<String, FrameError> {
        let n = self.u16(what)? as usize;
        self.need(n, what)?;
        let raw = self.b.split_to(n);
        String::from_utf8(raw.to_vec()).map_err(|_| FrameError::Utf8 {
            kind: self.kind,
            what,
        })
    }
    /// A count of items of at least `min_each` bytes: a count the rest cannot hold is
    /// corrupt, so nothing is reserved for items that are not there.
    fn count(&mut self, min_each: usize, what: &'static str) -> Result<usize, FrameError> {
        let n = self.u32(what)? as usize;
        if n.saturating_mul(min_each) > self.b.remaining() {
            return Err(FrameError::Short {
                kind: self.kind,
                what,
            });
        }
        Ok(n)
    }
    fn done(self) -> Result<(), FrameError> {
        match self.b.remaining() {
            0 => Ok(()),
            extra => Err(FrameError::Trailing {
                kind: self.kind,
                extra,
            }),
        }
    }
}

fn parse(mut body: Bytes) -> Result<Frame, FrameError> {
    let kind = body.get_u8();
    let mut f = Fields { kind, b: body };
    let frame = match kind {
        0x01 => Frame::Hello {
            min: f.u16("min version")?,
            max: f.u16("max version")?,
            agent: f.string("agent")?,
        },
        0x02 => Frame::Welcome {
            version: f.u16("version")?,
            cluster: f.string("cluster")?,
            agent: f.string("agent")?,
        },
        0x03 => {
            let flags = f.u8("flags")?;
            if flags > 3 {
                return Err(FrameError::Invalid {
                    kind,
                    what: "flags",
                });
            }
            let n = f.count(2, "topic count")?;
            let topics = (0..n)
                .map(|_| f.string("topic"))
                .collect::<Result<_, _>>()?;
            Frame::List {
                topics,
                configs: flags & 1 != 0,
                bounds: flags & 2 != 0,
            }
        }
        0x04 => {
            let n = f.count(10, "topic count")?;
            let mut topics = Vec::with_capacity(n);
            for _ in 0..n {
                let name = f.string("topic")?;
                let c = f.count(4, "config count")?;
                let configs = (0..c)
                    .map(|_| Ok((f.string("config name")?, f.string("config value")?)))
                    .collect::<Result<_, FrameError>>()?;
                let p = f.count(20, "partition count")?;
                let partitions = (0..p)
                    .map(|_| {
                        Ok(PartitionInfo {
                            index: f.i32("partition")?,
                            log_start: f.i64("log start")?,
                            end: f.i64("end")?,
                        })
                    })
                    .collect::<Result<_, FrameError>>()?;
                topics.push(TopicInfo {
                    name,
                    configs,
                    partitions,
                });
            }
            Frame::Topics { topics }
        }
        0x05 => Frame::Fetch {
            topic: f.string("topic")?,
            partition: f.i32("partition")?,
            offset: f.i64("offset")?,
            end: f.i64("end")?,
            max_bytes: f.u32("max bytes")?,
            max_wait_ms: f.u32("max wait")?,
        },
        0x06 => Frame::Head {
            high_watermark: f.i64("high watermark")?,
            first: if f.bool("first batch flag")? {
                Some((f.i64("first batch base")?, f.i64("first batch next")?))
            } else {
                None
            },
        },
        0x07 => {
            let high_watermark = f.i64("high watermark")?;
            let records = f.b.split_off(0);
            Frame::Batches {
                high_watermark,
                records,
            }
        }
        0x08 => Frame::Subscribe {
            topic: f.string("topic")?,
            partition: f.i32("partition")?,
            offset: f.i64("offset")?,
            max_wait_ms: f.u32("max wait")?,
        },
        0x09 => Frame::Tree {
            topic: f.string("topic")?,
            partition: f.i32("partition")?,
            from: f.i64("from")?,
            to: f.i64("to")?,
            leaf_offsets: f.i64("leaf offsets")?,
        },
        0x0a => Frame::TreeBuilt {
            leaves: f.u64("leaves")?,
        },
        0x0b => {
            let n = f.count(12, "node count")?;
            let ids = (0..n)
                .map(|_| Ok((f.u32("layer")?, f.u64("index")?)))
                .collect::<Result<_, FrameError>>()?;
            Frame::Nodes { ids }
        }
        0x0c => {
            let n = f.count(1, "hash count")?;
            let mut hashes = Vec::with_capacity(n);
            for _ in 0..n {
                hashes.push(if f.bool("hash flag")? {
                    f.need(32, "hash")?;
                    let mut h = [0u8; 32];
                    f.b.copy_to_slice(&mut h);
                    Some(h)
                } else {
                    None
                });
            }
            Frame::Hashes { hashes }
        }
        0x0d => Frame::Counts {
            first: f.u64("first leaf")?,
            count: f.u32("leaf count")?,
        },
        0x0e => {
            let n = f.count(8, "count count")?;
            let counts = (0..n).map(|_| f.u64("count")).collect::<Result<_, _>>()?;
            Frame::LeafCounts { counts }
        }
        0x7f => Frame::Error {
            code: ErrorCode::from_u16(f.u16("error code")?),
            kafka: f.i16("kafka code")?,
            message: f.string("message")?,
        },
        k => return Err(FrameError::UnknownType(k)),
    };
    f.done()?;
    Ok(frame)
}

#[cfg(test)]
mod tests;
