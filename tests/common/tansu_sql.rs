//! tansu with its sqlite storage engine, the only one that keeps SCRAM credentials: a
//! build of its own (`scripts/setup.sh --tests`). Users are created on the broker
//! started without authentication, which is then restarted with it on the same
//! database. Killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wanmirror::demo::broker::{free_port, TANSU_VERSION};

/// The sqlite-capable tansu: $TANSU_SQL_BIN, else where `scripts/setup.sh --tests`
/// installs it.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("TANSU_SQL_BIN") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
    let p = cache.join(format!("wanmirror/tansu-sql-{TANSU_VERSION}/bin/tansu"));
    assert!(
        p.is_file(),
        "tansu with sqlite storage not found at {}: run scripts/setup.sh --tests (or set TANSU_SQL_BIN)",
        p.display()
    );
    p
}

pub struct TansuSql {
    child: Child,
    pub port: u16,
    dir: PathBuf,
    cluster: String,
    advertised: u16,
}

impl TansuSql {
    /// Starts a broker on a database in `dir`, advertising `advertised` (a TLS
    /// terminator's port) to clients.
    pub fn start(dir: &Path, cluster: &str, advertised: u16, authentication: bool) -> TansuSql {
        let port = free_port().expect("port");
        let mut b = TansuSql {
            child: spawn(dir, cluster, port, advertised, authentication),
            port,
            dir: dir.to_path_buf(),
            cluster: cluster.to_string(),
            advertised,
        };
        b.wait_ready();
        b
    }

    /// The broker's own (plaintext) address; clients it sends elsewhere.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Creates a SCRAM user (mechanism "scram256" or "scram512") through the broker.
    pub fn create_user(&self, name: &str, password: &str, mechanism: &str) {
        let out = Command::new(binary())
            .args(["user", "create", name, password])
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .args(["--mechanism", mechanism])
            .current_dir(&self.dir)
            .output()
            .expect("run tansu user create");
        assert!(
            out.status.success(),
            "tansu user create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the broker and starts it again on the same database, with authentication
    /// on or off, on the same port.
    pub fn restart(&mut self, authentication: bool) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(
            &self.dir,
            &self.cluster,
            self.port,
            self.advertised,
            authentication,
        );
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("tansu (sqlite) exited with {st}");
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("tansu (sqlite) did not open port {}", self.port);
    }
}

fn spawn(dir: &Path, cluster: &str, port: u16, advertised: u16, authentication: bool) -> Child {
    let mut cmd = Command::new(binary());
    cmd.args(["broker", "--cluster-id", cluster])
        .args(["--listener-url", &format!("tcp://127.0.0.1:{port}")])
        .args([
            "--advertised-listener-url",
            &format!("tcp://127.0.0.1:{advertised}"),
        ])
        .args(["--storage-engine", &format!("sqlite://{cluster}.db")])
        .arg("--silent")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if authentication {
        cmd.arg("--authentication");
    }
    cmd.spawn().expect("start tansu (sqlite)")
}

impl Drop for TansuSql {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
