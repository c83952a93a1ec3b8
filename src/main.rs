//! The `wanmirror` command line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mimalloc::MiMalloc;
use tracing_subscriber::EnvFilter;

use wanmirror::config::Config;
use wanmirror::mirror::{run, Outcome, RunOptions, StartError};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

/// Offset-identical Kafka mirror for long, lossy links between data centres.
///
/// Exit codes of `run`: 0 clean stop; 1 a partition stopped with an error (divergence, refused
/// policy, corrupt data); 2 bad configuration or a cluster that cannot be used; 3 fenced
/// by a newer instance with the same fence_id.
#[derive(Parser)]
#[command(name = "wanmirror", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Mirror the configured topics from the source into the destination cluster.
    ///
    /// Resumes from the destination's end offsets (there is no other checkpoint), checks
    /// that the destination tail matches the source, then copies batches byte for byte
    /// and keeps tailing. SIGINT/SIGTERM finish in-flight writes and exit 0.
    Run {
        /// Path of the TOML configuration (see docs/configuration.md).
        #[arg(short, long)]
        config: PathBuf,
        /// Exit once every partition has reached the source end seen when it started.
        #[arg(long)]
        stop_at_end: bool,
    },
    /// Parse and validate a configuration file without connecting anywhere.
    ///
    /// Also reads the TLS files and the SASL password the config names, and prints
    /// how each cluster will be reached (never the password).
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Compare partitions between two clusters with Merkle trees; name what differs.
    ///
    /// Each partition pair is read on both sides; fixed offset ranges (leaves) are
    /// hashed over the records' content (offset, timestamp, key, value, headers, not
    /// batching or compression), the trees are compared top-down, and differing leaves
    /// are narrowed to the first and last differing offset. Compares the topics of a
    /// mirror config (`--config`), or one ad-hoc pair (`--source-bootstrap`,
    /// `--dest-bootstrap`, `--source-topic`, `--dest-topic`).
    ///
    /// Exit codes: 0 identical; 1 different; 2 error.
    Diff(DiffArgs),
    /// Show how far the copy is: per mirrored partition, the source end, the
    /// destination end, the lag in offsets, and the offset-map deviations (ranges of
    /// filler records).
    ///
    /// Reads both clusters of the config and keeps no state: it works while a mirror
    /// runs and when none does. A partition the destination does not have yet shows
    /// "-" as its end, and its lag counts from the source's log start.
    ///
    /// Exit codes: 0 every partition at the source end; 1 some partition lags (or is
    /// ahead of the source, which lost records the copy holds); 2 error.
    Status {
        /// Path of the mirror's TOML configuration.
        #[arg(short, long)]
        config: PathBuf,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Serve the local (source) cluster to destination mirrors over QUIC.
    ///
    /// Runs in the source DC, next to the brokers. Mirrors whose config names this
    /// server as `[source] peer` read through it: catch-up fetches on QUIC streams,
    /// tails pushed as they are appended, and `diff` comparing Merkle hashes built here.
    /// Clients need a certificate from `client_ca` that names a `[[serve.client]]`,
    /// and read only the topics listed for it (docs/peer-protocol.md).
    ///
    /// Exit codes: 0 stopped by SIGINT/SIGTERM; 2 bad configuration, an unreachable
    /// cluster, or a port that cannot be bound.
    Serve {
        /// Path of the serve TOML configuration (`[serve]`, `[[serve.client]]`).
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Create a CA and the certificates of a first peer setup (mutual TLS).
    ///
    /// Writes ca.pem/ca.key, serve.pem/serve.key and client-NAME.pem/.key into
    /// --out; never overwrites a file. Keep ca.key offline: whoever holds it can
    /// make certificates the serve side accepts.
    Cert {
        /// Directory to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Names the serve side's certificate holds: the DNS name or IP address that
        /// `[source] peer` uses. Repeatable.
        #[arg(long = "serve", required = true)]
        serve: Vec<String>,
        /// A client's name, as its `[[serve.client]] name`. Repeatable.
        #[arg(long = "client", required = true)]
        client: Vec<String>,
    },
    /// Start two local brokers, produce sample data, mirror it, and print the status
    /// table and the verdict of a diff over the copy (RUST_LOG=info shows the log).
    Demo {
        /// Records produced per topic.
        #[arg(long, default_value_t = 20_000)]
        records: usize,
    },
}

#[derive(clap::Args)]
struct DiffArgs {
    /// Mirror config whose topics are compared (source topic vs its destination name).
    #[arg(short, long, conflicts_with_all = ["source_bootstrap", "dest_bootstrap", "source_topic", "dest_topic"])]
    config: Option<PathBuf>,
    /// With --config: only this source topic.
    #[arg(long, requires = "config")]
    topic: Option<String>,
    /// Ad hoc: the source cluster's host:port list.
    #[arg(long, requires_all = ["dest_bootstrap", "source_topic", "dest_topic"])]
    source_bootstrap: Option<String>,
    /// Ad hoc: the destination cluster's host:port list.
    #[arg(long, requires = "source_bootstrap")]
    dest_bootstrap: Option<String>,
    /// Ad hoc: the topic in the source cluster.
    #[arg(long, requires = "source_bootstrap")]
    source_topic: Option<String>,
    /// Ad hoc: the topic in the destination cluster.
    #[arg(long, requires = "source_bootstrap")]
    dest_topic: Option<String>,
    /// Only this partition.
    #[arg(long)]
    partition: Option<i32>,
    /// First offset compared (default: the later of the two log starts).
    #[arg(long)]
    from: Option<i64>,
    /// End of the comparison, exclusive (default: the later of the two log ends).
    #[arg(long)]
    to: Option<i64>,
    /// Offsets per Merkle leaf.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(i64).range(1..=1_000_000_000))]
    leaf_offsets: i64,
    /// Partitions compared at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    parallel: u16,
    /// Print a machine-readable JSON report instead of lines.
    #[arg(long)]
    json: bool,
}

fn status(path: &std::path::Path, json: bool, rt: &tokio::runtime::Runtime) -> ExitCode {
    use wanmirror::groups::status::reports;
    use wanmirror::groups::sync::Syncer;
    use wanmirror::verify::command::config_pairs;
    use wanmirror::verify::error::VerifyError;
    use wanmirror::verify::status::status;
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string()),
    };
    let sock = wanmirror::kafka::connection::SocketOptions {
        retry_deadline: std::time::Duration::from_secs(10),
        ..Default::default()
    };
    let found = rt.block_on(async {
        let (s, d, pairs) = config_pairs(&cfg, None, sock).await?;
        let mut st = status(s.clone(), d.clone(), pairs, &cfg.mirror.offset_map_topic).await?;
        // Group offsets are read from the source's brokers ([groups] is refused with a peer).
        let syncer = match s.brokers() {
            Some(b) => Syncer::from_config(&cfg, b.clone(), d, Default::default())
                .map_err(|e| VerifyError::Usage(e.to_string()))?,
            None => None,
        };
        if let Some(syncer) = syncer {
            st.groups = Some(reports(&syncer).await.map_err(VerifyError::Usage)?);
        }
        Ok::<_, VerifyError>(st)
    });
    match found {
        Ok(st) => {
            println!("{}", if json { st.json() } else { st.table() });
            if st.caught_up {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => fail(&e.to_string()),
    }
}

fn diff(a: DiffArgs, rt: &tokio::runtime::Runtime) -> ExitCode {
    use wanmirror::verify::command::{run as run_diff, DiffRequest, Target};
    use wanmirror::verify::diff::Options;
    let target = match (a.config, a.source_bootstrap, a.dest_bootstrap, a.source_topic, a.dest_topic) {
        (Some(path), ..) => match Config::load(&path) {
            Ok(c) => Target::Config {
                config: Box::new(c),
                topic: a.topic,
            },
            Err(e) => return fail(&e.to_string()),
        },
        (None, Some(sb), Some(db), Some(st), Some(dt)) => Target::Pair {
            source_bootstrap: sb,
            dest_bootstrap: db,
            source_topic: st,
            dest_topic: dt,
        },
        _ => {
            return fail(
                "give --config, or --source-bootstrap, --dest-bootstrap, --source-topic and --dest-topic",
            )
        }
    };
    if let (Some(f), Some(t)) = (a.from, a.to) {
        if f > t {
            return fail(&format!("--from {f} is past --to {t}"));
        }
    }
    let req = DiffRequest {
        target,
        options: Options {
            partition: a.partition,
            from: a.from,
            to: a.to,
            leaf_offsets: a.leaf_offsets,
            parallel: a.parallel as usize,
            fetch_bytes: 1 << 20,
        },
        progress: !a.json && std::io::stderr().is_terminal(),
    };
    match rt.block_on(run_diff(req)) {
        Ok(report) => {
            if a.json {
                println!("{}", report.json());
            } else {
                print!("{}", report.text());
            }
            if report.identical {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => fail(&e.to_string()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The diff's output is its report; its logs only matter when something goes wrong.
    // Commands that print their own summary keep the log to warnings unless asked.
    let level = if matches!(
        cli.command,
        Cmd::Diff(_) | Cmd::Status { .. } | Cmd::Demo { .. }
    ) {
        "warn"
    } else {
        "info"
    };
    // `run` on a terminal draws a progress line per topic in place; log lines then
    // scroll above them.
    if matches!(cli.command, Cmd::Run { .. }) && std::io::stderr().is_terminal() {
        wanmirror::mirror::progress::use_terminal();
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level)),
        )
        .with_writer(|| wanmirror::mirror::progress::LogWriter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Cmd::Check { config } => match Config::load(&config).and_then(|c| {
            let (s, d) = c.securities()?;
            Ok((c, s, d))
        }) {
            Ok((c, s, d)) => {
                println!(
                    "config ok: {} -> {}, topics {:?}, rename {:?}",
                    c.source.name, c.destination.name, c.mirror.topics, c.mirror.rename
                );
                match &c.source.peer {
                    Some(peer) => {
                        // The peer's TLS files are read as the mirror will read them.
                        let t = c.source.peer_tls.clone().unwrap_or_default();
                        let files = (t.ca.as_ref(), t.cert.as_ref(), t.key.as_ref());
                        let (Some(ca), Some(cert), Some(key)) = files else {
                            return fail("source.peer_tls: ca, cert and key are needed");
                        };
                        let quic = wanmirror::peer::tls::transport(c.source.peer_congestion, 0);
                        if let Err(e) = wanmirror::peer::tls::client_config(ca, cert, key, quic) {
                            return fail(&format!("config {}: source.peer_tls: {e}", c.path));
                        }
                        println!(
                            "  {}: through the peer {peer} (QUIC, mutual TLS, up to {} connections, {:?})",
                            c.source.name, c.source.peer_connections, c.source.peer_congestion
                        );
                    }
                    None => println!("  {}: {}", c.source.name, s.describe()),
                }
                println!("  {}: {}", c.destination.name, d.describe());
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e.to_string()),
        },
        Cmd::Run {
            config,
            stop_at_end,
        } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => return fail(&e.to_string()),
            };
            match rt.block_on(run(cfg, RunOptions { stop_at_end })) {
                Ok(Outcome::Clean) => ExitCode::SUCCESS,
                Ok(Outcome::PartitionsFailed) => {
                    eprintln!("error: one or more partitions stopped; see the log above");
                    ExitCode::from(1)
                }
                Ok(Outcome::Fenced) => {
                    eprintln!("error: fenced by a newer wanmirror instance with the same fence_id");
                    ExitCode::from(3)
                }
                Err(StartError::Config(e)) => fail(&e.to_string()),
                Err(StartError::Mirror(e)) => fail(&e.to_string()),
                Err(
                    e @ (StartError::Limits(_) | StartError::Metrics(_) | StartError::Group(_)),
                ) => fail(&e.to_string()),
            }
        }
        Cmd::Diff(a) => diff(a, &rt),
        Cmd::Serve { config } => serve(&config, &rt),
        Cmd::Cert { out, serve, client } => {
            match wanmirror::peer::cert::create(&out, &serve, &client) {
                Ok(w) => {
                    for f in w.files {
                        println!("wrote {}", f.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Cmd::Status { config, json } => status(&config, json, &rt),
        Cmd::Demo { records } => match rt.block_on(wanmirror::demo::demo(records)) {
            Ok(code) => ExitCode::from(code as u8),
            Err(e) => fail(&format!("{e:#}")),
        },
    }
}

fn serve(path: &std::path::Path, rt: &tokio::runtime::Runtime) -> ExitCode {
    use wanmirror::serve::Server;
    rt.block_on(async {
        let (server, run) = match Server::start(path).await {
            Ok(s) => s,
            Err(e) => return fail(&e.to_string()),
        };
        let stop = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
        };
        tokio::select! {
            _ = run.run() => {}
            _ = stop => {
                tracing::info!("stopping: closing client connections");
                server.close().await;
            }
        }
        ExitCode::SUCCESS
    })
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}
