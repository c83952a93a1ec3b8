//! The responses the walk covers, by API key: their header versions and the crate's
//! decoder. For code that picks a response at run time (the fuzz entry points and the
//! walk's tests); the connection knows its response type statically.

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, HeaderVersion};

use super::schemas::{schema, KEYS};

/// Every (API key, version) the walk has a table for.
pub fn all_versions() -> Vec<(i16, i16)> {
    KEYS.iter()
        .flat_map(|&k| {
            let (lo, hi) = schema(k).map_or((0, -1), |m| m.versions);
            (lo..=hi).map(move |v| (k, v))
        })
        .collect()
}

/// The response header version of API `key` at `version`; `None` for a key the walk
/// does not cover.
pub fn header_version(key: i16, v: i16) -> Option<i16> {
    Some(match key {
        0 => ProduceResponse::header_version(v),
        1 => FetchResponse::header_version(v),
        2 => ListOffsetsResponse::header_version(v),
        3 => MetadataResponse::header_version(v),
        8 => OffsetCommitResponse::header_version(v),
        9 => OffsetFetchResponse::header_version(v),
        10 => FindCoordinatorResponse::header_version(v),
        11 => JoinGroupResponse::header_version(v),
        12 => HeartbeatResponse::header_version(v),
        13 => LeaveGroupResponse::header_version(v),
        14 => SyncGroupResponse::header_version(v),
        15 => DescribeGroupsResponse::header_version(v),
        16 => ListGroupsResponse::header_version(v),
        17 => SaslHandshakeResponse::header_version(v),
        18 => ApiVersionsResponse::header_version(v),
        19 => CreateTopicsResponse::header_version(v),
        22 => InitProducerIdResponse::header_version(v),
        32 => DescribeConfigsResponse::header_version(v),
        36 => SaslAuthenticateResponse::header_version(v),
        37 => CreatePartitionsResponse::header_version(v),
        65 => DescribeTransactionsResponse::header_version(v),
        _ => return None,
    })
}

/// Decodes a whole frame (header included) with the crate alone, without the walk:
/// whether it decoded.
pub fn crate_decode(key: i16, v: i16, frame: &mut Bytes) -> bool {
    let Some(hv) = header_version(key, v) else {
        return false;
    };
    if ResponseHeader::decode(frame, hv).is_err() {
        return false;
    }
    match key {
        0 => ProduceResponse::decode(frame, v).is_ok(),
        1 => FetchResponse::decode(frame, v).is_ok(),
        2 => ListOffsetsResponse::decode(frame, v).is_ok(),
        3 => MetadataResponse::decode(frame, v).is_ok(),
        8 => OffsetCommitResponse::decode(frame, v).is_ok(),
        9 => OffsetFetchResponse::decode(frame, v).is_ok(),
        10 => FindCoordinatorResponse::decode(frame, v).is_ok(),
        11 => JoinGroupResponse::decode(frame, v).is_ok(),
        12 => HeartbeatResponse::decode(frame, v).is_ok(),
        13 => LeaveGroupResponse::decode(frame, v).is_ok(),
        14 => SyncGroupResponse::decode(frame, v).is_ok(),
        15 => DescribeGroupsResponse::decode(frame, v).is_ok(),
        16 => ListGroupsResponse::decode(frame, v).is_ok(),
        17 => SaslHandshakeResponse::decode(frame, v).is_ok(),
        18 => ApiVersionsResponse::decode(frame, v).is_ok(),
        19 => CreateTopicsResponse::decode(frame, v).is_ok(),
        22 => InitProducerIdResponse::decode(frame, v).is_ok(),
        32 => DescribeConfigsResponse::decode(frame, v).is_ok(),
        36 => SaslAuthenticateResponse::decode(frame, v).is_ok(),
        37 => CreatePartitionsResponse::decode(frame, v).is_ok(),
        65 => DescribeTransactionsResponse::decode(frame, v).is_ok(),
        _ => false,
    }
}
