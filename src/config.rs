//! The mirror's TOML configuration: parsing, defaults and validation with one-line errors.

use std::path::Path;

use regex::Regex;
use serde::Deserialize;

use crate::kafka::security::settings::{SaslSettings, TlsSettings};
use crate::kafka::security::Security;

/// A configuration problem, phrased for the operator who wrote the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config {path}: {field}: {message}")]
    Invalid {
        path: String,
        field: &'static str,
        message: String,
    },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Short name of the data centre or cluster; used in topic names and logs.
    pub name: String,
    /// Comma-separated host:port list (not needed for a source read through a peer).
    #[serde(default)]
    pub bootstrap: String,
    /// Source only: `host:port` of a `wanmirror serve` next to the source cluster;
    /// everything is then read through it over QUIC (docs/peer-protocol.md).
    #[serde(default)]
    pub peer: Option<String>,
    /// The peer's mutual TLS: `ca` that signed the serve side's certificate, and the
    /// `cert` and `key` this mirror presents; `server_name` if the certificate names
    /// the serve side otherwise than the host in `peer`.
    #[serde(default)]
    pub peer_tls: Option<TlsSettings>,
    /// Most QUIC connections to the peer (1-8): the pool starts at half and adapts
    /// its size to the goodput, as the TCP pool does.
    #[serde(default = "default_peer_connections")]
    pub peer_connections: usize,
    /// Congestion control of the peer connections: "bbr" (default), "cubic", "newreno".
    #[serde(default)]
    pub peer_congestion: crate::peer::tls::Congestion,
    /// TLS to every broker of the cluster; plaintext without this section.
    #[serde(default)]
    pub tls: Option<TlsSettings>,
    /// SASL login on every connection; none without this section.
    #[serde(default)]
    pub sasl: Option<SaslSettings>,
}

fn default_verify_interval() -> u64 {
    600
}

fn default_peer_connections() -> usize {
    8
}

/// Checks a comma-separated `host:port` list.
pub fn check_bootstrap(list: &str) -> Result<(), String> {
    for a in list.split(',').map(str::trim) {
        let ok = a
            .rsplit_once(':')
            .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok());
        if !ok {
            return Err(format!("bootstrap address {a:?} is not host:port"));
        }
    }
    Ok(())
}

impl ClusterConfig {
    /// Loads the cluster's TLS files and SASL password. `side` is "source" or
    /// "destination"; errors name the section and the file or variable.
    pub fn security(&self, path: &str, side: &'static str) -> Result<Security, ConfigError> {
        Security::load(self.tls.as_ref(), self.sasl.as_ref()).map_err(|e| ConfigError::Invalid {
            path: path.to_string(),
            field: section(side, e.section),
            message: e.message,
        })
    }
}

/// A source's peer settings: an address, mutual TLS with all three files.
fn check_peer(peer: &str, c: &ClusterConfig) -> Result<(), (&'static str, String)> {
    let ok = peer
        .rsplit_once(':')
        .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok());
    if !ok {
        return Err(("source.peer", format!("{peer:?} is not host:port")));
    }
    let Some(t) = &c.peer_tls else {
        return Err((
            "source.peer_tls",
            "a peer needs [source.peer_tls] with ca, cert and key (mutual TLS)".into(),
        ));
    };
    for (what, v) in [("ca", &t.ca), ("cert", &t.cert), ("key", &t.key)] {
        if v.is_none() {
            return Err((
                "source.peer_tls",
                format!("{what} is missing: a peer connection needs ca, cert and key"),
            ));
        }
    }
    t.check().map_err(|m| ("source.peer_tls", m))?;
    if !(1..=8).contains(&c.peer_connections) {
        return Err(("source.peer_connections", "must be 1..=8".into()));
    }
    Ok(())
}

/// "source.tls" and its kin, as the `field` of a [`ConfigError`].
fn section(side: &str, part: &str) -> &'static str {
    match (side, part) {
        (_, "peer_tls") => "source.peer_tls",
        ("source", "tls") => "source.tls",
        ("source", _) => "source.sasl",
        (_, "tls") => "destination.tls",
        _ => "destination.sasl",
    }
}

