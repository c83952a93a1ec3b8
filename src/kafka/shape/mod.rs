//! Checks a response frame's shape before the kafka-protocol crate decodes it.
//!
//! The crate's decoders size vectors from counts read off the wire
//! (`Vec::with_capacity(n)` for arrays, `vec![0; n]` for some strings), so one corrupt
//! or hostile answer can ask for tens of gigabytes, and a failed allocation aborts the
//! process: no error, no clean-up. Rather than write a decoder per response we walk
//! each frame once against a table of its fields (`schemas.rs`) and refuse it unless
//! every count and length fits in the bytes that follow it: an array of `n` elements
//! needs at least `n` times its element's smallest encoding. A frame that passes
//! can make the crate allocate at most a small constant times its own size (the ratio
//! of a decoded struct's size to its smallest encoding; decision 46).
//!
//! The walk also requires that a known tagged field fills exactly the size it
//! announces, because the crate decodes known tags from the main buffer, not from the
//! announced slice, and a mismatch would make it read bytes we never checked.

pub mod by_key;
mod schemas;
#[cfg(test)]
mod tests;

pub use schemas::schema;

/// A field's type, in the two encodings of the protocol: classic (fixed-width
/// lengths) and flexible (compact lengths, tagged fields).
#[derive(Debug, Clone, Copy)]
pub enum Ty {
    /// Fixed width: bool and int8 (1), int16, int32, int64, uuid (16).
    Fixed(usize),
    /// A (nullable) string.
    Str,
    /// (Nullable) bytes, records included.
    Bytes,
    /// A (nullable) array.
    Array(&'static Ty),
    /// A struct: its fields, then (when flexible) its tagged fields.
    Struct(&'static Struct),
}

/// A struct's fields in wire order, and the tagged fields the crate decodes.
#[derive(Debug)]
pub struct Struct {
    pub fields: &'static [Field],
    pub tags: &'static [Tag],
}

/// A field present in versions `from..=to`.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub ty: Ty,
    pub from: i16,
    pub to: i16,
}

impl Field {
    fn present_in(&self, version: i16) -> bool {
        (self.from..=self.to).contains(&version)
    }
}

/// A tagged field the crate decodes (in flexible versions from `from` on).
#[derive(Debug, Clone, Copy)]
pub struct Tag {
    pub tag: u32,
    pub ty: Ty,
    pub from: i16,
}

/// One response message: the versions the crate knows and where flexible ones start.
#[derive(Debug)]
pub struct Message {
    pub versions: (i16, i16),
    pub flexible_from: i16,
    pub body: Struct,
}

/// Why a frame was refused: what, and at which byte of the frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at byte {at} of a {len}-byte frame")]
pub struct ShapeError {
    pub what: String,
    pub at: usize,
    pub len: usize,
}

/// Checks a whole response frame (header included) of API `key` at `version`, whose
/// header has version `header_version`. Ok means every byte was accounted for.
pub fn check(key: i16, version: i16, header_version: i16, frame: &[u8]) -> Result<(), ShapeError> {
    let mut w = Walk {
        buf: frame,
        pos: 0,
        version,
        flexible: false,
    };
    let Some(msg) = schema(key) else {
        return Err(w.err(format!("no schema for API key {key}")));
    };
    if version < msg.versions.0 || version > msg.versions.1 {
        return Err(w.err(format!("version {version} is not one we can check")));
    }
    // Response header: correlation id, then tagged fields from header v1 on.
    w.take(4)?;
    if header_version >= 1 {
        w.flexible = true;
        w.tagged(&[])?;
    }
    w.flexible = version >= msg.flexible_from;
    w.structure(&msg.body)?;
    if w.pos != frame.len() {
        return Err(w.err(format!("{} bytes left over", frame.len() - w.pos)));
    }
    Ok(())
}

struct Walk<'a> {
    buf: &'a [u8],
    pos: usize,
    version: i16,
    flexible: bool,
}

