//! TLS and SASL against real brokers: Apache Kafka's SSL (mutual TLS) and SASL_SSL
//! listeners with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512, and tansu behind a TLS
//! terminator. librdkafka produces and reads the data; the mirror, `diff` and `status`
//! reach the clusters only through their secured listeners. Every bad input fails with
//! exit 2 within the connect timeout, names the cluster and the cause, never shows the
//! password, and writes nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::kafka::{KafkaCluster, Shape};
use common::kafka_security::{PASSWORD, USER};
use common::pki::Pki;
use common::scenarios::topic;
use common::tansu_sql::TansuSql;
use common::tls_proxy::TlsTerminator;
use common::*;
use wanmirror::demo::broker::TansuBroker;
use wanmirror::kafka::connection::SocketOptions;
use wanmirror::kafka::security::settings::TlsSettings;
use wanmirror::kafka::security::Security;

/// The variable the configs name for the password.
const PASSWORD_VAR: &str = "WANMIRROR_TEST_SOURCE_PASSWORD";

/// A wanmirror command's outcome.
struct Ran {
    code: Option<i32>,
    out: String,
    took: Duration,
    /// The password the command was given.
    password: String,
}

/// Runs `wanmirror ARGS` with the source password in its environment.
fn wanmirror(args: &[&str], password: &str) -> Ran {
    let t0 = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_wanmirror"))
        .args(args)
        .env(PASSWORD_VAR, password)
        // Debug: the connection-level lines too, which must not show the password.
        .env("RUST_LOG", "debug")
        .output()
        .expect("run wanmirror");
    Ran {
        code: out.status.code(),
        out: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        took: t0.elapsed(),
        password: password.to_string(),
    }
}

/// `wanmirror run --stop-at-end` on `config`.
fn run_to_end(config: &str, password: &str) -> Ran {
    wanmirror(&["run", "--config", config, "--stop-at-end"], password)
}

/// A mirror config from `source` to `dest` for `topics`, with `sections` (TOML tables
/// such as `[source.tls]`) appended.
fn config(
    dir: &Path,
    name: &str,
    source: &str,
    dest: &str,
    topics: &[&str],
    sections: &str,
) -> PathBuf {
    let p = dir.join(name);
    write_config(&p, source, dest, 1, topics, "");
    let mut text = std::fs::read_to_string(&p).expect("config");
    text.push_str(sections);
    std::fs::write(&p, text).expect("config");
    p
}

fn sasl(mechanism: &str) -> String {
    format!(
        "[source.sasl]\nmechanism = \"{mechanism}\"\nusername = \"{USER}\"\npassword_env = \"{PASSWORD_VAR}\"\n"
    )
}

fn tls(side: &str, pki: &Pki, client_cert: bool, more: &str) -> String {
    let mut s = format!("[{side}.tls]\nca = {:?}\n", pki.ca.display().to_string());
    if client_cert {
        s += &format!(
            "cert = {:?}\nkey = {:?}\n",
            pki.client_cert.display().to_string(),
            pki.client_key.display().to_string()
        );
    }
    s + more
}

/// Every topic a cluster has (none must appear where a refused mirror pointed).
fn topics_of(bootstrap: &str, access: &Access) -> Vec<String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let mut cfg = rdkafka::ClientConfig::new();
    for (k, v) in &access.rdkafka {
        cfg.set(k, v);
    }
    let c: BaseConsumer = cfg
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("consumer");
    let md = c
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata");
    md.topics().iter().map(|t| t.name().to_string()).collect()
}

