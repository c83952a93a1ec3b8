//! Errors of `wanmirror diff`, with the cluster, topic and partition they concern.

use crate::kafka::error::KafkaError;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{cluster}: {source}")]
    Kafka {
        cluster: String,
        #[source]
        source: KafkaError,
    },
    #[error("{cluster} has no topic {topic}")]
    NoTopic { cluster: String, topic: String },
    #[error("{topic} has {source_partitions} partitions in {source_cluster} but {dest_partitions} in {dest_cluster}")]
    PartitionCount {
        topic: String,
        source_cluster: String,
        source_partitions: usize,
        dest_cluster: String,
        dest_partitions: usize,
    },
    #[error("{topic} has no partition {partition}")]
    NoPartition { topic: String, partition: i32 },
    #[error("comparing {topic}/{partition}: {detail}")]
    Compare {
        topic: String,
        partition: i32,
        detail: String,
    },
    #[error("{0}")]
    Usage(String),
}

impl VerifyError {
    pub fn kafka(cluster: &str, source: KafkaError) -> VerifyError {
        VerifyError::Kafka {
            cluster: cluster.to_string(),
            source,
        }
    }
}
