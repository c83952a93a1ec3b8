//! Transport: how bytes cross the WAN to the source's brokers: a pool of TCP
//! connections per broker with an adaptive size. It sits beside the Kafka client
//! (it uses its connections and fetch helpers; the client does not use it). The
//! other transport, QUIC to a peer, is `peer/`; `source/` puts both behind one
//! interface.

pub mod pool;
pub mod sizer;