/// What to do when the source log starts above the destination's end (an empty
/// destination while the source has deleted its head, or a mirror that fell behind
/// retention).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartPolicy {
    /// Write filler records for the missing offsets so that offsets stay identical.
    Pad,
    /// Stop the partition with an error.
    Refuse,
}

/// What to do with offsets missing inside the source log (compaction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GapPolicy {
    /// Write a filler record at each missing offset so that offsets stay identical.
    Fill,
    /// Stop the partition with an error.
    Refuse,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// Exact topic names or regular expressions (anchored: the whole name must match).
    pub topics: Vec<String>,
    /// Names or regular expressions to leave out, applied after `topics`.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Destination topic name; `{source}` and `{topic}` are replaced.
    #[serde(default = "default_rename")]
    pub rename: String,
    #[serde(default = "default_start_policy")]
    pub start_policy: StartPolicy,
    #[serde(default = "default_gap_policy")]
    pub gap_policy: GapPolicy,
    /// Largest number of filler records `start_policy = "pad"` may write per partition.
    #[serde(default = "default_max_pad")]
    pub max_pad_records: i64,
    /// Bytes of fetched, not yet acknowledged data held in memory, all partitions together.
    #[serde(default = "default_in_flight")]
    pub in_flight_bytes: usize,
    /// Largest fetch per partition request, and largest produce request.
    #[serde(default = "default_fetch_bytes")]
    pub fetch_bytes: usize,
    /// How long a fetch waits at the broker for new data once caught up (long poll).
    #[serde(default = "default_tail_wait_ms")]
    pub tail_wait_ms: u64,
    /// How often new topics and partitions are looked for.
    #[serde(default = "default_refresh")]
    pub metadata_refresh_secs: u64,
    /// How often progress is logged.
    #[serde(default = "default_progress")]
    pub progress_interval_secs: u64,
    /// How long a transient failure (unreachable broker, leader change) is retried
    /// before the partition is restarted from the destination end.
    #[serde(default = "default_retry_secs")]
    pub retry_secs: u64,
    /// How long the source's end may stay below what was already copied before the
    /// partition stops as diverged. Apache Kafka's new leader may report a lower high
    /// watermark until its followers caught up (up to `replica.lag.time.max.ms`, 30 s
    /// by default); a source that lost records stays below.
    #[serde(default = "default_watermark_grace")]
    pub watermark_grace_secs: u64,
    /// Through a peer: seconds between two checks of the newly copied offsets against
    /// the source by Merkle hashes (0: off).
    #[serde(default = "default_verify_interval")]
    pub verify_interval_secs: u64,
    /// Replication factor of topics the mirror creates; -1 takes the broker default.
    #[serde(default = "default_rf")]
    pub replication_factor: i16,
    /// Name of the fencing lock; instances sharing it never write at the same time.
    /// Default: `wanmirror.{source}.{destination}`.
    #[serde(default)]
    pub fence_id: Option<String>,
    /// Compacted topic in the destination holding the offset map and topic provenance.
    #[serde(default = "default_map_topic")]
    pub offset_map_topic: String,
}

fn default_rename() -> String {
    "{source}.{topic}".into()
}
fn default_start_policy() -> StartPolicy {
    StartPolicy::Pad
}
fn default_gap_policy() -> GapPolicy {
    GapPolicy::Fill
}
fn default_max_pad() -> i64 {
    10_000_000
}
fn default_in_flight() -> usize {
    // A lagging partition is fetched in pieces that arrive out of order; the reorder
    // window must cover the slowest piece on a lossy long path (see docs/decisions.md,
    // 18). Only as much is used as answers wait for: on a clean link far less.
    2 * 1024 * 1024 * 1024
}
fn default_fetch_bytes() -> usize {
    1024 * 1024
}
fn default_tail_wait_ms() -> u64 {
    500
}
fn default_refresh() -> u64 {
    30
}
fn default_progress() -> u64 {
    10
}
fn default_retry_secs() -> u64 {
    60
}
fn default_watermark_grace() -> u64 {
    60
}
fn default_rf() -> i16 {
    -1
}
fn default_map_topic() -> String {
    "__wanmirror_offsets".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub source: ClusterConfig,
    pub destination: ClusterConfig,
    pub mirror: MirrorConfig,
    #[serde(default)]
    pub transport: TransportConfig,
    /// Prometheus endpoint; none without this section.
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    /// Consumer-group offset sync; none without this section.
    #[serde(default)]
    pub groups: Option<GroupsConfig>,
    /// Mirror workers sharing the partitions as a group; one process mirrors
    /// everything without this section.
    #[serde(default)]
    pub group: Option<GroupConfig>,
    /// The file this came from, for errors found after parsing.
    #[serde(skip)]
    pub path: String,
}

