//! The tables agree with the crate's encoder in every version it knows, and the walk
//! refuses what would make the crate over-allocate, never panicking on any input.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::{
    ApiVersion, FinalizedFeatureKey, SupportedFeatureKey,
};
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, EpochEndOffset, FetchableTopicResponse, SnapshotId,
};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, HeaderVersion, StrBytes};
use proptest::prelude::*;

use super::by_key::{self, all_versions};
use super::*;
use crate::test_alloc::largest_allocation;

fn s(v: &'static str) -> StrBytes {
    StrBytes::from_static_str(v)
}

fn topic(v: &'static str) -> TopicName {
    TopicName(s(v))
}

/// A whole frame: response header with correlation id 7, then the body.
fn frame<R: Encodable + HeaderVersion>(resp: &R, version: i16) -> Vec<u8> {
    let mut buf = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(7)
        .encode(&mut buf, R::header_version(version))
        .unwrap();
    resp.encode(&mut buf, version)
        .unwrap_or_else(|e| panic!("encode v{version}: {e}"));
    buf.to_vec()
}

/// A response of API `key` at `version`, with every array, string and known tag that
/// exists in that version filled: the tables must walk all of it.
fn filled(key: i16, v: i16) -> Vec<u8> {
    match key {
        0 => {
            let mut p = PartitionProduceResponse::default();
            if v >= 8 {
                p = p
                    .with_record_errors(vec![BatchIndexAndErrorMessage::default()
                        .with_batch_index(1)
                        .with_batch_index_error_message(Some(s("bad")))])
                    .with_error_message(Some(s("err")));
            }
            if v >= 10 {
                p = p.with_current_leader(
                    produce_response::LeaderIdAndEpoch::default()
                        .with_leader_id(BrokerId(3))
                        .with_leader_epoch(4),
                );
            }
            let mut t =
                TopicProduceResponse::default().with_partition_responses(vec![p.clone(), p]);
            t = if v <= 12 {
                t.with_name(topic("orders"))
            } else {
                t
            };
            let mut r = ProduceResponse::default().with_responses(vec![t]);
            if v >= 10 {
                r = r.with_node_endpoints(vec![produce_response::NodeEndpoint::default()
                    .with_host(s("h"))
                    .with_rack(Some(s("r")))]);
            }
            frame(&r, v)
        }
        1 => {
            let mut p = fetch_response::PartitionData::default()
                .with_aborted_transactions(Some(vec![AbortedTransaction::default()]))
                .with_records(Some(Bytes::from_static(b"0123456789")));
            if v >= 12 {
                p = p
                    .with_diverging_epoch(EpochEndOffset::default().with_epoch(2))
                    .with_current_leader(
                        fetch_response::LeaderIdAndEpoch::default().with_leader_epoch(5),
                    )
                    .with_snapshot_id(SnapshotId::default().with_epoch(3));
            }
            let mut t = FetchableTopicResponse::default().with_partitions(vec![p.clone(), p]);
            t = if v <= 12 {
                t.with_topic(topic("orders"))
            } else {
                t
            };
            let mut r = FetchResponse::default().with_responses(vec![t.clone(), t]);
            if v >= 16 {
                r = r.with_node_endpoints(vec![fetch_response::NodeEndpoint::default()
                    .with_host(s("h"))
                    .with_rack(Some(s("r")))]);
            }
            frame(&r, v)
        }
        2 => {
            let t = ListOffsetsTopicResponse::default()
                .with_name(topic("orders"))
                .with_partitions(vec![ListOffsetsPartitionResponse::default(); 3]);
            frame(&ListOffsetsResponse::default().with_topics(vec![t]), v)
        }
        3 => {
            let mut b = MetadataResponseBroker::default().with_host(s("host"));
            if v >= 1 {
                b = b.with_rack(Some(s("rack")));
            }
            let mut p = MetadataResponsePartition::default()
                .with_replica_nodes(vec![BrokerId(1), BrokerId(2)])
                .with_isr_nodes(vec![BrokerId(1)]);
            if v >= 5 {
                p = p.with_offline_replicas(vec![BrokerId(2)]);
            }
            let t = MetadataResponseTopic::default()
                .with_name(Some(topic("orders")))
                .with_partitions(vec![p.clone(), p]);
            let mut r = MetadataResponse::default()
                .with_brokers(vec![b.clone(), b])
                .with_topics(vec![t.clone(), t]);
            if v >= 2 {
                r = r.with_cluster_id(Some(s("cluster")));
            }
            frame(&r, v)
        }
        10 => {
            let r = if v >= 4 {
                FindCoordinatorResponse::default().with_coordinators(vec![Coordinator::default()
                    .with_key(s("k"))
                    .with_host(s("h"))
                    .with_error_message(Some(s("m")))])
            } else {
                let r = FindCoordinatorResponse::default().with_host(s("h"));
                if v >= 1 {
                    r.with_error_message(Some(s("m")))
                } else {
                    r
                }
            };
            frame(&r, v)
        }
        8 => {
            let p = OffsetCommitResponsePartition::default()
                .with_partition_index(1)
                .with_error_code(2);
            let mut t = OffsetCommitResponseTopic::default().with_partitions(vec![p.clone(), p]);
            if v <= 9 {
                t = t.with_name(topic("orders"));
            }
            frame(
                &OffsetCommitResponse::default()
                    .with_throttle_time_ms(if v >= 3 { 5 } else { 0 })
                    .with_topics(vec![t.clone(), t]),
                v,
            )
        }
        9 => {
            let mut r = OffsetFetchResponse::default();
            if v >= 3 {
                r = r.with_throttle_time_ms(5);
            }
            if v <= 7 {
                let mut p = OffsetFetchResponsePartition::default()
                    .with_partition_index(1)
                    .with_committed_offset(42)
                    .with_metadata(Some(s("meta")))
                    .with_error_code(3);
                if v >= 5 {
                    p = p.with_committed_leader_epoch(4);
                }
                let t = OffsetFetchResponseTopic::default()
                    .with_name(topic("orders"))
                    .with_partitions(vec![p.clone(), p]);
                r = r.with_topics(vec![t.clone(), t]);
                if v >= 2 {
                    r = r.with_error_code(6);
                }
            } else {
                let p = OffsetFetchResponsePartitions::default()
                    .with_partition_index(1)
                    .with_committed_offset(42)
                    .with_committed_leader_epoch(4)
                    .with_metadata(Some(s("meta")))
                    .with_error_code(3);
                let mut t =
                    OffsetFetchResponseTopics::default().with_partitions(vec![p.clone(), p]);
                if v <= 9 {
                    t = t.with_name(topic("orders"));
                }
                let g = OffsetFetchResponseGroup::default()
                    .with_group_id(GroupId(s("g")))
                    .with_topics(vec![t.clone(), t])
                    .with_error_code(7);
                r = r.with_groups(vec![g.clone(), g]);
            }
            frame(&r, v)
        }
        11 => {
            let mut m = JoinGroupResponseMember::default()
                .with_member_id(s("m1"))
                .with_metadata(Bytes::from_static(b"meta"));
            if v >= 5 {
                m = m.with_group_instance_id(Some(s("i1")));
            }
            let mut r = JoinGroupResponse::default()
                .with_error_code(1)
                .with_generation_id(2)
                .with_protocol_name(Some(s("range")))
                .with_leader(s("m1"))
                .with_member_id(s("m1"))
                .with_members(vec![m.clone(), m]);
            if v >= 2 {
                r = r.with_throttle_time_ms(5);
            }
            if v >= 7 {
                r = r.with_protocol_type(Some(s("consumer")));
            }
            if v >= 9 {
                r = r.with_skip_assignment(true);
            }
            frame(&r, v)
        }
        12 => {
            let mut r = HeartbeatResponse::default().with_error_code(27);
            if v >= 1 {
                r = r.with_throttle_time_ms(5);
            }
            frame(&r, v)
        }
        13 => {
            let mut r = LeaveGroupResponse::default().with_error_code(1);
            if v >= 1 {
                r = r.with_throttle_time_ms(5);
            }
            if v >= 3 {
                let m = MemberResponse::default()
                    .with_member_id(s("m1"))
                    .with_group_instance_id(Some(s("i1")))
                    .with_error_code(2);
                r = r.with_members(vec![m.clone(), m]);
            }
            frame(&r, v)
        }
        14 => {
            let mut r = SyncGroupResponse::default()
                .with_error_code(1)
                .with_assignment(Bytes::from_static(b"assignment"));
            if v >= 1 {
                r = r.with_throttle_time_ms(5);
            }
            if v >= 5 {
                r = r
                    .with_protocol_type(Some(s("consumer")))
                    .with_protocol_name(Some(s("range")));
            }
            frame(&r, v)
        }
        15 => {
            let mut m = DescribedGroupMember::default()
                .with_member_id(s("m1"))
                .with_client_id(s("c"))
                .with_client_host(s("/10.0.0.1"))
                .with_member_metadata(Bytes::from_static(b"meta"))
                .with_member_assignment(Bytes::from_static(b"assignment"));
            if v >= 4 {
                m = m.with_group_instance_id(Some(s("i1")));
            }
            let mut g = DescribedGroup::default()
                .with_error_code(1)
                .with_group_id(GroupId(s("g")))
                .with_group_state(s("Stable"))
                .with_protocol_type(s("consumer"))
                .with_protocol_data(s("range"))
                .with_members(vec![m.clone(), m]);
            if v >= 3 {
                g = g.with_authorized_operations(0x0f);
            }
            if v >= 6 {
                g = g.with_error_message(Some(s("err")));
            }
            let mut r = DescribeGroupsResponse::default().with_groups(vec![g.clone(), g]);
            if v >= 1 {
                r = r.with_throttle_time_ms(5);
            }
            frame(&r, v)
        }
        16 => {
            let mut g = ListedGroup::default()
                .with_group_id(GroupId(s("g")))
                .with_protocol_type(s("consumer"));
            if v >= 4 {
                g = g.with_group_state(s("Stable"));
            }
            if v >= 5 {
                g = g.with_group_type(s("classic"));
            }
            let mut r = ListGroupsResponse::default()
                .with_error_code(1)
                .with_groups(vec![g.clone(), g]);
            if v >= 1 {
                r = r.with_throttle_time_ms(5);
            }
            frame(&r, v)
        }
        18 => {
            let mut r = ApiVersionsResponse::default().with_api_keys(vec![
                ApiVersion::default()
                    .with_max_version(3);
                2
            ]);
            if v >= 3 {
                r = r
                    .with_supported_features(vec![SupportedFeatureKey::default()
                        .with_name(s("f"))
                        .with_max_version(1)])
                    .with_finalized_features_epoch(2)
                    .with_finalized_features(vec![FinalizedFeatureKey::default()
                        .with_name(s("f"))
                        .with_max_version_level(1)])
                    .with_zk_migration_ready(true);
            }
            frame(&r, v)
        }
        19 => {
            let mut t = CreatableTopicResult::default()
                .with_name(topic("orders"))
                .with_error_message(Some(s("m")));
            if v >= 5 {
                t = t
                    .with_configs(Some(vec![CreatableTopicConfigs::default()
                        .with_name(s("retention.ms"))
                        .with_value(Some(s("1")))]))
                    .with_topic_config_error_code(1);
            }
            frame(
                &CreateTopicsResponse::default().with_topics(vec![t.clone(), t]),
                v,
            )
        }
        17 => frame(
            &SaslHandshakeResponse::default().with_mechanisms(vec![s("PLAIN"), s("SCRAM-SHA-512")]),
            v,
        ),
        22 => frame(&InitProducerIdResponse::default(), v),
        36 => frame(
            &SaslAuthenticateResponse::default()
                .with_error_message(Some(s("m")))
                .with_auth_bytes(bytes::Bytes::from_static(b"v=abc"))
                .with_session_lifetime_ms(if v >= 1 { 60_000 } else { 0 }),
            v,
        ),
        32 => {
            let mut c = DescribeConfigsResourceResult::default()
                .with_name(s("n"))
                .with_value(Some(s("v")))
                .with_synonyms(vec![DescribeConfigsSynonym::default().with_name(s("n"))]);
            if v >= 3 {
                c = c.with_documentation(Some(s("doc")));
            }
            let r = DescribeConfigsResult::default()
                .with_resource_name(s("orders"))
                .with_configs(vec![c.clone(), c]);
            frame(&DescribeConfigsResponse::default().with_results(vec![r]), v)
        }
        37 => {
            let r = CreatePartitionsTopicResult::default()
                .with_name(topic("orders"))
                .with_error_message(Some(s("m")));
            frame(
                &CreatePartitionsResponse::default().with_results(vec![r]),
                v,
            )
        }
        65 => {
            let t = TransactionState::default()
                .with_transactional_id(TransactionalId(s("tx")))
                .with_transaction_state(s("Ongoing"))
                .with_topics(vec![TopicData::default()
                    .with_topic(topic("orders"))
                    .with_partitions(vec![0, 1, 2])]);
            frame(
                &DescribeTransactionsResponse::default().with_transaction_states(vec![t]),
                v,
            )
        }
        _ => unreachable!("no sample for API {key}"),
    }
}

