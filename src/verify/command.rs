//! `wanmirror diff` from arguments to report: which clusters, which topic pairs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::diff::{self, Options, Side};
use super::error::VerifyError;
use super::report::{Bar, Report};
use crate::config::Config;
use crate::kafka::client::Cluster;
use crate::kafka::connection::SocketOptions;
use crate::mirror::offset_map::OffsetMap;
use crate::mirror::topics::loop_guard;
use crate::source::Source;
use crate::transport::sizer::PoolConfig;

/// What to compare: the topics of a mirror config, or one ad-hoc topic pair.
pub enum Target {
    Config {
        config: Box<Config>,
        /// Only this source topic.
        topic: Option<String>,
    },
    Pair {
        source_bootstrap: String,
        dest_bootstrap: String,
        source_topic: String,
        dest_topic: String,
    },
}

pub struct DiffRequest {
    pub target: Target,
    pub options: Options,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
}

pub async fn run(req: DiffRequest) -> Result<Report, VerifyError> {
    let sock = SocketOptions {
        retry_deadline: Duration::from_secs(10),
        ..SocketOptions::default()
    };
    let (source, dest, pairs) = match req.target {
        Target::Pair {
            source_bootstrap,
            dest_bootstrap,
            source_topic,
            dest_topic,
        } => {
            let s = Cluster::new("source", &source_bootstrap, sock.clone());
            let d = Cluster::new("destination", &dest_bootstrap, sock);
            connect(&s).await?;
            connect(&d).await?;
            (Source::from(s), d, vec![(source_topic, dest_topic)])
        }
        Target::Config { config, topic } => config_pairs(&config, topic, sock).await?,
    };
    let bar = Bar::new(req.progress);
    // One reader of the destination for every pair: one catch-up pool.
    let dest_reader = Source::from(dest.clone());
    let mut partitions = Vec::new();
    for (st, dt) in pairs {
        let found = diff::topic(
            Side {
                source: source.clone(),
                topic: st,
            },
            Side {
                source: dest_reader.clone(),
                topic: dt,
            },
            req.options.clone(),
            bar.clone(),
        )
        .await;
        match found {
            Ok(p) => partitions.extend(p),
            Err(e) => {
                bar.finish();
                return Err(e);
            }
        }
    }
    bar.finish();
    let mut report = Report::new(
        source.name(),
        dest.name(),
        req.options.leaf_offsets,
        partitions,
    );
    if let Source::Peer(p) = &source {
        let (sent, received) = p.peer.wire_bytes().await;
        tracing::info!(peer = %p.peer.addr(), sent_bytes = sent, received_bytes = received, "bytes over the peer connections (UDP, all overhead included)");
        report.peer_bytes = Some(sent + received);
    }
    source.close();
    Ok(report)
}

/// The clusters of a mirror config, connected, and its topic pairs (source name,
/// destination name): every source topic the mirror would copy, or only `topic`.
pub async fn config_pairs(
    config: &Config,
    topic: Option<String>,
    sock: SocketOptions,
) -> Result<(Source, Arc<Cluster>, Vec<(String, String)>), VerifyError> {
    let (source_security, dest_security) = config
        .securities()
        .map_err(|e| VerifyError::Usage(e.to_string()))?;
    let s = crate::source::from_config(
        &config.source,
        &config.path,
        SocketOptions {
            security: source_security,
            ..sock.clone()
        },
        PoolConfig::default(),
        Duration::from_secs(10),
    )
    .map_err(|e| VerifyError::Usage(e.to_string()))?;
    let d = Cluster::new(
        &config.destination.name,
        &config.destination.bootstrap,
        SocketOptions {
            security: dest_security,
            ..sock
        },
    );
    s.topics()
        .await
        .map_err(|e| VerifyError::kafka(s.name(), e))?;
    connect(&d).await?;
    let filter = config
        .filter("config")
        .map_err(|e| VerifyError::Usage(e.to_string()))?;
    let topics: Vec<String> = match topic {
        Some(t) if filter.matches(&t) => vec![t],
        Some(t) => {
            return Err(VerifyError::Usage(format!(
                "topic {t} is not selected by the config's mirror.topics/exclude"
            )))
        }
        None => {
            // The mirror's own loop safety: never a topic that came from the
            // destination (by name or by the source's provenance records).
            // Through a peer the source's offset map is read only if the client may.
            let provs = match s.brokers() {
                Some(c) => {
                    OffsetMap::new(c.clone(), &config.mirror.offset_map_topic)
                        .read_all()
                        .await
                        .map_err(|e| {
                            VerifyError::Usage(format!("reading the source's offset map: {e}"))
                        })?
                        .1
                }
                None => Vec::new(),
            };
            let origins: BTreeMap<String, String> = provs
                .into_iter()
                .map(|p| (p.topic, p.origin_cluster))
                .collect();
            let selected: Vec<String> = s
                .topics()
                .await
                .map_err(|e| VerifyError::kafka(s.name(), e))?
                .into_iter()
                .map(|t| t.name)
                .filter(|n| !n.starts_with("__") && filter.matches(n))
                .collect();
            let kept: Vec<String> = selected
                .iter()
                .filter(|n| loop_guard(n, &config.destination.name, &origins).is_none())
                .cloned()
                .collect();
            if kept.is_empty() && !selected.is_empty() {
                return Err(VerifyError::Usage(format!(
                    "every source topic the config selects came from {}, and is never mirrored back",
                    config.destination.name
                )));
            }
            kept
        }
    };
    if topics.is_empty() {
        return Err(VerifyError::Usage(
            "no source topic matches the config's mirror.topics".into(),
        ));
    }
    let pairs = topics
        .into_iter()
        .map(|t| {
            let d = config.dest_topic(&t);
            (t, d)
        })
        .collect();
    Ok((s, d, pairs))
}

async fn connect(c: &Arc<Cluster>) -> Result<(), VerifyError> {
    c.refresh(Some(&[]))
        .await
        .map(|_| ())
        .map_err(|e| VerifyError::kafka(c.name(), e))
}
