//! Which source topics are mirrored, where they go, and making the destination ready:
//! naming, loop safety, partition counts and the configs that matter for a copy.

use std::collections::BTreeMap;

use crate::kafka::client::TopicMeta;
use crate::mirror::error::MirrorError;
use crate::mirror::offset_map::{OffsetMap, Provenance};
use crate::mirror::partition::Job;
use crate::mirror::Shared;

/// Topic configs copied to a destination topic the mirror creates. The source's
/// effective value is copied even when inherited from its broker: the copy must keep
/// what the source keeps, whatever the destination brokers' defaults are.
const COPIED_CONFIGS: &[&str] = &[
    "cleanup.policy",
    "retention.ms",
    "retention.bytes",
    "max.message.bytes",
    "min.compaction.lag.ms",
    "max.compaction.lag.ms",
    "delete.retention.ms",
    "min.cleanable.dirty.ratio",
];

/// A source topic the mirror will copy, with its destination state.
#[derive(Debug, Clone)]
pub struct TopicPlan {
    pub source: TopicMeta,
    pub dest_topic: String,
    /// Partition count of the destination topic if it exists.
    pub dest_partitions: Option<usize>,
}

/// Why a source topic is left out even though it matches the filter.
pub fn loop_guard(
    topic: &str,
    dest_cluster: &str,
    origins: &BTreeMap<String, String>,
) -> Option<String> {
    if topic.starts_with("__") {
        return Some("internal topic".into());
    }
    if topic.starts_with(&format!("{dest_cluster}.")) {
        return Some(format!(
            "named as a copy from {dest_cluster}; never mirrored back to its origin"
        ));
    }
    match origins.get(topic) {
        Some(origin) if origin == dest_cluster => Some(format!(
            "the source's offset map says it is a mirror of {dest_cluster}; never mirrored back to its origin"
        )),
        _ => None,
    }
}

/// Reads the source cluster's provenance records: topic -> origin cluster.
pub async fn source_origins(shared: &Shared) -> Result<BTreeMap<String, String>, MirrorError> {
    // Through a peer the map is listed only if the client may read it; it is then
    // read from the brokers' side only (decision 65).
    let Some(source) = shared.source.brokers() else {
        return Ok(BTreeMap::new());
    };
    let map = OffsetMap::new(source.clone(), &shared.config.mirror.offset_map_topic);
    let (_, provs) = map.read_all().await?;
    Ok(provs
        .into_iter()
        .map(|p| (p.topic, p.origin_cluster))
        .collect())
}

/// Lists matching source topics and checks their destinations. Writes nothing.
/// `listing`: the source's topics if just read, else they are read here.
pub async fn plan(
    shared: &Shared,
    listing: Option<Vec<TopicMeta>>,
) -> Result<Vec<TopicPlan>, MirrorError> {
    let src = &shared.source;
    let dst = &shared.dest;
    let all = match listing {
        Some(all) => all,
        None => src
            .topics()
            .await
            .map_err(|e| MirrorError::kafka(src.name(), e))?,
    };
    // Reading the map costs round trips over the WAN; a source without one has no
    // provenance records to read.
    let map_topic = &shared.config.mirror.offset_map_topic;
    let origins = if all.iter().any(|t| &t.name == map_topic) {
        source_origins(shared).await?
    } else {
        BTreeMap::new()
    };
    let mut out = Vec::new();
    for t in all {
        if t.internal || !shared.filter.matches(&t.name) {
            continue;
        }
        if let Some(why) = loop_guard(&t.name, dst.name(), &origins) {
            tracing::info!(topic = %t.name, reason = %why, "topic skipped");
            continue;
        }
        let dest_topic = shared.config.dest_topic(&t.name);
        let existing = dst
            .topic(&dest_topic)
            .await
            .map_err(|e| MirrorError::kafka(dst.name(), e))?;
        let dest_partitions = existing.map(|d| d.partitions.len());
        out.push(TopicPlan {
            source: t,
            dest_topic,
            dest_partitions,
        });
    }
    Ok(out)
}

