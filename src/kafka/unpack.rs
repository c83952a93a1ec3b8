//! Decoding the records inside a v2 batch: decompression and the record format, with
//! every count and length from the wire checked against the bytes that hold it.
//!
//! The kafka-protocol crate's record decoder reserves room for the batch's record
//! count and each record's header count before reading them, and sizes raw snappy
//! output from the length the data claims: a corrupt or hostile batch aborts the
//! process. Here nothing is reserved beyond a small head start, decompression
//! stops at [`MAX_UNCOMPRESSED`], and header keys stay bytes (Kafka does not require
//! UTF-8 of them).

use std::io::Read;

use bytes::Bytes;

use super::batch::{RawBatch, HEADER_LEN};
use super::records::Content;

/// Most bytes one batch may decompress to. Kafka bounds a batch's compressed size
/// (max.message.bytes, 1 MiB by default); 64 times that covers real data, and a
/// batch that claims more is refused rather than allowed to take the memory. Decoded
/// records take memory only as they decode (nothing is reserved from a count), up to
/// about 16 times the bytes they came from (a ~100-byte record struct per 7 bytes):
/// near 1 GiB for a 64 MiB batch of empty records, the very worst case. Only the slow
/// paths decode records (`diff`, the resume check, a rebuild, the offset map), one
/// batch at a time.
pub const MAX_UNCOMPRESSED: usize = 64 << 20;

/// Entries reserved before they are decoded; beyond that, vectors grow as they fill.
const RESERVE_AHEAD: usize = 1024;

/// The fewest bytes one record takes: length, attributes, timestamp delta, offset
/// delta, key length, value length and header count, one byte each.
const MIN_RECORD: usize = 7;

/// Every record of `batch`, in order, or an error naming the batch and the fault.
pub fn records(batch: &RawBatch) -> Result<Vec<Content>, String> {
    let h = &batch.header;
    let fail = |what: String| format!("batch at offset {}: {what}", h.base_offset);
    if batch.bytes.len() < HEADER_LEN {
        return Err(fail(format!(
            "{} bytes, shorter than its header",
            batch.bytes.len()
        )));
    }
    let body = batch.bytes.slice(HEADER_LEN..);
    let data = decompress(h.compression(), body).map_err(&fail)?;
    let count = usize::try_from(h.record_count)
        .map_err(|_| fail(format!("negative record count {}", h.record_count)))?;
    if count > data.len() / MIN_RECORD {
        return Err(fail(format!(
            "{count} records cannot fit in {} bytes",
            data.len()
        )));
    }
    // Grown as records decode, not reserved from the claimed count: a batch that lies
    // about its count fails at its first bad record having allocated little.
    let mut out = Vec::with_capacity(count.min(RESERVE_AHEAD));
    let mut r = Reader {
        buf: data.clone(),
        pos: 0,
    };
    for i in 0..count {
        let c = record(&mut r, h.base_offset, h.base_timestamp)
            .map_err(|e| fail(format!("record {i}: {e}")))?;
        out.push(c);
    }
    if r.pos != data.len() {
        return Err(fail(format!(
            "{} bytes after its {count} records",
            data.len() - r.pos
        )));
    }
    Ok(out)
}

fn record(r: &mut Reader, base_offset: i64, base_timestamp: i64) -> Result<Content, String> {
    let len = r.length()?.ok_or("null record length")?;
    let mut rec = Reader {
        buf: r.take(len)?,
        pos: 0,
    };
    let _attributes = rec.take(1)?;
    let ts_delta = rec.varlong()?;
    let offset_delta = rec.varint()?;
    let key = rec.bytes()?;
    let value = rec.bytes()?;
    let n = rec.length()?.ok_or("null header count")?;
    if n > rec.left() / 2 {
        return Err(format!("{n} headers cannot fit in {} bytes", rec.left()));
    }
    let mut headers = Vec::with_capacity(n.min(RESERVE_AHEAD));
    for _ in 0..n {
        let k = rec.bytes()?.ok_or("null header key")?;
        headers.push((k, rec.bytes()?));
    }
    if rec.left() != 0 {
        return Err(format!("{} bytes past its last field", rec.left()));
    }
    Ok(Content {
        offset: base_offset
            .checked_add(i64::from(offset_delta))
            .ok_or("offset overflows")?,
        timestamp: base_timestamp.wrapping_add(ts_delta),
        key,
        value,
        headers,
    })
}

