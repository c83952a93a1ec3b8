//! Errors of the Kafka client layer, with the broker, topic and partition they concern.

use kafka_protocol::ResponseError;

/// Everything that can go wrong talking to a Kafka-compatible broker.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("connection to {addr} lost: {reason}")]
    ConnectionLost { addr: String, reason: String },
    /// The peer answered with something that is not a Kafka frame at all (a TLS
    /// listener, another protocol): retrying cannot help.
    #[error("{addr} does not speak the plaintext Kafka protocol: {reason}")]
    NotKafka { addr: String, reason: String },
    /// A `wanmirror serve` refused the request or the connection: a topic outside
    /// this client's allow-list, a certificate naming no configured client, another
    /// cluster, no common protocol version. Retrying cannot help.
    #[error("peer {addr} refused: {reason}")]
    PeerRefused { addr: String, reason: String },
    /// TLS could not be set up with the broker: a certificate, a name, a plaintext
    /// port. Retrying cannot help.
    #[error("TLS with {addr} failed: {reason}")]
    Tls { addr: String, reason: String },
    /// The SASL login was refused or the broker failed to prove itself. Retrying
    /// cannot help.
    #[error("SASL {mechanism} login as {user} at {addr} failed: {reason}")]
    Auth {
        addr: String,
        mechanism: &'static str,
        user: String,
        reason: String,
    },
    #[error("request {api} to {addr} timed out after {ms} ms")]
    Timeout {
        addr: String,
        api: &'static str,
        ms: u64,
    },
    #[error("cannot encode {api} request: {reason}")]
    Encode { api: &'static str, reason: String },
    #[error("cannot decode {api} response from {addr}: {reason}")]
    Decode {
        addr: String,
        api: &'static str,
        reason: String,
    },
    #[error("broker {addr} does not offer the {api} API")]
    UnsupportedApi { addr: String, api: &'static str },
    #[error("broker {addr} does not support {api} in versions {ours} (it offers {theirs})")]
    UnsupportedVersion {
        addr: String,
        api: &'static str,
        ours: String,
        theirs: String,
    },
    #[error("{api} for {topic}/{partition} failed: {code}{}", detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Partition {
        api: &'static str,
        topic: String,
        partition: i32,
        code: ResponseError,
        /// What the broker said beyond the code (Produce's error message and record
        /// errors), when it said anything.
        detail: Option<String>,
    },
    #[error("{api} failed: {code}{}", detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Broker {
        api: &'static str,
        code: ResponseError,
        detail: Option<String>,
    },
    #[error("{topic}/{partition}: corrupt data at offset {offset}: {detail}")]
    Corrupt {
        topic: String,
        partition: i32,
        offset: i64,
        detail: String,
    },
    #[error("topic {topic} is unknown to cluster {cluster}")]
    UnknownTopic { cluster: String, topic: String },
    #[error("no leader known for {topic}/{partition} in cluster {cluster}")]
    NoLeader {
        cluster: String,
        topic: String,
        partition: i32,
    },
    #[error("no broker of cluster {cluster} is reachable ({bootstrap}): {last}")]
    Unreachable {
        cluster: String,
        bootstrap: String,
        last: String,
    },
}

impl KafkaError {
    /// Whether retrying after a metadata refresh and a backoff may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            KafkaError::Connect { .. }
            | KafkaError::ConnectionLost { .. }
            | KafkaError::Timeout { .. }
            | KafkaError::NoLeader { .. }
            | KafkaError::Unreachable { .. } => true,
            // CONCURRENT_TRANSACTIONS: another InitProducerId on the same
            // transactional id is still being completed (two mirror group members
            // taking a lock at once); Kafka's own producer retries it.
            KafkaError::Partition { code, .. } | KafkaError::Broker { code, .. } => {
                code.is_retriable() || *code == ResponseError::ConcurrentTransactions
            }
            _ => false,
        }
    }

    /// A TLS or SASL failure: a setting, a certificate or a credential is wrong.
    /// Fatal at start; a partition that meets one later restarts (a certificate or
    /// credential may be fixed on the broker's side meanwhile).
    pub fn is_security(&self) -> bool {
        matches!(
            self,
            KafkaError::Tls { .. } | KafkaError::Auth { .. } | KafkaError::PeerRefused { .. }
        )
    }

    /// Whether the error means our view of partition leadership is stale.
    pub fn needs_metadata_refresh(&self) -> bool {
        match self {
            KafkaError::Partition { code, .. } | KafkaError::Broker { code, .. } => matches!(
                code,
                ResponseError::NotLeaderOrFollower
                    | ResponseError::UnknownTopicOrPartition
                    | ResponseError::LeaderNotAvailable
                    | ResponseError::FencedLeaderEpoch
                    | ResponseError::NotCoordinator
                    | ResponseError::CoordinatorNotAvailable
            ),
            KafkaError::Connect { .. }
            | KafkaError::ConnectionLost { .. }
            | KafkaError::NoLeader { .. } => true,
            _ => false,
        }
    }

    /// The broker error code, if this error carries one.
    pub fn code(&self) -> Option<ResponseError> {
        match self {
            KafkaError::Partition { code, .. } | KafkaError::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, KafkaError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_taken_at_the_same_moment_is_retried() {
        let e = KafkaError::Broker {
            api: "InitProducerId",
            code: ResponseError::ConcurrentTransactions,
            detail: None,
        };
        assert!(e.is_retriable());
        let fenced = KafkaError::Broker {
            api: "Produce",
            code: ResponseError::ProducerFenced,
            detail: None,
        };
        assert!(!fenced.is_retriable());
    }
}
