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
/// Exit codes: 0 clean stop; 1 a partition stopped with an error (divergence, refused
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
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Start two local brokers, produce sample data, mirror it, print a summary.
    Demo {
        /// Records produced per topic.
        #[arg(long, default_value_t = 20_000)]
        records: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
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
        Cmd::Check { config } => match Config::load(&config) {
            Ok(c) => {
                println!(
                    "config ok: {} -> {}, topics {:?}, rename {:?}",
                    c.source.name, c.destination.name, c.mirror.topics, c.mirror.rename
                );
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
            }
        }
        Cmd::Demo { records } => match rt.block_on(wanmirror::demo::demo(records)) {
            Ok(code) => ExitCode::from(code as u8),
            Err(e) => fail(&format!("{e:#}")),
        },
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}
