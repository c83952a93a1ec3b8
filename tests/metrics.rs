//! The Prometheus endpoint during a real mirror run: scraped over HTTP while records
//! arrive, its figures must move as the copy does.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn metrics_follow_a_mirror_run() {
    let pair = Pair::start();
    let a = pair.a.bootstrap();
    create_topic(&a, "orders", 2);
    let p = producer(&a, "zstd", false);
    produce(&p, "orders", 0, &sample(400, 1, |i| i % 300));
    produce(&p, "orders", 1, &sample(200, 2, |i| i % 300));
    let port = wanmirror::demo::broker::free_port().unwrap();
    let cfg = pair.dir.path().join("m.toml");
    std::fs::write(
        &cfg,
        format!(
            "[source]\nname = \"dc-a\"\nbootstrap = \"{a}\"\n[destination]\nname = \"dc-b\"\nbootstrap = \"{}\"\n[mirror]\ntopics = [\"orders\"]\nreplication_factor = 1\ntail_wait_ms = 100\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n",
            pair.b.bootstrap()
        ),
    )
    .unwrap();
    let mut m = Mirror::spawn(&cfg, &[]);
    let records = r#"wanmirror_mirrored_records_total{source_cluster="dc-a",topic="orders""#;
    let lag = r#"wanmirror_partition_lag_offsets{source_cluster="dc-a",topic="orders""#;
    let scrape = || get_http(port, "/metrics").1;
    eventually(
        Duration::from_secs(60),
        "600 records mirrored, lag 0",
        || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() && {
                let b = scrape();
                metric_value(&b, records) == Some(600.0) && metric_value(&b, lag) == Some(0.0)
            }
        },
    );
    let b = scrape();
    // A sample for docs/metrics.md (shown with --nocapture).
    eprintln!("{b}");
    assert_eq!(
        metric_value(
            &b,
            r#"wanmirror_partition_dest_end_offset{source_cluster="dc-a",topic="orders",partition="0"}"#
        ),
        Some(400.0),
        "{b}"
    );
    assert!(
        metric_value(
            &b,
            r#"wanmirror_mirrored_bytes_total{source_cluster="dc-a",topic="orders""#
        )
        .unwrap_or(0.0)
            > 0.0,
        "{b}"
    );
    assert!(
        metric_value(
            &b,
            r#"wanmirror_replication_latency_batches{source_cluster="dc-a",topic="orders"}"#
        )
        .unwrap_or(0.0)
            > 0.0,
        "the latency histogram has no counts: {b}"
    );
    assert!(b.contains(r#"wanmirror_replication_latency_seconds{source_cluster="dc-a",topic="orders",quantile="0.99"}"#), "{b}");
    assert!(b.contains("wanmirror_in_flight_bytes "), "{b}");
    assert_eq!(
        metric_value(
            &b,
            r#"wanmirror_partition_lag_bytes{source_cluster="dc-a",topic="orders",partition="0"}"#
        ),
        Some(0.0),
        "{b}"
    );
    // Every write is timed to its acknowledgement (at least one request per partition).
    assert!(
        metric_value(
            &b,
            r#"wanmirror_produce_requests{destination_cluster="dc-b"}"#
        )
        .unwrap_or(0.0)
            >= 2.0,
        "{b}"
    );
    assert!(
        b.contains(
            r#"wanmirror_produce_latency_seconds{destination_cluster="dc-b",quantile="0.99"}"#
        ),
        "{b}"
    );
    // The source broker's pool, once its first sizing window is over.
    eventually(Duration::from_secs(20), "pool figures", || {
        let b = scrape();
        metric_value(
            &b,
            r#"wanmirror_pool_target_connections{source_cluster="dc-a",broker="#,
        )
        .unwrap_or(0.0)
            >= 1.0
            && b.contains(r#"wanmirror_pool_rtt_seconds{source_cluster="dc-a",broker="#)
            && b.contains(
                r#"wanmirror_pool_goodput_bytes_per_second{source_cluster="dc-a",broker="#,
            )
            && b.contains(r#"wanmirror_pool_connections{source_cluster="dc-a",broker="#)
    });
    for part in 0..2 {
        let state = |st: &str| {
            metric_value(
                &b,
                &format!(
                    r#"wanmirror_partition_state{{source_cluster="dc-a",topic="orders",partition="{part}",state="{st}"}}"#
                ),
            )
        };
        assert_eq!(
            (state("tailing"), state("catching_up"), state("stopped")),
            (Some(1.0), Some(0.0), Some(0.0)),
            "{b}"
        );
    }

    // More records: the counters follow, and the lag goes back to 0.
    produce(&p, "orders", 1, &sample(150, 3, |i| i % 300));
    eventually(Duration::from_secs(60), "750 records mirrored", || {
        let b = scrape();
        metric_value(&b, records) == Some(750.0) && metric_value(&b, lag) == Some(0.0)
    });
    let (status, _) = get_http(port, "/other");
    assert!(status.contains("404"), "{status}");
    m.stop_cleanly();

    // A restart with nothing left to copy: both partitions tail at once, and nothing
    // is counted as mirrored by the new process (it read the end, it wrote nothing).
    let mut m = Mirror::spawn(&cfg, &[]);
    let tailing = r#"wanmirror_partition_state{source_cluster="dc-a",topic="orders",partition="0",state="tailing"}"#;
    eventually(
        Duration::from_secs(60),
        "caught-up partitions tailing after a restart",
        || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() && {
                let b = scrape();
                metric_value(&b, tailing) == Some(1.0) && metric_value(&b, lag) == Some(0.0)
            }
        },
    );
    let b = scrape();
    assert_eq!(metric_value(&b, records), Some(0.0), "{b}");
    assert_eq!(
        metric_value(
            &b,
            r#"wanmirror_partition_dest_end_offset{source_cluster="dc-a",topic="orders",partition="1"}"#
        ),
        Some(350.0),
        "{b}"
    );
    m.stop_cleanly();
}

/// A metrics address already taken is one clear error at start, exit 2, nothing written.
#[test]
fn a_taken_metrics_port_is_one_clear_error() {
    let pair = Pair::start();
    let a = pair.a.bootstrap();
    create_topic(&a, "orders", 1);
    produce(
        &producer(&a, "none", false),
        "orders",
        0,
        &sample(10, 1, |i| i),
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cfg = pair.config("m.toml", &["orders"], "");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        format!("{text}[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wanmirror"))
        .args(["run", "--stop-at-end", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("metrics.listen") && err.contains(&port.to_string()),
        "{err}"
    );
    assert!(
        !topic_exists(&pair.b.bootstrap(), "dc-a.orders"),
        "written before the error"
    );
}
