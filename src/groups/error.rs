//! Errors of the group layer, naming the group and the cluster.

use crate::kafka::error::KafkaError;

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("{cluster}: {source}")]
    Kafka { cluster: String, source: KafkaError },
    /// The group id is taken in the destination by another kind of client.
    #[error("group {group}: the destination already has a group of this id with protocol type {protocol_type:?} (an application's?); choose another [group] id")]
    Foreign {
        group: String,
        protocol_type: String,
    },
    /// The group's coordinator did not answer within the patience given.
    #[error("group {group}: the coordinator in {cluster} cannot be reached: {detail}")]
    Coordinator {
        group: String,
        cluster: String,
        detail: String,
    },
}
