//! A mirror worker as a member of a group on the destination cluster (`[group]`):
//! join, take the leader's assignment, heartbeat, leave on shutdown. The destination's
//! own coordinator runs the group; nothing crosses the WAN. What the member mirrors is
//! sent to the run loop as [`Event`]s; which partitions go where is `assign.rs`, what
//! the members say to each other `protocol.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError as R;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

use super::error::GroupError;
use super::protocol::{leader_assign, Assigned, Known, Metadata, Owned, PROTOCOL_TYPE, STRATEGY};
use crate::kafka::backoff::Backoff;
use crate::kafka::client::Cluster;
use crate::kafka::connection::Connection;
use crate::kafka::error::KafkaError;
use crate::kafka::membership::{heartbeat, join_group, leave_group, sync_group, Join};
use crate::mirror::partition::Job;

/// What the run loop tells the member: the topics it would mirror and the weight of
/// each partition it runs, for the next JoinGroup.
#[derive(Debug, Default)]
pub struct Roster {
    pub topics: BTreeSet<Known>,
    pub weights: BTreeMap<Job, u64>,
}

/// What the member tells the run loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Mirror exactly these partitions from now on (generation `generation`).
    Assigned {
        generation: i32,
        jobs: BTreeSet<Job>,
    },
    /// Out of the group (session expired, removed, the coordinator unreachable for a
    /// session): stop every partition now; another member may own them.
    Lost { why: String },
}

/// How often the leader compares the coordinator's members with its generation's.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// Settings from `[group]`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub id: String,
    pub session: Duration,
    pub rebalance: Duration,
}

impl Settings {
    /// At least three heartbeats per session, as Kafka's consumers do, and at least two
    /// a second: a member learns of a rebalance from its heartbeat, and tansu 0.6
    /// completes a rebalance with the members that rejoined within about 3 s, so a
    /// member that hears late is left out and sets off the next one (the heartbeat
    /// is one small request to a local broker).
    fn heartbeat_every(&self) -> Duration {
        (self.session / 3).min(Duration::from_millis(500))
    }
}

pub struct Member {
    dest: Arc<Cluster>,
    s: Settings,
    conn: Option<Connection>,
    member_id: String,
    generation: i32,
    owned: BTreeSet<Job>,
    roster: Arc<Mutex<Roster>>,
    /// The metadata of the last join. A rejoin the group asked for sends the same
    /// bytes: tansu 0.6 starts a new generation whenever a member's metadata changes,
    /// so fresh figures at every rejoin would keep the group rebalancing.
    last_meta: Option<Bytes>,
    /// The next join reports fresh figures (start, new topics, a forced rebalance).
    fresh: bool,
    /// Joins with fresh figures so far.
    rounds: u64,
    /// As leader: the assignment of the generation this member led, by member. What a
    /// member mirrors now, whatever its (possibly older) metadata says.
    led: BTreeMap<String, BTreeSet<Job>>,
    /// As leader: the members of the current generation.
    members: BTreeSet<String>,
    leader: bool,
    /// The current generation's leader.
    leader_id: String,
    /// As leader: members of the generation the coordinator no longer lists (at the
    /// last check), and those found gone twice in a row. A member missing from a
    /// JoinGroup answer keeps its partitions unless it is gone: tansu 0.6 leaves out
    /// of the leader's list a member whose rejoin it is still holding.
    missing: BTreeSet<String>,
    gone: BTreeSet<String>,
    /// Whether this member leads the group now (the consumer-group offset sync runs
    /// on the leader only).
    leading: Arc<AtomicBool>,
}

impl Member {
    pub fn new(
        dest: Arc<Cluster>,
        s: Settings,
        roster: Arc<Mutex<Roster>>,
        leading: Arc<AtomicBool>,
    ) -> Member {
        Member {
            dest,
            s,
            conn: None,
            member_id: String::new(),
            generation: -1,
            owned: BTreeSet::new(),
            roster,
            last_meta: None,
            fresh: true,
            rounds: 0,
            led: BTreeMap::new(),
            members: BTreeSet::new(),
            leader: false,
            leader_id: String::new(),
            missing: BTreeSet::new(),
            gone: BTreeSet::new(),
            leading,
        }
    }

