//! The compatibility suite: the mirror's guarantees against real Apache Kafka (KRaft,
//! started by `common::kafka`), with librdkafka producing and reading. Where tansu
//! cannot show a case (DeleteRecords, compaction, ListOffsets, replication, leader
//! changes, transactions, secured listeners, MirrorMaker 2, the peer's serve side reading
//! Kafka), it is shown here.

mod common;

use std::time::Duration;

use common::kafka::{KafkaCluster, Shape};
use common::scenarios::{self, topic};
use common::*;

/// Two single-node Kafka clusters; records of up to 2 MiB are accepted.
fn kafka_pair() -> Pair<KafkaCluster, KafkaCluster> {
    let shape = Shape::single().with("message.max.bytes", "2097152");
    // Start both JVMs at once: each takes a few seconds to come up.
    let b = std::thread::spawn({
        let shape = shape.clone();
        move || KafkaCluster::start(shape)
    });
    let a = KafkaCluster::start(shape);
    Pair::with(a, b.join().expect("start destination cluster"))
}

#[test]
fn offsets_identical_with_every_codec_headers_and_large_records() {
    let pair = kafka_pair();
    let codecs = ["none", "gzip", "snappy", "lz4", "zstd"];
    for codec in codecs {
        let t = format!("codec-{codec}");
        topic(&pair.a, &t, 2);
        let p = producer(&pair.a.bootstrap(), codec, true);
        for part in 0..2 {
            produce(
                &p,
                &t,
                part,
                &sample(2000, part as u64, |i| (i * 13) % 3000),
            );
        }
    }
    // Records from empty up to 1 MB, each in a batch of its own.
    topic(&pair.a, "sizes", 1);
    let recs = sized_records(&[0, 1, 100, 10_000, 100_000, 500_000, 1_000_000]);
    let big = producer(&pair.a.bootstrap(), "none", false);
    for r in &recs {
        produce(&big, "sizes", 0, std::slice::from_ref(r));
    }
    let cfg = pair.config("m.toml", &["codec-.*", "sizes"], "");
    let (st, log) = mirror_to_end(&cfg);
    assert!(st.success(), "mirror failed: {log}");
    for codec in codecs {
        let t = format!("codec-{codec}");
        for part in 0..2 {
            assert_eq!(assert_same(&pair, &t, &format!("dc-a.{t}"), part), 2000);
        }
    }
    assert_eq!(assert_same(&pair, "sizes", "dc-a.sizes", 0), recs.len());
}

#[test]
fn kill_nine_mid_copy_loses_and_duplicates_nothing() {
    let at_kills = scenarios::kill_nine_at_random_moments(&kafka_pair(), 10, 300..1500);
    let n = scenarios::mid_copy(&at_kills);
    assert!(
        n >= 3,
        "only {n} of 10 kills landed mid-copy (destination, source): {at_kills:?}"
    );
}

/// Kafka does not refuse the older instance's writes (both continue the partition's
/// one producer sequence, so the broker appends each batch once); the coordinator's
/// epoch, watched, tells the older instance to stop.
#[test]
fn a_second_instance_fences_the_first() {
    scenarios::a_second_instance_fences_the_first(
        &kafka_pair(),
        "fencing lock wanmirror.dc-a.dc-b is now held by",
    );
}

#[test]
fn refuses_a_partition_whose_destination_holds_a_foreign_record() {
    scenarios::refuses_a_foreign_record(&kafka_pair());
}

/// On Kafka, ListOffsets(LATEST) with read_uncommitted is the high watermark, also when
/// the last batch holds many records (tansu 0.6 answers its base offset + 1 there).
#[test]
fn list_offsets_latest_is_the_high_watermark() {
    use bytes::Bytes;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use wanmirror::kafka::records::{encode, Content};
    use wanmirror::source::reader::PartitionReader;

    let pair = kafka_pair();
    topic(&pair.a, "lo", 1);
    let (latest, bounds, last_batch) = runtime().block_on(async {
        let c = pair.src();
        // Two batches: 10 records, then 490 (our encoder; the broker assigns offsets).
        for n in [10, 490] {
            let recs: Vec<Content> = (0..n)
                .map(|i| Content {
                    offset: i,
                    timestamp: recent_ms() + i,
                    key: Some(Bytes::from(format!("k{i}"))),
                    value: Some(Bytes::from(vec![7u8; 100])),
                    headers: vec![],
                })
                .collect();
            let batch = encode(&recs, 0).expect("encode");
            c.produce("lo", 0, batch, Duration::from_secs(10))
                .await
                .expect("produce");
        }
        let latest = c.list_offset("lo", 0, -1).await.expect("list offsets");
        let bounds = c.bounds("lo", 0).await.expect("bounds");
        let reader = PartitionReader {
            source: &c.clone().into(),
            topic: "lo",
            partition: 0,
            fetch_bytes: 1 << 20,
        };
        let batches = reader.fetch(0).await.expect("fetch");
        let last = batches.last().expect("batches").header;
        (latest, bounds, (last.base_offset, last.record_count))
    });
    assert_eq!(last_batch, (10, 490), "the last batch holds 490 records");
    assert_eq!(latest, 500, "ListOffsets(LATEST) is the high watermark");
    assert_eq!(bounds, (0, 500));
    // librdkafka's own ListOffsets agrees.
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", pair.a.bootstrap())
        .create()
        .expect("consumer");
    let (low, high) = c
        .fetch_watermarks("lo", 0, Duration::from_secs(10))
        .expect("watermarks");
    assert_eq!((low, high), (0, 500));
}

