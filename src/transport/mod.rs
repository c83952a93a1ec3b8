//! Transport: how bytes cross the WAN. Today a pool of TCP connections per source
//! broker with an adaptive size; later, peers over QUIC.

pub mod limit;
pub mod pool;
pub mod sizer;
