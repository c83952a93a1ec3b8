//! `wanlink`: two network namespaces, a source DC and a destination DC, joined by an
//! emulated WAN link with delay, jitter, loss, a rate limit and a bottleneck queue.
//!
//! `wanlink up` builds it (tc netem where the kernel has it, else the userspace TUN
//! emulator of this crate), `wanlink down` removes it (idempotent, also after a crash),
//! `wanlink status` prints the emulator's counters and CPU use as JSON.

mod emulator;
mod link;
mod spec;
mod tun;

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use spec::LinkSpec;

/// Address of the source side of the link (inside the source namespace).
pub const SRC_ADDR: &str = "10.201.0.1";
/// Address of the destination side of the link (inside the destination namespace).
pub const DST_ADDR: &str = "10.201.0.2";
const DEV: &str = "wan0";

#[derive(Parser)]
#[command(name = "wanlink", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Engine {
    /// tc netem if the kernel has it, else the userspace emulator.
    Auto,
    /// The kernel's tc netem on a veth pair.
    Tc,
    /// The userspace TUN emulator.
    User,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create the namespaces NAME-src and NAME-dst joined by the emulated link.
    ///
    /// Each impairment takes one value for both directions, or `SRC_TO_DST/DST_TO_SRC`.
    /// Source side: 10.201.0.1, destination side: 10.201.0.2.
    Up {
        #[arg(long, default_value = "wm")]
        name: String,
        #[command(flatten)]
        spec: LinkSpec,
        #[arg(long, value_enum, default_value = "auto")]
        engine: Engine,
    },
    /// Remove the link and the namespaces (idempotent).
    Down {
        #[arg(long, default_value = "wm")]
        name: String,
    },
    /// Print the emulator's counters and CPU use (userspace engine).
    Status {
        #[arg(long, default_value = "wm")]
        name: String,
    },
    /// Run the userspace emulator in the foreground (used by `up`).
    #[command(hide = true)]
    Run {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        spec: LinkSpec,
    },
}

fn state_dir() -> PathBuf {
    PathBuf::from("/run/wanlink")
}

fn sh(args: &[&str]) -> Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("cannot run {}", args[0]))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The emulator's pid from its pid file, if it is one we may signal: a plain positive
/// number (0 and negative pids signal process groups, -1 every process; 1 is init)
/// whose command line is `wanlink run --name NAME ...` (after a crash the pid may
/// belong to someone else by now).
fn ours(text: &str, name: &str, cmdline: impl Fn(i32) -> Vec<u8>) -> Option<i32> {
    let pid: i32 = text.trim().parse().ok().filter(|p| *p > 1)?;
    let cmd = cmdline(pid);
    let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
    let is_ours = args.windows(3).any(|w| {
        w[0] == b"run".as_slice() && w[1] == b"--name".as_slice() && w[2] == name.as_bytes()
    });
    is_ours.then_some(pid)
}

fn ns_names(name: &str) -> (String, String) {
    (format!("{name}-src"), format!("{name}-dst"))
}

