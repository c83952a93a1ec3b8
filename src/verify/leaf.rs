//! Leaf hashes: one BLAKE3 hash per fixed range of offsets, over the records' logical
//! content (offset, timestamp, key, value, headers). Batching, compression and producer
//! fields do not enter, so a byte-for-byte copy and a re-batched copy of the same
//! records hash the same. Pure: records in, hashes out.

use crate::kafka::records::Content;

pub type Hash = [u8; 32];

/// One leaf: the offsets `[start, start + leaf_offsets)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leaf {
    pub hash: Hash,
    /// Records present in the range (offsets may be missing: compaction, a short log).
    pub records: u64,
}

/// Builds the leaves of `[from, to)` from records fed in offset order.
pub struct LeafHasher {
    from: i64,
    to: i64,
    leaf_offsets: i64,
    /// The leaf being filled.
    index: u64,
    hasher: blake3::Hasher,
    /// Encoded records not hashed yet: BLAKE3 is fastest fed in large slices (it then
    /// hashes several chunks at once with SIMD); one call per field is 2-3x slower
    /// for small records. The stream hashed is the same either way.
    buf: Vec<u8>,
    records: u64,
    out: Vec<Leaf>,
}

/// Bytes buffered before they are hashed.
const FEED: usize = 64 * 1024;

impl LeafHasher {
    pub fn new(from: i64, to: i64, leaf_offsets: i64) -> LeafHasher {
        LeafHasher {
            from,
            to: to.max(from),
            leaf_offsets: leaf_offsets.max(1),
            index: 0,
            hasher: leaf_start(0),
            buf: Vec::with_capacity(FEED + 1024),
            records: 0,
            out: Vec::new(),
        }
    }

    /// How many leaves `[from, to)` has.
    pub fn leaf_count(from: i64, to: i64, leaf_offsets: i64) -> u64 {
        let span = (to - from).max(0) as u64;
        span.div_ceil(leaf_offsets.max(1) as u64)
    }

    /// The offsets of leaf `i`.
    pub fn range(&self, i: u64) -> (i64, i64) {
        leaf_range(self.from, self.to, self.leaf_offsets, i)
    }

    /// Adds a record. Records outside `[from, to)` are ignored; offsets must rise.
    pub fn push(&mut self, r: &Content) {
        if r.offset < self.from || r.offset >= self.to {
            return;
        }
        let i = ((r.offset - self.from) / self.leaf_offsets) as u64;
        while self.index < i {
            self.close();
        }
        encode(&mut self.buf, r);
        if self.buf.len() >= FEED {
            self.hasher.update(&self.buf);
            self.buf.clear();
        }
        self.records += 1;
    }

    fn close(&mut self) {
        self.hasher.update(&self.buf);
        self.buf.clear();
        let h = std::mem::replace(&mut self.hasher, leaf_start(self.index + 1));
        self.out.push(Leaf {
            hash: finish(h, self.records),
            records: self.records,
        });
        self.records = 0;
        self.index += 1;
    }

    /// Leaves completed so far (all of them once `finish` ran).
    pub fn leaves(&self) -> &[Leaf] {
        &self.out
    }

    /// Closes every remaining leaf up to `to` and returns them all.
    pub fn finish(mut self) -> Vec<Leaf> {
        let n = Self::leaf_count(self.from, self.to, self.leaf_offsets);
        while self.index < n {
            self.close();
        }
        self.out
    }
}

/// The offsets of leaf `i` of `[from, to)`.
pub fn leaf_range(from: i64, to: i64, leaf_offsets: i64, i: u64) -> (i64, i64) {
    let s = from + i as i64 * leaf_offsets;
    (s, (s + leaf_offsets).min(to))
}

/// Leaves are numbered into their hash, so two empty leaves at different places differ
/// only by position, which the tree already encodes; the count closes the leaf so that
/// records cannot slide between leaves unnoticed.
fn leaf_start(index: u64) -> blake3::Hasher {
    let mut h = blake3::Hasher::new();
    h.update(b"wanmirror-leaf-v1");
    h.update(&index.to_be_bytes());
    h
}

fn finish(mut h: blake3::Hasher, records: u64) -> Hash {
    h.update(&records.to_be_bytes());
    *h.finalize().as_bytes()
}

/// The canonical encoding of a record: fixed-width numbers, lengths before bytes, -1
/// for null, headers in their order (duplicates kept).
fn encode(out: &mut Vec<u8>, r: &Content) {
    out.extend_from_slice(&r.offset.to_be_bytes());
    out.extend_from_slice(&r.timestamp.to_be_bytes());
    bytes(out, r.key.as_deref());
    bytes(out, r.value.as_deref());
    out.extend_from_slice(&(r.headers.len() as u32).to_be_bytes());
    for (k, v) in &r.headers {
        bytes(out, Some(k));
        bytes(out, v.as_deref());
    }
}

fn bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => out.extend_from_slice(&(-1i64).to_be_bytes()),
        Some(b) => {
            out.extend_from_slice(&(b.len() as i64).to_be_bytes());
            out.extend_from_slice(b);
        }
    }
}