fn header_version(key: i16, v: i16) -> i16 {
    by_key::header_version(key, v).expect("a key the walk covers")
}

#[test]
fn every_version_the_crate_encodes_is_walked_to_its_last_byte() {
    for (key, v) in all_versions() {
        let f = filled(key, v);
        check(key, v, header_version(key, v), &f).unwrap_or_else(|e| panic!("API {key} v{v}: {e}"));
        crate_decode(key, v, &f);
    }
}

#[test]
fn the_crate_alone_over_allocates_on_what_the_walk_refuses() {
    // 100,000 brokers announced in a frame of a few dozen bytes: harmless here, but the
    // same frame with i32::MAX aborts the process. The bound of `crate_decode` is what
    // catches it, so this also shows that bound can fail.
    let mut f = filled(3, 1);
    f[4..8].copy_from_slice(&100_000i32.to_be_bytes());
    assert!(check(3, 1, 0, &f).is_err());
    let mut b = Bytes::copy_from_slice(&f);
    let ((), largest) = largest_allocation(|| decode_with_crate(3, 1, &mut b));
    assert!(
        largest > ALLOC_PER_FRAME_BYTE * f.len() + SLACK,
        "{largest}"
    );
}

#[test]
fn every_strict_prefix_of_a_frame_is_refused() {
    for (key, v) in all_versions() {
        let f = filled(key, v);
        for cut in 0..f.len() {
            assert!(
                check(key, v, header_version(key, v), &f[..cut]).is_err(),
                "API {key} v{v} accepted {cut} of {} bytes",
                f.len()
            );
        }
    }
}

