//! Bad input: one clear error line, exit code 2, nothing written.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn run_with(config_text: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, config_text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wanmirror"))
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

fn good(a: &str, b: &str) -> String {
    format!(
        "[source]\nname = \"dc-a\"\nbootstrap = \"{a}\"\n[destination]\nname = \"dc-b\"\nbootstrap = \"{b}\"\n[mirror]\ntopics = [\"orders\", \"payments\\\\..*\"]\nreplication_factor = 1\n"
    )
}

fn assert_one_line_error(code: Option<i32>, err: &str, needle: &str) {
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "expected one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in {err}");
}

#[test]
fn bad_configs_exit_2_with_one_line_and_write_nothing() {
    let pair = Pair::start();
    let (a, b) = (pair.a.bootstrap(), pair.b.bootstrap());
    create_topic(&a, "orders", 2);
    let base = good(&a, &b);

    let (c, e) = run_with(&base.replace("[mirror]", "[mirror]\ntopicz = []"));
    assert_one_line_error(c, &e, "topicz");
    let (c, e) = run_with(&base.replace(&format!("bootstrap = \"{b}\"\n"), ""));
    assert_one_line_error(c, &e, "bootstrap");
    let (c, e) = run_with(&base.replace("\"orders\"", "\"ord[ers\""));
    assert_one_line_error(c, &e, "ord[ers");
    let (c, e) = run_with("not toml at all ===");
    assert_one_line_error(c, &e, "bad.toml");
    let (c, e) = run_with(&base.replace(&a, "127.0.0.1:1"));
    assert_one_line_error(c, &e, "dc-a");
    let (c, e) = run_with(&base.replace(&b, "127.0.0.1:1"));
    assert_one_line_error(c, &e, "dc-b");

    // Nothing reached the destination.
    assert!(!topic_exists(&b, "dc-a.orders"));
    assert!(!topic_exists(&b, "__wanmirror_offsets"));
}

#[test]
fn refuses_a_destination_topic_with_another_partition_count() {
    let pair = Pair::start();
    let (a, b) = (pair.a.bootstrap(), pair.b.bootstrap());
    create_topic(&a, "orders", 3);
    create_topic(&b, "dc-a.orders", 2);
    let p = producer(&a, "none", false);
    produce(&p, "orders", 0, &sample(10, 1, |i| i));
    let (c, e) = run_with(&good(&a, &b));
    assert_one_line_error(c, &e, "dc-a.orders");
    assert!(e.contains("2 partitions"), "{e}");
    assert_eq!(end_offset(&b, "dc-a.orders", 0), 0);
}

