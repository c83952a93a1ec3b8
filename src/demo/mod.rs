//! `wanmirror demo`: two local brokers, sample data, a mirror run, and a short summary:
//! the status table and the verdict of a `diff` over what was copied.

pub mod broker;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

use crate::config::Config;
use crate::kafka::client::Cluster;
use crate::kafka::connection::SocketOptions;
use crate::kafka::records::{encode, Content};
use crate::mirror::{run, Outcome, RunOptions};
use crate::verify::command::{run as diff_run, DiffRequest, Target};
use crate::verify::diff::Options;
use crate::verify::status::status;
use broker::TansuBroker;

/// Topics the demo creates: name, partitions, compression codec.
const TOPICS: &[(&str, i32, i16)] = &[("orders", 4, 4), ("payments.eu", 2, 1), ("clicks", 3, 0)];

/// Runs the demo; returns the process exit code.
pub async fn demo(records: usize) -> anyhow::Result<i32> {
    println!("starting two local tansu brokers (dc-a = source, dc-b = destination)...");
    let a = TansuBroker::start("dc-a").map_err(anyhow::Error::msg)?;
    let b = TansuBroker::start("dc-b").map_err(anyhow::Error::msg)?;
    let src = Cluster::new("dc-a", &a.bootstrap(), SocketOptions::default());
    let dst = Cluster::new("dc-b", &b.bootstrap(), SocketOptions::default());

    println!("producing {records} sample records per topic into dc-a...");
    for &(topic, parts, codec) in TOPICS {
        src.create_topic(topic, parts, 1, &BTreeMap::new()).await?;
        wait_for_leaders(&src, topic).await?;
        produce_sample(&src, topic, parts, codec, records).await?;
    }

    let cfg = Config::parse(
        "demo",
        &format!(
            r#"
[source]
name = "dc-a"
bootstrap = "{}"
[destination]
name = "dc-b"
bootstrap = "{}"
[mirror]
topics = ["orders", "payments\\..*", "clicks"]
rename = "{{source}}.{{topic}}"
replication_factor = 1
"#,
            a.bootstrap(),
            b.bootstrap()
        ),
    )?;
    println!("mirroring dc-a -> dc-b (RUST_LOG=info shows the mirror's log)...");
    let started = std::time::Instant::now();
    let outcome = run(cfg.clone(), RunOptions { stop_at_end: true }).await?;
    let took = started.elapsed();
    println!(
        "mirror finished in {:.1} s{}",
        took.as_secs_f64(),
        if outcome == Outcome::Clean {
            ""
        } else {
            ", with errors (see the log lines above)"
        }
    );

    // What `wanmirror status` and `wanmirror diff` would say of this config.
    let pairs: Vec<(String, String)> = TOPICS
        .iter()
        .map(|&(t, ..)| (t.to_string(), cfg.dest_topic(t)))
        .collect();
    let st = status(
        src.clone().into(),
        dst.clone(),
        pairs,
        &cfg.mirror.offset_map_topic,
    )
    .await?;
    println!();
    println!("{}", st.table());
    println!();
    println!("comparing every record on both sides (wanmirror diff: Merkle trees over the records' content)...");
    let report = diff_run(DiffRequest {
        target: Target::Config {
            config: Box::new(cfg.clone()),
            topic: None,
        },
        options: Options {
            partition: None,
            from: None,
            to: None,
            leaf_offsets: 4096,
            parallel: 4,
            fetch_bytes: 1 << 20,
        },
        progress: false,
    })
    .await?;
    let verdict = if report.identical {
        format!(
            "{} partitions, every record identical at the same offset",
            report.partitions.len()
        )
    } else {
        format!("DIFFERENT:\n{}", report.text())
    };
    println!("diff: {verdict}");
    let ok = outcome == Outcome::Clean && st.caught_up && report.identical;
    Ok(if ok { 0 } else { 1 })
}

async fn wait_for_leaders(c: &Cluster, topic: &str) -> anyhow::Result<()> {
    for _ in 0..100 {
        if let Some(t) = c.topic(topic).await? {
            if t.partitions.iter().all(|p| p.leader >= 0) && !t.partitions.is_empty() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("topic {topic} has no leaders")
}

/// Writes `n` records spread over the partitions, in batches of up to 100 records with
/// a mix of compressible and random values and a header on every record.
async fn produce_sample(
    c: &Cluster,
    topic: &str,
    parts: i32,
    codec: i16,
    n: usize,
) -> anyhow::Result<()> {
    let per = n / parts as usize;
    for p in 0..parts {
        let mut i = 0usize;
        while i < per {
            let k = (per - i).min(100);
            let recs: Vec<Content> = (0..k)
                .map(|j| {
                    let id = i + j;
                    let value = if id.is_multiple_of(2) {
                        format!(
                            "{{\"order\":{id},\"status\":\"shipped\",\"pad\":\"{}\"}}",
                            "x".repeat(id % 200)
                        )
                        .into_bytes()
                    } else {
                        (0..(id % 300)).map(|x| (x * 31 + id * 7) as u8).collect()
                    };
                    Content {
                        offset: j as i64,
                        timestamp: 1_700_000_000_000 + id as i64,
                        key: Some(Bytes::from(format!("key-{id}"))),
                        value: Some(Bytes::from(value)),
                        headers: vec![(
                            Bytes::from_static(b"source"),
                            Some(Bytes::from_static(b"demo")),
                        )],
                    }
                })
                .collect();
            let batch = encode(&recs, codec).map_err(anyhow::Error::msg)?;
            c.produce(topic, p, batch, Duration::from_secs(10)).await?;
            i += k;
        }
    }
    Ok(())
}
