//! Merkle trees over leaf hashes (rs_merkle, BLAKE3), kept whole so that any node can
//! be looked up by layer and index when a peer asks for it.

use rs_merkle::{Hasher, PartialTree};

use super::leaf::Hash;

/// BLAKE3 for rs_merkle. Inner nodes hash the concatenation of their children; a node
/// without a right child takes its left child's hash (rs_merkle's promotion).
#[derive(Clone)]
pub struct Blake3;

impl Hasher for Blake3 {
    type Hash = Hash;

    fn hash(data: &[u8]) -> Hash {
        *blake3::hash(data).as_bytes()
    }
}

/// Where a node sits: `layer` 0 is the leaves, the last layer the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    pub layer: usize,
    pub index: usize,
}

/// A whole tree. Two sides compare trees over the same number of leaves, so their
/// shapes are the same and node ids mean the same thing on both.
pub struct Tree {
    layers: Vec<Vec<Hash>>,
}

impl Tree {
    pub fn from_leaves(leaves: &[Hash]) -> Tree {
        if leaves.len() <= 1 {
            // One leaf is its own root (rs_merkle would repeat it as a layer above).
            return Tree {
                layers: if leaves.is_empty() {
                    Vec::new()
                } else {
                    vec![leaves.to_vec()]
                },
            };
        }
        // Building a partial tree from all leaves yields every layer; rs_merkle ends
        // it with the root repeated as a layer of its own, which we drop so that the
        // shape is the one `shape()` gives.
        let mut layers = PartialTree::<Blake3>::from_leaves(leaves)
            .map(|t| t.layer_nodes())
            .unwrap_or_else(|_| vec![leaves.to_vec()]);
        while layers.len() >= 2
            && layers[layers.len() - 1].len() == 1
            && layers[layers.len() - 2].len() == 1
        {
            layers.pop();
        }
        Tree { layers }
    }

    /// Number of layers (0 for an empty tree).
    pub fn height(&self) -> usize {
        self.layers.len()
    }

    pub fn root(&self) -> Option<NodeId> {
        (!self.layers.is_empty()).then(|| NodeId {
            layer: self.layers.len() - 1,
            index: 0,
        })
    }

    pub fn node(&self, id: NodeId) -> Option<Hash> {
        self.layers.get(id.layer)?.get(id.index).copied()
    }

    /// Answers a batch of node requests (what a remote peer would send back).
    pub fn answer(&self, ids: &[NodeId]) -> Vec<Option<Hash>> {
        ids.iter().map(|id| self.node(*id)).collect()
    }

    /// The children of a node that exist.
    pub fn children(&self, id: NodeId) -> Vec<NodeId> {
        children(
            id,
            self.layers
                .get(id.layer.wrapping_sub(1))
                .map_or(0, Vec::len),
        )
    }
}

/// Children of `id` in a layer of `below` nodes.
pub fn children(id: NodeId, below: usize) -> Vec<NodeId> {
    if id.layer == 0 {
        return Vec::new();
    }
    (2 * id.index..(2 * id.index + 2).min(below))
        .map(|index| NodeId {
            layer: id.layer - 1,
            index,
        })
        .collect()
}

/// Layer sizes of a tree of `leaves` leaves, bottom first (rs_merkle's shape).
pub fn shape(leaves: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut n = leaves;
    while n > 0 {
        out.push(n);
        if n == 1 {
            break;
        }
        n = n.div_ceil(2);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(i: u8) -> Hash {
        *blake3::hash(&[i]).as_bytes()
    }

    #[test]
    fn the_tree_has_the_shape_we_walk() {
        for n in 1..40u8 {
            let leaves: Vec<Hash> = (0..n).map(leaf).collect();
            let t = Tree::from_leaves(&leaves);
            let sizes: Vec<usize> = (0..t.height()).map(|l| t.layers[l].len()).collect();
            assert_eq!(sizes, shape(n as usize), "{n} leaves");
            // The root is rs_merkle's root.
            let root = rs_merkle::MerkleTree::<Blake3>::from_leaves(&leaves).root();
            assert_eq!(t.node(t.root().unwrap()), root);
        }
        assert!(Tree::from_leaves(&[]).root().is_none());
    }
}
