//! `wanbench`: the parts of the benchmark that talk Kafka.
//!
//! - `preload`: writes the dataset into the source with librdkafka.
//! - `baseline`: a MirrorMaker-architecture mirror on librdkafka: one consumer (one
//!   connection per broker) feeding one producer, partition-preserving.
//! - `latency-produce` / `latency-consume`: records stamped with their send time at a
//!   fixed rate, and end-to-end latency percentiles on the far side.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use rand::Rng;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use wanmirror::kafka::client::Cluster;
use wanmirror::kafka::connection::SocketOptions;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a topic and fill it with a realistic mixed dataset.
    Preload {
        #[arg(long)]
        bootstrap: String,
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 8)]
        partitions: i32,
        /// Payload bytes to write in total.
        #[arg(long)]
        bytes: u64,
    },
    /// Mirror `topic` from source to destination like MirrorMaker; stop after `records`.
    Baseline {
        #[arg(long)]
        source: String,
        #[arg(long)]
        dest: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        dest_topic: String,
        /// Stop after this many records (0 = run until killed).
        #[arg(long, default_value_t = 0)]
        records: u64,
        /// librdkafka `debug` contexts for the consumer (e.g. `fetch,broker,protocol`),
        /// logged to stderr with a wall-clock stamp. Warnings and errors are always logged.
        #[arg(long, default_value = "")]
        debug: String,
        /// The consumer's `fetch.wait.max.ms`: how long a fetch at the end waits for
        /// new data (the live profiles use the mirror's tail wait).
        #[arg(long, default_value_t = 100)]
        fetch_wait_ms: u32,
    },
    /// Produce `rate` records/s of `size` random (incompressible) bytes for `seconds`,
    /// stamped with their send time, record i keyed `i` and sent to partition
    /// i mod `partitions` (the topic is created with that many if missing).
    LatencyProduce {
        #[arg(long)]
        bootstrap: String,
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 200)]
        rate: u64,
        #[arg(long, default_value_t = 1024)]
        size: usize,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        /// The producer's `linger.ms` (a live application's producer batches a little).
        #[arg(long, default_value_t = 0)]
        linger_ms: u32,
    },
    /// Print the sum of a topic's end offsets over all partitions, each partition's end
    /// offset, and the stored batch bytes (JSON). A missing topic has no partitions.
    Ends {
        #[arg(long)]
        bootstrap: String,
        #[arg(long)]
        topic: String,
        /// Skip reading the topic for its batch bytes (`wire_bytes` is then null): a
        /// cheap progress probe.
        #[arg(long)]
        no_wire: bool,
    },
    /// Micro-benchmark of leaf hashing as `wanmirror diff` and `serve` do it (JSON:
    /// MB/s of record payload, median, min, max over `runs`, all threads together).
    Hash {
        /// Record payload bytes hashed per run and thread.
        #[arg(long, default_value_t = 256_000_000)]
        bytes: usize,
        /// Value size of the synthetic records.
        #[arg(long, default_value_t = 1000)]
        record_bytes: usize,
        #[arg(long, default_value_t = 7)]
        runs: usize,
        /// Partitions hashed at once, each on a thread of its own (as the hashing
        /// workers of verify/hashing.rs): 1 and 2 give the rate on one and two cores.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Hash stored batches: encode the records into batches with this codec
        /// (none, gzip, snappy, lz4, zstd) and decode them in every run, as the
        /// hashing worker does. Without it, records are hashed as they are.
        #[arg(long)]
        codec: Option<String>,
    },
    /// Read `records` stamped records (keys 0..records) from the destination and print
    /// (JSON) latency percentiles, records seen once and twice, and how far behind the
    /// copy was when the load stopped: records not read by then, and the seconds
    /// until the last one was.
    LatencyConsume {
        #[arg(long)]
        bootstrap: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partitions: i32,
        #[arg(long)]
        records: u64,
        #[arg(long, default_value_t = 120)]
        timeout_secs: u64,
        /// A file the load's end (ms since the epoch) is written to when the load
        /// stops; read at the end. Without it, the newest record's stamp.
        #[arg(long)]
        load_end_file: Option<std::path::PathBuf>,
        /// Once the load-end file is there, stop reading this many seconds after the
        /// load's end even if records are still missing.
        #[arg(long)]
        drain_cap_secs: Option<u64>,
    },
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn producer(bootstrap: &str, extra: &[(&str, &str)]) -> Result<BaseProducer> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.max.bytes", "2000000");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    Ok(c.create()?)
}