/// `--stop-at-end` on Kafka: a run ends at the source end, and a second run, after
/// more records arrived, picks up exactly where the first stopped.
#[test]
fn stop_at_end_then_resume_copies_each_record_once() {
    let pair = kafka_pair();
    topic(&pair.a, "s", 3);
    let p = producer(&pair.a.bootstrap(), "zstd", true);
    for part in 0..3 {
        produce(&p, "s", part, &sample(3000, 40 + part as u64, |i| i % 700));
    }
    let cfg = pair.config("m.toml", &["s"], "");
    let (st, log) = mirror_to_end(&cfg);
    assert!(st.success(), "{log}");
    for part in 0..3 {
        assert_eq!(end_offset(&pair.b.bootstrap(), "dc-a.s", part), 3000);
        produce(&p, "s", part, &sample(1000, 50 + part as u64, |i| i % 700));
    }
    let (st, log) = mirror_to_end(&cfg);
    assert!(st.success(), "{log}");
    for part in 0..3 {
        assert_eq!(assert_same(&pair, "s", "dc-a.s", part), 4000);
    }
}

/// An admin client of librdkafka for what our client does not do (DeleteRecords,
/// CreatePartitions on the source).
fn admin(bootstrap: &str) -> rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> {
    rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client")
}

/// DeleteRecords: moves partition 0's log start of `topic` to `offset`.
fn delete_records_before(bootstrap: &str, topic: &str, offset: i64) {
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Offset(offset))
        .expect("tpl");
    runtime()
        .block_on(admin(bootstrap).delete_records(&tpl, &rdkafka::admin::AdminOptions::new()))
        .expect("DeleteRecords");
}

fn offset_map_keys<B: Broker>(b: &B) -> Vec<String> {
    consume_all(&b.bootstrap(), "__wanmirror_offsets", 0)
        .into_iter()
        .filter_map(|r| r.key.map(|k| String::from_utf8_lossy(&k).into_owned()))
        .collect()
}

fn is_filler(r: &Rec) -> bool {
    r.headers
        .iter()
        .any(|(k, _)| k == wanmirror::kafka::records::FILLER_HEADER)
}

/// A source log whose start DeleteRecords moved to 400: the empty destination gets 400
/// filler records, then the records at their own offsets, and the offset map says so.
#[test]
fn start_policy_pad_on_a_log_start_moved_by_delete_records() {
    let pair = kafka_pair();
    topic(&pair.a, "trimmed", 1);
    let p = producer(&pair.a.bootstrap(), "lz4", true);
    let recs = sample(1000, 5, |i| i % 300);
    produce(&p, "trimmed", 0, &recs);
    delete_records_before(&pair.a.bootstrap(), "trimmed", 400);
    let start = runtime()
        .block_on(async { pair.src().log_start("trimmed", 0).await })
        .expect("log start");
    assert_eq!(start, 400, "DeleteRecords moved the log start");

    let cfg = pair.config("m.toml", &["trimmed"], "");
    let (st, log) = mirror_to_end(&cfg);
    assert!(st.success(), "{log}");
    assert!(log.contains("offset deviation"), "{log}");
    let d = consume_all(&pair.b.bootstrap(), "dc-a.trimmed", 0);
    assert_eq!(d.len(), 1000);
    for (i, r) in d.iter().enumerate() {
        assert_eq!(r.offset, i as i64);
        if i < 400 {
            assert!(is_filler(r), "offset {i} must be a filler: {r:?}");
            assert_eq!(r.value, None);
        } else {
            assert_eq!(r, &recs[i], "offset {i}");
        }
    }
    let keys = offset_map_keys(&pair.b);
    assert!(
        keys.contains(&"offsets/dc-a.trimmed/0/0".to_string()),
        "{keys:?}"
    );

    // And with start_policy = "refuse", a fresh copy is refused with nothing written.
    let cfg = pair.config(
        "r.toml",
        &["trimmed"],
        "rename = \"copy2.{topic}\"\nstart_policy = \"refuse\"",
    );
    let (st, log) = mirror_to_end(&cfg);
    assert_eq!(st.code(), Some(1), "{log}");
    assert!(log.contains("start_policy"), "{log}");
    assert_eq!(end_offset(&pair.b.bootstrap(), "copy2.trimmed", 0), 0);
}