/// How the tests' own clients reach a broker behind a TLS terminator: librdkafka
/// with OpenSSL, and our client (which reads end offsets) with the same settings;
/// with `login`, SCRAM-SHA-512 as that user and password.
fn tls_access(pki: &Pki, client_cert: bool, login: Option<(&str, &str)>) -> Access {
    let mut settings = vec![
        ("security.protocol", "ssl".to_string()),
        ("ssl.ca.location", pki.ca.display().to_string()),
    ];
    if client_cert {
        settings.push((
            "ssl.certificate.location",
            pki.client_cert.display().to_string(),
        ));
        settings.push(("ssl.key.location", pki.client_key.display().to_string()));
    }
    if let Some((user, password)) = login {
        settings[0].1 = "sasl_ssl".into();
        settings.push(("sasl.mechanism", "SCRAM-SHA-512".into()));
        settings.push(("sasl.username", user.into()));
        settings.push(("sasl.password", password.into()));
    }
    let tls = TlsSettings {
        ca: Some(pki.ca.clone()),
        cert: client_cert.then(|| pki.client_cert.clone()),
        key: client_cert.then(|| pki.client_key.clone()),
        server_name: None,
    };
    Access {
        rdkafka: settings
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        ours: SocketOptions {
            security: Security::load(Some(&tls), None).expect("test TLS"),
            ..SocketOptions::default()
        },
    }
}

fn two_secured_clusters() -> (KafkaCluster, KafkaCluster) {
    let b = std::thread::spawn(|| KafkaCluster::start(Shape::single().secured()));
    let a = KafkaCluster::start(Shape::single().secured());
    (a, b.join().expect("start destination cluster"))
}

/// The source is SASL_SSL with SCRAM-SHA-512, the destination takes TLS with a client
/// certificate only. The copy is offset-identical (librdkafka reads both sides), and
/// `diff` and `status` reach both clusters with the same settings.
#[test]
fn scram_sha_512_source_into_a_mutual_tls_destination_on_kafka() {
    let (a, b) = two_secured_clusters();
    topic(&a, "orders", 2);
    let p = producer(&a.bootstrap(), "lz4", true);
    for part in 0..2 {
        produce(&p, "orders", part, &sample(3000, part as u64, |i| i % 500));
    }
    let dir = tempfile::tempdir().expect("dir");
    let sections = sasl("SCRAM-SHA-512")
        + &tls("source", a.pki(), false, "")
        + &tls("destination", b.pki(), true, "");
    let cfg = config(
        dir.path(),
        "m.toml",
        &a.sasl_ssl_bootstrap(),
        &b.ssl_bootstrap(),
        &["orders"],
        &sections,
    );
    let cfg_s = cfg.display().to_string();
    let check = wanmirror(&["check", "--config", &cfg_s], PASSWORD);
    assert_eq!(check.code, Some(0), "{}", check.out);
    assert!(
        check.out.contains("SASL_SSL") && check.out.contains("SCRAM-SHA-512 as mirror"),
        "{}",
        check.out
    );
    assert!(
        check.out.contains("with a client certificate"),
        "{}",
        check.out
    );
    let run = run_to_end(&cfg_s, PASSWORD);
    assert_eq!(run.code, Some(0), "{}", run.out);
    assert!(
        run.out.contains("SASL_SSL"),
        "the log names how the source is reached: {}",
        run.out
    );
    for part in 0..2 {
        assert_eq!(
            assert_same_at(
                &a.bootstrap(),
                "orders",
                &b.bootstrap(),
                "dc-a.orders",
                part
            ),
            3000
        );
    }
    let diff = wanmirror(&["diff", "--config", &cfg_s, "--json"], PASSWORD);
    assert_eq!(diff.code, Some(0), "{}", diff.out);
    assert!(
        diff.out.contains("\"identical\": true") && !diff.out.contains("\"identical\": false"),
        "{}",
        diff.out
    );
    let status = wanmirror(&["status", "--config", &cfg_s], PASSWORD);
    assert_eq!(status.code, Some(0), "{}", status.out);
    for r in [&check, &run, &diff, &status] {
        assert!(
            !r.out.contains(PASSWORD),
            "the password was printed: {}",
            r.out
        );
    }
}