fn send(p: &BaseProducer, mut rec: BaseRecord<'_, [u8], [u8]>) -> Result<()> {
    loop {
        match p.send(rec) {
            Ok(()) => return Ok(()),
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                back,
            )) => {
                p.poll(Duration::from_millis(5));
                rec = back;
            }
            Err((e, _)) => bail!("produce: {e}"),
        }
    }
}

async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> Result<()> {
    let c = Cluster::new("bench", bootstrap, SocketOptions::default());
    c.create_topic(topic, partitions, 1, &Default::default())
        .await
        .context("create topic")?;
    // Leaders in the metadata, and each answering for its partition: Kafka names a
    // leader in its metadata a moment before that broker answers ListOffsets for it
    // (NotLeaderOrFollower until then).
    let mut last = String::from("no leaders in the metadata");
    for _ in 0..100 {
        if let Some(t) = c.topic(topic).await? {
            if t.partitions.len() == partitions as usize
                && t.partitions.iter().all(|p| p.leader >= 0)
            {
                let mut ready = true;
                for p in &t.partitions {
                    if let Err(e) = c.end_offset(topic, p.index).await {
                        last = format!("partition {}: {e}", p.index);
                        ready = false;
                        break;
                    }
                }
                if ready {
                    return Ok(());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("topic {topic} is not ready after 10 s: {last}")
}

/// Mixed record sizes (log-uniform 100 B .. 16 KiB); half compressible text, half random.
/// Returns the records written and the payload bytes per partition (record n goes to
/// partition n mod partitions, so with an even count the even partitions hold all the
/// text and the odd ones all the random bytes: their batch bytes differ ~90x).
fn preload(bootstrap: &str, topic: &str, partitions: i32, bytes: u64) -> Result<(u64, Vec<u64>)> {
    let p = producer(
        bootstrap,
        &[
            ("compression.codec", "lz4"),
            ("linger.ms", "20"),
            ("batch.size", "1000000"),
        ],
    )?;
    let mut rng = rand::rng();
    let mut written = 0u64;
    let mut per_part = vec![0u64; partitions as usize];
    let mut n = 0u64;
    let words = b"order shipped payment settled customer region warehouse invoice ";
    while written < bytes {
        let size = (100f64 * (164f64).powf(rng.random::<f64>())) as usize;
        let value: Vec<u8> = if n.is_multiple_of(2) {
            words
                .iter()
                .cycle()
                .skip(n as usize % 13)
                .take(size)
                .copied()
                .collect()
        } else {
            (0..size).map(|_| rng.random()).collect()
        };
        let key = format!("key-{}", n % 10_000);
        let part = (n % partitions as u64) as i32;
        send(
            &p,
            BaseRecord::to(topic)
                .partition(part)
                .key(key.as_bytes())
                .payload(value.as_slice()),
        )?;
        p.poll(Duration::ZERO);
        written += size as u64;
        per_part[part as usize] += size as u64;
        n += 1;
    }
    p.flush(Duration::from_secs(300))?;
    Ok((n, per_part))
}

/// Bytes of record batches stored in each partition of a topic, by partition index
/// (compressed, as they cross the link).
async fn wire_bytes(bootstrap: &str, topic: &str) -> Result<Vec<u64>> {
    let c = Cluster::new("wire", bootstrap, SocketOptions::default());
    let Some(mut t) = c.topic(topic).await? else {
        return Ok(Vec::new());
    };
    t.partitions.sort_by_key(|p| p.index);
    let mut per_part = Vec::new();
    for p in t.partitions {
        let mut total = 0u64;
        let end = c.end_offset(topic, p.index).await?;
        let mut next = 0;
        while next < end {
            let f = c
                .fetch(topic, p.index, next, 8 << 20, Duration::ZERO)
                .await?;
            let batches = wanmirror::kafka::batch::split_batches(&f.records)?;
            let Some(last) = batches.last() else { break };
            next = last.header.next_offset();
            total += batches.iter().map(|b| b.bytes.len() as u64).sum::<u64>();
        }
        per_part.push(total);
    }
    Ok(per_part)
}

/// librdkafka's log lines (warnings, errors, and `debug` contexts when set) to stderr,
/// stamped with the wall clock: the rdkafka crate otherwise hands them to the `log`
/// facade, which nothing here prints.
struct StderrLog;

impl ClientContext for StderrLog {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        let ms = now_ms();
        eprintln!("{}.{:03} {level:?} {fac} {msg}", ms / 1000, ms % 1000);
    }
}

impl ConsumerContext for StderrLog {}

fn baseline(
    source: &str,
    dest: &str,
    topic: &str,
    dest_topic: &str,
    records: u64,
    debug: &str,
    fetch_wait_ms: u32,
) -> Result<()> {
    // Tuned as a careful MirrorMaker user would: fetches sized for the link, deep
    // prefetch queue, batching producer with idempotence and acks=all, kernel socket
    // autotuning.
    //
    // librdkafka keeps one Fetch in flight per broker connection, times it out after
    // `socket.timeout.ms` and then drops the connection, throwing away what arrived.
    // One CUBIC connection carries ~0.8-1.3 Mbit/s at 200 ms RTT and 1 % loss:
    // a 50 MB answer (the former fetch.max.bytes) would take ~5 minutes, so every fetch
    // timed out after 60 s and started over (bench/README.md, "The baseline's fetch
    // size"). An 8 MiB answer takes ~50-100 s there, well within the raised 300 s
    // timeout (librdkafka's maximum), and still fills a clean 200 Mbit/s link in
    // ~0.35 s per round trip.
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", source)
        .set("group.id", "wanbench-baseline")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "8388608")
        .set("max.partition.fetch.bytes", "1048576")
        .set("socket.timeout.ms", "300000")
        .set("fetch.wait.max.ms", fetch_wait_ms.to_string())
        .set("queued.max.messages.kbytes", "1048576")
        .set("socket.receive.buffer.bytes", "0");
    // The crate takes its log level from the `log` facade (off here): set it, so that
    // librdkafka's warnings and errors (and `debug` lines) reach StderrLog.
    cc.set_log_level(RDKafkaLogLevel::Debug);
    if !debug.is_empty() {
        cc.set("debug", debug);
    }
    let consumer: BaseConsumer<StderrLog> = cc.create_with_context(StderrLog)?;
    let rt = tokio::runtime::Runtime::new()?;
    let meta = rt.block_on(async {
        let c = Cluster::new("src", source, SocketOptions::default());
        c.topic(topic).await
    })?;
    let Some(meta) = meta else {
        bail!("source topic {topic} not found")
    };
    let parts = meta.partitions.len() as i32;
    let dst_exists = rt.block_on(async {
        Cluster::new("dst", dest, SocketOptions::default())
            .topic(dest_topic)
            .await
    })?;
    if dst_exists.is_none() {
        rt.block_on(create_topic(dest, dest_topic, parts))?;
    }
    let mut tpl = TopicPartitionList::new();
    for p in 0..parts {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let p = producer(
        dest,
        &[
            ("linger.ms", "20"),
            ("batch.size", "1000000"),
            ("compression.codec", "lz4"),
            ("queue.buffering.max.kbytes", "1048576"),
        ],
    )?;
    let mut copied = 0u64;
    while records == 0 || copied < records {
        match consumer.poll(Duration::from_millis(100)) {
            None => {
                p.poll(Duration::ZERO);
                continue;
            }
            Some(Err(e)) => bail!("consume: {e}"),
            Some(Ok(m)) => {
                let mut rec: BaseRecord<'_, [u8], [u8]> =
                    BaseRecord::to(dest_topic).partition(m.partition());
                if let Some(k) = m.key() {
                    rec = rec.key(k);
                }
                if let Some(v) = m.payload() {
                    rec = rec.payload(v);
                }
                if let Some(ts) = m.timestamp().to_millis() {
                    rec = rec.timestamp(ts);
                }
                if let Some(h) = m.headers() {
                    rec = rec.headers(h.detach());
                }
                send(&p, rec)?;
                p.poll(Duration::ZERO);
                copied += 1;
            }
        }
    }
    p.flush(Duration::from_secs(300))?;
    Ok(())
}

struct Load<'a> {
    topic: &'a str,
    rate: u64,
    size: usize,
    seconds: u64,
    partitions: i32,
    linger_ms: u32,
}

fn latency_produce(bootstrap: &str, load: &Load) -> Result<u64> {
    let linger = load.linger_ms.to_string();
    let p = producer(bootstrap, &[("linger.ms", &linger)])?;
    let start = Instant::now();
    let total = load.rate * load.seconds;
    // Random bytes, so that no codec makes the load lighter for one contender.
    let mut rng = rand::rng();
    let pool: Vec<u8> = (0..load.size + 65_536).map(|_| rng.random()).collect();
    let mut behind_ms = 0u128;
    for i in 0..total {
        let due = start + Duration::from_nanos(i * 1_000_000_000 / load.rate);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else {
            behind_ms = behind_ms.max((now - due).as_millis());
        }
        let key = i.to_string();
        let at = (i as usize * 7919) % 65_536;
        send(
            &p,
            BaseRecord::to(load.topic)
                .partition((i % load.partitions.max(1) as u64) as i32)
                .key(key.as_bytes())
                .payload(&pool[at..at + load.size])
                .timestamp(now_ms()),
        )?;
        p.poll(Duration::ZERO);
    }
    let sent_s = start.elapsed().as_secs_f64();
    let end_ms = now_ms();
    p.flush(Duration::from_secs(60))?;
    // The producer keeping its pace is part of the measurement's conditions; `end_ms`
    // is when the load stopped (the last record's stamp, about).
    eprintln!(
        "{}",
        serde_json::json!({"produced": total, "seconds": sent_s, "max_behind_ms": behind_ms, "end_ms": end_ms})
    );
    Ok(total)
}

fn latency_consume(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    records: u64,
    timeout: u64,
    load_end: Option<(&std::path::Path, Option<u64>)>,
) -> Result<()> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "wanbench-latency")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    let mut deadline = Instant::now() + Duration::from_secs(timeout);
    // Wait for the mirror to create the topic.
    loop {
        let md = c.fetch_metadata(Some(topic), Duration::from_secs(5))?;
        if md
            .topics()
            .iter()
            .any(|t| t.name() == topic && t.partitions().len() == partitions as usize)
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("topic {topic} never appeared");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    // Explicit bounds: `saturating_record` clamps to the highest trackable value and
    // never resizes, so an auto-resizing histogram (`new`, 2 ms at first) clamped
    // every latency above ~2 s to 2,047 ms.
    let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000, 3)?;
    // Arrival (ms since the epoch) of each record seen, by key; duplicates counted.
    let mut arrived: Vec<i64> = vec![0; records as usize];
    let (mut n, mut dups, mut newest) = (0u64, 0u64, 0i64);
    // When the load stopped (ms since the epoch), once the orchestrator says so; the
    // drain cap counts from then.
    let read_end = || {
        let (f, _) = load_end?;
        std::fs::read_to_string(f).ok()?.trim().parse::<i64>().ok()
    };
    let mut stopped_at: Option<i64> = None;
    let mut looked = Instant::now();
    while n < records && Instant::now() < deadline {
        if stopped_at.is_none() && looked.elapsed() >= Duration::from_millis(200) {
            looked = Instant::now();
            stopped_at = read_end();
            if let (Some(end), Some((_, Some(cap)))) = (stopped_at, load_end) {
                let left = (end + cap as i64 * 1000 - now_ms()).max(0) as u64;
                deadline = deadline.min(Instant::now() + Duration::from_millis(left));
            }
        }
        let Some(Ok(m)) = c.poll(Duration::from_millis(100)) else {
            continue;
        };
        let Some(ts) = m.timestamp().to_millis() else {
            continue;
        };
        let at = now_ms();
        let key = m
            .key()
            .and_then(|k| std::str::from_utf8(k).ok()?.parse::<usize>().ok());
        match key.and_then(|k| arrived.get_mut(k)) {
            Some(slot) if *slot != 0 => dups += 1,
            Some(slot) => {
                *slot = at;
                n += 1;
                newest = newest.max(ts);
                h.saturating_record((at - ts).max(0) as u64);
            }
            None => {}
        }
    }
    // What was still to arrive when the load stopped (never-arrived records included),
    // and how long until the last of it did (None: not everything arrived).
    let stopped = stopped_at.or_else(read_end).unwrap_or(newest);
    let lag_at_stop = arrived.iter().filter(|a| **a == 0 || **a > stopped).count();
    let last = arrived.iter().copied().max().unwrap_or(0);
    let drain_s = (n == records).then(|| (last - stopped).max(0) as f64 / 1000.0);
    println!(
        "{}",
        serde_json::json!({
            "records": n, "expected": records, "duplicates": dups,
            "p50_ms": h.value_at_quantile(0.5), "p99_ms": h.value_at_quantile(0.99),
            "p999_ms": h.value_at_quantile(0.999), "max_ms": h.max(),
            "lag_at_stop_records": lag_at_stop, "drain_s": drain_s,
            "cdf": (1..=100).map(|i| f64::from(i) / 100.0).chain([0.995, 0.999])
                .map(|q| (q, h.value_at_quantile(q))).collect::<Vec<_>>(),
        })
    );
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Preload {
            bootstrap,
            topic,
            partitions,
            bytes,
        } => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(create_topic(&bootstrap, &topic, partitions))?;
            let (n, part_bytes) = preload(&bootstrap, &topic, partitions, bytes)?;
            let wire = rt.block_on(wire_bytes(&bootstrap, &topic))?;
            println!(
                "{}",
                serde_json::json!({
                    "records": n, "bytes": part_bytes.iter().sum::<u64>(),
                    "wire_bytes": wire.iter().sum::<u64>(),
                    "partition_bytes": part_bytes, "partition_wire": wire,
                })
            );
        }
        Cmd::Baseline {
            source,
            dest,
            topic,
            dest_topic,
            records,
            debug,
            fetch_wait_ms,
        } => baseline(
            &source,
            &dest,
            &topic,
            &dest_topic,
            records,
            &debug,
            fetch_wait_ms,
        )?,
        Cmd::LatencyProduce {
            bootstrap,
            topic,
            rate,
            size,
            seconds,
            partitions,
            linger_ms,
        } => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(create_topic(&bootstrap, &topic, partitions))?;
            let load = Load {
                topic: &topic,
                rate,
                size,
                seconds,
                partitions,
                linger_ms,
            };
            latency_produce(&bootstrap, &load)?;
        }
        Cmd::Ends {
            bootstrap,
            topic,
            no_wire,
        } => {
            let rt = tokio::runtime::Runtime::new()?;
            let (ends, wire) = rt.block_on(async {
                let c = Cluster::new("ends", &bootstrap, SocketOptions::default());
                let mut ends = Vec::new();
                if let Some(mut t) = c.topic(&topic).await? {
                    t.partitions.sort_by_key(|p| p.index);
                    for p in t.partitions {
                        ends.push(c.end_offset(&topic, p.index).await?);
                    }
                }
                let wire = if no_wire {
                    None
                } else {
                    Some(wire_bytes(&bootstrap, &topic).await?)
                };
                anyhow::Ok((ends, wire))
            })?;
            // Stored batch bytes: a byte-for-byte copy holds exactly the source's.
            println!(
                "{}",
                serde_json::json!({
                    "end_offsets": ends.iter().sum::<i64>(), "partitions": ends,
                    "wire_bytes": wire.as_ref().map(|w| w.iter().sum::<u64>()),
                    "partition_wire": wire,
                })
            );
        }
        Cmd::Hash {
            bytes,
            record_bytes,
            runs,
            threads,
            codec,
        } => hash_speed(bytes, record_bytes, runs, threads, codec.as_deref())?,
        Cmd::LatencyConsume {
            bootstrap,
            topic,
            partitions,
            records,
            timeout_secs,
            load_end_file,
            drain_cap_secs,
        } => latency_consume(
            &bootstrap,
            &topic,
            partitions,
            records,
            timeout_secs,
            load_end_file.as_deref().map(|f| (f, drain_cap_secs)),
        )?,
    }
    Ok(())
}