    /// The generation of the last assignment.
    pub fn generation(&self) -> i32 {
        self.generation
    }

    /// The coordinator's connection, opened when missing or dead.
    async fn conn(&mut self) -> Result<Connection, KafkaError> {
        if let Some(c) = self.conn.as_ref().filter(|c| c.is_alive()) {
            return Ok(c.clone());
        }
        let c = self.dest.group_connection(&self.s.id).await?;
        self.conn = Some(c.clone());
        Ok(c)
    }

    /// This member's JoinGroup metadata now.
    fn metadata(&self) -> Metadata {
        let r = self.roster.lock().unwrap_or_else(|e| e.into_inner());
        let owned = self
            .owned
            .iter()
            .map(|j| Owned {
                source_topic: j.source_topic.clone(),
                dest_topic: j.dest_topic.clone(),
                partition: j.partition,
                weight: r.weights.get(j).copied().unwrap_or(0),
            })
            .collect();
        Metadata::new(owned, r.topics.iter().cloned().collect())
    }

    /// A member's metadata with what it mirrors now in place of what it reported: the
    /// assignment of the generation this member led, where it led the last one (a
    /// rejoin repeats older metadata), with the weights it reported (ours fresh).
    fn current(&self, id: &str, mut d: Metadata) -> Metadata {
        let Some(now) = self.led.get(id) else {
            return d;
        };
        let reported: BTreeMap<(String, i32), u64> = d
            .owned
            .iter()
            .map(|o| ((o.dest_topic.clone(), o.partition), o.weight))
            .collect();
        let r = self.roster.lock().unwrap_or_else(|e| e.into_inner());
        d.owned = now
            .iter()
            .map(|j| Owned {
                source_topic: j.source_topic.clone(),
                dest_topic: j.dest_topic.clone(),
                partition: j.partition,
                weight: if id == self.member_id {
                    r.weights.get(j).copied().unwrap_or(0)
                } else {
                    reported
                        .get(&(j.dest_topic.clone(), j.partition))
                        .copied()
                        .unwrap_or(0)
                },
            })
            .collect();
        d
    }

    /// What each member mirrors now, as the coordinator holds it: a new leader's
    /// best knowledge of who owns what (members' metadata may be older, see
    /// `last_meta`). Empty where the coordinator does not say (Kafka, mid-rebalance).
    async fn assigned_now(&self) -> BTreeMap<String, BTreeSet<Job>> {
        match self.dest.describe_group(&self.s.id).await {
            Ok(d) => d
                .assignments
                .into_iter()
                .filter_map(|(m, a)| {
                    let a = Assigned::decode(&a)?;
                    (!a.jobs.is_empty()).then(|| (m, a.jobs.into_iter().collect()))
                })
                .collect(),
            Err(_) => BTreeMap::new(),
        }
    }

    /// Members of the last generation this member led that are missing from
    /// `joined` and not known to be gone (see `gone`).
    fn held_members(&self, joined: &[(String, Bytes)]) -> Vec<String> {
        self.led
            .keys()
            .filter(|m| !joined.iter().any(|(id, _)| id == *m) && !self.gone.contains(*m))
            .cloned()
            .collect()
    }

    /// Whether the coordinator's members no longer match the generation: as leader,
    /// another set of members; as follower, the leader gone. tansu 0.6 drops a member
    /// whose session expired without starting a rebalance, which would leave its
    /// partitions unmirrored (or the group without a leader).
    async fn members_changed(&mut self) -> bool {
        if self.generation < 0 {
            return false;
        }
        match self.dest.describe_group(&self.s.id).await {
            Ok(d) => {
                let now: BTreeSet<String> = d.member_ids.into_iter().collect();
                if self.leader {
                    self.missing = self.members.difference(&now).cloned().collect();
                    !self.members.is_empty() && now != self.members
                } else {
                    !self.leader_id.is_empty() && !now.contains(&self.leader_id)
                }
            }
            Err(_) => false,
        }
    }

