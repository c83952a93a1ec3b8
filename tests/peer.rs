//! The QUIC peer end to end: `wanmirror serve` in front of a real tansu source, the
//! mirror reading through it into a real tansu destination, librdkafka producing and
//! reading. Each test owns its brokers, its serve process and its ports.

mod common;

use std::time::Duration;

use common::peer::*;
use common::*;

/// A batch's base offset, offset delta, count, attributes, timestamps and records.
type Shape = (i64, i32, i32, i16, i64, i64, Vec<u8>);

/// Every destination batch's content and shape: what must match between a copy
/// through the peer and a copy over TCP. Producer fields and the CRC differ by design.
fn batch_shapes(bootstrap: &str, topic: &str, partition: i32) -> Vec<Shape> {
    all_batches(bootstrap, topic, partition)
        .into_iter()
        .map(|b| {
            let h = b.header;
            (
                h.base_offset,
                h.last_offset_delta,
                h.record_count,
                h.attributes,
                h.base_timestamp,
                h.max_timestamp,
                b.bytes[61..].to_vec(),
            )
        })
        .collect()
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

    let (serve, certs) = serve_for(&pair, &["dc-b"], &["codec-.*", "sizes"]);
    let cfg = pair.dir.path().join("peer.toml");
    peer_config(
        &cfg,
        &format!("127.0.0.1:{}", serve.port),
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

/// Topic "big" in the source: 4 partitions of 6,000 records of 1,500 bytes (36 MB,
/// 24,000 records); the producer, for more.
fn big_backlog(pair: &Pair) -> rdkafka::producer::BaseProducer {
    create_topic(&pair.a.bootstrap(), "big", 4);
    let p = producer(&pair.a.bootstrap(), "none", true);
    for part in 0..4 {
        produce(&p, "big", part, &sample(6000, part as u64, |_| 1500));
    }
    p
}

/// The "big" backlog behind a serve, reached through a UDP relay carrying about
/// 4 MB/s towards the client.
fn big_behind_a_slow_path(pair: &Pair) -> (Serve, std::path::PathBuf, UdpRelay) {
    big_backlog(pair);
    let (serve, certs) = serve_for(pair, &["dc-b"], &["big"]);
    let relay = UdpRelay::start(serve.port);
    relay.throttle(4_000_000);
    (serve, certs, relay)
}

/// Destination end of every partition of `topic` summed.
fn dest_total(pair: &Pair, topic: &str, partitions: i32) -> i64 {
    (0..partitions)
        .map(|p| end_offset(&pair.b.bootstrap(), topic, p))
        .sum()
}

#[test]
fn tails_are_pushed_and_a_kill_of_either_side_mid_copy_loses_nothing() {
    let pair = Pair::start();
    let p = big_backlog(&pair);
    let total = 24_000;
    let (mut serve, certs) = serve_for(&pair, &["dc-b"], &["big"]);
    // A link of about 8 MB/s: the 36 MB copy takes seconds, so kills land in it.
    let relay = UdpRelay::start(serve.port);
    relay.throttle(8_000_000);
    let cfg = pair.dir.path().join("peer.toml");
    let peer = format!("127.0.0.1:{}", relay.port);
    peer_config(
        &cfg,
        &peer,
        &certs,
        "dc-b",
        &pair.b.bootstrap(),
        &["big"],
        "rename = \"{topic}\"",
    );
    let mut m = Mirror::spawn_logging(
        &cfg,
        &[],
        "info,wanmirror::source=debug,wanmirror::mirror::partition=debug",
    );

    // kill -9 of the serve side while the copy is under way.
    let b = pair.b.bootstrap();
    eventually(Duration::from_secs(60), "a first part of the copy", || {
        topic_exists(&b, "big") && dest_total(&pair, "big", 4) > 0
    });
    serve.kill();
    let at_kill = dest_total(&pair, "big", 4);
    assert!(
        at_kill < total,
        "the copy ended before the kill ({at_kill})"
    );
    std::thread::sleep(Duration::from_secs(2));
    serve.restart();
    eventually(
        Duration::from_secs(120),
        "the copy after the serve side came back",
        || dest_total(&pair, "big", 4) == total,
    );
    assert!(m.running(), "{}", m.log_text());
    assert!(m.log_text().contains("reconnecting"), "{}", m.log_text());

    // Live records are pushed: the serve side holds subscriptions.
    let fresh: Vec<Rec> = sample(200, 9, |i| i % 50);
    for (i, r) in fresh.iter().enumerate() {
        produce(&p, "big", (i % 4) as i32, std::slice::from_ref(r));
        std::thread::sleep(Duration::from_millis(10));
    }
    eventually(Duration::from_secs(60), "live records", || {
        dest_total(&pair, "big", 4) == total + 200
    });
    assert!(
        serve.log_text().contains("push subscription"),
        "{}\n---- mirror:\n{}",
        serve.log_text(),
        m.log_text()
    );

    // kill -9 of the mirror mid-copy, then a restart: the copy resumes exactly.
    for part in 0..4 {
        produce(&p, "big", part, &sample(6000, part as u64 + 10, |_| 1500));
    }
    let before = dest_total(&pair, "big", 4);
    eventually(Duration::from_secs(60), "a part of the second copy", || {
        dest_total(&pair, "big", 4) > before
    });
    m.signal(9);
    m.wait(Duration::from_secs(10));
    let at_kill = dest_total(&pair, "big", 4);
    assert!(
        at_kill < total + 200 + 24_000,
        "the second copy ended before the kill"
    );
    let (st, log) = mirror_to_end(&cfg);
    assert!(st.success(), "{log}");
    for part in 0..4 {
        assert_same(&pair, "big", "big", part);
    }
    assert!(serve.running(), "{}", serve.log_text());
}

#[test]
fn a_cut_longer_than_the_idle_timeout_heals_by_itself() {
    let pair = Pair::start();
    create_topic(&pair.a.bootstrap(), "flow", 2);
    let p = producer(&pair.a.bootstrap(), "lz4", true);
    produce(&p, "flow", 0, &sample(1000, 1, |i| i % 300));
    let (serve, certs) = serve_for(&pair, &["dc-b"], &["flow"]);
    let relay = UdpRelay::start(serve.port);
    let cfg = pair.dir.path().join("peer.toml");
    peer_config(
        &cfg,
        &format!("127.0.0.1:{}", relay.port),
        &certs,
        "dc-b",
        &pair.b.bootstrap(),
        &["flow"],
        "",
    );
    let mut m = Mirror::spawn(&cfg, &[]);
    let b = pair.b.bootstrap();
    eventually(Duration::from_secs(60), "the first copy", || {
        topic_exists(&b, "dc-a.flow") && end_offset(&b, "dc-a.flow", 0) == 1000
    });
    relay.cut();
    produce(&p, "flow", 0, &sample(500, 2, |i| i % 300));
    produce(&p, "flow", 1, &sample(500, 3, |i| i % 300));
    // Longer than the 15 s idle timeout: the connections die on both sides.
    std::thread::sleep(Duration::from_secs(20));
    assert!(
        relay.dropped.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "the cut dropped nothing"
    );
    assert_eq!(
        end_offset(&b, "dc-a.flow", 0),
        1000,
        "records crossed a cut path"
    );
    relay.restore();
    eventually(Duration::from_secs(90), "the copy after the cut", || {
        end_offset(&b, "dc-a.flow", 0) == 1500
            && topic_exists(&b, "dc-a.flow")
            && end_offset(&b, "dc-a.flow", 1) == 500
    });
    assert!(m.running(), "{}", m.log_text());
    m.stop_cleanly();
    assert_same(&pair, "flow", "dc-a.flow", 0);
    assert_same(&pair, "flow", "dc-a.flow", 1);
}

/// Runs `wanmirror diff --json --config cfg` and returns its exit code, JSON, stderr.
fn diff_through(cfg: &std::path::Path, extra: &[&str]) -> (i32, serde_json::Value, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wanmirror"))
        .args(["diff", "--json", "--config"])
        .arg(cfg)
        .args(extra)
        .output()
        .expect("run diff");
    let code = out.status.code().unwrap_or(-1);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (code, json, err)
}

#[test]
fn diff_through_the_peer_moves_hashes_and_names_the_differing_record() {
    let pair = Pair::start();
    create_topic(&pair.a.bootstrap(), "same", 1);
    create_topic(&pair.a.bootstrap(), "odd", 1);
    create_topic(&pair.b.bootstrap(), "same", 1);
    create_topic(&pair.b.bootstrap(), "odd", 1);
    let recs = sample(20_000, 5, |i| 200 + i % 300);
    let mut other = recs.clone();
    other[12_345].value = Some(b"not the source's value".to_vec());
    let (pa, pb) = (
        producer(&pair.a.bootstrap(), "lz4", false),
        producer(&pair.b.bootstrap(), "zstd", false),
    );
    produce(&pa, "same", 0, &recs);
    produce(&pb, "same", 0, &recs);
    produce(&pa, "odd", 0, &recs);
    produce(&pb, "odd", 0, &other);
    let (serve, certs) = serve_for(&pair, &["dc-b"], &["same", "odd"]);
    let cfg = pair.dir.path().join("peer.toml");
    peer_config(
        &cfg,
        &format!("127.0.0.1:{}", serve.port),
        &certs,
        "dc-b",
        &pair.b.bootstrap(),
        &["same", "odd"],
        "rename = \"{topic}\"",
    );

    let (code, r, err) = diff_through(&cfg, &["--topic", "same", "--leaf-offsets", "1000"]);
    assert_eq!(code, 0, "{r:#} {err}");
    let bytes = r["peer_bytes"].as_u64().expect("peer bytes reported");
    let read_here: u64 = r["partitions"][0]["bytes_read"].as_u64().unwrap();
    // 20 leaves' hashes and a handshake: far less than the records (about 7 MB).
    assert!(
        bytes < 60_000,
        "{bytes} bytes crossed for an identical copy"
    );
    assert!(
        read_here > 1_000_000,
        "the destination side read {read_here} bytes"
    );
    assert!(
        serve.log_text().contains("tree built"),
        "{}",
        serve.log_text()
    );

    let (code, r, err) = diff_through(&cfg, &["--topic", "odd", "--leaf-offsets", "1000"]);
    assert_eq!(code, 1, "{r:#} {err}");
    let range = &r["partitions"][0]["ranges"][0];
    assert_eq!(range["first"], 12_345, "{r:#}");
    assert_eq!(range["last"], 12_345, "{r:#}");
    assert_eq!(range["source_records"], 1000, "{r:#}");
}

#[test]
fn strangers_and_topics_outside_the_allow_list_are_refused_on_both_sides() {
    let pair = Pair::start();
    create_topic(&pair.a.bootstrap(), "orders", 1);
    create_topic(&pair.a.bootstrap(), "secret", 1);
    produce(
        &producer(&pair.a.bootstrap(), "none", false),
        "secret",
        0,
        &sample(10, 1, |_| 10),
    );
    // One CA for the serve side, dc-b and dc-z; dc-z is not a configured client.
    let (serve, certs) = serve_for(&pair, &["dc-b", "dc-z"], &["orders"]);
    let peer = format!("127.0.0.1:{}", serve.port);
    let b = pair.b.bootstrap();
    let run = |cfg: &std::path::Path| {
        let mut m = Mirror::spawn(cfg, &["--stop-at-end"]);
        let st = m.wait(Duration::from_secs(60));
        (st.code(), m.log_text())
    };
    let error_line = |log: &str| {
        let lines: Vec<&str> = log.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(lines.len(), 1, "one error line expected: {log}");
        lines[0].to_string()
    };

    // A certificate from another CA.
    let stranger = certs_dir_of(&pair, "other-pki", &["dc-b"]);
    let cfg = pair.dir.path().join("other-ca.toml");
    peer_config_with(&cfg, &peer, &certs, &stranger, "dc-b", &b, &["orders"], "");
    let (code, log) = run(&cfg);
    assert_eq!(code, Some(2), "{log}");
    let line = error_line(&log);
    assert!(line.contains("refused our client certificate"), "{line}");
    eventually(Duration::from_secs(5), "the serve side's account", || {
        serve.log_text().contains("refused a client connection")
    });

    // A certificate of the right CA naming no configured client.
    let cfg = pair.dir.path().join("unknown.toml");
    peer_config(&cfg, &peer, &certs, "dc-z", &b, &["orders"], "");
    let (code, log) = run(&cfg);
    assert_eq!(code, Some(2), "{log}");
    let line = error_line(&log);
    assert!(
        line.contains("names none of the configured clients"),
        "{line}"
    );
    assert!(
        serve
            .log_text()
            .contains("names none of the configured clients (dc-b)"),
        "{}",
        serve.log_text()
    );

    // A server certificate the client's CA did not sign.
    let cfg = pair.dir.path().join("wrong-server.toml");
    peer_config_with(
        &cfg,
        &peer,
        &stranger,
        &stranger,
        "dc-b",
        &b,
        &["orders"],
        "",
    );
    let (code, log) = run(&cfg);
    assert_eq!(code, Some(2), "{log}");
    assert!(
        error_line(&log).contains("not signed by the CA in peer_tls.ca"),
        "{log}"
    );

    // A topic outside the allow-list: diff asks for it by name.
    let cfg = pair.dir.path().join("secret.toml");
    peer_config(&cfg, &peer, &certs, "dc-b", &b, &["orders", "secret"], "");
    let (code, _, err) = diff_through(&cfg, &["--topic", "secret"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("\"secret\" is not in the topics client \"dc-b\" may read"),
        "{err}"
    );
    assert!(serve
        .log_text()
        .contains("refused: topic outside the client's allow-list"));
    // ... and a mirror of a pattern sees only what it may read.
    let (code, log) = run(&cfg);
    assert_eq!(code, Some(0), "{log}");
    assert!(
        !topic_exists(&b, "dc-a.secret"),
        "a refused topic was created"
    );

    // No client certificate at all.
    let (client_err, _) = raw_client(&certs, None, serve.port, |_| async {});
    let client_err = client_err.expect("a client without a certificate got in");
    assert!(
        client_err.contains("certificate")
            || client_err.contains("116")
            || client_err.contains("crypto"),
        "{client_err}"
    );
    eventually(
        Duration::from_secs(5),
        "the serve side's account of a client without a certificate",
        || {
            serve
                .log_text()
                .matches("refused a client connection")
                .count()
                >= 3
        },
    );
}

/// `wanmirror cert` into a directory of the pair's temp dir.
fn certs_dir_of(pair: &Pair, name: &str, clients: &[&str]) -> std::path::PathBuf {
    certs(&pair.dir.path().join(name), clients)
}

/// A bare QUIC client: with `client` Some(name), it presents `client-<name>.pem`;
/// None presents no certificate. Runs `f` on the connection; returns the connect
/// error, if any, and what `f` returned.
fn raw_client<F, Fut, T>(
    certs: &std::path::Path,
    client: Option<&str>,
    port: u16,
    f: F,
) -> (Option<String>, Option<T>)
where
    F: FnOnce(quinn::Connection) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    use std::sync::Arc;
    runtime().block_on(async move {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        let ca = std::fs::read(certs.join("ca.pem")).unwrap();
        use rustls::pki_types::pem::PemObject;
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
            roots.add(c.unwrap()).unwrap();
        }
        let b = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots);
        let mut tls = match client {
            Some(name) => {
                let chain: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(
                    certs.join(format!("client-{name}.pem")),
                )
                .unwrap()
                .map(|c| c.unwrap())
                .collect();
                let key = rustls::pki_types::PrivateKeyDer::from_pem_file(
                    certs.join(format!("client-{name}.key")),
                )
                .unwrap();
                b.with_client_auth_cert(chain, key).unwrap()
            }
            None => b.with_no_client_auth(),
        };
        tls.alpn_protocols = vec![b"wanmirror/1".to_vec()];
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
        let conn = ep
            .connect(format!("127.0.0.1:{port}").parse().unwrap(), "127.0.0.1")
            .unwrap()
            .await;
        let conn = match conn {
            Ok(c) => c,
            Err(e) => return (Some(format!("{e:?}")), None),
        };
        // With TLS 1.3 the server checks the client's certificate after the client
        // thinks the handshake is done: the refusal arrives on first use.
        match conn.open_bi().await {
            Ok((mut s, mut r)) => {
                let hello = wanmirror::peer::frame::Frame::Hello {
                    min: 1,
                    max: 1,
                    agent: "test".into(),
                };
                let _ = s.write_all(&hello.to_bytes()).await;
                let _ = s.finish();
                let mut buf = [0u8; 64];
                if let Err(e) = r.read(&mut buf).await {
                    return (Some(format!("{e:?}")), None);
                }
            }
            Err(e) => return (Some(format!("{e:?}")), None),
        }
        let out = f(conn).await;
        (None, Some(out))
    })
}

