//! Cluster administration: topic configs, topic and partition creation, producer ids.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::client::{throttle, Cluster};
use super::connection::{broker_err, Connection};
use super::error::Result;

/// What FindCoordinator looks up (its `key_type`).
#[derive(Debug, Clone, Copy)]
pub(super) enum CoordinatorKind {
    Group = 0,
    Transaction = 1,
}

impl Cluster {
    /// A topic's effective configs (explicit and inherited; sensitive ones left out).
    pub async fn topic_configs(&self, topic: &str) -> Result<BTreeMap<String, String>> {
        let conn = self.any_conn().await?;
        let req = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_string(topic.to_string()))
                .with_configuration_keys(None),
        ]);
        let resp = conn.send(&req).await?;
        throttle(resp.throttle_time_ms).await;
        let mut out = BTreeMap::new();
        for r in resp.results {
            if r.error_code != 0 {
                return Err(broker_err(
                    "DescribeConfigs",
                    r.error_code,
                    r.error_message.map(|m| m.to_string()),
                ));
            }
            for c in r.configs {
                if let (Some(v), false) = (c.value, c.is_sensitive) {
                    out.insert(c.name.to_string(), v.to_string());
                }
            }
        }
        Ok(out)
    }

    /// Creates a topic. Returns false if it already existed.
    pub async fn create_topic(
        &self,
        topic: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &BTreeMap<String, String>,
    ) -> Result<bool> {
        let conn = self.any_conn().await?;
        let req = CreateTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_num_partitions(partitions)
                .with_replication_factor(replication_factor)
                .with_configs(
                    configs
                        .iter()
                        .map(|(k, v)| {
                            CreatableTopicConfig::default()
                                .with_name(StrBytes::from_string(k.clone()))
                                .with_value(Some(StrBytes::from_string(v.clone())))
                        })
                        .collect(),
                )]);
        let resp = conn.send(&req).await?;
        throttle(resp.throttle_time_ms).await;
        for t in resp.topics {
            match t.error_code {
                0 => {}
                36 => return Ok(false), // TOPIC_ALREADY_EXISTS
                code => {
                    return Err(broker_err(
                        "CreateTopics",
                        code,
                        t.error_message.map(|m| format!("{topic}: {m}")),
                    ))
                }
            }
        }
        Ok(true)
    }

    /// Grows a topic to `count` partitions.
    pub async fn create_partitions(&self, topic: &str, count: i32) -> Result<()> {
        let conn = self.any_conn().await?;
        let req = CreatePartitionsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_count(count)
                .with_assignments(None)]);
        let resp = conn.send(&req).await?;
        throttle(resp.throttle_time_ms).await;
        for r in resp.results {
            if r.error_code != 0 {
                return Err(broker_err(
                    "CreatePartitions",
                    r.error_code,
                    r.error_message.map(|m| format!("{topic}: {m}")),
                ));
            }
        }
        Ok(())
    }

    /// Obtains a producer id and epoch for `transactional_id`. Each call bumps the epoch,
    /// which fences every earlier holder of the same id: that is our single-writer lock.
    pub async fn init_producer_id(&self, transactional_id: &str) -> Result<(i64, i16)> {
        let conn = self.coordinator(transactional_id).await?;
        let req = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(StrBytes::from_string(
                transactional_id.to_string(),
            ))))
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let resp = conn.send(&req).await?;
        throttle(resp.throttle_time_ms).await;
        if resp.error_code != 0 {
            return Err(broker_err(
                "InitProducerId",
                resp.error_code,
                Some(format!("transactional id {transactional_id}")),
            ));
        }
        Ok((resp.producer_id.0, resp.producer_epoch))
    }

    /// The producer id and epoch the transaction coordinator holds for a transactional
    /// id now (DescribeTransactions), without bumping it: how an instance learns that a
    /// newer one took the fencing lock on a broker that does not check epochs on every
    /// write. `None` if the coordinator does not know the id.
    pub async fn fencing_epoch(&self, transactional_id: &str) -> Result<Option<(i64, i16)>> {
        let conn = self.coordinator(transactional_id).await?;
        let req =
            DescribeTransactionsRequest::default().with_transactional_ids(vec![TransactionalId(
                StrBytes::from_string(transactional_id.to_string()),
            )]);
        let resp = conn.send(&req).await?;
        throttle(resp.throttle_time_ms).await;
        let Some(state) = resp.transaction_states.into_iter().next() else {
            return Ok(None);
        };
        match ResponseError::try_from_code(state.error_code) {
            None => Ok(Some((state.producer_id.0, state.producer_epoch))),
            Some(ResponseError::TransactionalIdNotFound) => Ok(None),
            Some(_) => Err(broker_err(
                "DescribeTransactions",
                state.error_code,
                Some(format!("transactional id {transactional_id}")),
            )),
        }
    }

    async fn coordinator(&self, transactional_id: &str) -> Result<Connection> {
        self.coordinator_of(transactional_id, CoordinatorKind::Transaction)
            .await
    }

    /// The connection to the coordinator of a group or a transactional id.
    pub(super) async fn coordinator_of(
        &self,
        key: &str,
        kind: CoordinatorKind,
    ) -> Result<Connection> {
        let conn = self.any_conn().await?;
        let req = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(key.to_string()))
            .with_key_type(kind as i8);
        let resp = conn.send(&req).await?;
        throttle(resp.throttle_time_ms).await;
        if resp.error_code != 0 {
            return Err(broker_err(
                "FindCoordinator",
                resp.error_code,
                resp.error_message.map(|m| m.to_string()),
            ));
        }
        let addr = format!("{}:{}", resp.host.as_str(), resp.port);
        self.remember_broker(resp.node_id.0, addr).await;
        self.broker_conn(resp.node_id.0).await
    }
}