/// SASL/PLAIN (what Confluent Cloud API keys use) and SCRAM-SHA-256 over TLS, into a
/// plaintext destination.
#[test]
fn plain_and_scram_sha_256_over_tls_on_kafka() {
    let a = KafkaCluster::start(Shape::single().secured());
    let b = TansuBroker::start("dc-b").expect("tansu");
    let dir = tempfile::tempdir().expect("dir");
    for (i, mech) in ["PLAIN", "SCRAM-SHA-256"].into_iter().enumerate() {
        let t = format!("t{i}");
        topic(&a, &t, 1);
        produce(
            &producer(&a.bootstrap(), "zstd", true),
            &t,
            0,
            &sample(2000, i as u64, |i| i % 300),
        );
        let sections = sasl(mech) + &tls("source", a.pki(), false, "");
        let cfg = config(
            dir.path(),
            &format!("{t}.toml"),
            &a.sasl_ssl_bootstrap(),
            &b.bootstrap(),
            &[&t],
            &sections,
        );
        let run = run_to_end(&cfg.display().to_string(), PASSWORD);
        assert_eq!(run.code, Some(0), "{mech}: {}", run.out);
        assert!(
            run.out.contains(&format!("{mech} as mirror")),
            "{}",
            run.out
        );
        assert_eq!(
            assert_same_at(&a.bootstrap(), &t, &b.bootstrap(), &format!("dc-a.{t}"), 0),
            2000
        );
    }
}

/// The one `error:` line of a failed run. With debug logging on, a connection's close
/// may be logged after it, so it need not be the last line.
fn error_line(ran: &Ran) -> &str {
    let errors: Vec<&str> = ran
        .out
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line expected: {}", ran.out);
    errors[0]
}

/// A bad setting: exit 2 quickly, one line naming the cluster and `says`, the password
/// never shown, nothing created in the destination.
fn refused(ran: &Ran, says: &[&str], dest: &str) {
    refused_at(ran, says, dest, &Access::default())
}

/// [`refused`] for a destination reached through `access`.
fn refused_at(ran: &Ran, says: &[&str], dest: &str, access: &Access) {
    assert_eq!(ran.code, Some(2), "{}", ran.out);
    let last = error_line(ran);
    for s in says {
        assert!(
            last.contains(s),
            "expected {s:?} in the error line: {}",
            ran.out
        );
    }
    // The connect timeout (10 s), and a margin for starting the process.
    assert!(
        ran.took < Duration::from_secs(15),
        "took {:?}: {}",
        ran.took,
        ran.out
    );
    for secret in [PASSWORD, ran.password.as_str()] {
        assert!(
            !ran.out.contains(secret),
            "the password was printed: {}",
            ran.out
        );
    }
    let created: Vec<String> = topics_of(dest, access)
        .into_iter()
        .filter(|t| !t.starts_with("__consumer"))
        .collect();
    assert!(
        created.is_empty(),
        "the destination got {created:?}: {}",
        ran.out
    );
}