fn down(name: &str) -> Result<()> {
    let pid_file = state_dir().join(format!("{name}.pid"));
    if let Ok(text) = std::fs::read_to_string(&pid_file) {
        let cmdline = |pid: i32| std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if let Some(pid) = ours(&text, name, cmdline) {
            // SAFETY: kill(2) on one positive pid whose command line is our emulator's;
            // ESRCH (gone meanwhile) is fine.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(5)
                && PathBuf::from(format!("/proc/{pid}")).exists()
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_file(&pid_file);
    }
    let (a, b) = ns_names(name);
    for ns in [a, b] {
        let _ = Command::new("ip")
            .args(["netns", "del", &ns])
            .stderr(Stdio::null())
            .status();
    }
    Ok(())
}

fn netem_available() -> bool {
    // Probe on a throwaway dummy device in a throwaway namespace.
    let ns = "wanlink-probe";
    let _ = Command::new("ip").args(["netns", "add", ns]).status();
    let ok = Command::new("ip")
        .args([
            "netns", "exec", ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
        ])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let _ = Command::new("ip").args(["netns", "del", ns]).status();
    ok
}

fn up(name: &str, spec: &LinkSpec, engine: Engine) -> Result<()> {
    let (ab, ba) = spec.params()?;
    down(name)?;
    let (a, b) = ns_names(name);
    sh(&["ip", "netns", "add", &a])?;
    sh(&["ip", "netns", "add", &b])?;
    for ns in [&a, &b] {
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
    }
    let use_tc = match engine {
        Engine::Tc => true,
        Engine::User => false,
        Engine::Auto => netem_available(),
    };
    if use_tc {
        sh(&[
            "ip",
            "link",
            "add",
            "wanlink-a",
            "type",
            "veth",
            "peer",
            "name",
            "wanlink-b",
        ])?;
        sh(&["ip", "link", "set", "wanlink-a", "netns", &a, "name", DEV])?;
        sh(&["ip", "link", "set", "wanlink-b", "netns", &b, "name", DEV])?;
        for (ns, p) in [(&a, &ab), (&b, &ba)] {
            let args = spec::netem_args(p);
            let mut cmd = vec![
                "ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", DEV, "root", "netem",
            ];
            cmd.extend(args.iter().map(String::as_str));
            sh(&cmd)?;
        }
        configure(&a, &b)?;
        println!("wanlink {name}: tc netem link up ({a} {SRC_ADDR} <-> {b} {DST_ADDR})");
        return Ok(());
    }
    std::fs::create_dir_all(state_dir())?;
    let log = std::fs::File::create(state_dir().join(format!("{name}.log")))?;
    let exe = std::env::current_exe()?;
    let mut args: Vec<String> = vec!["run".into(), "--name".into(), name.into()];
    args.extend(spec.to_args());
    let child = Command::new(exe)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    std::fs::write(
        state_dir().join(format!("{name}.pid")),
        child.id().to_string(),
    )?;
    let t = Instant::now();
    let ready = state_dir().join(format!("{name}.status.json"));
    while !ready.exists() {
        if t.elapsed() > Duration::from_secs(10) {
            down(name)?;
            bail!(
                "the emulator did not come up; see {}",
                state_dir().join(format!("{name}.log")).display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("wanlink {name}: userspace link up ({a} {SRC_ADDR} <-> {b} {DST_ADDR})");
    Ok(())
}

fn configure(a: &str, b: &str) -> Result<()> {
    for (ns, me, peer) in [(a, SRC_ADDR, DST_ADDR), (b, DST_ADDR, SRC_ADDR)] {
        sh(&["ip", "-n", ns, "addr", "add", me, "peer", peer, "dev", DEV])?;
        sh(&["ip", "-n", ns, "link", "set", DEV, "mtu", "1500", "up"])?;
    }
    Ok(())
}

fn run(name: &str, spec: &LinkSpec) -> Result<()> {
    let (ab, ba) = spec.params()?;
    let (a, b) = ns_names(name);
    let home = std::fs::File::open("/proc/self/ns/net")?;
    tun::enter_netns(&format!("/var/run/netns/{a}"))?;
    let src = tun::open_tun(DEV).context("create TUN in the source namespace")?;
    tun::enter_netns(&format!("/var/run/netns/{b}"))?;
    let dst = tun::open_tun(DEV).context("create TUN in the destination namespace")?;
    drop(home);
    configure(&a, &b)?;
    let emu = emulator::Emulator::start(src, dst, ab, ba)?;
    let status_path = state_dir().join(format!("{name}.status.json"));
    let tmp = state_dir().join(format!("{name}.status.tmp"));
    let mut term = false;
    // SAFETY: installing a flag-only handler is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_term as *const () as libc::sighandler_t);
    }
    while !term {
        let s = emu.status.lock().map(|g| g.clone()).unwrap_or_default();
        std::fs::write(&tmp, serde_json::to_vec_pretty(&s)?)?;
        std::fs::rename(&tmp, &status_path)?;
        std::thread::sleep(Duration::from_millis(250));
        term = TERM.load(std::sync::atomic::Ordering::Relaxed);
    }
    emu.stop();
    let _ = std::fs::remove_file(&status_path);
    Ok(())
}

static TERM: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
extern "C" fn on_term(_: libc::c_int) {
    TERM.store(true, std::sync::atomic::Ordering::Relaxed);
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Up { name, spec, engine } => up(&name, &spec, engine),
        Cmd::Down { name } => down(&name),
        Cmd::Status { name } => {
            std::fs::read_to_string(state_dir().join(format!("{name}.status.json")))
                .map(|s| println!("{s}"))
                .with_context(|| format!("no userspace link named {name} is up"))
        }
        Cmd::Run { name, spec } => run(&name, &spec),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ours;

    fn cmd(args: &[&str]) -> Vec<u8> {
        args.iter().flat_map(|a| a.bytes().chain([0])).collect()
    }

    #[test]
    fn only_our_emulator_is_signalled() {
        let emulator = |_| cmd(&["/x/wanlink", "run", "--name", "wan", "--rtt-ms", "100"]);
        assert_eq!(ours("4242\n", "wan", emulator), Some(4242));
        // Pids that signal groups or everyone, init, and garbage.
        for bad in ["-1", "0", "1", "-4242", "", "x", "99999999999"] {
            assert_eq!(ours(bad, "wan", emulator), None, "{bad:?}");
        }
        // A reused pid: another program, or an emulator of another link.
        assert_eq!(
            ours("4242", "wan", |_| cmd(&["/usr/bin/sleep", "100"])),
            None
        );
        assert_eq!(ours("4242", "wan", |_| Vec::new()), None);
        assert_eq!(ours("4242", "wan2", emulator), None);
    }
}
