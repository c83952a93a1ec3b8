//! The peer side of tests: certificates made by `wanmirror cert`, a `wanmirror serve`
//! child process (killed on drop), mirror configs that read through it, and a UDP
//! relay whose path can be cut.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Runs `wanmirror cert` into `dir` for the serve side on loopback and `clients`.
pub fn certs(dir: &Path, clients: &[&str]) -> PathBuf {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wanmirror"));
    cmd.arg("cert").arg("--out").arg(dir);
    cmd.args(["--serve", "127.0.0.1", "--serve", "localhost"]);
    for c in clients {
        cmd.args(["--client", c]);
    }
    let out = cmd.output().expect("run wanmirror cert");
    assert!(
        out.status.success(),
        "wanmirror cert failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.to_path_buf()
}

/// A UDP port free at this moment (bound and released).
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free UDP port")
        .port()
}

/// `wanmirror serve` as a child process.
pub struct Serve {
    child: Option<Child>,
    pub port: u16,
    pub config: PathBuf,
    pub log: PathBuf,
}

/// Writes a serve config: the cluster at `bootstrap` named dc-a, certificates from
/// `certs`, and `clients` with their allow-lists.
pub fn serve_config(
    dir: &Path,
    certs: &Path,
    bootstrap: &str,
    port: u16,
    clients: &[(&str, &[&str])],
) -> PathBuf {
    let mut text = format!(
        "[serve]\ncluster = \"dc-a\"\nbootstrap = \"{bootstrap}\"\nlisten = \"127.0.0.1:{port}\"\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n",
        certs.join("serve.pem").display(),
        certs.join("serve.key").display(),
        certs.join("ca.pem").display(),
    );
    for (name, topics) in clients {
        let list: Vec<String> = topics.iter().map(|t| format!("{t:?}")).collect();
        text.push_str(&format!(
            "\n[[serve.client]]\nname = \"{name}\"\ntopics = [{}]\n",
            list.join(", ")
        ));
    }
    let p = dir.join(format!("serve-{port}.toml"));
    std::fs::write(&p, text).expect("write serve config");
    p
}

