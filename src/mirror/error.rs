//! Errors of the mirror pipeline, always naming topic, partition and offset where known.

use crate::kafka::error::KafkaError;

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("{cluster}: {source}")]
    Kafka { cluster: String, source: KafkaError },
    #[error("{topic}/{partition} diverges at offset {offset}: {detail}")]
    Diverged {
        topic: String,
        partition: i32,
        offset: i64,
        detail: String,
    },
    #[error("{topic}/{partition}: {detail} (offset {offset}); set {setting} to change this")]
    PolicyRefused {
        topic: String,
        partition: i32,
        offset: i64,
        detail: String,
        setting: &'static str,
    },
    #[error("corrupt or unsupported data in {topic}/{partition} at offset {offset}: {detail}")]
    BadBatch {
        topic: String,
        partition: i32,
        offset: i64,
        detail: String,
    },
    #[error("destination topic {topic}: {detail}")]
    Topic { topic: String, detail: String },
    #[error("fenced: another wanmirror instance took over ({detail})")]
    Fenced { detail: String },
    /// Another writer of our producer lineage (an instance about to be fenced) appended
    /// first: the partition starts again from the destination's new end.
    #[error("{topic}/{partition}: another instance wrote first at offset {offset}: {detail}")]
    Raced {
        topic: String,
        partition: i32,
        offset: i64,
        detail: String,
    },
}

impl MirrorError {
    /// A short name of the kind, for the `kind` label of the error metric.
    pub fn kind(&self) -> &'static str {
        match self {
            MirrorError::Kafka { source, .. } if source.is_security() => "security",
            MirrorError::Kafka { .. } => "kafka",
            MirrorError::Diverged { .. } => "diverged",
            MirrorError::PolicyRefused { .. } => "policy_refused",
            MirrorError::BadBatch { .. } => "bad_batch",
            MirrorError::Topic { .. } => "topic",
            MirrorError::Fenced { .. } => "fenced",
            MirrorError::Raced { .. } => "raced",
        }
    }

    pub fn kafka(cluster: &str, source: KafkaError) -> MirrorError {
        use kafka_protocol::ResponseError as R;
        match source.code() {
            Some(R::ProducerFenced | R::InvalidProducerEpoch) => MirrorError::Fenced {
                detail: format!("{cluster}: {source}"),
            },
            _ => MirrorError::Kafka {
                cluster: cluster.to_string(),
                source,
            },
        }
    }
}
