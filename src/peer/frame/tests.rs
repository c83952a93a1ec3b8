use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._\\-é]{0,40}"
}

fn frame() -> impl Strategy<Value = Frame> {
    let partition =
        (any::<i32>(), any::<i64>(), any::<i64>()).prop_map(|(index, log_start, end)| {
            PartitionInfo {
                index,
                log_start,
                end,
            }
        });
    let topic = (
        name(),
        prop::collection::vec((name(), name()), 0..4),
        prop::collection::vec(partition, 0..5),
    )
        .prop_map(|(name, configs, partitions)| TopicInfo {
            name,
            configs,
            partitions,
        });
    prop_oneof![
        (any::<u16>(), any::<u16>(), name()).prop_map(|(min, max, agent)| Frame::Hello {
            min,
            max,
            agent
        }),
        (any::<u16>(), name(), name()).prop_map(|(version, cluster, agent)| Frame::Welcome {
            version,
            cluster,
            agent
        }),
        (
            prop::collection::vec(name(), 0..5),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(topics, configs, bounds)| Frame::List {
                topics,
                configs,
                bounds
            }),
        prop::collection::vec(topic, 0..4).prop_map(|topics| Frame::Topics { topics }),
        (
            name(),
            any::<i32>(),
            any::<i64>(),
            any::<i64>(),
            any::<u32>(),
            any::<u32>()
        )
            .prop_map(|(topic, partition, offset, end, max_bytes, max_wait_ms)| {
                Frame::Fetch {
                    topic,
                    partition,
                    offset,
                    end,
                    max_bytes,
                    max_wait_ms,
                }
            }),
        (any::<i64>(), any::<Option<(i64, i64)>>()).prop_map(|(high_watermark, first)| {
            Frame::Head {
                high_watermark,
                first,
            }
        }),
        (any::<u64>(), any::<u32>()).prop_map(|(first, count)| Frame::Counts { first, count }),
        prop::collection::vec(any::<u64>(), 0..10).prop_map(|counts| Frame::LeafCounts { counts }),
        (any::<i64>(), prop::collection::vec(any::<u8>(), 0..300)).prop_map(
            |(high_watermark, r)| {
                Frame::Batches {
                    high_watermark,
                    records: Bytes::from(r),
                }
            }
        ),
        (name(), any::<i32>(), any::<i64>(), any::<u32>()).prop_map(
            |(topic, partition, offset, max_wait_ms)| Frame::Subscribe {
                topic,
                partition,
                offset,
                max_wait_ms,
            }
        ),
        (
            name(),
            any::<i32>(),
            any::<i64>(),
            any::<i64>(),
            any::<i64>()
        )
            .prop_map(|(topic, partition, from, to, leaf_offsets)| Frame::Tree {
                topic,
                partition,
                from,
                to,
                leaf_offsets
            }),
        any::<u64>().prop_map(|leaves| Frame::TreeBuilt { leaves }),
        prop::collection::vec((any::<u32>(), any::<u64>()), 0..20)
            .prop_map(|ids| Frame::Nodes { ids }),
        prop::collection::vec(any::<Option<[u8; 32]>>(), 0..10)
            .prop_map(|hashes| Frame::Hashes { hashes }),
        (any::<u16>(), any::<i16>(), name()).prop_map(|(c, kafka, message)| Frame::Error {
            code: ErrorCode::from_u16(c),
            kafka,
            message
        }),
    ]
}

