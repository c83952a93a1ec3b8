//! Apache Kafka KRaft clusters for the compatibility suite: every node is one JVM that
//! is both broker and controller, on loopback ports, its storage formatted in a temp
//! folder. Nodes can be killed (-9) and restarted; all are killed on drop, also when a
//! test fails. The jars come from scripts/kafka/fetch.sh (run by scripts/setup.sh).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use wanmirror::demo::broker::free_port;

use super::kafka_security::Tls;
use super::Broker;

/// The Apache Kafka release the suite runs against (scripts/kafka/fetch.sh pins it).
pub const KAFKA_VERSION: &str = "4.1.1";

/// Where fetch.sh keeps the jars: $WANMIRROR_KAFKA_HOME or the user cache.
pub fn kafka_home() -> PathBuf {
    if let Some(h) = std::env::var_os("WANMIRROR_KAFKA_HOME") {
        return PathBuf::from(h);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
        });
    cache.join(format!("wanmirror/kafka-{KAFKA_VERSION}"))
}

/// The shape of a cluster: its node count and broker settings beyond the defaults.
#[derive(Debug, Clone)]
pub struct Shape {
    pub nodes: usize,
    pub props: Vec<(String, String)>,
    /// SSL and SASL_SSL listeners besides PLAINTEXT (`kafka_security`).
    pub secured: bool,
}

impl Shape {
    /// One node: replication factor 1 everywhere.
    pub fn single() -> Shape {
        Shape {
            nodes: 1,
            props: vec![],
            secured: false,
        }
    }

    /// Three nodes: replication factor 3 and `min.insync.replicas=2`, as in production.
    pub fn three() -> Shape {
        Shape {
            nodes: 3,
            props: vec![],
            secured: false,
        }
    }

    /// Adds an SSL listener and a SASL_SSL one (PLAIN and SCRAM-SHA-512) to every node.
    pub fn secured(mut self) -> Shape {
        self.secured = true;
        self
    }

    /// Adds a broker setting.
    pub fn with(mut self, key: &str, value: &str) -> Shape {
        self.props.push((key.to_string(), value.to_string()));
        self
    }
}

struct Node {
    id: usize,
    port: u16,
    /// SSL and SASL_SSL ports, on a secured cluster.
    secured_ports: Option<(u16, u16)>,
    props: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A running KRaft cluster.
pub struct KafkaCluster {
    nodes: Vec<Node>,
    /// Keeps the nodes' storage until the cluster is dropped.
    _dir: tempfile::TempDir,
    libs: PathBuf,
    log4j: PathBuf,
    tls: Option<Tls>,
}

/// The JVM's temporary directory inside `dir`, which the test removes: the Kafka
/// clients unpack their compression libraries there, and a killed JVM leaves them.
fn java_tmpdir(dir: &std::path::Path) -> String {
    let tmp = dir.join("java-tmp");
    std::fs::create_dir_all(&tmp).expect("java tmpdir");
    format!("-Djava.io.tmpdir={}", tmp.display())
}

/// A random cluster id as Kafka writes it: 16 bytes, URL-safe base64 without padding;
/// like Kafka's own, never starting with '-' (the formatter would read it as an option).
fn cluster_id() -> String {
    loop {
        let id = random_id();
        if !id.starts_with('-') {
            return id;
        }
    }
}

fn random_id() -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes: [u8; 16] = rand::random();
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = String::new();
    for b in bytes {
        bits = (bits << 8) | b as u32;
        n += 8;
        while n >= 6 {
            n -= 6;
            out.push(ABC[((bits >> n) & 63) as usize] as char);
        }
    }
    if n > 0 {
        out.push(ABC[((bits << (6 - n)) & 63) as usize] as char);
    }
    out
}

