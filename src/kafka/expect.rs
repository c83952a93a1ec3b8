//! How large an answer each request may bring, so that the reader allocates a frame
//! only as far as its caller budgeted for it, and refuses one far beyond.
//!
//! A fetch's caller reserves its ask from `in_flight_bytes` before sending; the frame
//! of the answer is allocated up to that ask (plus the response's own fields), and any
//! more only as the bytes arrive. Kafka may answer beyond the ask by one batch larger
//! than it (so that a large batch is never stuck), which the mirror accepts up to its
//! largest fetch; a frame longer than the ask plus that is refused and its connection
//! closed (decision 47).

use kafka_protocol::messages::{
    ApiVersionsRequest, CreatePartitionsRequest, CreateTopicsRequest, DescribeConfigsRequest,
    DescribeGroupsRequest, DescribeTransactionsRequest, FetchRequest, FindCoordinatorRequest,
    HeartbeatRequest, InitProducerIdRequest, JoinGroupRequest, LeaveGroupRequest,
    ListGroupsRequest, ListOffsetsRequest, MetadataRequest, OffsetCommitRequest,
    OffsetFetchRequest, ProduceRequest, SaslAuthenticateRequest, SaslHandshakeRequest,
    SyncGroupRequest,
};

/// Bytes a control answer (metadata, offsets, configs) is allocated up front; larger
/// ones grow as their bytes arrive.
pub const CONTROL: usize = 1 << 20;

/// How far beyond what it expects an answer may run: one batch up to the largest
/// fetch the mirror makes (64 MiB). Longer frames are refused.
pub const OVERSHOOT: usize = 64 << 20;

/// A request whose answer has an expected size.
pub trait Expect {
    /// Bytes the answer's frame takes at most when the broker keeps to the request.
    fn expected_answer(&self) -> usize {
        CONTROL
    }
}

impl Expect for ApiVersionsRequest {}
impl Expect for CreatePartitionsRequest {}
impl Expect for CreateTopicsRequest {}
impl Expect for DescribeConfigsRequest {}
impl Expect for DescribeGroupsRequest {}
impl Expect for DescribeTransactionsRequest {}
impl Expect for HeartbeatRequest {}
impl Expect for JoinGroupRequest {}
impl Expect for LeaveGroupRequest {}
impl Expect for ListGroupsRequest {}
impl Expect for OffsetCommitRequest {}
impl Expect for OffsetFetchRequest {}
impl Expect for SyncGroupRequest {}
impl Expect for FindCoordinatorRequest {}
impl Expect for InitProducerIdRequest {}
impl Expect for ListOffsetsRequest {}
impl Expect for MetadataRequest {}
impl Expect for ProduceRequest {}
impl Expect for SaslAuthenticateRequest {}
impl Expect for SaslHandshakeRequest {}

impl Expect for FetchRequest {
    /// The records asked for, and the fields around them: a fixed head, and per topic
    /// and partition their names, codes, offsets and lengths (at most 64 bytes each in
    /// the versions we use; aborted transactions are absent at read-uncommitted).
    fn expected_answer(&self) -> usize {
        let fields: usize = self
            .topics
            .iter()
            .map(|t| 64 + t.topic.0.len() + 64 * t.partitions.len())
            .sum();
        self.max_bytes.max(0) as usize + 64 + fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::fetch_mux::fetch_request;
    use std::time::Duration;

    #[test]
    fn a_fetch_expects_its_ask_and_its_fields() {
        let req = fetch_request(
            [("orders", 0, 0, 1000), ("orders", 1, 0, 1000)].into_iter(),
            Duration::ZERO,
        );
        let e = req.expected_answer();
        assert!(e >= 2000 + 2 * 42, "{e}");
        assert!(e < 2000 + 1024, "{e}");
        assert_eq!(MetadataRequest::default().expected_answer(), CONTROL);
    }
}