proptest! {
    #[test]
    fn frames_round_trip_one_by_one_and_back_to_back(frames in prop::collection::vec(frame(), 1..6)) {
        let mut buf = BytesMut::new();
        for f in &frames {
            f.encode(&mut buf);
        }
        let mut got = Vec::new();
        while let Some(f) = decode(&mut buf).unwrap() {
            got.push(f);
        }
        prop_assert_eq!(got, frames);
        prop_assert!(finish(&buf).is_ok());
    }

    #[test]
    fn every_truncation_waits_for_more_and_then_fails_at_the_end(f in frame(), cut in any::<prop::sample::Index>()) {
        let whole = f.to_bytes();
        let n = cut.index(whole.len());
        let mut buf = BytesMut::from(&whole[..n]);
        // Not a whole frame yet: no frame, no error, nothing taken.
        prop_assert_eq!(decode(&mut buf), Ok(None));
        prop_assert_eq!(buf.len(), n);
        // The stream ends there: the partial frame is an error.
        if n > 0 {
            prop_assert_eq!(finish(&buf), Err(FrameError::Truncated(n)));
        }
    }

    #[test]
    fn a_frame_cut_short_inside_its_length_is_an_error(f in frame(), cut in 1usize..64) {
        // The length prefix is rewritten to cover fewer bytes: the fields run past
        // the frame's end (or a field's length does), which must be an error.
        let whole = f.to_bytes();
        let body = whole.len() - 4;
        prop_assume!(cut < body);
        let short = body - cut;
        let mut b = BytesMut::new();
        b.extend_from_slice(&(short as u32).to_be_bytes());
        b.extend_from_slice(&whole[4..4 + short]);
        match decode(&mut b) {
            // Batches carries the rest of its frame as bytes: a shorter frame is
            // still a frame (whose records then fail to split as batches upstream).
            Ok(Some(Frame::Batches { .. })) => {
                let was_batches = matches!(f, Frame::Batches { .. });
                prop_assert!(was_batches);
            }
            Ok(Some(g)) => prop_assert!(false, "{g:?} decoded from a frame cut short"),
            Ok(None) => prop_assert!(false, "a whole frame was not taken"),
            Err(_) => {}
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut buf = BytesMut::from(&bytes[..]);
        for _ in 0..64 {
            match decode(&mut buf) {
                Ok(Some(_)) => continue,
                _ => break,
            }
        }
    }

    #[test]
    fn a_flipped_byte_is_an_error_or_another_valid_frame(f in frame(), at in any::<prop::sample::Index>(), x in 1u8..) {
        let mut raw = f.to_bytes().to_vec();
        let i = at.index(raw.len());
        raw[i] ^= x;
        let mut buf = BytesMut::from(&raw[..]);
        // Whatever it decodes to, it must not panic; if it decodes, re-encoding gives
        // the bytes it came from (nothing was guessed or skipped).
        if let Ok(Some(g)) = decode(&mut buf) {
            let again = g.to_bytes();
            prop_assert_eq!(&again[..], &raw[..raw.len() - buf.len()]);
        }
    }
}

#[test]
fn a_frame_announcing_more_than_the_limit_is_refused_before_any_allocation() {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&((MAX_FRAME + 1) as u32).to_be_bytes());
    buf.extend_from_slice(&[0x07]);
    assert_eq!(decode(&mut buf), Err(FrameError::TooLarge(MAX_FRAME + 1)));
}

#[test]
fn a_count_larger_than_the_frame_can_hold_is_an_error() {
    // A Nodes frame claiming four billion ids in 4 bytes.
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&5u32.to_be_bytes());
    buf.extend_from_slice(&[0x0b, 0xff, 0xff, 0xff, 0xff]);
    assert!(matches!(
        decode(&mut buf),
        Err(FrameError::Short {
            what: "node count",
            ..
        })
    ));
}

#[test]
fn unknown_types_and_bad_flags_are_named() {
    let mut buf = BytesMut::from(&[0, 0, 0, 1, 0x55][..]);
    assert_eq!(decode(&mut buf), Err(FrameError::UnknownType(0x55)));
    let mut buf = BytesMut::new();
    Frame::TreeBuilt { leaves: 3 }.encode(&mut buf);
    buf.extend_from_slice(&[0, 0, 0, 2, 0x0a, 9]);
    assert!(decode(&mut buf).unwrap().is_some());
    assert!(matches!(decode(&mut buf), Err(FrameError::Short { .. })));
}

#[test]
fn long_strings_are_cut_at_a_character_boundary() {
    let s = "é".repeat(40_000);
    let f = Frame::Error {
        code: ErrorCode::Internal,
        kafka: 0,
        message: s,
    };
    let mut buf = BytesMut::from(&f.to_bytes()[..]);
    match decode(&mut buf).unwrap() {
        Some(Frame::Error { message, .. }) => {
            assert!(message.len() <= u16::MAX as usize);
            assert!(message.chars().all(|c| c == 'é'));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn batches_sent_in_two_parts_are_the_same_frame() {
    let records = Bytes::from_static(b"0123456789");
    let [h, r] = Frame::batches_parts(42, records.clone());
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&h);
    buf.extend_from_slice(&r);
    let whole = Frame::Batches {
        high_watermark: 42,
        records,
    };
    assert_eq!(&buf[..], &whole.to_bytes()[..]);
}