/// The first offset where two record lists of the same range differ, the last, and
/// each side's record count: the narrowing of a differing leaf to its records.
pub fn narrow(a: &[Content], b: &[Content]) -> Option<(i64, i64)> {
    let mut i = 0;
    let mut j = 0;
    let mut first = None;
    let mut last = None;
    while i < a.len() || j < b.len() {
        let (x, y) = (a.get(i), b.get(j));
        let off = match (x, y) {
            (Some(x), Some(y)) if x.offset == y.offset => {
                i += 1;
                j += 1;
                if x == y {
                    continue;
                }
                x.offset
            }
            (Some(x), Some(y)) if x.offset < y.offset => {
                i += 1;
                x.offset
            }
            (Some(_), Some(y)) => {
                j += 1;
                y.offset
            }
            (Some(x), None) => {
                i += 1;
                x.offset
            }
            (None, Some(y)) => {
                j += 1;
                y.offset
            }
            (None, None) => break,
        };
        first.get_or_insert(off);
        last = Some(off);
    }
    Some((first?, last?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn rec(offset: i64, v: &str) -> Content {
        Content {
            offset,
            timestamp: 1_700_000_000_000 + offset,
            key: Some(Bytes::from(format!("k{offset}"))),
            value: Some(Bytes::from(v.to_string())),
            headers: vec![(Bytes::from_static(b"h"), None)],
        }
    }

    fn leaves(recs: &[Content], to: i64) -> Vec<Leaf> {
        let mut h = LeafHasher::new(0, to, 10);
        for r in recs {
            h.push(r);
        }
        h.finish()
    }

    #[test]
    fn every_field_counts_and_only_its_leaf_changes() {
        let base: Vec<Content> = (0..35).map(|o| rec(o, "v")).collect();
        let a = leaves(&base, 35);
        assert_eq!(a.len(), 4);
        assert_eq!(a, leaves(&base, 35), "deterministic");
        type Edit = Box<dyn Fn(&mut Content)>;
        let edits: Vec<Edit> = vec![
            Box::new(|r| r.value = Some(Bytes::from_static(b"w"))),
            Box::new(|r| r.value = None),
            Box::new(|r| r.key = None),
            Box::new(|r| r.timestamp += 1),
            Box::new(|r| r.headers[0].1 = Some(Bytes::from_static(b""))),
            Box::new(|r| r.headers.push((Bytes::from_static(b"h"), None))),
        ];
        for edit in edits {
            let mut b = base.clone();
            edit(&mut b[23]);
            let l = leaves(&b, 35);
            let diff: Vec<usize> = (0..4).filter(|i| a[*i] != l[*i]).collect();
            assert_eq!(diff, vec![2]);
        }
        // A record missing from a leaf changes that leaf only.
        let mut b = base.clone();
        b.remove(12);
        let l = leaves(&b, 35);
        assert_eq!(
            (0..4).filter(|i| a[*i] != l[*i]).collect::<Vec<_>>(),
            vec![1]
        );
        assert_eq!(l[1].records, 9);
    }

    #[test]
    fn empty_and_short_ranges() {
        assert_eq!(LeafHasher::leaf_count(0, 0, 10), 0);
        assert_eq!(LeafHasher::leaf_count(5, 26, 10), 3);
        assert_eq!(leaf_range(5, 26, 10, 2), (25, 26));
        let l = leaves(&[], 20);
        assert_eq!(l.len(), 2);
        assert_ne!(l[0].hash, l[1].hash, "position is part of the hash");
    }

    #[test]
    fn narrowing_names_first_and_last_difference() {
        let a: Vec<Content> = (0..10).map(|o| rec(o, "v")).collect();
        assert_eq!(narrow(&a, &a), None);
        let mut b = a.clone();
        b[3].value = None;
        b[7].timestamp = 0;
        assert_eq!(narrow(&a, &b), Some((3, 7)));
        assert_eq!(narrow(&a, &a[..8]), Some((8, 9)));
        let mut c = a.clone();
        c.push(rec(10, "x"));
        assert_eq!(narrow(&a, &c), Some((10, 10)));
    }

    proptest::proptest! {
        /// Any one change to one record (a field, the record dropped, a byte moved
        /// from its key to its value, which only an unambiguous encoding tells apart)
        /// changes exactly the leaf holding its offset, whatever the leaf size, and
        /// narrowing names exactly that offset.
        #[test]
        fn one_change_shows_in_its_leaf_only(
            n in 1i64..80,
            leaf in 1i64..16,
            at in proptest::prelude::any::<proptest::sample::Index>(),
            kind in 0u8..5,
        ) {
            let base: Vec<Content> = (0..n).map(|o| rec(o, "value")).collect();
            let o = at.index(n as usize) as i64;
            let mut edited = base.clone();
            let r = &mut edited[o as usize];
            match kind {
                0 => r.value = Some(Bytes::from_static(b"valuf")),
                1 => r.key = None,
                2 => r.timestamp += 1,
                3 => {
                    // "k<o>" + "value" becomes "k" + "<o>value".
                    let key = r.key.clone().unwrap();
                    let mut v = key[1..].to_vec();
                    v.extend_from_slice(b"value");
                    r.key = Some(key.slice(..1));
                    r.value = Some(Bytes::from(v));
                }
                _ => {
                    edited.remove(o as usize);
                }
            }
            let hash = |recs: &[Content]| {
                let mut h = LeafHasher::new(0, n, leaf);
                for r in recs {
                    h.push(r);
                }
                h.finish()
            };
            let (a, b) = (hash(&base), hash(&edited));
            proptest::prop_assert_eq!(a.len(), b.len());
            let differ: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
            proptest::prop_assert_eq!(differ, vec![(o / leaf) as usize]);
            proptest::prop_assert_eq!(narrow(&base, &edited), Some((o, o)));
            proptest::prop_assert_eq!(hash(&base), a, "not deterministic");
        }
    }
}