/// `[metrics]`: where `/metrics` is served (docs/metrics.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address and port to listen on, e.g. "127.0.0.1:9464".
    pub listen: String,
}

/// `[group]`: every process with the same `id` shares the partitions, through a group
/// on the destination cluster's coordinator (docs/configuration.md, "Several workers").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    pub id: String,
    /// A member silent this long is removed and its partitions go to the others.
    #[serde(default = "default_session_timeout")]
    pub session_timeout_ms: u64,
}

fn default_session_timeout() -> u64 {
    10_000
}

/// `[groups]`: which applications' consumer groups have their committed offsets
/// copied into the destination (docs/offsets.md, "Consumer group offsets").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupsConfig {
    /// Group ids or regular expressions (anchored: the whole id must match).
    pub sync: Vec<String>,
    /// Seconds between two rounds of the sync.
    #[serde(default = "default_groups_interval")]
    pub interval_secs: u64,
}

fn default_groups_interval() -> u64 {
    10
}

/// How data crosses the WAN: the fetch connection pool and socket settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportConfig {
    /// Fewest catch-up connections kept per source broker.
    pub pool_min: usize,
    /// Most catch-up connections per source broker.
    pub pool_max: usize,
    /// Pool size when catch-up starts; it then grows while goodput rises.
    pub pool_initial: usize,
    /// Bytes asked for per piece of a lagging partition (at least one whole batch is
    /// always asked for).
    pub piece_bytes: usize,
    /// A partition further behind than this (estimated bytes) is split into pieces
    /// fetched in parallel; closer to the end it is read with one fetch at a time.
    pub split_bytes: usize,
    /// Bytes asked for per piece, and per tail probe, of a live partition (one whose
    /// data keeps coming), at most `piece_bytes`: small, so a record waits for at most
    /// one short transfer (docs/live.md).
    pub live_piece_bytes: usize,
    /// Fixed socket receive buffer. Unset leaves it to kernel autotuning, which a
    /// fixed size turns off.
    pub recv_buffer_bytes: Option<usize>,
    /// TCP congestion control (e.g. "bbr") for destination connections, where this
    /// process is the sender. Unset keeps the system default.
    pub destination_congestion: Option<String>,
    /// Connections per destination broker that writes are spread over, one partition
    /// on each (partition modulo this). A broker serves one connection's requests one
    /// at a time, so a single connection makes every partition wait for the others.
    pub produce_connections: usize,
    /// Cap on what the mirror reads from the source cluster, in megabits (10^6 bits)
    /// per second, all connections together. Unset: no cap.
    pub max_mbit: Option<u64>,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            pool_min: 1,
            pool_max: 256,
            pool_initial: 64,
            piece_bytes: 256 * 1024,
            // A live partition that falls this far behind goes to pieces: at 1 % loss
            // one connection carries ~0.18 MB/s, so a few MB at one fetch at a time
            // would be seconds of latency (docs/live.md).
            split_bytes: 1024 * 1024,
            // At 1 % loss and RTT 100 ms one connection carries tens of KB per round
            // trip: 64 KiB is a few round trips (docs/live.md, decision 40).
            live_piece_bytes: 64 * 1024,
            recv_buffer_bytes: None,
            destination_congestion: None,
            // Local connections cost little; 8 lets 8 partitions write at once
            // (docs/live.md, decision 44).
            produce_connections: 8,
            max_mbit: None,
        }
    }
}

/// The topic selection compiled from `topics` and `exclude`.
#[derive(Debug, Clone)]
pub struct TopicFilter {
    include: Vec<Regex>,
    exclude: Vec<Regex>,
}

impl TopicFilter {
    pub fn matches(&self, topic: &str) -> bool {
        self.include.iter().any(|r| r.is_match(topic))
            && !self.exclude.iter().any(|r| r.is_match(topic))
    }
}

/// The group selection compiled from `[groups] sync`.
#[derive(Debug, Clone)]
pub struct GroupFilter {
    sync: Vec<Regex>,
}

