//! Bad input: one clear error line, exit code 2, nothing written.

mod common;

use std::process::Command;

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
    let (st, log) = mirror_to_end(&back);
    assert!(st.success(), "{log}");
    assert!(log.contains("never mirrored back to its origin"), "{log}");
    assert!(!topic_exists(&a, "dc-b.orders"));
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