#[test]
fn a_count_larger_than_the_frame_is_refused_before_the_crate_sees_it() {
    // Metadata v1: header (4), then the broker array count. i32::MAX brokers would make
    // the crate ask for i32::MAX times a broker struct.
    let mut f = filled(3, 1);
    f[4..8].copy_from_slice(&i32::MAX.to_be_bytes());
    let e = check(3, 1, 0, &f).unwrap_err();
    assert!(e.what.contains("array of 2147483647 elements"), "{e}");
    assert_eq!(e.at, 4);
    // The same in a flexible version (compact count as a varint).
    let mut f = filled(3, 9);
    // header: correlation id + empty tagged section; then throttle (4), then the count.
    let at = 4 + 1 + 4;
    f.splice(at..at + 1, [0xff, 0xff, 0xff, 0xff, 0x07]);
    let e = check(3, 9, 1, &f).unwrap_err();
    assert!(e.what.contains("elements"), "{e}");
}

#[test]
fn a_known_tag_must_fill_exactly_its_announced_size() {
    // ApiVersions v3 with only tag 1 (finalized features epoch, an int64): 8 bytes.
    let mut f = frame(
        &ApiVersionsResponse::default().with_finalized_features_epoch(5),
        3,
    );
    let n = f.len();
    // The body ends: [tag count 1][tag 1][size 8][8 bytes].
    assert_eq!(&f[n - 11..n - 8], &[1, 1, 8]);
    assert!(check(18, 3, 0, &f).is_ok());
    // Announce 9 bytes and add one: the crate would read 8 and take the 9th as the next
    // tag's header, which we never checked.
    f[n - 9] = 9;
    f.push(0);
    let e = check(18, 3, 0, &f).unwrap_err();
    assert!(e.what.contains("announces 9 bytes but holds 8"), "{e}");
}