#[test]
fn malformed_frames_reset_their_stream_and_never_the_server() {
    let pair = Pair::start();
    let (mut serve, certs) = serve_for(&pair, &["dc-b"], &[".*"]);
    let (err, out) = raw_client(&certs, Some("dc-b"), serve.port, |conn| async move {
        let mut seen = Vec::new();
        // An unknown frame type, a frame larger than any request, a truncated one,
        // and a request that is not one.
        let bad: Vec<Vec<u8>> = vec![
            vec![0, 0, 0, 5, 0x55, 1, 2, 3, 4],
            vec![0x04, 0, 0, 0, 0x05],
            vec![0, 0, 0, 40, 0x05, 0, 3],
            wanmirror::peer::frame::Frame::TreeBuilt { leaves: 1 }
                .to_bytes()
                .to_vec(),
        ];
        for b in bad {
            let (mut s, mut r) = conn.open_bi().await.expect("stream");
            s.write_all(&b).await.expect("write");
            let _ = s.finish();
            let mut buf = Vec::new();
            let got = r.read_to_end(1 << 20).await.map(|v| {
                buf = v;
            });
            seen.push(format!("{got:?}"));
        }
        // The connection and the server still answer.
        let (mut s, r) = conn.open_bi().await.expect("stream");
        let hello = wanmirror::peer::frame::Frame::Hello {
            min: 1,
            max: 1,
            agent: "test".into(),
        };
        s.write_all(&hello.to_bytes()).await.unwrap();
        let _ = s.finish();
        let mut frames = wanmirror::peer::io::Frames::new(r);
        let welcome = frames.next().await;
        (seen, format!("{welcome:?}"))
    });
    assert!(err.is_none(), "{err:?}");
    let (seen, welcome) = out.unwrap();
    for s in &seen {
        assert!(
            s.contains("Reset(1)") || s.contains("reset by peer"),
            "{seen:?}"
        );
    }
    assert!(
        welcome.contains("Welcome") && welcome.contains("dc-a"),
        "{welcome}"
    );
    assert!(serve.running(), "{}", serve.log_text());
    assert!(
        serve.log_text().contains("malformed request"),
        "{}",
        serve.log_text()
    );
}