/// Refuses a plan whose destination topic exists with another partition count.
pub fn check_count(plan: &TopicPlan) -> Result<(), MirrorError> {
    match plan.dest_partitions {
        Some(n) if n != plan.source.partitions.len() => Err(MirrorError::Topic {
            topic: plan.dest_topic.clone(),
            detail: format!(
                "exists with {n} partitions but source topic {} has {}; partition-preserving mirroring needs equal counts",
                plan.source.name,
                plan.source.partitions.len()
            ),
        }),
        _ => Ok(()),
    }
}

/// Creates a planned destination topic if needed, records its provenance, and returns
/// its partition jobs.
pub async fn prepare(shared: &Shared, plan: &TopicPlan) -> Result<Vec<Job>, MirrorError> {
    let src = &shared.source;
    let dst = &shared.dest;
    let parts = plan.source.partitions.len() as i32;
    if plan.dest_partitions.is_none() {
        let configs = copy_configs(shared, &plan.source.name).await;
        let created = dst
            .create_topic(
                &plan.dest_topic,
                parts,
                shared.config.mirror.replication_factor,
                &configs,
            )
            .await
            .map_err(|e| MirrorError::kafka(dst.name(), e))?;
        if created {
            tracing::info!(topic = %plan.dest_topic, partitions = parts, ?configs, "destination topic created");
        }
        // Metadata for a new topic can lag creation; wait until leaders are known.
        for _ in 0..50 {
            if let Ok(Some(t)) = dst.topic(&plan.dest_topic).await {
                if t.partitions.len() == parts as usize
                    && t.partitions.iter().all(|p| p.leader >= 0)
                {
                    break;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    shared
        .map
        .record_provenance(&Provenance {
            topic: plan.dest_topic.clone(),
            origin_cluster: src.name().to_string(),
            origin_topic: plan.source.name.clone(),
        })
        .await?;
    Ok(plan
        .source
        .partitions
        .iter()
        .map(|p| Job {
            source_topic: plan.source.name.clone(),
            dest_topic: plan.dest_topic.clone(),
            partition: p.index,
        })
        .collect())
}

/// Grows the destination topic when the source gained partitions.
pub async fn grow(shared: &Shared, dest_topic: &str, count: usize) -> Result<(), MirrorError> {
    let dst = &shared.dest;
    // Another member of a mirror group may have grown it already.
    if let Ok(Some(t)) = dst.topic(dest_topic).await {
        if t.partitions.len() >= count {
            return Ok(());
        }
    }
    dst.create_partitions(dest_topic, count as i32)
        .await
        .map_err(|e| MirrorError::kafka(dst.name(), e))?;
    tracing::info!(topic = %dest_topic, partitions = count, "destination topic grown");
    Ok(())
}

async fn copy_configs(shared: &Shared, topic: &str) -> BTreeMap<String, String> {
    let mut out = match shared.source.topic_configs(topic).await {
        Ok(c) => c
            .into_iter()
            .filter(|(k, _)| COPIED_CONFIGS.contains(&k.as_str()))
            .collect(),
        Err(e) => {
            tracing::warn!(%topic, error = %e, "cannot read source topic configs; creating the copy with broker defaults");
            BTreeMap::new()
        }
    };
    // Producer timestamps must be kept, not replaced by the destination's append time.
    out.insert("message.timestamp.type".into(), "CreateTime".into());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_mirrors_back_to_the_origin() {
        let origins = BTreeMap::from([("orders".to_string(), "dc-b".to_string())]);
        assert!(loop_guard("dc-b.orders", "dc-b", &BTreeMap::new()).is_some());
        assert!(loop_guard("orders", "dc-b", &origins).is_some());
        assert!(loop_guard("orders", "dc-c", &origins).is_none());
        assert!(loop_guard("__consumer_offsets", "dc-b", &origins).is_some());
        assert!(loop_guard("dc-c.orders", "dc-b", &origins).is_none());
    }
}
