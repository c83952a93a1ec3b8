//! A local tansu broker process for the demo and the integration tests: free port,
//! memory storage, killed when dropped (also when a test panics).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The tansu version the project is tested against (see scripts/setup.sh).
pub const TANSU_VERSION: &str = "0.6.0";

/// A running single-node tansu cluster.
pub struct TansuBroker {
    child: Child,
    pub port: u16,
    pub cluster_id: String,
}

/// Finds the tansu binary: $TANSU_BIN, then PATH, then cargo's bin directory.
pub fn tansu_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TANSU_BIN") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join("tansu"))
        .find(|p| p.is_file())
}

/// A currently free loopback port (racy by nature, good enough for tests).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl TansuBroker {
    /// Starts a broker and waits until it accepts connections.
    pub fn start(cluster_id: &str) -> Result<TansuBroker, String> {
        Self::start_advertising(cluster_id, None)
    }

    /// Starts a broker that tells clients to connect to `advertised` (a proxy in front
    /// of it) instead of its own port.
    pub fn start_advertising(
        cluster_id: &str,
        advertised: Option<u16>,
    ) -> Result<TansuBroker, String> {
        let bin = tansu_binary().ok_or_else(|| {
            format!("tansu {TANSU_VERSION} not found: run scripts/setup.sh (or set TANSU_BIN)")
        })?;
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port().map_err(|e| e.to_string())?;
            let url = format!("tcp://127.0.0.1:{port}");
            let adv = format!("tcp://127.0.0.1:{}", advertised.unwrap_or(port));
            let child = Command::new(&bin)
                .args(["broker", "--cluster-id", cluster_id])
                .args(["--listener-url", &url, "--advertised-listener-url", &adv])
                .args(["--storage-engine", &format!("memory://{cluster_id}/")])
                .arg("--silent")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
            let mut b = TansuBroker {
                child,
                port,
                cluster_id: cluster_id.to_string(),
            };
            match b.wait_ready(Duration::from_secs(20)) {
                Ok(()) => return Ok(b),
                Err(e) => last = e,
            }
        }
        Err(format!("tansu broker did not start: {last}"))
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}"));
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("port {} not open after {limit:?}", self.port))
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for TansuBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