#[test]
fn continuous_reconciliation_verifies_the_copy_and_stops_a_partition_that_differs() {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::config::ClientConfig;
    let pair = Pair::start();
    create_topic(&pair.a.bootstrap(), "kept", 1);
    create_topic(&pair.a.bootstrap(), "redone", 1);
    let p = producer(&pair.a.bootstrap(), "lz4", false);
    produce(&p, "kept", 0, &sample(3000, 1, |i| i % 200));
    produce(&p, "redone", 0, &sample(1000, 2, |i| i % 200));
    let (serve, certs) = serve_for(&pair, &["dc-b"], &["kept", "redone"]);
    let cfg = pair.dir.path().join("peer.toml");
    peer_config(
        &cfg,
        &format!("127.0.0.1:{}", serve.port),
        &certs,
        "dc-b",
        &pair.b.bootstrap(),
        &["kept", "redone"],
        "verify_interval_secs = 6",
    );
    let mut m = Mirror::spawn(&cfg, &[]);
    let b = pair.b.bootstrap();
    eventually(Duration::from_secs(60), "the first copy", || {
        topic_exists(&b, "dc-a.redone") && end_offset(&b, "dc-a.redone", 0) == 1000
    });
    // The source topic is deleted and made again with other records, before the first
    // check: the copy of its first 1,000 offsets no longer matches the source.
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", pair.a.bootstrap())
        .create()
        .expect("admin client");
    runtime().block_on(async {
        let r = admin
            .delete_topics(&["redone"], &AdminOptions::new())
            .await
            .expect("delete topics");
        assert!(r.iter().all(|x| x.is_ok()), "{r:?}");
    });
    create_topic(&pair.a.bootstrap(), "redone", 1);
    produce(&p, "redone", 0, &sample(1500, 3, |i| i % 200));
    eventually(
        Duration::from_secs(60),
        "the reconciliation's verdict",
        || {
            m.log_text()
                .contains("continuous reconciliation: destination offsets")
        },
    );
    let log = m.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("continuous reconciliation: destination offsets"))
        .unwrap();
    assert!(
        line.contains("redone") && line.contains("offsets 0.."),
        "{line}"
    );
    // The unchanged topic was checked and found right, and keeps being mirrored.
    assert!(
        log.lines()
            .any(|l| l.contains("copy verified against the source") && l.contains("topic=kept")),
        "{log}"
    );
    produce(&p, "kept", 0, &sample(100, 4, |i| i % 200));
    eventually(Duration::from_secs(30), "kept still mirrored", || {
        end_offset(&b, "dc-a.kept", 0) == 3100
    });
    assert!(m.running(), "{}", m.log_text());
    m.signal(15);
    let st = m.wait(Duration::from_secs(30));
    // A stopped partition makes the exit code 1.
    assert_eq!(st.code(), Some(1), "{}", m.log_text());
}