/// A topic the log cleaner has really compacted (small segments, a cleaner that ran):
/// its offsets have holes between and inside batches. `gap_policy = "fill"` puts a
/// filler at every hole; every surviving record keeps its offset.
#[test]
fn gap_policy_fill_on_a_really_compacted_topic() {
    let pair = kafka_pair();
    create_topic_with(
        &pair.a.bootstrap(),
        "compacted",
        1,
        1,
        &[
            ("cleanup.policy", "compact"),
            ("segment.ms", "100"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("min.compaction.lag.ms", "0"),
            ("delete.retention.ms", "100"),
        ],
    );
    let p = producer(&pair.a.bootstrap(), "lz4", true);
    // 30 rounds of 40 records; each round lands in a new segment. Every third record
    // has a key of its own and survives; the others share 10 keys, so the cleaner
    // removes all but their latest values and leaves holes between the survivors.
    let mut n = 0;
    for round in 0..30 {
        let recs: Vec<Rec> = (0..40)
            .map(|i| Rec {
                offset: n + i,
                timestamp: Some(recent_ms() + n + i),
                key: Some(if i % 3 == 0 {
                    format!("unique-{round}-{i}").into_bytes()
                } else {
                    format!("key-{}", (i * 7 + round) % 10).into_bytes()
                }),
                value: Some(format!("round {round} record {i}").into_bytes()),
                headers: vec![],
            })
            .collect();
        produce(&p, "compacted", 0, &recs);
        n += 40;
        std::thread::sleep(Duration::from_millis(150));
    }
    let mut src = Vec::new();
    eventually(Duration::from_secs(90), "the cleaner to compact", || {
        src = consume_all(&pair.a.bootstrap(), "compacted", 0);
        src.len() < 900
    });
    let holes = src
        .windows(2)
        .filter(|w| w[1].offset != w[0].offset + 1)
        .count();
    assert!(
        holes > 10,
        "compaction must leave holes: {holes} in {} records from {:?} to {:?}",
        src.len(),
        src.first().map(|r| r.offset),
        src.last().map(|r| r.offset)
    );

    let cfg = pair.config("m.toml", &["compacted"], "");
    let (st, log) = mirror_to_end(&cfg);
    assert!(st.success(), "{log}");
    let d = consume_all(&pair.b.bootstrap(), "dc-a.compacted", 0);
    let end = end_offset(&pair.a.bootstrap(), "compacted", 0);
    assert_eq!(d.len() as i64, end, "dense copy up to the source end");
    let by_offset: std::collections::HashMap<i64, &Rec> =
        src.iter().map(|r| (r.offset, r)).collect();
    let mut fillers = 0;
    for r in &d {
        match by_offset.get(&r.offset) {
            Some(s) => assert_eq!(*s, r, "offset {}", r.offset),
            None => {
                assert!(
                    is_filler(r),
                    "offset {} is a hole and must be a filler",
                    r.offset
                );
                fillers += 1;
            }
        }
    }
    assert_eq!(fillers as i64, end - src.len() as i64);
    let keys = offset_map_keys(&pair.b);
    assert!(
        keys.iter()
            .any(|k| k.starts_with("offsets/dc-a.compacted/0/")),
        "{keys:?}"
    );
}

/// The source topic gains partitions while the mirror runs: the destination grows with
/// CreatePartitions and the new partitions are copied offset-identically.
#[test]
fn destination_grows_when_the_source_gains_partitions() {
    let pair = kafka_pair();
    topic(&pair.a, "grow", 2);
    let p = producer(&pair.a.bootstrap(), "snappy", true);
    for part in 0..2 {
        produce(&p, "grow", part, &sample(300, part as u64, |i| i % 200));
    }
    let cfg = pair.config("m.toml", &["grow"], "tail_wait_ms = 100");
    let mut m = Mirror::spawn(&cfg, &[]);
    let b = pair.b.bootstrap();
    eventually(Duration::from_secs(60), "first copy", || {
        topic_exists(&b, "dc-a.grow") && end_offset(&b, "dc-a.grow", 1) == 300
    });
    let grown = runtime()
        .block_on(admin(&pair.a.bootstrap()).create_partitions(
            &[rdkafka::admin::NewPartitions::new("grow", 4)],
            &rdkafka::admin::AdminOptions::new(),
        ))
        .expect("CreatePartitions");
    assert!(grown.iter().all(|r| r.is_ok()), "{grown:?}");
    eventually(
        Duration::from_secs(30),
        "source leaders for new partitions",
        || {
            runtime().block_on(async {
            matches!(pair.src().topic("grow").await, Ok(Some(t)) if t.partitions.len() == 4 && t.partitions.iter().all(|p| p.leader >= 0))
        })
        },
    );
    // A new producer: the first one's metadata does not know the new partitions yet.
    let p = producer(&pair.a.bootstrap(), "snappy", true);
    for part in 0..4 {
        produce(
            &p,
            "grow",
            part,
            &sample(200, 10 + part as u64, |i| i % 200),
        );
    }
    eventually(Duration::from_secs(90), "new partitions copied", || {
        runtime().block_on(async {
            matches!(pair.dst().topic("dc-a.grow").await, Ok(Some(t)) if t.partitions.len() == 4)
        }) && end_offset(&b, "dc-a.grow", 3) == 200
            && end_offset(&b, "dc-a.grow", 0) == 500
    });
    assert!(
        m.log_text().contains("destination topic grown"),
        "{}",
        m.log_text()
    );
    m.signal(15);
    assert!(
        m.wait(Duration::from_secs(30)).success(),
        "{}",
        m.log_text()
    );
    for (part, n) in [(0, 500), (1, 500), (2, 200), (3, 200)] {
        assert_eq!(assert_same(&pair, "grow", "dc-a.grow", part), n);
    }
}

/// A transactional topic is refused exactly: the partition with transactional batches
/// stops at the first one, with its offset named; the others are copied; nothing from
/// the transaction is written.
#[test]
fn transactional_batches_are_refused_exactly() {
    use rdkafka::producer::Producer;
    let pair = kafka_pair();
    topic(&pair.a, "tx", 2);
    let plain = producer(&pair.a.bootstrap(), "none", true);
    produce(&plain, "tx", 0, &sample(100, 1, |i| i % 50));
    produce(&plain, "tx", 1, &sample(100, 2, |i| i % 50));
    let txp: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", pair.a.bootstrap())
        .set("transactional.id", "compat-tx")
        .create()
        .expect("transactional producer");
    txp.init_transactions(Duration::from_secs(30))
        .expect("init transactions");
    txp.begin_transaction().expect("begin");
    produce(&txp, "tx", 0, &sample(20, 3, |i| i % 50));
    txp.commit_transaction(Duration::from_secs(30))
        .expect("commit");
    // Partition 0 now holds 100 plain records, 20 transactional ones and a commit
    // marker at 120; partition 1 only plain records.
    assert_eq!(end_offset(&pair.a.bootstrap(), "tx", 0), 121);

    let cfg = pair.config("m.toml", &["tx"], "");
    let (st, log) = mirror_to_end(&cfg);
    assert_eq!(st.code(), Some(1), "{log}");
    assert!(log.contains("tx/0"), "{log}");
    assert!(log.contains("offset 100"), "{log}");
    assert!(log.contains("transactional"), "{log}");
    assert_eq!(end_offset(&pair.b.bootstrap(), "dc-a.tx", 0), 100);
    assert_eq!(assert_same_prefix(&pair, "tx", "dc-a.tx", 0), 100);
    assert_eq!(assert_same(&pair, "tx", "dc-a.tx", 1), 100);
}

/// The destination's records equal the source's first records.
fn assert_same_prefix<A: Broker, B: Broker>(
    pair: &Pair<A, B>,
    s: &str,
    d: &str,
    part: i32,
) -> usize {
    let src = consume_all(&pair.a.bootstrap(), s, part);
    let dst = consume_all(&pair.b.bootstrap(), d, part);
    assert!(dst.len() <= src.len());
    for (x, y) in src.iter().zip(&dst) {
        assert_eq!(x, y, "{s}/{part} differs at offset {}", x.offset);
    }
    dst.len()
}

/// The leader of partition `part`, as the cluster's metadata names it.
fn leader<B: Broker>(b: &B, t: &str, part: i32) -> i32 {
    runtime().block_on(async {
        let c = wanmirror::kafka::client::Cluster::new(
            "t",
            &b.bootstrap(),
            wanmirror::kafka::connection::SocketOptions::default(),
        );
        let meta = c.topic(t).await.expect("metadata").expect("topic");
        meta.partitions
            .iter()
            .find(|p| p.index == part)
            .map(|p| p.leader)
            .expect("partition")
    })
}

/// A destination of three brokers (replication factor 3, min.insync.replicas 2, the
/// mirror producing with acks=all): the leader of a partition being written is killed
/// while a live stream is mirrored. The mirror goes on with the new leader and the copy
/// is exact: no batch acknowledged by the old leader is lost, none is written twice
/// (docs/offsets.md, "Replicated destinations").
#[test]
fn replicated_destination_survives_its_leader_killed_mid_copy() {
    let a = std::thread::spawn(|| KafkaCluster::start(Shape::single()));
    let b = KafkaCluster::start(Shape::three());
    let mut pair = Pair::with(a.join().expect("source"), b);
    topic(&pair.a, "rep", 2);
    const ROUNDS: usize = 40;
    const PER_ROUND: usize = 500;
    let cfg = pair.config("m.toml", &["rep"], "tail_wait_ms = 100");
    let mut m = Mirror::spawn(&cfg, &[]);
    // The source is written while the mirror runs, for several seconds.
    let source = pair.a.bootstrap();
    let writer = std::thread::spawn(move || {
        let p = producer(&source, "lz4", true);
        for round in 0..ROUNDS {
            for part in 0..2 {
                let seed = (round * 2 + part) as u64;
                produce(
                    &p,
                    "rep",
                    part as i32,
                    &sample(PER_ROUND, seed, |i| (i * 31) % 1200),
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let bs = pair.b.bootstrap();
    eventually(Duration::from_secs(60), "copy under way", || {
        topic_exists(&bs, "dc-a.rep") && end_offset(&bs, "dc-a.rep", 0) > 3 * PER_ROUND as i64
    });
    let victim = leader(&pair.b, "dc-a.rep", 0);
    pair.b.kill(victim);
    let at_kill = end_offset(&pair.b.bootstrap(), "dc-a.rep", 0);
    let total = (ROUNDS * PER_ROUND) as i64;
    writer.join().expect("writer");
    assert!(
        at_kill < total,
        "the kill must land mid-copy (destination at {at_kill} of {total})"
    );
    eventually(Duration::from_secs(120), "the rest of the stream", || {
        (0..2).all(|part| end_offset(&bs, "dc-a.rep", part) == total)
    });
    let new_leader = leader(&pair.b, "dc-a.rep", 0);
    assert_ne!(new_leader, victim, "partition 0 has a new leader");
    m.signal(15);
    assert!(
        m.wait(Duration::from_secs(30)).success(),
        "{}",
        m.log_text()
    );
    for part in 0..2 {
        assert_eq!(assert_same(&pair, "rep", "dc-a.rep", part), total as usize);
    }
    // The old leader comes back and catches up as a follower; still the same log.
    pair.b.restart(victim);
    pair.b.wait_ready(Duration::from_secs(60));
    assert_eq!(assert_same(&pair, "rep", "dc-a.rep", 0), total as usize);
}

/// A source of three brokers: the leader of a partition being fetched in pooled pieces
/// is killed mid-catch-up. Pieces in flight fail, the pool follows the new leader, and
/// the copy is exact. On Kafka the catch-up learns that a fetch inside a batch is
/// answered with the batch holding it, and never uses tansu's split fetches.
#[test]
fn source_leader_change_during_a_pooled_catch_up() {
    let a = KafkaCluster::start(Shape::three().with("message.max.bytes", "2097152"));
    let b = std::thread::spawn(|| KafkaCluster::start(Shape::single()));
    let mut pair = Pair::with(a, b.join().expect("destination"));
    topic(&pair.a, "lead", 2);
    // Batches of 20 records, so that pieces often start inside a batch.
    let p = small_batches(&pair.a.bootstrap(), "none");
    for part in 0..2 {
        produce(
            &p,
            "lead",
            part,
            &sample(40_000, 7 + part as u64, |i| 500 + (i * 53) % 1500),
        );
    }
    let cfg = pair.config("m.toml", &["lead"], POOLED);
    let mut m = Mirror::spawn(&cfg, &["--stop-at-end"]);
    eventually(Duration::from_secs(60), "pooled catch-up under way", || {
        m.log_text().contains("catching up in parallel pieces")
    });
    let victim = leader(&pair.a, "lead", 0);
    pair.a.kill(victim);
    let bs = pair.b.bootstrap();
    let at_kill = if topic_exists(&bs, "dc-a.lead") {
        end_offset(&bs, "dc-a.lead", 0)
    } else {
        0
    };
    assert!(
        at_kill < 40_000,
        "the kill must land mid-copy (destination at {at_kill})"
    );
    let st = m.wait(Duration::from_secs(240));
    let log = m.log_text();
    assert!(
        st.success(),
        "mirror failed after the source leader kill: {log}"
    );
    assert_ne!(leader(&pair.a, "lead", 0), victim);
    for part in 0..2 {
        assert_eq!(assert_same(&pair, "lead", "dc-a.lead", part), 40_000);
    }
    assert!(
        log.contains("with the batch holding it"),
        "the catch-up must have fetched inside a batch and learnt Kafka's answer: {log}"
    );
    assert!(
        !log.contains("with the next batch"),
        "tansu's mid-batch behaviour must never be assumed on Kafka: {log}"
    );
}

/// What Kafka does with the fetches the catch-up makes (decisions 27-29 and 31): a
/// one-byte ask at, inside, or between batches, and inside the log's last batch, brings
/// exactly one batch, the one holding the offset; the answer's head names it. A larger
/// limit that ends inside a batch is filled to the byte, that batch cut off.
#[test]
fn a_fetch_inside_a_batch_brings_the_batch_holding_it() {
    let a = KafkaCluster::start(Shape::single());
    topic(&a, "heads", 1);
    let p = small_batches(&a.bootstrap(), "none");
    produce(&p, "heads", 0, &sample(400, 9, |i| 600 + (i * 37) % 400));
    let answers = scenarios::one_batch_answers(
        &a.bootstrap(),
        "heads",
        &[0, 1, 19, 20, 21, 133, 250, 300, 398, 399],
    );
    let mut inside = 0;
    for (offset, base, next) in answers {
        assert!(
            base <= offset && offset < next,
            "the answer at {offset} starts with the batch holding it, not {base}..{next}"
        );
        inside += usize::from(base < offset);
    }
    assert!(
        inside >= 5,
        "too few fetches landed inside a batch: {inside}"
    );
    // A byte limit that ends inside the second batch: Kafka sends exactly that many
    // bytes, the second batch cut off, and those bytes are of no use (decision 28;
    // the catch-up's `Sizing` asks for one batch less than a piece because of it).
    let (_, first_whole) = scenarios::answer_bytes(&a.bootstrap(), "heads", 0, 1);
    let limit = (first_whole + first_whole / 2) as i32;
    let (sent, whole) = scenarios::answer_bytes(&a.bootstrap(), "heads", 0, limit);
    assert_eq!(
        (sent, whole),
        (limit as usize, first_whole),
        "a {limit}-byte ask: record bytes sent, and of whole batches"
    );
}

/// The same Kafka topic mirrored into a Kafka cluster and into a tansu cluster: the two
/// copies compare equal with `wanmirror diff` (the brokers store and answer batches
/// differently; the content is what is compared), through the config against the
/// source too, and a record added to one copy is named.
#[test]
fn diff_finds_a_kafka_copy_and_a_tansu_copy_identical() {
    let pair = kafka_pair();
    let t = wanmirror::demo::broker::TansuBroker::start("dc-t").expect("tansu");
    topic(&pair.a, "orders", 2);
    let p = producer(&pair.a.bootstrap(), "zstd", true);
    for part in 0..2 {
        produce(
            &p,
            "orders",
            part,
            &sample(3000, 20 + part as u64, |i| i % 900),
        );
    }
    let to_kafka = pair.config("k.toml", &["orders"], "");
    let (st, log) = mirror_to_end(&to_kafka);
    assert!(st.success(), "{log}");
    let to_tansu = pair.dir.path().join("t.toml");
    std::fs::write(
        &to_tansu,
        std::fs::read_to_string(&to_kafka)
            .expect("config")
            .replace(&pair.b.bootstrap(), &t.bootstrap()),
    )
    .expect("write config");
    let (st, log) = mirror_to_end(&to_tansu);
    assert!(st.success(), "{log}");

    // Source against its Kafka copy, through the config.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wanmirror"))
        .args(["diff", "--config"])
        .arg(&to_kafka)
        .output()
        .expect("run diff");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("2 partition(s) compared, 2 identical"),
        "{text}"
    );

    // The tansu copy against the Kafka copy.
    let copies = || {
        scenarios::diff_json(
            &t.bootstrap(),
            &pair.b.bootstrap(),
            "dc-a.orders",
            "dc-a.orders",
            &["--leaf-offsets", "500"],
        )
    };
    let (code, report) = copies();
    assert_eq!(code, 0, "{report:#}");
    let parts = report["partitions"].as_array().expect("partitions");
    assert_eq!(parts.len(), 2);
    for p in parts {
        assert_eq!(p["to"].as_i64(), Some(3000), "{p}");
        assert_eq!(p["identical"].as_bool(), Some(true), "{p}");
        assert!(p["leaves"].as_u64() >= Some(6), "{p}");
    }
    // One more record in the tansu copy's partition 1 is named.
    produce(
        &producer(&t.bootstrap(), "none", false),
        "dc-a.orders",
        1,
        &sample(1, 3, |_| 10),
    );
    let (code, report) = copies();
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["identical"].as_bool(), Some(false));
    // Partition 1 differs by exactly the extra record at 3000; partition 0 is equal.
    for p in report["partitions"].as_array().expect("partitions") {
        let extra = p["partition"].as_i64() == Some(1);
        assert_eq!(p["identical"].as_bool(), Some(!extra), "{p}");
        assert_eq!(
            p["source_end"].as_i64(),
            Some(if extra { 3001 } else { 3000 }),
            "{p}"
        );
        assert_eq!(p["dest_end"].as_i64(), Some(3000), "{p}");
    }
}

/// A librdkafka client of a secured listener.
fn secured_client(bootstrap: &str, ca: &str, settings: &[(&str, &str)]) -> rdkafka::ClientConfig {
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("ssl.ca.location", ca)
        .set("enable.idempotence", "true");
    for (k, v) in settings {
        c.set(*k, *v);
    }
    c
}

/// The kit's secured listeners, with librdkafka as the client: it writes over SSL
/// (with the kit's client certificate), and over SASL_SSL with PLAIN, SCRAM-SHA-256
/// and SCRAM-SHA-512; a wrong password and a missing client certificate are refused;
/// the records are all there. (wanmirror's own TLS and SASL: tests/security.rs.)
#[test]
fn the_kit_serves_tls_and_sasl_listeners() {
    use common::kafka_security::{PASSWORD, USER};
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let k = KafkaCluster::start(Shape::single().secured());
    topic(&k, "sec", 1);
    let ca = k.ca_pem().display().to_string();
    let cert = k.pki().client_cert.display().to_string();
    let key = k.pki().client_key.display().to_string();
    let (ssl, sasl) = (k.ssl_bootstrap(), k.sasl_ssl_bootstrap());
    let login = |mech: &'static str, password: &'static str| {
        vec![
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanism", mech),
            ("sasl.username", USER),
            ("sasl.password", password),
        ]
    };
    let ways: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            &ssl,
            vec![
                ("security.protocol", "ssl"),
                ("ssl.certificate.location", &cert),
                ("ssl.key.location", &key),
            ],
        ),
        (&sasl, login("PLAIN", PASSWORD)),
        (&sasl, login("SCRAM-SHA-256", PASSWORD)),
        (&sasl, login("SCRAM-SHA-512", PASSWORD)),
    ];
    for (i, (bootstrap, settings)) in ways.iter().enumerate() {
        let p: rdkafka::producer::BaseProducer = secured_client(bootstrap, &ca, settings)
            .create()
            .expect("secured producer");
        produce(&p, "sec", 0, &sample(10, i as u64, |i| i));
    }
    assert_eq!(consume_all(&k.bootstrap(), "sec", 0).len(), 40);
    let refused = [
        (&sasl, login("SCRAM-SHA-512", "not-the-password")),
        (&ssl, vec![("security.protocol", "ssl")]),
    ];
    for (bootstrap, settings) in refused {
        let c: BaseConsumer = secured_client(bootstrap, &ca, &settings)
            .create()
            .expect("consumer");
        assert!(
            c.fetch_metadata(None, Duration::from_secs(10)).is_err(),
            "{settings:?} must be refused"
        );
    }
}

/// The difference in one example: a source partition whose head retention (here
/// DeleteRecords) removed, copied by wanmirror and by MirrorMaker 2. `wanmirror diff`
/// finds wanmirror's copy identical, offset for offset, and names where MM2's differs:
/// MM2 writes the first record it reads at offset 0. (The README quotes this output.)
#[test]
fn mm2_does_not_keep_offsets_and_diff_names_where() {
    use common::kafka::MirrorMaker;
    let pair = kafka_pair();
    topic(&pair.a, "orders", 1);
    produce(
        &producer(&pair.a.bootstrap(), "lz4", true),
        "orders",
        0,
        &sample(1000, 4, |i| 100 + i % 200),
    );
    delete_records_before(&pair.a.bootstrap(), "orders", 400);

    let cfg = pair.config("m.toml", &["orders"], "rename = \"wanmirror.{topic}\"");
    let (st, log) = mirror_to_end(&cfg);
    assert!(st.success(), "{log}");

    let props = format!(
        "clusters = dc-a, dc-b\ndc-a.bootstrap.servers = {}\ndc-b.bootstrap.servers = {}\n\
         dc-a->dc-b.enabled = true\ndc-a->dc-b.topics = orders\ndc-b->dc-a.enabled = false\n\
         replication.factor = 1\ncheckpoints.topic.replication.factor = 1\n\
         heartbeats.topic.replication.factor = 1\noffset-syncs.topic.replication.factor = 1\n\
         offset.storage.replication.factor = 1\nstatus.storage.replication.factor = 1\n\
         config.storage.replication.factor = 1\nrefresh.topics.interval.seconds = 5\n\
         sync.topic.acls.enabled = false\n",
        pair.a.bootstrap(),
        pair.b.bootstrap()
    );
    let mut mm2 = MirrorMaker::start(pair.dir.path(), &props, "dc-b");
    let b = pair.b.bootstrap();
    eventually(
        Duration::from_secs(120),
        "MirrorMaker 2 to copy the partition",
        || {
            assert!(
                mm2.running(),
                "{}",
                std::fs::read_to_string(&mm2.log).unwrap_or_default()
            );
            topic_exists(&b, "dc-a.orders") && end_offset(&b, "dc-a.orders", 0) >= 600
        },
    );
    drop(mm2);

    let diff_text = |dest: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wanmirror"))
            .args(["diff", "--leaf-offsets", "100"])
            .args([
                "--source-bootstrap",
                &pair.a.bootstrap(),
                "--dest-bootstrap",
                &b,
            ])
            .args(["--source-topic", "orders", "--dest-topic", dest])
            .output()
            .expect("run diff");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    // The padded head (offsets 0-399, recorded in the offset map) is a difference of
    // the log bounds; every record the source still has is at its own offset.
    let (code, text) = diff_text("wanmirror.orders");
    eprintln!("wanmirror diff, source against wanmirror's copy:\n{text}");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("offsets 400..1000 (6 leaves): records identical"),
        "{text}"
    );
    let (code, text) = diff_text("dc-a.orders");
    eprintln!("wanmirror diff, source against MirrorMaker 2's copy:\n{text}");
    assert_eq!(code, Some(1), "{text}");
    let (_, report) = scenarios::diff_json(&pair.a.bootstrap(), &b, "orders", "dc-a.orders", &[]);
    let part = &report["partitions"][0];
    assert_eq!(part["dest_end"].as_i64(), Some(600), "{part}");
    assert_eq!(part["source_log_start"].as_i64(), Some(400), "{part}");
    assert!(
        !part["ranges"].as_array().expect("ranges").is_empty(),
        "{part}"
    );
}

/// Consumer-group offset sync on Kafka: the metadata is kept (tansu keeps none), and a
/// librdkafka consumer of the group in the destination reads first exactly the record
/// at its committed offset (on tansu it does not start from committed offsets).
#[test]
fn a_synced_group_resumes_in_the_destination_at_its_offsets() {
    use common::apps::{commit_as_member, committed, first_reads};
    let pair = kafka_pair();
    let (a, b) = (pair.a.bootstrap(), pair.b.bootstrap());
    topic(&pair.a, "orders", 2);
    let p = producer(&a, "lz4", true);
    let recs: Vec<Vec<Rec>> = (0..2).map(|i| sample(100, 20 + i, |_| 30)).collect();
    for (part, r) in recs.iter().enumerate() {
        produce(&p, "orders", part as i32, r);
    }
    commit_as_member(&a, "app-1", "orders", &[(0, 37, "m-37"), (1, 64, "m-64")]);
    let cfg = pair.config(
        "g.toml",
        &["orders"],
        "\n[groups]\nsync = [\"app-.*\"]\ninterval_secs = 1",
    );
    let (st, log) = mirror_to_end(&cfg);
    assert!(st.success(), "{log}");
    assert_eq!(
        committed(&b, "app-1", "dc-a.orders", &[0, 1]),
        vec![Some((37, "m-37".into())), Some((64, "m-64".into()))],
        "{log}"
    );
    let reads = first_reads(&b, "app-1", "dc-a.orders", &[0, 1]);
    assert_eq!(reads[0], (37, recs[0][37].value.clone()));
    assert_eq!(reads[1], (64, recs[1][64].value.clone()));
}

/// `wanmirror serve` in front of Apache Kafka, the mirror reading through it: a backlog
/// in small batches of every codec, cut into pieces that start inside batches (Kafka
/// answers those with the batch holding them, and serve passes it on whole), is copied
/// offset-identical, and records appended afterwards are pushed.
#[test]
fn a_copy_through_the_peer_from_kafka_is_offset_identical() {
    use common::peer::{peer_config, serve_for};
    let pair = kafka_pair();
    let codecs = ["none", "gzip", "snappy", "lz4", "zstd"];
    for codec in codecs {
        let t = format!("codec-{codec}");
        topic(&pair.a, &t, 2);
        let p = small_batches(&pair.a.bootstrap(), codec);
        for part in 0..2 {
            produce(
                &p,
                &t,
                part,
                &sample(2000, part as u64 + 7, |i| (i * 13) % 3000),
            );
        }
    }
    let (serve, pki) = serve_for(&pair, &["dc-b"], &["codec-.*"]);
    let cfg = pair.dir.path().join("peer.toml");
    peer_config(
        &cfg,
        &format!("127.0.0.1:{}", serve.port),
        &pki,
        "dc-b",
        &pair.b.bootstrap(),
        &["codec-.*"],
        POOLED,
    );
    let mut m = Mirror::spawn(&cfg, &[]);
    let b = pair.b.bootstrap();
    let copied = |n: i64| {
        codecs.iter().all(|c| {
            (0..2).all(|part| {
                topic_exists(&b, &format!("dc-a.codec-{c}"))
                    && end_offset(&b, &format!("dc-a.codec-{c}"), part) == n
            })
        })
    };
    eventually(Duration::from_secs(120), "the backlog copied", || {
        copied(2000)
    });
    let log = m.log_text();
    assert!(log.contains("source read through a peer"), "{log}");
    // The cases named above were exercised: pieces, and fetches inside batches.
    assert!(log.contains("catching up in parallel pieces"), "{log}");
    assert!(
        log.contains("inside a batch with the batch holding it"),
        "no piece started inside a batch: {log}"
    );

    // Appended after the catch-up: pushed by serve, no poll across the link.
    for codec in codecs {
        let t = format!("codec-{codec}");
        let p = small_batches(&pair.a.bootstrap(), codec);
        for part in 0..2 {
            produce(&p, &t, part, &sample(100, part as u64 + 70, |i| i % 500));
        }
    }
    eventually(Duration::from_secs(60), "the appended records", || {
        copied(2100)
    });
    assert!(m.running(), "{}", m.log_text());
    assert!(
        serve.log_text().contains("push subscription"),
        "{}",
        serve.log_text()
    );
    drop(m);
    for codec in codecs {
        let t = format!("codec-{codec}");
        for part in 0..2 {
            assert_eq!(assert_same(&pair, &t, &format!("dc-a.{t}"), part), 2100);
        }
    }
}
