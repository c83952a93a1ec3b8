//! Consumer-group offset sync against real brokers, with librdkafka as the
//! application's client: a group's committed offsets in the source become the same
//! offsets in the destination, a consumer failing over reads first exactly the record at
//! its committed offset, a group live in the destination is left alone, a commit above
//! the destination end is clamped, and a destination commit never moves back.

mod common;

use std::time::Duration;

use common::apps::*;
use common::*;

#[test]
fn committed_offsets_fail_over_unchanged_clamped_and_never_into_a_live_group() {
    let pair = Pair::start();
    let (a, b) = (pair.a.bootstrap(), pair.b.bootstrap());
    create_topic(&a, "orders", 2);
    create_topic(&a, "other", 1);
    let p = producer(&a, "none", false);
    let recs = sample(100, 7, |_| 40);
    produce(&p, "orders", 0, &recs);
    produce(&p, "orders", 1, &sample(100, 8, |_| 40));
    produce(&p, "other", 0, &sample(20, 9, |_| 10));

    // Applications in the source consume with group management and commit.
    commit_as_member(&a, "app-1", "orders", &[(0, 37, "m-37"), (1, 64, "m-64")]);
    commit_as_member(&a, "app-1", "other", &[(0, 10, "o")]);
    // Beyond anything the destination can hold: clamped to its end.
    commit_as_member(&a, "app-clamp", "orders", &[(0, 500, "far")]);
    // Not named by [groups] sync.
    commit_as_member(&a, "zzz-1", "orders", &[(0, 20, "z")]);

    // tansu 0.6 keeps no commit metadata (it answers ""): the destination must
    // hold what the source holds, offset and metadata (tests/kafka_compat.rs checks
    // the metadata itself on Apache Kafka).
    let src_app1 = committed(&a, "app-1", "orders", &[0, 1]);
    let meta = |o: Option<(i64, String)>| o.map(|(_, m)| m).unwrap_or_default();
    let (m37, m64) = (meta(src_app1[0].clone()), meta(src_app1[1].clone()));
    let far = meta(committed(&a, "app-clamp", "orders", &[0])[0].clone());
    let groups = "[groups]\nsync = [\"app-.*\"]\ninterval_secs = 1\n";
    let cfg = pair.dir.path().join("g.toml");
    write_config(&cfg, &a, &b, 1, &["orders"], "");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{text}{groups}")).unwrap();

    // A copy to the end, then one round of the sync.
    let (st, log) = mirror_to_end(&cfg);
    assert!(st.success(), "{log}");
    assert_eq!(
        committed(&b, "app-1", "dc-a.orders", &[0, 1]),
        vec![Some((37, m37.clone())), Some((64, m64))],
        "{log}"
    );
    // The unmirrored topic's offset is not carried, nor the unnamed group's.
    assert_eq!(committed(&b, "app-1", "other", &[0]), vec![None]);
    assert_eq!(committed(&b, "app-1", "dc-a.other", &[0]), vec![None]);
    assert_eq!(committed(&b, "zzz-1", "dc-a.orders", &[0]), vec![None]);
    assert_eq!(
        committed(&b, "app-clamp", "dc-a.orders", &[0]),
        vec![Some((100, far.clone()))],
        "{log}"
    );
    assert!(
        log.contains("above the destination end") && log.contains("app-clamp"),
        "{log}"
    );

    // `status` shows each group ready to fail over.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wanmirror"))
        .args(["status", "--config", cfg.to_str().unwrap()])
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("app-1: in sync"), "{shown}");
    assert!(shown.contains("app-clamp: in sync"), "{shown}");
    assert!(
        shown.contains(
            "dc-a.orders/0: source committed 37, destination committed 37, destination end 100"
        ),
        "{shown}"
    );
    assert!(!shown.contains("zzz-1"), "{shown}");

    // That a failed-over librdkafka consumer reads first exactly the record at its
    // offset is shown on Apache Kafka (tests/kafka_compat.rs): on tansu 0.6 a
    // librdkafka group consumer does not start from committed offsets at all, ours or
    // its own (docs/tansu-quirks.md).

    // In the destination, app-1 moves on (it failed over) and stops for a moment;
    // app-live is running there. Meanwhile the source's copies of both commit on.
    commit_as_member(&b, "app-1", "dc-a.orders", &[(0, 80, "dest")]);
    commit_as_member(&a, "app-1", "orders", &[(0, 50, "m-50"), (1, 70, "m-70")]);
    let live = LiveMember::start(&b, "app-live", "dc-a.orders", 5);
    commit_as_member(&a, "app-live", "orders", &[(0, 60, "src")]);
    // app-clamp's offset stays above the end as the copy grows: it follows the end.
    produce(&p, "orders", 0, &sample(10, 10, |_| 40));

    // The sync runs every second, with metrics on.
    let port = wanmirror::demo::broker::free_port().unwrap();
    std::fs::write(
        &cfg,
        format!("{text}{groups}[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let mut m = Mirror::spawn(&cfg, &[]);
    let rounds = |g: &str, r: &str| {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .and_then(|_| {
                metric_value(
                    &get_http(port, "/metrics").1,
                    &format!(r#"wanmirror_group_sync_rounds_total{{group="{g}",result="{r}"}}"#),
                )
            })
            .unwrap_or(0.0)
    };
    let clamped = || {
        metric_value(
            &get_http(port, "/metrics").1,
            r#"wanmirror_group_offsets_clamped_total{group="app-clamp"}"#,
        )
        .unwrap_or(0.0)
    };
    eventually(
        Duration::from_secs(60),
        "two rounds over both groups, app-clamp at the new end",
        || {
            rounds("app-live", "skipped") >= 2.0
                && rounds("app-1", "synced") >= 2.0
                && clamped() >= 1.0
                && committed(&b, "app-clamp", "dc-a.orders", &[0]) == vec![Some((110, far.clone()))]
        },
    );
    let body = get_http(port, "/metrics").1;
    eprintln!(
        "{}",
        body.lines()
            .filter(|l| l.contains("group"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    m.stop_cleanly();
    let log = m.log_text();
    // The live group kept its own offset; app-1 kept what it consumed in the
    // destination on partition 0 and took the source's newer offset on partition 1.
    assert_eq!(
        committed(&b, "app-live", "dc-a.orders", &[0]),
        vec![Some((5, String::new()))],
        "{log}"
    );
    assert!(
        log.contains("app-live") && log.contains("active in the destination"),
        "{log}"
    );
    assert_eq!(
        committed(&b, "app-1", "dc-a.orders", &[0, 1]),
        vec![
            Some((
                80,
                meta(committed(&b, "app-1", "dc-a.orders", &[0])[0].clone())
            )),
            Some((70, meta(committed(&a, "app-1", "orders", &[1])[0].clone())))
        ],
        "{log}"
    );
    drop(live);
}

#[test]
fn a_bad_group_pattern_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    write_config(&cfg, "127.0.0.1:1", "127.0.0.1:2", 1, &["orders"], "");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{text}[groups]\nsync = [\"app-(\"]\n")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wanmirror"))
        .args(["run", "--config", cfg.to_str().unwrap()])
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("groups.sync") && err.contains("app-("),
        "{err}"
    );
}