    /// Joins and syncs until this member holds an assignment. Errors that waiting
    /// cannot fix (a group of that id made by another client) are returned at once;
    /// the coordinator's unavailability is waited out for `patience`.
    pub async fn join(&mut self, patience: Duration) -> Result<BTreeSet<Job>, GroupError> {
        let started = Instant::now();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        loop {
            // The coordinator lookup retries on its own for the cluster's retry
            // deadline; patience bounds the whole join.
            let left = patience
                .saturating_sub(started.elapsed())
                .max(Duration::from_millis(100));
            let Ok(attempt) = tokio::time::timeout(left, self.join_once()).await else {
                return Err(GroupError::Coordinator {
                    group: self.s.id.clone(),
                    cluster: self.dest.name().to_string(),
                    detail: format!("no answer within {} s", patience.as_secs()),
                });
            };
            match attempt {
                Ok(Some(jobs)) => return Ok(jobs),
                Ok(None) if started.elapsed() > patience => {
                    return Err(GroupError::Coordinator {
                        group: self.s.id.clone(),
                        cluster: self.dest.name().to_string(),
                        detail: format!("the group kept rebalancing for {} s", patience.as_secs()),
                    })
                }
                Ok(None) => continue,
                Err(e) if e.code() == Some(R::InconsistentGroupProtocol) => {
                    let kind = self
                        .dest
                        .describe_group(&self.s.id)
                        .await
                        .map(|d| d.protocol_type)
                        .unwrap_or_else(|_| "another".into());
                    return Err(GroupError::Foreign {
                        group: self.s.id.clone(),
                        protocol_type: kind,
                    });
                }
                Err(e) if e.code() == Some(R::UnknownMemberId) => {
                    self.member_id.clear();
                }
                Err(e)
                    if e.is_retriable()
                        || e.code() == Some(R::RebalanceInProgress)
                        || e.code() == Some(R::IllegalGeneration) =>
                {
                    if e.needs_metadata_refresh() || matches!(e, KafkaError::Connect { .. }) {
                        self.conn = None;
                    }
                    if started.elapsed() > patience {
                        return Err(GroupError::Coordinator {
                            group: self.s.id.clone(),
                            cluster: self.dest.name().to_string(),
                            detail: e.to_string(),
                        });
                    }
                    tracing::debug!(group = %self.s.id, error = %e, "joining the group; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(e) => {
                    return Err(GroupError::Kafka {
                        cluster: self.dest.name().to_string(),
                        source: e,
                    })
                }
            }
        }
    }

    /// One JoinGroup and SyncGroup; `None` when the coordinator wants another round.
    async fn join_once(&mut self) -> Result<Option<BTreeSet<Job>>, KafkaError> {
        let conn = self.conn().await?;
        let meta = match &self.last_meta {
            Some(m) if !self.fresh => m.clone(),
            _ => {
                self.rounds += 1;
                let mut m = self.metadata();
                m.round = self.rounds;
                let m = m.encode();
                self.last_meta = Some(m.clone());
                self.fresh = false;
                m
            }
        };
        let joined = join_group(
            &conn,
            &self.s.id,
            &self.member_id,
            PROTOCOL_TYPE,
            &[(STRATEGY, meta)],
            self.s.session,
            self.s.rebalance,
        )
        .await?;
        let (generation, leader, members) = match joined {
            Join::MemberIdRequired(id) => {
                self.member_id = id;
                return Ok(None);
            }
            Join::Joined {
                generation,
                member_id,
                leader,
                members,
                ..
            } => {
                self.member_id = member_id;
                tracing::debug!(group = %self.s.id, generation, %leader, me = %self.member_id, members = members.len(), "joined");
                (generation, leader, members)
            }
        };
        let was_leader = self.leader;
        self.leader = leader == self.member_id;
        self.leading.store(self.leader, Ordering::Relaxed);
        self.leader_id = leader;
        if self.leader && !was_leader {
            self.led = self.assigned_now().await;
        }
        let assignments = if self.leader {
            let mut decoded: Vec<(String, Option<Metadata>)> = members
                .iter()
                .map(|(id, m)| {
                    let d = Metadata::decode(m);
                    if d.is_none() {
                        tracing::warn!(group = %self.s.id, member = %id, "a member's metadata is not ours; it gets a share of the partitions but reports none");
                    }
                    (id.clone(), d.map(|d| self.current(id, d)))
                })
                .collect();
            // A member of the last generation missing here keeps what it mirrors
            // until it is known to be gone, rather than see it moved and moved back
            // (see `gone`).
            for id in self.held_members(&members) {
                decoded.push((id.clone(), Some(self.current(&id, Metadata::default()))));
            }
            self.members = decoded.iter().map(|(id, _)| id.clone()).collect();
            let out = leader_assign(&decoded);
            tracing::info!(group = %self.s.id, generation, members = members.len(), partitions = out.values().map(|a| a.jobs.len()).sum::<usize>(), "leading the group: assignment computed");
            self.led = out
                .iter()
                .map(|(m, a)| (m.clone(), a.jobs.iter().cloned().collect()))
                .collect();
            out.into_iter().map(|(m, a)| (m, a.encode())).collect()
        } else {
            self.led.clear();
            Vec::new()
        };
        let mine = sync_group(
            &conn,
            &self.s.id,
            generation,
            &self.member_id,
            (PROTOCOL_TYPE, STRATEGY),
            assignments,
            self.s.rebalance,
        )
        .await?;
        let Some(a) = Assigned::decode(&mine) else {
            return Err(KafkaError::Decode {
                addr: conn.addr().to_string(),
                api: "SyncGroup",
                reason: format!("group {}: the assignment is not ours", self.s.id),
            });
        };
        let jobs: BTreeSet<Job> = a.jobs.into_iter().collect();
        // tansu 0.6 answers a rejoin with unchanged metadata from a formed group with
        // the stored assignment, ignoring the leader's new one (after it dropped an
        // expired member, say): a join with fresh metadata starts a real rebalance.
        if self.leader && self.led.get(&self.member_id).is_some_and(|m| *m != jobs) {
            tracing::info!(group = %self.s.id, generation, "the coordinator kept an older assignment; rebalancing again");
            self.fresh = true;
            return Ok(None);
        }
        let moved_in = jobs.difference(&self.owned).count();
        let moved_out = self.owned.difference(&jobs).count();
        tracing::info!(group = %self.s.id, generation, member = %self.member_id, partitions = jobs.len(), gained = moved_in, lost = moved_out, "group assignment");
        self.generation = generation;
        self.owned = jobs.clone();
        Ok(Some(jobs))
    }

    /// Heartbeats, rejoins when the group rebalances or `rejoin` is notified (new
    /// topics), and sends every new assignment to `events`, until `shutdown`; then
    /// leaves the group. Returns an error only for what rejoining cannot fix.
    pub async fn run(
        mut self,
        events: mpsc::UnboundedSender<Event>,
        rejoin: Arc<Notify>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), GroupError> {
        let mut last_ok = Instant::now();
        let mut watch = tokio::time::interval(WATCH_EVERY);
        watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut beats = tokio::time::interval(self.s.heartbeat_every());
        beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut changed_twice = 0;
        loop {
            let again = tokio::select! {
                _ = stopped(&mut shutdown) => break,
                _ = rejoin.notified() => {
                    self.fresh = true;
                    true
                }
                _ = beats.tick() => self.beat(&events, &mut last_ok).await,
                _ = watch.tick() => {
                    // Twice in a row: a rebalance under way changes the members too.
                    // Bounded: the heartbeat must not wait behind it.
                    let changed = tokio::time::timeout(self.s.heartbeat_every(), self.members_changed())
                        .await
                        .unwrap_or(false);
                    changed_twice = if changed { changed_twice + 1 } else { 0 };
                    if changed_twice >= 2 {
                        if self.leader {
                            tracing::info!(group = %self.s.id, gone = ?self.missing, "members left without a rebalance; starting one");
                        } else {
                            tracing::info!(group = %self.s.id, leader = %self.leader_id, "the group's leader left without a rebalance; starting one");
                        }
                        changed_twice = 0;
                        self.gone = std::mem::take(&mut self.missing);
                        self.fresh = true;
                        true
                    } else {
                        false
                    }
                }
            };
            if !again {
                continue;
            }
            // A rejoin may meet a few rebalances in a row while members come and go.
            let patience = self.s.session * 3;
            let join = tokio::select! {
                _ = stopped(&mut shutdown) => break,
                j = self.join(patience) => j,
            };
            // The watch counts from here: "twice in a row" means a second apart.
            watch.reset();
            changed_twice = 0;
            match join {
                Ok(jobs) => {
                    last_ok = Instant::now();
                    let _ = events.send(Event::Assigned {
                        generation: self.generation,
                        jobs,
                    });
                }
                Err(e @ GroupError::Foreign { .. }) => return Err(e),
                Err(e) => {
                    self.lose(&events, format!("cannot rejoin: {e}")).await;
                }
            }
        }
        if let Ok(conn) = self.conn().await {
            match leave_group(&conn, &self.s.id, &self.member_id).await {
                Ok(()) => {
                    tracing::info!(group = %self.s.id, member = %self.member_id, "left the group")
                }
                Err(e) => {
                    tracing::warn!(group = %self.s.id, error = %e, "leaving the group failed; the others take over after the session timeout")
                }
            }
        }
        Ok(())
    }

    /// One heartbeat; whether to rejoin.
    async fn beat(&mut self, events: &mpsc::UnboundedSender<Event>, last_ok: &mut Instant) -> bool {
        // Bounded by a heartbeat interval, so the session check below runs on time
        // even while the coordinator is being looked for.
        let every = self.s.heartbeat_every();
        let attempt = async {
            let c = self.conn().await?;
            heartbeat(&c, &self.s.id, self.generation, &self.member_id).await
        };
        let r = tokio::time::timeout(every * 2, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(KafkaError::Timeout {
                    addr: "the group coordinator".into(),
                    api: "Heartbeat",
                    ms: (every * 2).as_millis() as u64,
                })
            });
        match r {
            Ok(()) => {
                *last_ok = Instant::now();
                false
            }
            Err(e) if e.code() == Some(R::RebalanceInProgress) => {
                tracing::info!(group = %self.s.id, "the group is rebalancing; rejoining");
                true
            }
            Err(e)
                if matches!(
                    e.code(),
                    Some(R::UnknownMemberId | R::IllegalGeneration | R::FencedInstanceId)
                ) =>
            {
                if e.code() == Some(R::UnknownMemberId) {
                    self.member_id.clear();
                }
                self.lose(
                    events,
                    format!(
                        "the coordinator no longer counts us in generation {}: {e}",
                        self.generation
                    ),
                )
                .await;
                true
            }
            Err(e) => {
                if e.needs_metadata_refresh() || e.is_retriable() {
                    self.conn = None;
                }
                if last_ok.elapsed() > self.s.session {
                    self.lose(
                        events,
                        format!("no heartbeat answered for a whole session: {e}"),
                    )
                    .await;
                    return true;
                }
                tracing::debug!(group = %self.s.id, error = %e, "heartbeat failed; retrying");
                false
            }
        }
    }

    /// Gives up every partition: another member may own them already.
    async fn lose(&mut self, events: &mpsc::UnboundedSender<Event>, why: String) {
        if !self.owned.is_empty() {
            tracing::warn!(group = %self.s.id, partitions = self.owned.len(), "out of the group, stopping our partitions: {why}");
        }
        self.owned.clear();
        self.generation = -1;
        // Out of the group, not its leader: the offset sync stops here.
        self.leader = false;
        self.leading.store(false, Ordering::Relaxed);
        let _ = events.send(Event::Lost { why });
    }
}

/// Resolves once `rx` turns true (or its sender is gone), holding no borrow of it.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