impl GroupFilter {
    pub fn matches(&self, group: &str) -> bool {
        self.sync.iter().any(|r| r.is_match(group))
    }
}

fn compile(
    path: &str,
    field: &'static str,
    patterns: &[String],
) -> Result<Vec<Regex>, ConfigError> {
    patterns
        .iter()
        .map(|p| {
            Regex::new(&format!("^(?:{p})$")).map_err(|e| ConfigError::Invalid {
                path: path.to_string(),
                field,
                message: format!(
                    "bad regular expression {p:?}: {}",
                    e.to_string().lines().last().unwrap_or("invalid")
                ),
            })
        })
        .collect()
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: p.clone(),
            source,
        })?;
        Self::parse(&p, &text)
    }

    pub fn parse(path: &str, text: &str) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_string(),
            // toml's message spans several lines with a source excerpt; keep one line.
            message: one_line(&e.to_string()),
        })?;
        cfg.validate(path)?;
        cfg.path = path.to_string();
        Ok(cfg)
    }

    fn validate(&self, path: &str) -> Result<(), ConfigError> {
        let bad = |field: &'static str, message: String| ConfigError::Invalid {
            path: path.to_string(),
            field,
            message,
        };
        for (field, c) in [("source", &self.source), ("destination", &self.destination)] {
            if c.name.trim().is_empty() || c.name.contains(['/', ' ']) {
                return Err(bad(
                    field,
                    format!("name {:?} must be a non-empty word", c.name),
                ));
            }
            match (&c.peer, field) {
                (Some(_), "destination") => return Err(bad(
                    "destination.peer",
                    "a peer is a source's: the destination is always reached through its brokers"
                        .into(),
                )),
                (Some(peer), _) => {
                    check_peer(peer, c).map_err(|(f, m)| bad(f, m))?;
                    if !c.bootstrap.is_empty() {
                        check_bootstrap(&c.bootstrap).map_err(|m| bad(field, m))?;
                    }
                }
                (None, _) => {
                    if c.peer_tls.is_some() {
                        return Err(bad(
                            section(field, "peer_tls"),
                            "set without peer: name the serve side's address in peer".into(),
                        ));
                    }
                    check_bootstrap(&c.bootstrap).map_err(|m| bad(field, m))?;
                }
            }
            if let Some(t) = &c.tls {
                t.check().map_err(|m| bad(section(field, "tls"), m))?;
            }
            if let Some(sasl) = &c.sasl {
                sasl.check().map_err(|m| bad(section(field, "sasl"), m))?;
            }
        }
        if self.source.peer.is_some() && self.transport.max_mbit.is_some() {
            return Err(bad(
                "transport.max_mbit",
                "the cap applies to reads from the source's brokers; through a peer it does not hold: remove it or [source] peer".into(),
            ));
        }
        if self.source.peer.is_some() && self.groups.is_some() {
            return Err(bad(
                "groups",
                "consumer-group offset sync reads the source's groups from its brokers, which a peer does not serve: remove [groups] or [source] peer".into(),
            ));
        }
        if self.source.name == self.destination.name {
            return Err(bad(
                "destination.name",
                format!(
                    "source and destination are both named {:?}; names must differ (they decide loop safety)",
                    self.source.name
                ),
            ));
        }
        let m = &self.mirror;
        if m.topics.is_empty() {
            return Err(bad(
                "mirror.topics",
                "list at least one topic or pattern".into(),
            ));
        }
        self.filter(path)?;
        if !m.rename.contains("{topic}") {
            return Err(bad(
                "mirror.rename",
                format!("{:?} must contain {{topic}}", m.rename),
            ));
        }
        let probe = m.rename.replace("{source}", "").replace("{topic}", "");
        if probe.contains(['{', '}']) {
            return Err(bad(
                "mirror.rename",
                format!("{:?}: only {{source}} and {{topic}} may be used", m.rename),
            ));
        }
        if m.fetch_bytes < 1024 || m.fetch_bytes > 64 * 1024 * 1024 {
            return Err(bad(
                "mirror.fetch_bytes",
                "must be between 1 KiB and 64 MiB".into(),
            ));
        }
        if m.in_flight_bytes < 2 * m.fetch_bytes {
            return Err(bad(
                "mirror.in_flight_bytes",
                "must be at least twice mirror.fetch_bytes".into(),
            ));
        }
        if m.max_pad_records < 0 {
            return Err(bad("mirror.max_pad_records", "must not be negative".into()));
        }
        if m.metadata_refresh_secs == 0 || m.progress_interval_secs == 0 || m.retry_secs == 0 {
            return Err(bad(
                "mirror.metadata_refresh_secs",
                "intervals must be at least 1 second".into(),
            ));
        }
        let t = &self.transport;
        if t.pool_min == 0 || t.pool_max < t.pool_min || t.pool_max > 4096 {
            return Err(bad(
                "transport.pool_max",
                format!(
                    "need 1 <= pool_min <= pool_max <= 4096 (got {} and {})",
                    t.pool_min, t.pool_max
                ),
            ));
        }
        if t.pool_initial < t.pool_min || t.pool_initial > t.pool_max {
            return Err(bad(
                "transport.pool_initial",
                format!(
                    "must lie between pool_min {} and pool_max {}",
                    t.pool_min, t.pool_max
                ),
            ));
        }
        if t.piece_bytes < 1024 || t.piece_bytes > 64 * 1024 * 1024 {
            return Err(bad(
                "transport.piece_bytes",
                "must be between 1 KiB and 64 MiB".into(),
            ));
        }
        // Above `piece_bytes` it has no effect (live pieces are never larger).
        if !(1024..=64 << 20).contains(&t.live_piece_bytes) {
            return Err(bad(
                "transport.live_piece_bytes",
                "must be between 1 KiB and 64 MiB".into(),
            ));
        }
        if t.recv_buffer_bytes.is_some_and(|b| b < 4096) {
            return Err(bad(
                "transport.recv_buffer_bytes",
                "must be at least 4096 (or unset for autotuning)".into(),
            ));
        }
        if let Some(cc) = &t.destination_congestion {
            if cc.is_empty() || !cc.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(bad(
                    "transport.destination_congestion",
                    format!("{cc:?} is not a congestion control name (e.g. \"bbr\", \"cubic\")"),
                ));
            }
        }
        if t.max_mbit.is_some_and(|m| !(1..=1_000_000).contains(&m)) {
            return Err(bad(
                "transport.max_mbit",
                "must be between 1 and 1000000 megabits per second (or unset for no cap)".into(),
            ));
        }
        if !(1..=256).contains(&t.produce_connections) {
            return Err(bad(
                "transport.produce_connections",
                format!("must be between 1 and 256 (got {})", t.produce_connections),
            ));
        }
        if m.replication_factor == 0 || m.replication_factor < -1 {
            return Err(bad(
                "mirror.replication_factor",
                "must be -1 (broker default) or at least 1".into(),
            ));
        }
        if let Some(g) = &self.group {
            if g.id.trim().is_empty() || g.id.len() > 200 {
                return Err(bad(
                    "group.id",
                    "must be a non-empty name of at most 200 characters".into(),
                ));
            }
            // Kafka's coordinator accepts 6 s to 30 min by default
            // (group.min/max.session.timeout.ms); a broker set narrower refuses at join.
            if !(1_000..=1_800_000).contains(&g.session_timeout_ms) {
                return Err(bad(
                    "group.session_timeout_ms",
                    "must be between 1000 and 1800000".into(),
                ));
            }
        }
        if let Some(g) = &self.groups {
            if g.sync.is_empty() {
                return Err(bad(
                    "groups.sync",
                    "list at least one group id or pattern (or leave out [groups])".into(),
                ));
            }
            compile(path, "groups.sync", &g.sync)?;
            if !(1..=86_400).contains(&g.interval_secs) {
                return Err(bad(
                    "groups.interval_secs",
                    "must be between 1 and 86400 seconds".into(),
                ));
            }
        }
        if let Some(mc) = &self.metrics {
            if mc.listen.parse::<std::net::SocketAddr>().is_err() {
                return Err(bad(
                    "metrics.listen",
                    format!(
                        "{:?} is not an address and port like 127.0.0.1:9464",
                        mc.listen
                    ),
                ));
            }
        }
        Ok(())
    }

    pub fn filter(&self, path: &str) -> Result<TopicFilter, ConfigError> {
        Ok(TopicFilter {
            include: compile(path, "mirror.topics", &self.mirror.topics)?,
            exclude: compile(path, "mirror.exclude", &self.mirror.exclude)?,
        })
    }

    /// The groups whose offsets are synced, compiled; `None` without `[groups]`.
    pub fn group_filter(&self) -> Result<Option<GroupFilter>, ConfigError> {
        self.groups
            .as_ref()
            .map(|g| {
                Ok(GroupFilter {
                    sync: compile(&self.path, "groups.sync", &g.sync)?,
                })
            })
            .transpose()
    }

    /// Both clusters' security, loaded (files read, passwords taken).
    pub fn securities(&self) -> Result<(Security, Security), ConfigError> {
        Ok((
            self.source.security(&self.path, "source")?,
            self.destination.security(&self.path, "destination")?,
        ))
    }

    /// The destination topic for a source topic.
    pub fn dest_topic(&self, source_topic: &str) -> String {
        self.mirror
            .rename
            .replace("{source}", &self.source.name)
            .replace("{topic}", source_topic)
    }

    pub fn fence_id(&self) -> String {
        self.mirror
            .fence_id
            .clone()
            .unwrap_or_else(|| format!("wanmirror.{}.{}", self.source.name, self.destination.name))
    }
}