/// Leaf hashing throughput: synthetic records (key, value, two headers) fed through
/// the same `LeafHasher` the diff uses (decoded from stored batches first with
/// `codec`), on `threads` threads at once, each hashing a partition of its own.
fn hash_speed(
    bytes: usize,
    record_bytes: usize,
    runs: usize,
    threads: usize,
    codec: Option<&str>,
) -> Result<()> {
    use wanmirror::kafka::batch::split_valid;
    use wanmirror::kafka::records::{decode, encode, Content};
    use wanmirror::verify::leaf::LeafHasher;
    let mut rng = rand::rng();
    let pool: Vec<u8> = (0..record_bytes + 4096).map(|_| rng.random()).collect();
    let records: Vec<Content> = (0..4096)
        .map(|i| Content {
            offset: i,
            timestamp: 1_700_000_000_000 + i,
            key: Some(format!("key-{i}").into_bytes().into()),
            value: Some(pool[(i as usize % 4096)..][..record_bytes].to_vec().into()),
            headers: vec![
                ("trace".into(), Some(format!("t{i}").into_bytes().into())),
                ("empty".into(), None),
            ],
        })
        .collect();
    let per = |r: &Content| {
        r.value.as_ref().map_or(0, |v| v.len()) + r.key.as_ref().map_or(0, |k| k.len())
    };
    let batch_bytes: usize = records.iter().map(per).sum();
    let rounds = (bytes / batch_bytes).max(1);
    // Stored batches of 256 records each, as a producer would have written them.
    let code = match codec {
        None => None,
        Some("none") => Some(0),
        Some("gzip") => Some(1),
        Some("snappy") => Some(2),
        Some("lz4") => Some(3),
        Some("zstd") => Some(4),
        Some(other) => bail!("--codec {other}: none, gzip, snappy, lz4 or zstd"),
    };
    let stored = match code {
        Some(c) => {
            let mut all = Vec::new();
            for chunk in records.chunks(256) {
                let b = encode(chunk, c).map_err(|e| anyhow::anyhow!(e))?;
                all.extend(split_valid(&b).0);
            }
            Some(all)
        }
        None => None,
    };
    let stored_bytes: usize = stored
        .as_ref()
        .map_or(0, |b| b.iter().map(|b| b.bytes.len()).sum());
    let one = |mut records: Vec<Content>| {
        let mut h = LeafHasher::new(0, (rounds * records.len()) as i64, 4096);
        let mut offset = 0i64;
        for _ in 0..rounds {
            if let Some(batches) = &stored {
                // The worker's path: decompress and parse, then hash.
                for r in decode(batches).expect("batches we encoded decode") {
                    let mut r = r;
                    r.offset = offset;
                    offset += 1;
                    h.push(&r);
                }
            } else {
                for r in records.iter_mut() {
                    r.offset = offset;
                    offset += 1;
                    h.push(r);
                }
            }
        }
        std::hint::black_box(h.finish());
    };
    let mut speeds = Vec::new();
    for _ in 0..runs.max(1) {
        let copies: Vec<Vec<Content>> = (0..threads.max(1)).map(|_| records.clone()).collect();
        let started = Instant::now();
        std::thread::scope(|s| {
            for recs in copies {
                s.spawn(|| one(recs));
            }
        });
        let secs = started.elapsed().as_secs_f64();
        speeds.push((threads.max(1) * rounds * batch_bytes) as f64 / secs / 1e6);
    }
    speeds.sort_by(f64::total_cmp);
    println!(
        "{}",
        serde_json::json!({
            "record_bytes": record_bytes,
            "threads": threads.max(1),
            "codec": codec.unwrap_or("(records, no batches)"),
            "stored_bytes_per_4096_records": stored_bytes,
            "bytes_per_run": threads.max(1) * rounds * batch_bytes,
            "runs": speeds.len(),
            "MBps_median": speeds[speeds.len() / 2],
            "MBps_min": speeds[0],
            "MBps_max": speeds[speeds.len() - 1],
        })
    );
    Ok(())
}
