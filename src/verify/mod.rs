//! Verify: `wanmirror diff`, a Merkle-tree comparison of partitions between clusters.
//!
//! Leaves hash fixed offset ranges of records' logical content (`leaf.rs`), trees are
//! built with rs_merkle over BLAKE3 (`tree.rs`), and the comparison is an I/O-free
//! protocol of node-hash requests and answers (`walk.rs`), so that one side can later
//! live in a remote peer and only hashes cross the WAN. `diff.rs` drives it against
//! real clusters; `report.rs` prints the result. `status.rs` is `wanmirror status`: end
//! offsets, lag and deviations per partition, without reading records.

pub mod command;
pub mod diff;
pub mod error;
pub mod hashing;
pub mod leaf;
pub mod report;
pub mod status;
pub mod tree;
pub mod walk;