#[test]
fn unknown_apis_and_versions_are_refused() {
    assert!(check(99, 0, 0, &[0; 8])
        .unwrap_err()
        .what
        .contains("no schema"));
    assert!(check(1, 3, 0, &[0; 8])
        .unwrap_err()
        .what
        .contains("version 3"));
}

/// The most memory the crate may ask for at once per byte of a frame that passed the
/// walk: the largest ratio of a decoded struct's size to its smallest encoding.
pub(crate) const ALLOC_PER_FRAME_BYTE: usize = 16;
/// Allocations of a fixed size whatever the input: an error's backtrace, when
/// RUST_BACKTRACE asks for one.
const SLACK: usize = 64 * 1024;

/// Decodes with the crate, as the connection does once the walk passed, and checks
/// that no single allocation exceeded the bound the walk promises.
fn crate_decode(key: i16, v: i16, body: &[u8]) {
    let mut b = Bytes::copy_from_slice(body);
    let ((), largest) = largest_allocation(|| decode_with_crate(key, v, &mut b));
    assert!(
        largest <= ALLOC_PER_FRAME_BYTE * body.len() + SLACK,
        "API {key} v{v}: a {}-byte frame made the crate allocate {largest} bytes at once",
        body.len()
    );
}

fn decode_with_crate(key: i16, v: i16, b: &mut Bytes) {
    by_key::crate_decode(key, v, b);
}

fn key_and_version() -> impl Strategy<Value = (i16, i16)> {
    proptest::sample::select(all_versions())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("WANMIRROR_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
    ))]

    /// Fuzz: any bytes at all. The walk never panics, and whatever it passes the crate
    /// decodes without a large allocation (a failed one would abort this test).
    #[test]
    fn arbitrary_bytes_never_panic((key, v) in key_and_version(), body in proptest::collection::vec(any::<u8>(), 0..256)) {
        if check(key, v, header_version(key, v), &body).is_ok() {
            crate_decode(key, v, &body);
        }
    }

    /// Fuzz: valid frames with a few bytes overwritten, which reaches far deeper into
    /// the structure than random bytes do.
    #[test]
    fn mutated_frames_never_panic(
        (key, v) in key_and_version(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut f = filled(key, v);
        for (at, byte) in edits {
            let i = at.index(f.len());
            f[i] = byte;
        }
        if check(key, v, header_version(key, v), &f).is_ok() {
            crate_decode(key, v, &f);
        }
    }
}
