//! The QUIC peer end to end: `wanmirror serve` in front of a real tansu source, the
//! mirror reading through it into a real tansu destination, librdkafka producing and
//! reading. Each test owns its brokers, its serve process and its ports.

mod common;

use std::time::Duration;

use common::peer::*;
use common::*;
use wanmirror::kafka::reader::PartitionReader;
use wanmirror::source::Source;

/// Every destination batch's content and shape (base offset, offset delta, count,
/// attributes, timestamps, records section): what must match between a copy through
/// the peer and a copy over TCP. Producer fields and the CRC differ by design.
fn batch_shapes(
    bootstrap: &str,
    topic: &str,
    partition: i32,
) -> Vec<(i64, i32, i32, i16, i64, i64, Vec<u8>)> {
    runtime().block_on(async {
        let c: Source =
            wanmirror::kafka::client::Cluster::new("t", bootstrap, Default::default()).into();
        let (_, end) = c.bounds(topic, partition).await.expect("bounds");
        let r = PartitionReader {
            source: &c,
            topic,
            partition,
            fetch_bytes: 1 << 20,
        };
        let mut out = Vec::new();
        let mut at = 0;
        while at < end {
            let batches = r.fetch(at).await.expect("fetch");
            assert!(!batches.is_empty(), "{topic}/{partition}: nothing at {at}");
            for b in batches {
                let h = b.header;
                at = h.next_offset();
                out.push((
                    h.base_offset,
                    h.last_offset_delta,
                    h.record_count,
                    h.attributes,
                    h.base_timestamp,
                    h.max_timestamp,
                    b.bytes[61..].to_vec(),
                ));
            }
        }
        out
    })
}

#[test]
fn a_copy_through_the_peer_is_offset_and_byte_identical() {
    let pair = Pair::start();
    let codecs = ["none", "gzip", "snappy", "lz4", "zstd"];
    for codec in codecs {
        let topic = format!("codec-{codec}");
        create_topic(&pair.a.bootstrap(), &topic, 2);
        let p = producer(&pair.a.bootstrap(), codec, true);
        for part in 0..2 {
            produce(
                &p,
                &topic,
                part,
                &sample(2000, part as u64 + 3, |i| (i * 13) % 2000),
            );
        }
    }
    create_topic(&pair.a.bootstrap(), "sizes", 1);
    let recs = sized_records(&[0, 1, 100, 10_000, 100_000, 500_000, 1_000_000]);
    produce(
        &producer(&pair.a.bootstrap(), "none", false),
        "sizes",
        0,
        &recs,
    );

    let certs = certs(&pair.dir.path().join("pki"), &["dc-b"]);
    let port = free_udp_port();
    let sc = serve_config(
        pair.dir.path(),
        &certs,
        &pair.a.bootstrap(),
        port,
        &[("dc-b", &["codec-.*", "sizes"])],
    );
    let serve = Serve::start(sc, port);
    let cfg = pair.dir.path().join("peer.toml");
    peer_config(
        &cfg,
        &format!("127.0.0.1:{port}"),
        &certs,
        "dc-b",
        &pair.b.bootstrap(),
        &["codec-.*", "sizes"],
        "",
    );
    let (st, log) = mirror_to_end(&cfg);
    assert!(st.success(), "mirror through the peer failed: {log}");
    assert!(log.contains("source read through a peer"), "{log}");
    assert!(
        serve.log_text().contains("client connected"),
        "{}",
        serve.log_text()
    );

    // The same topics over TCP into other names: the batches must be the same.
    let tcp = pair.config(
        "tcp.toml",
        &["codec-.*", "sizes"],
        "rename = \"tcp.{topic}\"",
    );
    let (st, log) = mirror_to_end(&tcp);
    assert!(st.success(), "mirror over TCP failed: {log}");
    let b = pair.b.bootstrap();
    for codec in codecs {
        let topic = format!("codec-{codec}");
        for part in 0..2 {
            assert_eq!(
                assert_same(&pair, &topic, &format!("dc-a.{topic}"), part),
                2000
            );
            let (q, t) = (
                batch_shapes(&b, &format!("dc-a.{topic}"), part),
                batch_shapes(&b, &format!("tcp.{topic}"), part),
            );
            assert!(q.len() > 1, "{topic}/{part}: {} batches", q.len());
            assert!(
                q == t,
                "{topic}/{part}: batches through the peer differ from the TCP copy's"
            );
        }
    }
    assert_eq!(assert_same(&pair, "sizes", "dc-a.sizes", 0), recs.len());
    assert!(batch_shapes(&b, "dc-a.sizes", 0) == batch_shapes(&b, "tcp.sizes", 0));
}