/// The peer's pool of QUIC connections sizes itself: a backlog makes it probe past
/// its starting half, the metrics show it, and once only pushes are left it shrinks
/// and closes the connections it no longer wants (the serve side sees them go).
#[test]
fn the_peer_pool_grows_under_a_backlog_and_closes_surplus_connections_when_idle() {
    let pair = Pair::start();
    // About 4 MB/s: the 36 MB backlog lasts several of the sizer's 1 s windows.
    let (serve, certs, relay) = big_behind_a_slow_path(&pair);
    let cfg = pair.dir.path().join("peer.toml");
    let metrics = wanmirror::demo::broker::free_port().expect("a free port");
    peer_config(
        &cfg,
        &format!("127.0.0.1:{}", relay.port),
        &certs,
        "dc-b",
        &pair.b.bootstrap(),
        &["big"],
        &format!("rename = \"{{topic}}\"\n[metrics]\nlisten = \"127.0.0.1:{metrics}\""),
    );
    let mut m = Mirror::spawn_logging(
        &cfg,
        &[],
        "info,wanmirror::peer=debug,wanmirror::source=debug",
    );
    let pool = |body: &str, what: &str| {
        metric_value(
            body,
            &format!("wanmirror_pool_{what}{{source_cluster=\"dc-a\",broker=\"peer\"}}"),
        )
    };
    eventually(Duration::from_secs(60), "the pool grows", || {
        m.log_text().contains("peer connection pool resized")
    });
    let log = m.log_text();
    let grew = log
        .lines()
        .find(|l| l.contains("peer connection pool resized"))
        .unwrap_or_default()
        .to_string();
    assert!(
        grew.contains("from=4") && grew.contains("to=8") && grew.contains("change=Grew"),
        "{log}"
    );
    let at_growth = dest_total(&pair, "big", 4);
    assert!(
        at_growth < 24_000,
        "the pool grew only after the backlog was copied ({at_growth})"
    );
    // More connections than the four it started with open once it grows: the pool
    // opens the new slots' connections at once (serve logs each).
    eventually(Duration::from_secs(60), "a fifth connection", || {
        serve.log_text().matches("client connected").count() >= 5
    });
    eventually(Duration::from_secs(120), "the backlog copied", || {
        dest_total(&pair, "big", 4) == 24_000
    });

    // Records keep coming while the pool shrinks, so subscriptions move with pushes
    // under way. Only pushes now: after 15 idle windows the pool comes down a step a
    // window, to one connection (4 subscriptions need no more).
    let mut traffic = Traffic::start(&pair.a.bootstrap(), &["big"], 4);
    eventually(Duration::from_secs(90), "the idle pool shrinks", || {
        let (_, body) = get_http(metrics, "/metrics");
        pool(&body, "target_connections").is_some_and(|t| t <= 1.0)
    });
    assert!(m.log_text().contains("change=Idle"), "{}", m.log_text());
    // Subscriptions on the surplus connections move, and those connections close.
    eventually(
        Duration::from_secs(30),
        "the surplus connections closed",
        || {
            let (_, body) = get_http(metrics, "/metrics");
            pool(&body, "connections").is_some_and(|o| o <= 1.0)
        },
    );
    let log = m.log_text();
    let placed_past_first = log
        .lines()
        .filter(|l| l.contains("peer subscription open") && !l.contains("connection=0"))
        .count();
    assert!(
        placed_past_first > 0,
        "every subscription opened on the first connection: the move was not exercised\n{log}"
    );
    assert!(
        log.contains("moving a subscription off a surplus peer connection"),
        "{log}"
    );
    let closed = serve
        .log_text()
        .lines()
        .filter(|l| l.contains("client disconnected") && l.contains("pool shrank"))
        .count();
    assert!(closed >= 4, "{}", serve.log_text());
    for l in log
        .lines()
        .filter(|l| l.contains("peer connection pool") || l.contains("moving a subscription"))
    {
        eprintln!("{l}");
    }
    let rounds = traffic.finish();
    eventually(Duration::from_secs(60), "the pushed records", || {
        dest_total(&pair, "big", 4) == 24_000 + 4 * rounds as i64
    });
    assert!(m.running(), "{}", m.log_text());
    for part in 0..4 {
        assert_same(&pair, "big", "big", part);
    }
}