impl Serve {
    pub fn start(config: PathBuf, port: u16) -> Serve {
        let mut s = Serve {
            child: None,
            port,
            log: config.with_extension("log"),
            config,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("serve log");
        let child = Command::new(env!("CARGO_BIN_EXE_wanmirror"))
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info,wanmirror::serve=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .expect("spawn wanmirror serve");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let starts = self.log_text().matches("serving").count();
        loop {
            if self.log_text().matches("serving").count() > starts {
                return;
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("wanmirror serve exited with {st}: {}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "serve did not start: {}",
                self.log_text()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(-1)
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port and config.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A mirror config that reads dc-a through the peer at `peer` as client `client`
/// (its certificate `client-<client>.pem` in `certs`, or `cert_dir` for another CA's).
/// A serve in front of the pair's source with certificates for `clients`; the first
/// client is allowed `topics`. Returns it and the certificates' directory.
pub fn serve_for<A: super::Broker, B: super::Broker>(
    pair: &super::Pair<A, B>,
    clients: &[&str],
    topics: &[&str],
) -> (Serve, PathBuf) {
    let certs = certs(&pair.dir.path().join("pki"), clients);
    let port = free_udp_port();
    let sc = serve_config(
        pair.dir.path(),
        &certs,
        &pair.a.bootstrap(),
        port,
        &[(clients[0], topics)],
    );
    (Serve::start(sc, port), certs)
}

pub fn peer_config(
    path: &Path,
    peer: &str,
    certs: &Path,
    client: &str,
    dest: &str,
    topics: &[&str],
    extra: &str,
) {
    peer_config_with(path, peer, certs, certs, client, dest, topics, extra)
}

/// [`peer_config`] with the client certificate taken from `client_certs`.
#[allow(clippy::too_many_arguments)]
pub fn peer_config_with(
    path: &Path,
    peer: &str,
    certs: &Path,
    client_certs: &Path,
    client: &str,
    dest: &str,
    topics: &[&str],
    extra: &str,
) {
    let list: Vec<String> = topics.iter().map(|t| format!("{t:?}")).collect();
    let text = format!(
        "[source]\nname = \"dc-a\"\npeer = \"{peer}\"\n\n[source.peer_tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\n[destination]\nname = \"dc-b\"\nbootstrap = \"{dest}\"\n\n[mirror]\ntopics = [{}]\nreplication_factor = 1\nprogress_interval_secs = 1\nmetadata_refresh_secs = 1\n{extra}\n",
        certs.join("ca.pem").display(),
        client_certs.join(format!("client-{client}.pem")).display(),
        client_certs.join(format!("client-{client}.key")).display(),
        list.join(", "),
    );
    std::fs::write(path, text).expect("write config");
}

/// A UDP relay in front of a port: every datagram is passed on, in both directions,
/// until the path is cut; while cut, every datagram is dropped (an outage as QUIC
/// sees it: silence). Its threads end when it is dropped.
pub struct UdpRelay {
    pub port: u16,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    /// Datagrams dropped while cut (the test shows the cut landed).
    pub dropped: Arc<AtomicU64>,
    /// Bytes per second towards the client (0: as fast as they come).
    rate: Arc<AtomicU64>,
}

impl UdpRelay {
    pub fn start(target: u16) -> UdpRelay {
        let front = UdpSocket::bind("127.0.0.1:0").expect("bind relay");
        front
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let port = front.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU64::new(0));
        let rate = Arc::new(AtomicU64::new(0));
        let (c, s, d, r) = (cut.clone(), stop.clone(), dropped.clone(), rate.clone());
        thread::spawn(move || {
            let uppers: Arc<Mutex<Vec<(SocketAddr, UdpSocket)>>> = Arc::default();
            let mut buf = vec![0u8; 65536];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = front.recv_from(&mut buf) else {
                    continue;
                };
                if c.load(Ordering::Relaxed) {
                    d.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let mut ups = uppers.lock().unwrap();
                if !ups.iter().any(|(a, _)| *a == from) {
                    let up = UdpSocket::bind("127.0.0.1:0").expect("bind upstream");
                    up.connect(("127.0.0.1", target)).expect("connect upstream");
                    up.set_read_timeout(Some(Duration::from_millis(100)))
                        .unwrap();
                    let back = front.try_clone().unwrap();
                    let reader = up.try_clone().unwrap();
                    let (c, s, d, r) = (c.clone(), s.clone(), d.clone(), r.clone());
                    thread::spawn(move || {
                        let mut buf = vec![0u8; 65536];
                        while !s.load(Ordering::Relaxed) {
                            if let Ok(n) = reader.recv(&mut buf) {
                                if c.load(Ordering::Relaxed) {
                                    d.fetch_add(1, Ordering::Relaxed);
                                } else {
                                    let _ = back.send_to(&buf[..n], from);
                                    // A slow link: the socket's buffer queues what
                                    // arrives meanwhile (and drops past it, as a
                                    // router would).
                                    let bps = r.load(Ordering::Relaxed);
                                    if let Some(ns) = (n as u64 * 1_000_000_000).checked_div(bps) {
                                        thread::sleep(Duration::from_nanos(ns));
                                    }
                                }
                            }
                        }
                    });
                    ups.push((from, up));
                }
                let up = &ups.iter().find(|(a, _)| *a == from).unwrap().1;
                let _ = up.send(&buf[..n]);
            }
        });
        UdpRelay {
            port,
            cut,
            stop,
            dropped,
            rate,
        }
    }

    /// Carries at most `bytes_per_sec` towards the client.
    pub fn throttle(&self, bytes_per_sec: u64) {
        self.rate.store(bytes_per_sec, Ordering::Relaxed);
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::Relaxed);
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::Relaxed);
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