#[test]
fn never_mirrors_a_topic_back_to_its_origin() {
    let pair = Pair::start();
    let (a, b) = (pair.a.bootstrap(), pair.b.bootstrap());
    create_topic(&a, "orders", 1);
    let p = producer(&a, "none", false);
    produce(&p, "orders", 0, &sample(20, 1, |i| i));
    // a -> b with identity naming: b gets "orders", with provenance dc-a.
    let fwd = pair.config("fwd.toml", &["orders"], "rename = \"{topic}\"");
    let (st, log) = mirror_to_end(&fwd);
    assert!(st.success(), "{log}");
    // b -> a for every topic: must skip "orders" (it came from dc-a).
    let back = pair.dir.path().join("back.toml");
    std::fs::write(
        &back,
        format!(
            "[source]\nname = \"dc-b\"\nbootstrap = \"{b}\"\n[destination]\nname = \"dc-a\"\nbootstrap = \"{a}\"\n[mirror]\ntopics = [\".*\"]\nreplication_factor = 1\n"
        ),
    )
    .unwrap();
    create_topic(&b, "local", 1);
    produce(
        &producer(&b, "none", false),
        "local",
        0,
        &sample(5, 2, |i| i),
    );
    let (st, log) = mirror_to_end(&back);
    assert!(st.success(), "{log}");
    assert!(log.contains("never mirrored back to its origin"), "{log}");
    assert!(!topic_exists(&a, "dc-b.orders"));
    // `status` lists what the mirror copies: b's own topic, not the copy of a's.
    let (code, st) = scenarios::status_json(&back);
    let topics: Vec<&str> = st["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["source_topic"].as_str().unwrap())
        .collect();
    assert_eq!((code, topics), (0, vec!["local"]), "{st}");
}

/// A file-descriptor limit below what the configured connections may need is one
/// clear error at start-up, before anything is written, not "too many open files"
/// on some connection later.
#[test]
fn a_low_open_file_limit_is_one_clear_error() {
    let pair = Pair::start();
    let (a, b) = (pair.a.bootstrap(), pair.b.bootstrap());
    create_topic(&a, "orders", 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.toml");
    std::fs::write(&path, good(&a, &b)).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 100 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_wanmirror"))
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_one_line_error(out.status.code(), &err, "ulimit -n");
    assert!(err.contains("transport.pool_max"), "{err}");
    assert!(!topic_exists(&b, "dc-a.orders"));
}

/// `wanmirror status` before, after and while a copy lags: the lag per partition is
/// what the source holds beyond the destination, and the exit code says whether any
/// partition lags. It keeps no state: each answer comes from the clusters alone.
#[test]
fn status_shows_each_partitions_lag_and_exits_by_it() {
    let pair = Pair::start();
    let a = pair.a.bootstrap();
    create_topic(&a, "orders", 2);
    let p = producer(&a, "lz4", false);
    produce(&p, "orders", 0, &sample(120, 1, |i| i % 50));
    produce(&p, "orders", 1, &sample(30, 2, |i| i % 50));
    let cfg = pair.config("m.toml", &["orders"], "");
    let lags = |st: &serde_json::Value| -> Vec<(Option<i64>, i64)> {
        st["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["dest_end"].as_i64(), p["lag"].as_i64().unwrap()))
            .collect()
    };

    // Nothing mirrored yet: no destination topic, the whole source is lag.
    let (code, st) = scenarios::status_json(&cfg);
    assert_eq!(code, 1, "{st}");
    assert_eq!(lags(&st), vec![(None, 120), (None, 30)], "{st}");
    assert_eq!(st["lag"], 150, "{st}");

    let (ok, log) = mirror_to_end(&cfg);
    assert!(ok.success(), "{log}");
    let (code, st) = scenarios::status_json(&cfg);
    assert_eq!(code, 0, "{st}");
    assert_eq!(lags(&st), vec![(Some(120), 0), (Some(30), 0)], "{st}");

    produce(&p, "orders", 1, &sample(25, 3, |i| i % 50));
    let (code, st) = scenarios::status_json(&cfg);
    assert_eq!(code, 1, "{st}");
    assert_eq!(lags(&st), vec![(Some(120), 0), (Some(30), 25)], "{st}");

    // The table says the same for people.
    let out = Command::new(env!("CARGO_BIN_EXE_wanmirror"))
        .args(["status", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert!(table.contains("dc-a -> dc-b"), "{table}");
    assert!(table.contains("dc-a.orders"), "{table}");
    assert!(
        table
            .trim_end()
            .ends_with("2 partitions, 1 lagging, 25 offsets behind"),
        "{table}"
    );

    // A cluster that does not answer: one error line, exit 2.
    let dead = pair.dir.path().join("dead.toml");
    std::fs::write(
        &dead,
        "[source]\nname = \"dc-a\"\nbootstrap = \"127.0.0.1:1\"\n[destination]\nname = \"dc-b\"\nbootstrap = \"127.0.0.1:1\"\n[mirror]\ntopics = [\"orders\"]\nreplication_factor = 1\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wanmirror"))
        .args(["status", "--config"])
        .arg(&dead)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_one_line_error(out.status.code(), &err, "dc-a");
}

/// The Quickstart's first command: two brokers, sample data, a mirror run, the status
/// table and a diff's verdict, in a few lines and no log lines unless asked.
#[test]
fn the_demo_mirrors_and_proves_the_copy_in_a_short_summary() {
    let out = Command::new(env!("CARGO_BIN_EXE_wanmirror"))
        .args(["demo", "--records", "3000"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        !stderr.contains(" INFO "),
        "info lines on a quiet run: {stderr}"
    );
    // 9 partitions over 3 topics: one table row each, and the verdict.
    assert!(
        stdout.contains("9 partitions, 0 lagging, 0 offsets behind"),
        "{stdout}"
    );
    assert!(
        stdout.contains("diff: 9 partitions, every record identical at the same offset"),
        "{stdout}"
    );
    assert!(stdout.lines().count() < 25, "{stdout}");
}

/// On a terminal (a pseudo-terminal from `script`), `run` draws one line per topic
/// that updates in place, and the log scrolls above; in a file, the same figures are
/// log lines, one per topic.
#[test]
fn progress_is_a_line_per_topic_in_place_on_a_terminal_and_log_lines_elsewhere() {
    let pair = Pair::start();
    let a = pair.a.bootstrap();
    for t in ["orders", "payments"] {
        create_topic(&a, t, 2);
        let p = producer(&a, "lz4", false);
        for part in 0..2 {
            produce(&p, t, part, &sample(300, part as u64, |i| i % 200));
        }
    }
    let cfg = pair.config("m.toml", &["orders", "payments"], "");
    let typescript = pair.dir.path().join("terminal.txt");
    let cmd = format!(
        "{} run --config {}",
        env!("CARGO_BIN_EXE_wanmirror"),
        cfg.display()
    );
    // `script` gives the mirror a terminal and records what it drew; killed (and the
    // mirror with it, by the terminal's hang-up) on drop.
    struct Script(std::process::Child);
    impl Drop for Script {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let script = Script(
        Command::new("script")
            .args(["-q", "-f", "-e", "-c", &cmd])
            .arg(&typescript)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run script (util-linux)"),
    );
    let drawn = || std::fs::read_to_string(&typescript).unwrap_or_default();
    eventually(
        Duration::from_secs(60),
        "both topics' lines at the end",
        || {
            let t = drawn();
            t.contains("orders: 2/2 partitions at the end, lag 0 offsets")
                && t.contains("payments: 2/2 partitions at the end, lag 0 offsets")
        },
    );
    let t = drawn();
    // Drawn in place: the cursor moves back up over the lines (an ANSI sequence)
    // instead of appending them, and the log shows above.
    assert!(t.contains("\u{1b}["), "no cursor movement: {t}");
    assert!(t.contains("caught up"), "the log is not shown: {t}");
    assert!(
        !t.contains(" INFO progress topic="),
        "log lines instead of drawn ones: {t}"
    );
    drop(script);
    assert!(
        end_offset(&pair.b.bootstrap(), "dc-a.orders", 1) == 300,
        "the mirror copied under the terminal"
    );
    // Not a terminal: one log line per topic.
    let (st, log) = mirror_to_end(&cfg);
    assert!(st.success(), "{log}");
    for topic in ["orders", "payments"] {
        assert!(
            log.lines()
                .any(|l| l.contains(" progress ")
                    && l.contains(&format!("topic={topic} partitions=2 "))),
            "{log}"
        );
    }
}
