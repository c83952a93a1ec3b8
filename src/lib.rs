//! wanmirror: an offset-identical Kafka mirror for long, lossy links between data centres.
//!
//! Layers: [`kafka`] (client), [`transport`] (connection pools), [`mirror`] (pipeline),
//! [`groups`] (consumer-group offset sync), [`verify`] (Merkle diff), [`config`],
//! [`demo`], and the fuzzers' entry points ([`fuzz`]).

pub mod config;
pub mod demo;
pub mod fuzz;
pub mod groups;
pub mod kafka;
pub mod mirror;
pub mod peer;
pub mod serve;
pub mod source;
pub mod transport;
pub mod verify;

#[cfg(test)]
mod test_alloc;