pub(crate) fn one_line(s: &str) -> String {
    // toml errors look like "TOML parse error at line 3, column 1\n  |\n3 | x\n  | ^\nunknown field ..."
    let mut lines = s.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("invalid TOML").to_string();
    match s.lines().map(str::trim).rfind(|l| !l.is_empty()) {
        Some(last) if last != first => format!("{first}: {last}"),
        _ => first,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[source]
name = "dc-a"
bootstrap = "127.0.0.1:19092"
[destination]
name = "dc-b"
bootstrap = "127.0.0.1:29092"
[mirror]
topics = ["orders", "payments\\..*"]
"#;

    #[test]
    fn accepts_the_documented_shape_with_defaults() {
        let c = Config::parse("t", GOOD).unwrap();
        assert_eq!(c.dest_topic("orders"), "dc-a.orders");
        assert_eq!(c.mirror.start_policy, StartPolicy::Pad);
        let f = c.filter("t").unwrap();
        assert!(f.matches("orders") && f.matches("payments.eu"));
        assert!(!f.matches("orders2") && !f.matches("xpayments.eu"));
        assert_eq!(c.fence_id(), "wanmirror.dc-a.dc-b");
    }

    fn err(text: &str) -> String {
        Config::parse("t", text).unwrap_err().to_string()
    }

    #[test]
    fn a_peer_source_needs_its_tls_and_excludes_what_it_cannot_carry() {
        let peer = GOOD.replace(
            "bootstrap = \"127.0.0.1:19092\"",
            "peer = \"dc-a.example:7400\"\n[source.peer_tls]\nca = \"ca.pem\"\ncert = \"c.pem\"\nkey = \"c.key\"",
        );
        let c = Config::parse("t", &peer).unwrap();
        assert_eq!(c.source.peer.as_deref(), Some("dc-a.example:7400"));
        assert_eq!(c.source.peer_connections, 8);
        assert_eq!(c.mirror.verify_interval_secs, 600);
        assert!(err(&peer.replace("key = \"c.key\"", "")).contains("key is missing"));
        assert!(err(&peer.replace("dc-a.example:7400", "dc-a")).contains("source.peer"));
        assert!(err(&format!("{peer}[transport]\nmax_mbit = 100\n")).contains("transport.max_mbit"));
        assert!(err(&format!("{peer}[groups]\nsync = [\"a\"]\n")).contains("groups"));
        let no_peer = GOOD.replace(
            "[destination]",
            "[source.peer_tls]\nca = \"ca.pem\"\n[destination]",
        );
        assert!(err(&no_peer).contains("set without peer"));
        let on_dest = GOOD.replace(
            "bootstrap = \"127.0.0.1:29092\"",
            "bootstrap = \"127.0.0.1:29092\"\npeer = \"x:1\"",
        );
        assert!(err(&on_dest).contains("destination.peer"));
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = err(&GOOD.replace("[mirror]", "[mirror]\ntopicz = 1"));
        assert!(e.contains("unknown field") && e.contains("topicz"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn missing_fields_are_named() {
        let e = err(&GOOD.replace("bootstrap = \"127.0.0.1:29092\"", ""));
        assert!(e.contains("bootstrap"), "{e}");
    }

    #[test]
    fn bad_regex_is_named() {
        let e = err(&GOOD.replace("\"orders\",", "\"ord(ers\","));
        assert!(e.contains("mirror.topics") && e.contains("ord(ers"), "{e}");
    }

    #[test]
    fn transport_defaults_and_bounds() {
        let c = Config::parse("t", GOOD).unwrap();
        assert_eq!(c.transport.pool_max, 256);
        assert_eq!(c.transport.recv_buffer_bytes, None);
        let with = |t: &str| format!("{GOOD}[transport]\n{t}\n");
        assert!(err(&with("pool_max = 0")).contains("transport.pool_max"));
        assert!(err(&with("pool_initial = 999")).contains("transport.pool_initial"));
        assert!(err(&with("piece_bytes = 10")).contains("transport.piece_bytes"));
        assert!(err(&with("live_piece_bytes = 10")).contains("transport.live_piece_bytes"));
        assert!(err(&with("live_piece_bytes = 99999999999")).contains("transport.live_piece_bytes"));
        assert!(err(&with("destination_congestion = \"b b\"")).contains("congestion"));
        assert_eq!(c.transport.produce_connections, 8);
        assert!(err(&with("produce_connections = 0")).contains("transport.produce_connections"));
        assert!(err(&with("produce_connections = 257")).contains("transport.produce_connections"));
        assert!(err(&with("pool = 3")).contains("unknown field"));
        assert_eq!(c.transport.max_mbit, None);
        assert!(err(&with("max_mbit = 0")).contains("transport.max_mbit"));
        let capped = Config::parse("t", &with("max_mbit = 400")).unwrap();
        assert_eq!(capped.transport.max_mbit, Some(400));
        let c = Config::parse("t", &with("pool_max = 8\npool_initial = 4")).unwrap();
        assert_eq!((c.transport.pool_max, c.transport.pool_initial), (8, 4));
    }

    #[test]
    fn group_section_defaults_and_bounds() {
        assert!(Config::parse("t", GOOD).unwrap().group.is_none());
        let with = |t: &str| format!("{GOOD}[group]\n{t}\n");
        let c = Config::parse("t", &with("id = \"wanmirror.dc-a.dc-b\"")).unwrap();
        assert_eq!(c.group.unwrap().session_timeout_ms, 10_000);
        assert!(err(&with("id = \"\"")).contains("group.id"));
        assert!(
            err(&with("id = \"g\"\nsession_timeout_ms = 10")).contains("group.session_timeout_ms")
        );
        assert!(err(&with("session_timeout_ms = 6000")).contains("id"));
    }

    #[test]
    fn groups_section_defaults_and_bad_input() {
        assert!(Config::parse("t", GOOD)
            .unwrap()
            .group_filter()
            .unwrap()
            .is_none());
        let with = |t: &str| format!("{GOOD}[groups]\n{t}\n");
        let c = Config::parse("t", &with("sync = [\"app-.*\", \"billing\"]")).unwrap();
        assert_eq!(c.groups.as_ref().unwrap().interval_secs, 10);
        let f = c.group_filter().unwrap().unwrap();
        assert!(f.matches("app-1") && f.matches("billing"));
        assert!(!f.matches("billing2") && !f.matches("xapp-1"));
        let e = err(&with("sync = [\"app-(\"]"));
        assert!(e.contains("groups.sync") && e.contains("app-("), "{e}");
        assert!(!e.contains('\n'), "{e}");
        assert!(err(&with("sync = []")).contains("groups.sync"));
        assert!(err(&with("sync = [\"a\"]\ninterval_secs = 0")).contains("groups.interval_secs"));
        assert!(err(&with("sync = [\"a\"]\nintervall = 3")).contains("unknown field"));
    }

    #[test]
    fn bad_address_and_same_names_are_refused() {
        assert!(err(&GOOD.replace("127.0.0.1:19092", "nohost")).contains("host:port"));
        assert!(err(&GOOD.replace("dc-b", "dc-a")).contains("must differ"));
        assert!(err(&GOOD.replace("[mirror]", "[mirror]\nrename = \"x\"")).contains("{topic}"));
    }
}
