//! Top-down comparison of two Merkle trees of the same shape, as a protocol without
//! I/O: the walk names the nodes whose hashes it needs, the caller answers for both
//! sides (from trees in memory today; from a remote peer, over the WAN, later), and
//! the walk ends with exactly the leaves that differ. One round per tree layer; each
//! round asks only for the children of nodes that differed.

use super::leaf::Hash;
use super::tree::{children, shape, NodeId};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalkError {
    #[error("answer has {got} hashes for {asked} nodes")]
    Count { asked: usize, got: usize },
    #[error("node {layer}/{index} is missing from a tree of {leaves} leaves")]
    Missing {
        layer: usize,
        index: usize,
        leaves: usize,
    },
}

#[derive(Debug, Clone)]
pub struct Walk {
    shape: Vec<usize>,
    wanted: Vec<NodeId>,
    differing: Vec<usize>,
    /// Node hashes asked for so far, per side (what would cross the WAN).
    pub nodes_asked: u64,
}

impl Walk {
    /// A walk over two trees of `leaves` leaves each.
    pub fn new(leaves: usize) -> Walk {
        let shape = shape(leaves);
        let wanted = match shape.len() {
            0 => Vec::new(),
            h => vec![NodeId {
                layer: h - 1,
                index: 0,
            }],
        };
        Walk {
            shape,
            wanted,
            differing: Vec::new(),
            nodes_asked: 0,
        }
    }

    /// The nodes whose hashes the next answer must carry, for each side, in this order.
    pub fn wanted(&self) -> &[NodeId] {
        &self.wanted
    }

    pub fn is_done(&self) -> bool {
        self.wanted.is_empty()
    }

    /// Takes both sides' hashes of [`Walk::wanted`] and moves one layer down.
    pub fn answer(&mut self, a: &[Option<Hash>], b: &[Option<Hash>]) -> Result<(), WalkError> {
        for side in [a, b] {
            if side.len() != self.wanted.len() {
                return Err(WalkError::Count {
                    asked: self.wanted.len(),
                    got: side.len(),
                });
            }
        }
        self.nodes_asked += self.wanted.len() as u64;
        let mut next = Vec::new();
        for (i, id) in self.wanted.iter().enumerate() {
            let (Some(x), Some(y)) = (a[i], b[i]) else {
                return Err(WalkError::Missing {
                    layer: id.layer,
                    index: id.index,
                    leaves: self.shape.first().copied().unwrap_or(0),
                });
            };
            if x == y {
                continue;
            }
            if id.layer == 0 {
                self.differing.push(id.index);
            } else {
                next.extend(children(*id, self.shape[id.layer - 1]));
            }
        }
        self.wanted = next;
        Ok(())
    }

    /// The differing leaves, in order, once the walk is done.
    pub fn differing_leaves(&self) -> &[usize] {
        &self.differing
    }
}

#[cfg(test)]
mod tests {
    use super::super::tree::Tree;
    use super::*;
    use proptest::prelude::*;

    fn run(a: &Tree, b: &Tree, leaves: usize) -> Walk {
        let mut w = Walk::new(leaves);
        while !w.is_done() {
            let ids = w.wanted().to_vec();
            w.answer(&a.answer(&ids), &b.answer(&ids)).unwrap();
        }
        w
    }

    #[test]
    fn bad_answers_are_refused() {
        let mut w = Walk::new(4);
        assert!(matches!(
            w.answer(&[], &[None]),
            Err(WalkError::Count { .. })
        ));
        assert!(matches!(
            w.answer(&[None], &[None]),
            Err(WalkError::Missing { .. })
        ));
        assert!(Walk::new(0).is_done());
    }

    proptest! {
        /// Whatever leaves differ, the walk finds exactly those, asking for at most
        /// two nodes per differing leaf and layer.
        #[test]
        fn finds_exactly_the_differing_leaves(
            n in 1usize..300,
            flips in proptest::collection::btree_set(0usize..300, 0..20),
        ) {
            let a: Vec<Hash> = (0..n).map(|i| *blake3::hash(&i.to_be_bytes()).as_bytes()).collect();
            let mut b = a.clone();
            let want: Vec<usize> = flips.iter().copied().filter(|i| *i < n).collect();
            for i in &want {
                b[*i][0] ^= 1;
            }
            let (ta, tb) = (Tree::from_leaves(&a), Tree::from_leaves(&b));
            let w = run(&ta, &tb, n);
            prop_assert_eq!(w.differing_leaves(), &want[..]);
            let height = shape(n).len() as u64;
            prop_assert!(w.nodes_asked <= 1 + 2 * want.len() as u64 * height);
        }
    }
}