/// Serve sends older fetches' answers first: through a slow path, sixteen fetches
/// asked at once arrive one after another, the first at the link's full rate. With
/// equal priorities QUIC shares the link round robin, and all of them would arrive
/// together near the end. What tells them apart is how much of the whole transfer
/// the connection had received when the first answer was complete: under 40 % with
/// priorities, nearly all of it with round robin. Bytes, not seconds: on a loaded
/// machine the broker reads before the first answer can take longer than the link.
/// Each answer's head goes before every answer's records.
#[test]
fn answers_through_a_slow_path_arrive_oldest_first() {
    let pair = Pair::start();
    let (_serve, certs, relay) = big_behind_a_slow_path(&pair);
    let (err, out) = raw_client(&certs, Some("dc-b"), relay.port, |conn| async move {
        let start = std::time::Instant::now();
        let mut reads = Vec::new();
        // Opened one after another: stream order is request order.
        for i in 0..16i64 {
            let (mut s, r) = conn.open_bi().await.expect("stream");
            let fetch = wanmirror::peer::frame::Frame::Fetch {
                topic: "big".into(),
                partition: (i % 4) as i32,
                offset: (i / 4) * 1_500,
                end: -1,
                max_bytes: 1_000_000,
                max_wait_ms: 0,
            };
            s.write_all(&fetch.to_bytes()).await.expect("write");
            let _ = s.finish();
            let conn = conn.clone();
            // The connection's received bytes when a frame is complete.
            let rx = move || conn.stats().udp_rx.bytes;
            reads.push(tokio::spawn(async move {
                use wanmirror::peer::frame::Frame;
                let mut frames = wanmirror::peer::io::Frames::new(r);
                let head = frames.next().await.expect("a head");
                assert!(matches!(head, Some(Frame::Head { .. })), "{head:?}");
                let head_rx = rx();
                let Ok(Some(Frame::Batches { records, .. })) = frames.next().await else {
                    panic!("no records after the head");
                };
                Answer {
                    secs: start.elapsed().as_secs_f64(),
                    bytes: records.len(),
                    rx: rx(),
                    head_rx,
                }
            }));
        }
        let mut done = Vec::new();
        for r in reads {
            done.push(r.await.unwrap());
        }
        done
    });
    assert!(err.is_none(), "{err:?}");
    let done = out.unwrap();
    eprintln!("per fetch, in request order: {done:?}");
    for a in &done {
        assert!(a.bytes > 900_000, "{done:?}");
    }
    let t: Vec<f64> = done.iter().map(|a| a.secs).collect();
    // About 20 MB at 4 MB/s.
    assert!(t[t.len() - 1] > 2.0, "the path was not slow: {t:?}");
    let total = done.iter().map(|a| a.rx).max().unwrap() as f64;
    // Counted from the first fetch's own head: serve sends that once it has read the
    // records from the broker, and a slow read is not the order's doing.
    assert!(
        ((done[0].rx - done[0].head_rx) as f64) < 0.4 * total,
        "the first answer waited for the others: {done:?}"
    );
    // And the rest follow in request order, give or take a few neighbours (serve
    // reads them from the broker at about the same time, and a loss at the relay
    // holds up an answer while the next completes).
    let inversions = t.windows(2).filter(|w| w[1] < w[0]).count();
    assert!(inversions <= 4, "answers arrived out of order: {t:?}");
    // Every head goes before the records queued ahead of it (the driver plans past
    // heads): queued with their records, the heads of the last nine fetches would
    // come after 40 % of the bytes. Two may, if the broker was slow to read them.
    let late = done
        .iter()
        .filter(|a| a.head_rx as f64 >= 0.4 * total)
        .count();
    assert!(late <= 2, "heads waited for the records: {done:?}");
}

/// One fetch's answer as the slow-path order test saw it.
#[derive(Debug)]
struct Answer {
    /// Seconds from the first request until its records were complete.
    secs: f64,
    /// Bytes of records in the answer.
    bytes: usize,
    /// Bytes the connection had received when the records were complete.
    rx: u64,
    /// Bytes the connection had received when the head was complete.
    head_rx: u64,
}
