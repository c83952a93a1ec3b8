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
        let mut entries = Entries::default();
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
            entries.add(decode(&batches).map_err(|detail| MirrorError::Topic {
                topic: self.topic.clone(),
                detail,
            })?);
        }
        entries.parse().map_err(|detail| MirrorError::Topic {
            topic: self.topic.clone(),
            detail,
        })
    }
}

/// The map's records folded to the latest value per key, as compaction would.
#[derive(Debug, Default)]
pub struct Entries {
    latest: BTreeMap<Bytes, Option<Bytes>>,
}

impl Entries {
    /// Records in log order; a later value for a key replaces the earlier one.
    pub fn add(&mut self, records: Vec<Content>) {
        for r in records {
            if let Some(k) = r.key {
                self.latest.insert(k, r.value);
            }
        }
    }

    /// The deviations and provenances held, skipping deleted keys (a null value, a
    /// tombstone) and keys of other kinds. An entry of ours that does not parse is an
    /// error naming its key: skipping it would hide a filler, or let a topic be copied
    /// back to its origin (the source's map is read for loop safety).
    pub fn parse(self) -> Result<(Vec<Deviation>, Vec<Provenance>), String> {
        let mut devs = Vec::new();
        let mut provs = Vec::new();
        for (k, v) in self.latest {
            let Some(v) = v else { continue };
            let bad = |e: serde_json::Error| {
                // Named, but not at any length: the key came off the wire.
                let key: String = String::from_utf8_lossy(&k).chars().take(80).collect();
                format!("entry {key:?} does not parse: {e}")
            };
            if k.starts_with(b"offsets/") {
                devs.push(serde_json::from_slice(&v).map_err(bad)?);
            } else if k.starts_with(b"topic/") {
                provs.push(serde_json::from_slice(&v).map_err(bad)?);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, value: Option<&str>) -> Content {
        Content {
            offset: 0,
            timestamp: 0,
            key: Some(Bytes::copy_from_slice(key.as_bytes())),
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            headers: vec![],
        }
    }

    fn prov(topic: &str, origin: &str) -> String {
        serde_json::to_string(&Provenance {
            topic: topic.into(),
            origin_cluster: origin.into(),
            origin_topic: topic.into(),
        })
        .unwrap()
    }

    #[test]
    fn the_latest_value_wins_and_an_empty_one_deletes() {
        let mut e = Entries::default();
        e.add(vec![
            rec("topic/a", Some(&prov("a", "dc-a"))),
            rec("topic/b", Some(&prov("b", "dc-a"))),
            rec("unknown/kind", Some("not json, not ours")),
        ]);
        e.add(vec![
            rec("topic/a", Some(&prov("a", "dc-c"))),
            rec("topic/b", None),
        ]);
        let (devs, provs) = e.parse().unwrap();
        assert!(devs.is_empty());
        assert_eq!(provs.len(), 1);
        assert_eq!(
            (provs[0].topic.as_str(), provs[0].origin_cluster.as_str()),
            ("a", "dc-c")
        );
    }

    /// It was skipped without a word before: a lost provenance lets a topic loop.
    #[test]
    fn an_entry_that_does_not_parse_is_named() {
        let mut e = Entries::default();
        e.add(vec![rec("topic/a", Some("{\"topic\": 7}"))]);
        let err = e.parse().unwrap_err();
        assert!(err.starts_with("entry \"topic/a\" does not parse"), "{err}");
        let mut e = Entries::default();
        e.add(vec![rec(
            &format!("offsets/{}", "x".repeat(10_000)),
            Some("["),
        )]);
        assert!(e.parse().unwrap_err().len() < 200);
    }
}
