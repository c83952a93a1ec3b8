//! API version negotiation: the highest version both the broker and we support.

use std::collections::HashMap;

use kafka_protocol::messages::{
    ApiVersionsResponse, CreatePartitionsRequest, CreateTopicsRequest, DescribeConfigsRequest,
    FetchRequest, FindCoordinatorRequest, InitProducerIdRequest, ListOffsetsRequest,
    MetadataRequest, OffsetCommitRequest, OffsetFetchRequest, ProduceRequest,
};
use kafka_protocol::protocol::Request;

use super::connection::api_name;
use super::error::{KafkaError, Result};

/// Upper bounds we choose below the crate's maximum, and why.
fn our_cap(key: i16) -> Option<i16> {
    match key {
        // Fetch v13+ and Produce v13 address topics by id only; we address them by name.
        // Fetch v12 is flexible, and tansu 0.6 puts tagged fields in its v12 responses
        // that are only defined for later versions; v11 has no tagged fields at all.
        k if k == FetchRequest::KEY => Some(11),
        k if k == ProduceRequest::KEY => Some(12),
        // v4+ batches coordinator keys; one key per call is all we need.
        k if k == FindCoordinatorRequest::KEY => Some(3),
        k if k == MetadataRequest::KEY => Some(12),
        k if k == ListOffsetsRequest::KEY => Some(7),
        k if k == CreateTopicsRequest::KEY => Some(7),
        k if k == DescribeConfigsRequest::KEY => Some(4),
        k if k == InitProducerIdRequest::KEY => Some(4),
        k if k == CreatePartitionsRequest::KEY => Some(3),
        // v8+ asks for several groups at once and v10 names topics by id; we ask for
        // one group's offsets by topic name.
        k if k == OffsetFetchRequest::KEY => Some(7),
        // v9 carries a member epoch of the new consumer protocol (KIP-848), v10 topic
        // ids; our commits are an administrator's, by topic name.
        k if k == OffsetCommitRequest::KEY => Some(8),
        _ => None,
    }
}

/// The version ranges a broker announced, by API key.
#[derive(Debug, Default, Clone)]
pub struct Versions {
    ranges: HashMap<i16, (i16, i16)>,
}

impl Versions {
    pub fn from_response(resp: &ApiVersionsResponse) -> Self {
        Versions {
            ranges: resp
                .api_keys
                .iter()
                .map(|k| (k.api_key, (k.min_version, k.max_version)))
                .collect(),
        }
    }

    /// Highest common version of request `R`, or an error naming both ranges.
    pub fn pick<R: Request>(&self, addr: &str) -> Result<i16> {
        let ours_max = our_cap(R::KEY).map_or(R::VERSIONS.max, |c| c.min(R::VERSIONS.max));
        let ours_min = R::VERSIONS.min;
        let (theirs_min, theirs_max) = match self.ranges.get(&R::KEY) {
            Some(r) => *r,
            // Before negotiation (ApiVersions itself) any version we pick explicitly is used.
            None if self.ranges.is_empty() => return Ok(ours_max),
            None => {
                return Err(KafkaError::UnsupportedApi {
                    addr: addr.to_string(),
                    api: api_name(R::KEY),
                })
            }
        };
        let v = ours_max.min(theirs_max);
        if v < ours_min || v < theirs_min {
            return Err(KafkaError::UnsupportedVersion {
                addr: addr.to_string(),
                api: api_name(R::KEY),
                ours: format!("{ours_min}..{ours_max}"),
                theirs: format!("{theirs_min}..{theirs_max}"),
            });
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::api_versions_response::ApiVersion;

    fn offering(key: i16, min: i16, max: i16) -> Versions {
        Versions::from_response(&ApiVersionsResponse::default().with_api_keys(vec![
            ApiVersion::default()
                .with_api_key(key)
                .with_min_version(min)
                .with_max_version(max),
        ]))
    }

    #[test]
    fn picks_the_highest_common_version_below_our_cap() {
        assert_eq!(offering(1, 4, 17).pick::<FetchRequest>("b").unwrap(), 11);
        assert_eq!(offering(1, 4, 8).pick::<FetchRequest>("b").unwrap(), 8);
    }

    #[test]
    fn names_the_api_when_ranges_do_not_meet_or_it_is_missing() {
        let e = offering(1, 13, 17).pick::<FetchRequest>("b").unwrap_err();
        assert!(e.to_string().contains("Fetch"), "{e}");
        let e = offering(1, 4, 17)
            .pick::<CreatePartitionsRequest>("b")
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("does not offer the CreatePartitions API"),
            "{e}"
        );
    }
}
