//! Group membership requests (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) on a
//! connection of the member's own to the group coordinator: the coordinator holds a
//! JoinGroup or SyncGroup until the whole group arrived (up to the rebalance timeout),
//! and a broker serves one connection's requests in turn, so on a shared connection a
//! rebalance would hold up every produce behind it. The member's logic is in
//! `groups/member.rs`.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::client::{throttle, Cluster};
use super::connection::{broker_err, Connection};
use super::error::Result;

/// JoinGroup's answer.
#[derive(Debug, Clone)]
pub enum Join {
    /// In the group for `generation`; `members` (id, metadata) only for the leader.
    Joined {
        generation: i32,
        member_id: String,
        leader: String,
        protocol: String,
        members: Vec<(String, Bytes)>,
    },
    /// The coordinator gave us an id to join with (JoinGroup v4+, KIP-394).
    MemberIdRequired(String),
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

impl Cluster {
    /// A new connection to `group`'s coordinator, not shared with anything else.
    pub async fn group_connection(&self, group: &str) -> Result<Connection> {
        let shared = self.group_coordinator(group).await?;
        Connection::connect(shared.addr(), self.socket_options()).await
    }
}

/// Joins (or rejoins) `group`. `protocols` are (name, metadata) in preference order.
#[allow(clippy::too_many_arguments)]
pub async fn join_group(
    conn: &Connection,
    group: &str,
    member_id: &str,
    protocol_type: &str,
    protocols: &[(&str, Bytes)],
    session: Duration,
    rebalance: Duration,
) -> Result<Join> {
    let req = JoinGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_session_timeout_ms(session.as_millis() as i32)
        .with_rebalance_timeout_ms(rebalance.as_millis() as i32)
        .with_member_id(s(member_id))
        .with_protocol_type(s(protocol_type))
        .with_protocols(
            protocols
                .iter()
                .map(|(n, m)| {
                    JoinGroupRequestProtocol::default()
                        .with_name(s(n))
                        .with_metadata(m.clone())
                })
                .collect(),
        );
    // The coordinator answers once every member rejoined, or the rebalance timeout.
    let resp = conn.send_wait(&req, rebalance).await?;
    throttle(resp.throttle_time_ms).await;
    match ResponseError::try_from_code(resp.error_code) {
        None => Ok(Join::Joined {
            generation: resp.generation_id,
            member_id: resp.member_id.to_string(),
            leader: resp.leader.to_string(),
            protocol: resp
                .protocol_name
                .map(|p| p.to_string())
                .unwrap_or_default(),
            members: resp
                .members
                .into_iter()
                .map(|m| (m.member_id.to_string(), m.metadata))
                .collect(),
        }),
        Some(ResponseError::MemberIdRequired) => {
            Ok(Join::MemberIdRequired(resp.member_id.to_string()))
        }
        Some(_) => Err(broker_err(
            "JoinGroup",
            resp.error_code,
            Some(format!("group {group}")),
        )),
    }
}

/// Hands the leader's assignments to the coordinator (others send none) and returns
/// this member's.
pub async fn sync_group(
    conn: &Connection,
    group: &str,
    generation: i32,
    member_id: &str,
    protocol: (&str, &str),
    assignments: Vec<(String, Bytes)>,
    rebalance: Duration,
) -> Result<Bytes> {
    let mut req = SyncGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id(generation)
        .with_member_id(s(member_id));
    // From v5 the protocol is named, and checked by the coordinator.
    if conn.version::<SyncGroupRequest>()? >= 5 {
        req = req
            .with_protocol_type(Some(s(protocol.0)))
            .with_protocol_name(Some(s(protocol.1)));
    }
    let req = req.with_assignments(
        assignments
            .into_iter()
            .map(|(m, a)| {
                SyncGroupRequestAssignment::default()
                    .with_member_id(s(&m))
                    .with_assignment(a)
            })
            .collect(),
    );
    let resp = conn.send_wait(&req, rebalance).await?;
    throttle(resp.throttle_time_ms).await;
    if resp.error_code != 0 {
        return Err(broker_err(
            "SyncGroup",
            resp.error_code,
            Some(format!("group {group}")),
        ));
    }
    Ok(resp.assignment)
}

/// One heartbeat; an error code says the group moved on (a rebalance, or we were
/// removed).
pub async fn heartbeat(
    conn: &Connection,
    group: &str,
    generation: i32,
    member_id: &str,
) -> Result<()> {
    let req = HeartbeatRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id(generation)
        .with_member_id(s(member_id));
    let resp = conn.send(&req).await?;
    if resp.error_code != 0 {
        return Err(broker_err(
            "Heartbeat",
            resp.error_code,
            Some(format!("group {group}")),
        ));
    }
    Ok(())
}

/// Leaves `group` at once, so the others need not wait out our session.
pub async fn leave_group(conn: &Connection, group: &str, member_id: &str) -> Result<()> {
    let mut req = LeaveGroupRequest::default().with_group_id(GroupId(s(group)));
    // v3 (KIP-345) names the leaving members in a list instead.
    req = if conn.version::<LeaveGroupRequest>()? >= 3 {
        req.with_members(vec![MemberIdentity::default().with_member_id(s(member_id))])
    } else {
        req.with_member_id(s(member_id))
    };
    let resp = conn.send(&req).await?;
    if resp.error_code != 0 {
        return Err(broker_err(
            "LeaveGroup",
            resp.error_code,
            Some(format!("group {group}")),
        ));
    }
    Ok(())
}