/// Every bad input the issue names, against Kafka's secured listeners.
#[test]
fn bad_security_settings_fail_fast_with_one_clear_line() {
    let a = KafkaCluster::start(Shape::single().secured());
    topic(&a, "sec", 1);
    produce(
        &producer(&a.bootstrap(), "none", true),
        "sec",
        0,
        &sample(10, 1, |i| i),
    );
    let b = TansuBroker::start("dc-b").expect("tansu");
    let dir = tempfile::tempdir().expect("dir");
    let pki = a.pki().clone();
    let other = Pki {
        ca: pki.other_ca.clone(),
        ..pki.clone()
    };
    let (sasl_ssl, ssl, plain) = (a.sasl_ssl_bootstrap(), a.ssl_bootstrap(), a.bootstrap());
    let cases: Vec<(&str, String, String, &str, Vec<&str>)> = vec![
        (
            "wrong password",
            sasl_ssl.clone(),
            sasl("SCRAM-SHA-512") + &tls("source", &pki, false, ""),
            "not-the-password",
            vec![
                "dc-a",
                "SCRAM-SHA-512 login as mirror",
                "failed",
                "Authentication failed",
            ],
        ),
        (
            "wrong PLAIN password",
            sasl_ssl.clone(),
            sasl("PLAIN") + &tls("source", &pki, false, ""),
            "not-the-password",
            vec!["dc-a", "PLAIN login as mirror", "failed"],
        ),
        (
            "unknown mechanism",
            sasl_ssl.clone(),
            sasl("SCRAM-SHA-1") + &tls("source", &pki, false, ""),
            PASSWORD,
            vec!["source.sasl", "unknown mechanism \"SCRAM-SHA-1\""],
        ),
        (
            "untrusted certificate",
            sasl_ssl.clone(),
            sasl("SCRAM-SHA-512") + &tls("source", &other, false, ""),
            PASSWORD,
            vec!["dc-a", "not signed by a trusted CA"],
        ),
        (
            "hostname mismatch",
            sasl_ssl.clone(),
            sasl("SCRAM-SHA-512")
                + &tls(
                    "source",
                    &pki,
                    false,
                    "server_name = \"kafka.elsewhere.internal\"\n",
                ),
            PASSWORD,
            vec!["dc-a", "not valid for kafka.elsewhere.internal"],
        ),
        (
            "TLS against a plaintext port",
            plain.clone(),
            tls("source", &pki, false, ""),
            PASSWORD,
            vec!["dc-a", "TLS", "plaintext listener"],
        ),
        (
            "plaintext against a TLS port",
            ssl.clone(),
            String::new(),
            PASSWORD,
            vec!["dc-a", "TLS listener", "[source.tls]"],
        ),
        (
            "no client certificate on a mutual-TLS listener",
            ssl.clone(),
            tls("source", &pki, false, ""),
            PASSWORD,
            vec!["dc-a", "alert BadCertificate", "client certificate"],
        ),
        (
            "password variable not set",
            sasl_ssl.clone(),
            sasl("SCRAM-SHA-512").replace(PASSWORD_VAR, "WANMIRROR_TEST_UNSET_VARIABLE")
                + &tls("source", &pki, false, ""),
            PASSWORD,
            vec!["source.sasl", "WANMIRROR_TEST_UNSET_VARIABLE", "is not set"],
        ),
        (
            "password inline",
            sasl_ssl.clone(),
            sasl("SCRAM-SHA-512") + "password = \"mirror-secret\"\n",
            PASSWORD,
            vec!["source.sasl", "password_env or password_file"],
        ),
    ];
    let mut seen = Vec::new();
    for (name, bootstrap, sections, password, says) in &cases {
        let cfg = config(
            dir.path(),
            "bad.toml",
            bootstrap,
            &b.bootstrap(),
            &["sec"],
            sections,
        );
        let cfg_s = cfg.display().to_string();
        let run = run_to_end(&cfg_s, password);
        refused(&run, says, &b.bootstrap());
        seen.push(format!("{name}: {}", error_line(&run)));
        // diff and status reach the clusters the same way and fail the same way.
        if *name == "wrong password" {
            for cmd in ["diff", "status"] {
                let r = wanmirror(&[cmd, "--config", &cfg_s], password);
                refused(&r, says, &b.bootstrap());
            }
        }
    }
    // What each printed, for the record (--nocapture).
    for s in seen {
        println!("{s}");
    }
}

/// tansu cannot serve TLS itself: terminators stand in front of both brokers (the
/// destination's asks for a client certificate), which advertise the terminators'
/// ports. A TLS client against tansu's own plaintext port is refused within the
/// connect timeout (tansu reads the hello as a frame length and waits).
#[test]
fn a_mirror_through_tls_terminators_on_tansu() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = Pki::generate(dir.path());
    let ta = TlsTerminator::start(&pki, false);
    let tb = TlsTerminator::start(&pki, true);
    let a = TansuBroker::start_advertising("dc-a", Some(ta.port)).expect("tansu");
    let b = TansuBroker::start_advertising("dc-b", Some(tb.port)).expect("tansu");
    ta.forward_to(a.port);
    tb.forward_to(b.port);
    // The brokers send every client to the terminators: the tests' clients speak TLS
    // too (librdkafka with OpenSSL; ours where it reads the end offsets).
    let (via_a, via_b) = (tls_access(&pki, false, None), tls_access(&pki, true, None));
    create_topic(&a.bootstrap(), "orders", 2);
    let p = producer_via(&ta.bootstrap(), "snappy", false, &via_a);
    for part in 0..2 {
        produce(&p, "orders", part, &sample(2000, part as u64, |i| i % 700));
    }
    let sections = tls("source", &pki, false, "") + &tls("destination", &pki, true, "");
    let cfg = config(
        dir.path(),
        "m.toml",
        &ta.bootstrap(),
        &tb.bootstrap(),
        &["orders"],
        &sections,
    );
    let run = run_to_end(&cfg.display().to_string(), PASSWORD);
    assert_eq!(run.code, Some(0), "{}", run.out);
    for part in 0..2 {
        let s = consume_all_via(&ta.bootstrap(), "orders", part, &via_a);
        let d = consume_all_via(&tb.bootstrap(), "dc-a.orders", part, &via_b);
        assert_eq!(s.len(), 2000);
        assert_eq!(s, d, "orders/{part} differs");
    }
    // TLS straight at tansu's plaintext port: it never answers the hello.
    let c = TansuBroker::start("dc-c").expect("tansu");
    let bad = config(
        dir.path(),
        "bad.toml",
        &a.bootstrap(),
        &c.bootstrap(),
        &["orders"],
        &tls("source", &pki, false, ""),
    );
    let ran = run_to_end(&bad.display().to_string(), PASSWORD);
    refused(
        &ran,
        &[
            "dc-a",
            "no answer to the TLS handshake within 10 s (is this a plaintext listener?)",
        ],
        &c.bootstrap(),
    );
}

