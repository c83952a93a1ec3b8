//! The peer transport: QUIC between a destination's wanmirror and a `wanmirror serve`
//! in the source DC (docs/peer-protocol.md). `frame.rs` is the protocol, pure;
//! `io.rs` puts frames on streams; `tls.rs` sets up mutual TLS and the congestion
//! control; `client.rs` is the destination's side and `pool.rs` its pool of connections,
//! sized by goodput, with `places.rs` the number of fetches in flight; `cert.rs` makes a first CA.

pub mod cert;
pub mod client;
pub mod frame;
pub mod io;
pub mod places;
pub mod pool;
pub mod tls;
