//! The Kafka client layer: connections, version negotiation, cluster routing, batches.

pub mod admin;
pub mod backoff;
pub mod batch;
pub mod client;
pub mod connection;
pub mod error;
pub mod expect;
pub mod fetch_mux;
pub mod groups;
pub mod limit;
pub mod membership;
pub mod peek;
pub mod records;
pub mod security;
pub mod shape;
pub mod unpack;
pub mod versions;