/// SCRAM-SHA-512 against tansu (sqlite storage, the only engine that keeps users),
/// behind a TLS terminator, into a TLS-only tansu: the copy is exact. tansu answers a
/// failed login with error code 0 and `e=invalid-proof` / `e=unknown-user` in its
/// final message, then would serve the connection: wanmirror reads the message, stops
/// with exit 2 and writes nothing.
#[test]
fn scram_on_tansu_and_its_error_code_0_refusals() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = Pki::generate(dir.path());
    let ta = TlsTerminator::start(&pki, false);
    let tb = TlsTerminator::start(&pki, false);
    let mut a = TansuSql::start(dir.path(), "dc-a", ta.port, false);
    let b = TansuBroker::start_advertising("dc-b", Some(tb.port)).expect("tansu");
    ta.forward_to(a.port);
    tb.forward_to(b.port);
    a.create_user(USER, PASSWORD, "scram512");
    // Data first, while the broker takes clients without a login; read back as the
    // reference for the copy.
    let plain_a = tls_access(&pki, false, None);
    create_topic(&a.bootstrap(), "orders", 1);
    produce(
        &producer_via(&ta.bootstrap(), "none", false, &plain_a),
        "orders",
        0,
        &sample(500, 3, |i| i % 200),
    );
    let source = consume_all_via(&ta.bootstrap(), "orders", 0, &plain_a);
    assert_eq!(source.len(), 500);
    a.restart(true);

    let sections = sasl("SCRAM-SHA-512")
        + &tls("source", &pki, false, "")
        + &tls("destination", &pki, false, "");
    let cfg = config(
        dir.path(),
        "m.toml",
        &ta.bootstrap(),
        &tb.bootstrap(),
        &["orders"],
        &sections,
    );
    let cfg_s = cfg.display().to_string();
    for (user, password, says) in [
        (USER, "not-the-password", "invalid-proof"),
        ("ghost", PASSWORD, "unknown-user"),
    ] {
        let bad = cfg.with_extension(format!("{user}.toml"));
        std::fs::write(
            &bad,
            std::fs::read_to_string(&cfg).expect("config").replace(
                &format!("username = \"{USER}\""),
                &format!("username = \"{user}\""),
            ),
        )
        .expect("config");
        let ran = run_to_end(&bad.display().to_string(), password);
        // What it printed, for the record (--nocapture).
        println!("{}", error_line(&ran));
        refused_at(
            &ran,
            &[
                "dc-a",
                "SCRAM-SHA-512 login as",
                "the broker refused the login",
                says,
            ],
            &tb.bootstrap(),
            &tls_access(&pki, false, None),
        );
    }
    let run = run_to_end(&cfg_s, PASSWORD);
    assert_eq!(run.code, Some(0), "{}", run.out);
    let copy = consume_all_via(
        &tb.bootstrap(),
        "dc-a.orders",
        0,
        &tls_access(&pki, false, None),
    );
    assert_eq!(source, copy, "the copy differs from the source");
}
