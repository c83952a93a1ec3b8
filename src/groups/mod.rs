//! The group layer: consumer groups in the destination cluster.
//!
//! - Mirror workers as a group (`[group]`): `member.rs` joins a group of our own
//!   protocol type on the destination's coordinator, `protocol.rs` is what members say
//!   to each other, `assign.rs` the leader's sticky, byte-balanced assignment. Each
//!   partition is fenced by a transactional id of its own when it changes hands
//!   (docs/offsets.md, "Fencing in a group").
//! - Applications' consumer groups (`[groups]`): their committed offsets follow the
//!   copy into the destination. Offsets are identical on both sides, so nothing is
//!   translated: `plan.rs` decides, `sync.rs` drives, `status.rs` reports readiness
//!   (docs/offsets.md, "Consumer group offsets").

pub mod assign;
pub mod error;
pub mod member;
pub mod plan;
pub mod protocol;
pub mod status;
pub mod sync;