/// A cursor over record bytes; slices of `buf` are handed out without copying.
struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<Bytes, String> {
        if n > self.left() {
            return Err(format!("{n} bytes wanted, {} left", self.left()));
        }
        self.pos += n;
        Ok(self.buf.slice(self.pos - n..self.pos))
    }

    /// A zigzag varint of at most `max_bytes` bytes.
    fn zigzag(&mut self, max_bytes: usize) -> Result<i64, String> {
        let mut v: u64 = 0;
        for i in 0..max_bytes {
            let b = *self.buf.get(self.pos).ok_or("varint cut short")?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok((v >> 1) as i64 ^ -((v & 1) as i64));
            }
        }
        Err(format!("varint longer than {max_bytes} bytes"))
    }

    fn varint(&mut self) -> Result<i32, String> {
        let v = self.zigzag(5)?;
        i32::try_from(v).map_err(|_| format!("varint {v} out of range"))
    }

    fn varlong(&mut self) -> Result<i64, String> {
        self.zigzag(10)
    }

    /// A length: `None` for -1 (null), an error for other negatives.
    fn length(&mut self) -> Result<Option<usize>, String> {
        match self.varint()? {
            -1 => Ok(None),
            n if n < 0 => Err(format!("negative length {n}")),
            n => Ok(Some(n as usize)),
        }
    }

    fn bytes(&mut self) -> Result<Option<Bytes>, String> {
        match self.length()? {
            None => Ok(None),
            Some(n) => self.take(n).map(Some),
        }
    }
}

/// The records section of a batch, decompressed with codec `code` (the low bits of
/// the batch attributes), at most [`MAX_UNCOMPRESSED`] bytes of it.
pub fn decompress(code: i16, body: Bytes) -> Result<Bytes, String> {
    let too_big = || format!("decompresses to more than {MAX_UNCOMPRESSED} bytes");
    let read = |r: &mut dyn Read, name: &str| -> Result<Bytes, String> {
        let mut out = Vec::new();
        r.take(MAX_UNCOMPRESSED as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("cannot decompress {name}: {e}"))?;
        if out.len() > MAX_UNCOMPRESSED {
            return Err(too_big());
        }
        Ok(Bytes::from(out))
    };
    match code {
        0 => Ok(body),
        1 => read(&mut flate2::read::GzDecoder::new(&body[..]), "gzip"),
        2 => snappy(&body).map(Bytes::from),
        3 => {
            let mut d =
                lz4::Decoder::new(&body[..]).map_err(|e| format!("cannot decompress lz4: {e}"))?;
            read(&mut d, "lz4")
        }
        4 => {
            let mut d = zstd::stream::read::Decoder::new(&body[..])
                .map_err(|e| format!("cannot decompress zstd: {e}"))?;
            read(&mut d, "zstd")
        }
        c => Err(format!("unknown compression codec {c}")),
    }
}

/// The framing the Java client writes around snappy blocks (xerial snappy-java).
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
/// Most bytes one byte of snappy data can decompress to (a 2-byte copy element makes
/// at most 64 bytes; 32 per byte keeps clear of that and of short literals).
const SNAPPY_MAX_RATIO: usize = 32;
/// Magic, then a version and a compatible-version int32.
const XERIAL_HEADER: usize = 16;

/// Snappy as Kafka carries it: xerial-framed blocks, or one raw block (librdkafka may
/// write either). Each block's claimed length is checked before anything is sized.
fn snappy(body: &[u8]) -> Result<Vec<u8>, String> {
    let block = |chunk: &[u8], out: &mut Vec<u8>| -> Result<(), String> {
        let n = snap::raw::decompress_len(chunk).map_err(|e| format!("bad snappy block: {e}"))?;
        // A snappy element of at most 5 bytes yields at most 64: more than that per
        // byte given is a lie, refused before anything is sized from it.
        if n > chunk.len().saturating_mul(SNAPPY_MAX_RATIO) {
            return Err(format!(
                "bad snappy block: {} bytes claim to decompress to {n}",
                chunk.len()
            ));
        }
        if n > MAX_UNCOMPRESSED - out.len() {
            return Err(format!(
                "decompresses to more than {MAX_UNCOMPRESSED} bytes"
            ));
        }
        let at = out.len();
        out.resize(at + n, 0);
        snap::raw::Decoder::new()
            .decompress(chunk, &mut out[at..])
            .map_err(|e| format!("bad snappy block: {e}"))?;
        Ok(())
    };
    let mut out = Vec::new();
    if !body.starts_with(XERIAL_MAGIC) {
        block(body, &mut out)?;
        return Ok(out);
    }
    let mut rest = body
        .get(XERIAL_HEADER..)
        .ok_or("snappy framing cut short")?;
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_at_checked(4)
            .ok_or("snappy block length cut short")?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let (chunk, tail) = tail
            .split_at_checked(len)
            .ok_or_else(|| format!("snappy block of {len} bytes cut short"))?;
        block(chunk, &mut out)?;
        rest = tail;
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