impl KafkaCluster {
    /// Formats and starts a cluster; panics with the nodes' logs if it does not come up.
    /// A port found free can be taken by another process (a test's client, a broker)
    /// before a node binds it: the cluster then starts again on new ports, twice at most.
    pub fn start(shape: Shape) -> KafkaCluster {
        let mut attempt = 1;
        loop {
            let once = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                Self::start_once(shape.clone())
            }));
            match once {
                Ok(c) => return c,
                Err(e) => {
                    let msg = e
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or_else(|| e.downcast_ref::<&str>().copied())
                        .unwrap_or("");
                    if attempt < 3 && msg.contains("Address already in use") {
                        eprintln!("kafka: a port was taken before a node bound it; starting again on new ports");
                        attempt += 1;
                        continue;
                    }
                    std::panic::resume_unwind(e);
                }
            }
        }
    }

    fn start_once(shape: Shape) -> KafkaCluster {
        let home = kafka_home();
        let libs = home.join("libs");
        assert!(
            libs.join(format!("kafka_2.13-{KAFKA_VERSION}.jar"))
                .is_file(),
            "Apache Kafka {KAFKA_VERSION} jars not found under {}: run scripts/setup.sh",
            libs.display()
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let n = shape.nodes;
        let ports: Vec<(u16, u16)> = (0..n)
            .map(|_| (free_port().expect("port"), free_port().expect("port")))
            .collect();
        let voters: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, c))| format!("{}@127.0.0.1:{c}", i + 1))
            .collect();
        let replicas = n.min(3);
        let min_isr = if n >= 3 { 2 } else { 1 };
        let id = cluster_id();
        let tls = shape.secured.then(|| Tls::generate(dir.path()));
        let mut nodes = Vec::new();
        for (i, &(port, controller_port)) in ports.iter().enumerate() {
            let node_dir = dir.path().join(format!("node-{}", i + 1));
            std::fs::create_dir_all(&node_dir).expect("node dir");
            let secured_ports = tls
                .as_ref()
                .map(|_| (free_port().expect("port"), free_port().expect("port")));
            let mut listeners =
                format!("PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}");
            let mut advertised = format!("PLAINTEXT://127.0.0.1:{port}");
            let mut protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT".to_string();
            if let Some((ssl, sasl)) = secured_ports {
                let more = format!(",SSL://127.0.0.1:{ssl},SASL_SSL://127.0.0.1:{sasl}");
                listeners.push_str(&more);
                advertised.push_str(&more);
                protocols.push_str(",SSL:SSL,SASL_SSL:SASL_SSL");
            }
            let mut props = vec![
                ("process.roles", "broker,controller".to_string()),
                ("node.id", (i + 1).to_string()),
                ("controller.quorum.voters", voters.join(",")),
                ("listeners", listeners),
                ("advertised.listeners", advertised),
                ("controller.listener.names", "CONTROLLER".into()),
                ("inter.broker.listener.name", "PLAINTEXT".into()),
                ("listener.security.protocol.map", protocols),
                ("log.dirs", node_dir.join("data").display().to_string()),
                ("num.partitions", "1".into()),
                ("default.replication.factor", replicas.to_string()),
                ("min.insync.replicas", min_isr.to_string()),
                ("offsets.topic.replication.factor", replicas.to_string()),
                ("offsets.topic.num.partitions", "4".into()),
                (
                    "transaction.state.log.replication.factor",
                    replicas.to_string(),
                ),
                ("transaction.state.log.min.isr", min_isr.to_string()),
                ("transaction.state.log.num.partitions", "4".into()),
                (
                    "share.coordinator.state.topic.replication.factor",
                    replicas.to_string(),
                ),
                ("share.coordinator.state.topic.min.isr", min_isr.to_string()),
                ("group.initial.rebalance.delay.ms", "0".into()),
                ("auto.create.topics.enable", "false".into()),
                ("unclean.leader.election.enable", "false".into()),
                // Two cores: few threads, and fast failure detection for the kill tests.
                ("num.network.threads", "2".into()),
                ("num.io.threads", "2".into()),
                ("background.threads", "2".into()),
                ("num.replica.fetchers", "1".into()),
                ("broker.heartbeat.interval.ms", "500".into()),
                ("broker.session.timeout.ms", "3000".into()),
                ("log.cleaner.backoff.ms", "500".into()),
            ];
            if let Some(t) = &tls {
                props.extend(t.broker_props());
            }
            let extra: Vec<(&str, String)> = shape
                .props
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect();
            props.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
            props.extend(extra);
            let text: String = props.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            let path = node_dir.join("server.properties");
            std::fs::write(&path, text).expect("write server.properties");
            nodes.push(Node {
                id: i + 1,
                port,
                secured_ports,
                props: path,
                log: node_dir.join("kafka.log"),
                child: None,
            });
        }
        let mut c = KafkaCluster {
            nodes,
            _dir: dir,
            libs,
            log4j: home.join("log4j2.yaml"),
            tls,
        };
        let scram = c.tls.as_ref().map(|_| Tls::scram_format_args());
        let t0 = Instant::now();
        // Format every node's storage (in parallel: each is a JVM start).
        let formats: Vec<_> = c
            .nodes
            .iter()
            .map(|node| {
                c.java()
                    .args(["kafka.tools.StorageTool", "format", "--config"])
                    .arg(&node.props)
                    .args(["--cluster-id", &id])
                    .args(scram.iter().flatten())
                    .stdin(Stdio::null())
                    .output()
            })
            .collect();
        for (i, f) in formats.into_iter().enumerate() {
            let out = f.expect("run kafka-storage format");
            assert!(
                out.status.success(),
                "formatting node {} failed: {}{}",
                i + 1,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let formatted = t0.elapsed();
        for i in 0..n {
            c.spawn(i);
        }
        c.wait_ready(Duration::from_secs(90));
        // Start-up figures for docs/kafka.md (shown with --nocapture).
        eprintln!(
            "kafka: {n} node(s) formatted in {:.1} s, serving metadata {:.1} s later, RSS {:?} MB",
            formatted.as_secs_f64(),
            (t0.elapsed() - formatted).as_secs_f64(),
            c.rss_mb()
        );
        c
    }

    /// Resident memory of each live node, in MB.
    pub fn rss_mb(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter_map(|n| n.child.as_ref())
            .filter_map(|c| std::fs::read_to_string(format!("/proc/{}/status", c.id())).ok())
            .filter_map(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            })
            .map(|kb| kb / 1024)
            .collect()
    }

    fn java(&self) -> Command {
        let mut cmd = Command::new("java");
        // Two cores and several JVMs per test: a small heap, the serial collector, and
        // C1 only (tests are short; start-up time matters more than peak speed).
        cmd.args([
            "-Xms128m",
            "-Xmx512m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
        ])
        .arg("-Djava.awt.headless=true")
        .arg(java_tmpdir(self._dir.path()))
        .arg(format!(
            "-Dlog4j2.configurationFile={}",
            self.log4j.display()
        ))
        .arg("-cp")
        .arg(format!("{}/*", self.libs.display()));
        cmd
    }

    fn spawn(&mut self, i: usize) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.nodes[i].log)
            .expect("node log");
        let err = log.try_clone().expect("node log");
        let child = self
            .java()
            .arg("kafka.Kafka")
            .arg(&self.nodes[i].props)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("start java (install a JDK 17: scripts/setup.sh)");
        self.nodes[i].child = Some(child);
    }

    /// Waits until every live node is registered and serves metadata.
    pub fn wait_ready(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].child.is_some())
            .collect();
        loop {
            for &i in &live {
                if let Some(Ok(Some(st))) = self.nodes[i].child.as_mut().map(|c| c.try_wait()) {
                    panic!(
                        "Kafka node {} exited with {st}:\n{}",
                        self.nodes[i].id,
                        self.log_tail(i)
                    );
                }
            }
            if self.brokers_seen(&live) == live.len() {
                return;
            }
            if Instant::now() > deadline {
                let logs: String = live.iter().map(|&i| self.log_tail(i)).collect();
                panic!("Kafka cluster not ready after {limit:?}:\n{logs}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// How many brokers the first reachable live node lists in its metadata.
    fn brokers_seen(&self, live: &[usize]) -> usize {
        for &i in live {
            let addr = format!("127.0.0.1:{}", self.nodes[i].port);
            if std::net::TcpStream::connect(&addr).is_err() {
                continue;
            }
            let c: Result<BaseConsumer, _> = ClientConfig::new()
                .set("bootstrap.servers", &addr)
                .set("log_level", "0")
                .create();
            if let Ok(c) = c {
                if let Ok(md) = c.fetch_metadata(None, Duration::from_secs(2)) {
                    return md.brokers().len();
                }
            }
        }
        0
    }

    /// The last lines of a node's log, for failure messages.
    pub fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(40);
        format!(
            "--- node {} ---\n{}\n",
            self.nodes[i].id,
            lines[from..].join("\n")
        )
    }

    /// The node ids (1-based, as in the broker metadata).
    pub fn node_ids(&self) -> Vec<i32> {
        self.nodes.iter().map(|n| n.id as i32).collect()
    }

    /// Kills node `id` with SIGKILL: no clean shutdown, no flush.
    pub fn kill(&mut self, id: i32) {
        let n = self.index(id);
        if let Some(mut c) = self.nodes[n].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts a killed node again on its old storage and ports.
    pub fn restart(&mut self, id: i32) {
        let n = self.index(id);
        assert!(self.nodes[n].child.is_none(), "node {id} is running");
        self.spawn(n);
    }

    fn index(&self, id: i32) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id as i32 == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// The SSL listeners' bootstrap list, on a secured cluster.
    pub fn ssl_bootstrap(&self) -> String {
        self.secured_list(|p| p.0)
    }

    /// The SASL_SSL listeners' bootstrap list, on a secured cluster.
    pub fn sasl_ssl_bootstrap(&self) -> String {
        self.secured_list(|p| p.1)
    }

    fn secured_list(&self, pick: impl Fn((u16, u16)) -> u16) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let ports = n
                    .secured_ports
                    .expect("a cluster started with Shape::secured");
                format!("127.0.0.1:{}", pick(ports))
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The cluster's certificates (CA, client certificate), on a secured cluster.
    pub fn pki(&self) -> &super::pki::Pki {
        &self
            .tls
            .as_ref()
            .expect("a cluster started with Shape::secured")
            .pki
    }

    /// The certificate a client must trust, on a secured cluster.
    pub fn ca_pem(&self) -> PathBuf {
        self.tls
            .as_ref()
            .map(|t| t.pki.ca.clone())
            .expect("a cluster started with Shape::secured")
    }
}

/// MirrorMaker 2 in dedicated mode (`connect-mirror`'s driver), killed on drop.
pub struct MirrorMaker {
    child: Child,
    pub log: PathBuf,
}

impl MirrorMaker {
    /// Starts MirrorMaker 2 with `properties` (an mm2.properties text), running the
    /// flows into cluster `target`; its output goes to a log file in `dir`.
    pub fn start(dir: &std::path::Path, properties: &str, target: &str) -> MirrorMaker {
        let home = kafka_home();
        let cfg = dir.join("mm2.properties");
        std::fs::write(&cfg, properties).expect("write mm2.properties");
        let log = dir.join("mm2.log");
        let out = std::fs::File::create(&log).expect("mm2 log");
        let err = out.try_clone().expect("mm2 log");
        let child = Command::new("java")
            .args([
                "-Xms128m",
                "-Xmx512m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
            ])
            .arg(java_tmpdir(dir))
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                home.join("log4j2.yaml").display()
            ))
            .arg("-cp")
            .arg(format!("{}/*", home.join("libs").display()))
            .arg("org.apache.kafka.connect.mirror.MirrorMaker")
            .arg(&cfg)
            .args(["--clusters", target])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start MirrorMaker 2");
        MirrorMaker { child, log }
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for MirrorMaker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Broker for KafkaCluster {
    fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn replicas(&self) -> i16 {
        self.nodes.len().min(3) as i16
    }
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