impl Walk<'_> {
    fn err(&self, what: String) -> ShapeError {
        ShapeError {
            what,
            at: self.pos,
            len: self.buf.len(),
        }
    }

    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&[u8], ShapeError> {
        if n > self.left() {
            return Err(self.err(format!("{n} bytes wanted, {} left", self.left())));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn uvarint(&mut self) -> Result<u32, ShapeError> {
        let mut v: u32 = 0;
        for i in 0..5 {
            let b = self.take(1)?[0];
            v |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err("unsigned varint longer than 5 bytes".into()))
    }

    /// A length or count: `None` for null, else the value (compact ones minus one).
    fn length(&mut self, classic_width: usize) -> Result<Option<usize>, ShapeError> {
        let at = self.pos;
        let n: i64 = if self.flexible {
            i64::from(self.uvarint()?) - 1
        } else {
            let b = self.take(classic_width)?;
            match classic_width {
                2 => i64::from(i16::from_be_bytes([b[0], b[1]])),
                _ => i64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]])),
            }
        };
        match n {
            -1 => Ok(None),
            n if n < -1 => {
                self.pos = at;
                Err(self.err(format!("negative length {n}")))
            }
            n => Ok(Some(n as usize)),
        }
    }

    fn structure(&mut self, s: &Struct) -> Result<(), ShapeError> {
        let version = self.version;
        for f in s.fields.iter().filter(|f| f.present_in(version)) {
            self.value(&f.ty)?;
        }
        if self.flexible {
            self.tagged(s.tags)?;
        }
        Ok(())
    }

    fn value(&mut self, ty: &Ty) -> Result<(), ShapeError> {
        match ty {
            Ty::Fixed(n) => self.take(*n).map(drop),
            Ty::Str | Ty::Bytes => {
                let width = if matches!(ty, Ty::Str) { 2 } else { 4 };
                let at = self.pos;
                if let Some(n) = self.length(width)? {
                    if n > self.left() {
                        self.pos = at;
                        return Err(self.err(format!(
                            "a length of {n} does not fit in the {} bytes left",
                            self.left()
                        )));
                    }
                    self.pos += n;
                }
                Ok(())
            }
            Ty::Array(elem) => {
                let at = self.pos;
                if let Some(n) = self.length(4)? {
                    let least = self.min_size(elem).max(1);
                    if n.saturating_mul(least) > self.left() {
                        self.pos = at;
                        return Err(self.err(format!(
                            "an array of {n} elements (at least {least} bytes each) does not fit in the {} bytes left",
                            self.left()
                        )));
                    }
                    for _ in 0..n {
                        self.value(elem)?;
                    }
                }
                Ok(())
            }
            Ty::Struct(s) => self.structure(s),
        }
    }

    /// The fewest bytes one value of `ty` takes in this version and encoding.
    fn min_size(&self, ty: &Ty) -> usize {
        match ty {
            Ty::Fixed(n) => *n,
            Ty::Str | Ty::Bytes | Ty::Array(_) if self.flexible => 1,
            Ty::Str => 2,
            Ty::Bytes | Ty::Array(_) => 4,
            Ty::Struct(s) => {
                let fields: usize = s
                    .fields
                    .iter()
                    .filter(|f| f.present_in(self.version))
                    .map(|f| self.min_size(&f.ty))
                    .sum();
                fields + usize::from(self.flexible)
            }
        }
    }

    /// A tagged-field section: known tags are walked within their announced size.
    fn tagged(&mut self, known: &[Tag]) -> Result<(), ShapeError> {
        let count = self.uvarint()? as usize;
        if count.saturating_mul(2) > self.left() {
            return Err(self.err(format!("{count} tagged fields cannot fit")));
        }
        for _ in 0..count {
            let tag = self.uvarint()?;
            let size = self.uvarint()? as usize;
            if size > self.left() {
                return Err(self.err(format!(
                    "tagged field {tag} of {size} bytes does not fit in the {} bytes left",
                    self.left()
                )));
            }
            let end = self.pos + size;
            // An unknown tag is skipped by its size, as the crate does; a known one
            // in a version before it is refused, as the crate does too.
            if let Some(t) = known.iter().find(|t| t.tag == tag) {
                if self.version < t.from {
                    return Err(self.err(format!(
                        "tagged field {tag} is not valid in version {}",
                        self.version
                    )));
                }
                let mut inner = Walk {
                    buf: &self.buf[..end],
                    pos: self.pos,
                    version: self.version,
                    flexible: self.flexible,
                };
                inner.value(&t.ty)?;
                if inner.pos != end {
                    return Err(inner.err(format!(
                        "tagged field {tag} announces {size} bytes but holds {}",
                        inner.pos - (end - size)
                    )));
                }
            }
            self.pos = end;
        }
        Ok(())
    }
}
