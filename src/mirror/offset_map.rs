//! The offset map and topic provenance, kept in a compacted topic of the destination.
//!
//! Every place where the destination cannot hold the source's record at the same offset
//! (padding below a raised log start, fillers for compaction gaps) is recorded here
//! before the filler is written, so a deviation is never silent. The same topic records
//! which source each mirrored topic comes from; mirrors in the other direction read it
//! to never copy a topic back to its origin.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::kafka::batch::split_batches;
use crate::kafka::client::Cluster;
use crate::kafka::records::{decode, encode, Content};

use super::error::MirrorError;

/// A range of destination offsets that holds fillers instead of source records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deviation {
    pub topic: String,
    pub partition: i32,
    /// First and last destination offset (inclusive) holding fillers.
    pub first_offset: i64,
    pub last_offset: i64,
    /// "pad" (below the source log start) or "gap" (missing inside the source log).
    pub kind: String,
    pub source_cluster: String,
    pub source_topic: String,
}

/// Where a mirrored topic comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    pub topic: String,
    pub origin_cluster: String,
    pub origin_topic: String,
}

fn deviation_key(d: &Deviation) -> String {
    format!("offsets/{}/{}/{}", d.topic, d.partition, d.first_offset)
}

fn provenance_key(p: &Provenance) -> String {
    format!("topic/{}", p.topic)
}

/// Reader and writer of the map topic in one cluster.
pub struct OffsetMap {
    cluster: Arc<Cluster>,
    topic: String,
}

impl OffsetMap {
    pub fn new(cluster: Arc<Cluster>, topic: &str) -> Self {
        OffsetMap {
            cluster,
            topic: topic.to_string(),
        }
    }

    /// Creates the compacted map topic if it does not exist.
    pub async fn ensure(&self, replication_factor: i16) -> Result<(), MirrorError> {
        let name = self.cluster.name().to_string();
        let configs = BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]);
        if self
            .cluster
            .topic(&self.topic)
            .await
            .map_err(|e| MirrorError::kafka(&name, e))?
            .is_none()
        {
            self.cluster
                .create_topic(&self.topic, 1, replication_factor, &configs)
                .await
                .map_err(|e| MirrorError::kafka(&name, e))?;
        }
        Ok(())
    }

    async fn put(&self, key: String, value: Vec<u8>) -> Result<(), MirrorError> {
        let now = now_ms();
        let rec = Content {
            offset: 0,
            timestamp: now,
            key: Some(Bytes::from(key)),
            value: Some(Bytes::from(value)),
            headers: vec![],
        };
        let batch = encode(&[rec], 0).map_err(|detail| MirrorError::Topic {
            topic: self.topic.clone(),
            detail,
        })?;
        let c = &self.cluster;
        c.retry("offset map write", || {
            c.produce(&self.topic, 0, batch.clone(), c.produce_timeout())
        })
        .await
        .map_err(|e| MirrorError::kafka(c.name(), e))?;
        Ok(())
    }

    pub async fn record_deviation(&self, d: &Deviation) -> Result<(), MirrorError> {
        tracing::warn!(
            topic = %d.topic, partition = d.partition, first = d.first_offset,
            last = d.last_offset, kind = %d.kind,
            "offset deviation: destination holds filler records; recorded in the offset map"
        );
        self.put(deviation_key(d), serde_json::to_vec(d).unwrap_or_default())
            .await
    }

    pub async fn record_provenance(&self, p: &Provenance) -> Result<(), MirrorError> {
        self.put(provenance_key(p), serde_json::to_vec(p).unwrap_or_default())
            .await
    }

    /// Reads the whole map topic (latest value per key). Missing topic = empty map.
    pub async fn read_all(&self) -> Result<(Vec<Deviation>, Vec<Provenance>), MirrorError> {
        let c = &self.cluster;
        let err = |e| MirrorError::kafka(c.name(), e);
        if c.topic(&self.topic).await.map_err(err)?.is_none() {
            return Ok((vec![], vec![]));
        }
        let end = c.end_offset(&self.topic, 0).await.map_err(err)?;
        let mut next = c.log_start(&self.topic, 0).await.map_err(err)?;
        let mut latest: BTreeMap<Bytes, Option<Bytes>> = BTreeMap::new();
        while next < end {
            let f = c
                .fetch(&self.topic, 0, next, 1 << 20, Duration::ZERO)
                .await
                .map_err(err)?;
            let batches = split_batches(&f.records).map_err(|e| MirrorError::Topic {
                topic: self.topic.clone(),
                detail: e.to_string(),
            })?;
            let Some(last) = batches.last() else { break };
            next = last.header.next_offset();
            for r in decode(&batches).map_err(|detail| MirrorError::Topic {
                topic: self.topic.clone(),
                detail,
            })? {
                if let Some(k) = r.key {
                    latest.insert(k, r.value);
                }
            }
        }
        let mut devs = Vec::new();
        let mut provs = Vec::new();
        for (k, v) in latest {
            let Some(v) = v else { continue };
            if k.starts_with(b"offsets/") {
                if let Ok(d) = serde_json::from_slice(&v) {
                    devs.push(d);
                }
            } else if k.starts_with(b"topic/") {
                if let Ok(p) = serde_json::from_slice(&v) {
                    provs.push(p);
                }
            }
        }
        Ok((devs, provs))
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
