//! Applications' consumer groups, as librdkafka runs them: members that commit, a
//! member that stays in its group, a consumer that resumes from its committed offsets.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

/// A consumer of `group`, auto-commit off, that fails rather than guess a start when
/// the group has no committed offset.
pub fn consumer(bootstrap: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "error")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .expect("create consumer")
}

/// Joins `group` with group management on `topic`, waits for the assignment of all
/// of `commits`' partitions, commits them (offset, metadata) and leaves the group.
pub fn commit_as_member(bootstrap: &str, group: &str, topic: &str, commits: &[(i32, i64, &str)]) {
    let c = consumer(bootstrap, group);
    c.subscribe(&[topic]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "{group} never got {topic} assigned"
        );
        let _ = c.poll(Duration::from_millis(200));
        let a = c.assignment().expect("assignment");
        if commits
            .iter()
            .all(|(p, _, _)| a.find_partition(topic, *p).is_some())
        {
            break;
        }
    }
    let mut tpl = TopicPartitionList::new();
    for (p, o, meta) in commits {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*o))
            .expect("tpl");
        tpl.find_partition(topic, *p)
            .expect("just added")
            .set_metadata(*meta);
    }
    c.commit(&tpl, CommitMode::Sync).expect("commit");
    c.unsubscribe();
}

/// The group's committed offset and metadata of each partition (None: no commit),
/// read without joining the group.
pub fn committed(
    bootstrap: &str,
    group: &str,
    topic: &str,
    parts: &[i32],
) -> Vec<Option<(i64, String)>> {
    let c = consumer(bootstrap, group);
    let mut tpl = TopicPartitionList::new();
    for p in parts {
        tpl.add_partition(topic, *p);
    }
    let got = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    parts
        .iter()
        .map(|p| {
            let e = got.find_partition(topic, *p).expect("asked for");
            e.offset()
                .to_raw()
                .filter(|o| *o >= 0)
                .map(|o| (o, e.metadata().to_string()))
        })
        .collect()
}

/// Joins `group` in the destination on `topic` and returns the first record each
/// partition delivers: where a failed-over application starts.
pub fn first_reads(
    bootstrap: &str,
    group: &str,
    topic: &str,
    parts: &[i32],
) -> Vec<(i64, Option<Vec<u8>>)> {
    let c = consumer(bootstrap, group);
    c.subscribe(&[topic]).expect("subscribe");
    let mut first: Vec<Option<(i64, Option<Vec<u8>>)>> = vec![None; parts.len()];
    let deadline = Instant::now() + Duration::from_secs(60);
    while first.iter().any(Option::is_none) {
        assert!(
            Instant::now() < deadline,
            "{group}: no record from {topic} {first:?}; assigned {:?}, position {:?}",
            c.assignment(),
            c.position()
        );
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let i = parts
                    .iter()
                    .position(|p| *p == m.partition())
                    .expect("a partition asked for");
                if first[i].is_none() {
                    first[i] = Some((m.offset(), m.payload().map(<[u8]>::to_vec)));
                }
            }
            Some(Err(e)) => panic!("{group} reading {topic}: {e}"),
            None => {}
        }
    }
    c.unsubscribe();
    first.into_iter().map(Option::unwrap).collect()
}

/// A member of `group` on `topic` in the destination that commits `offset` on partition
/// 0 and then keeps polling (stays in the group) until dropped.
pub struct LiveMember {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LiveMember {
    pub fn start(bootstrap: &str, group: &str, topic: &str, offset: i64) -> LiveMember {
        let (b, g, t) = (bootstrap.to_string(), group.to_string(), topic.to_string());
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let c = ClientConfig::new()
                .set("bootstrap.servers", &b)
                .set("group.id", &g)
                .set("enable.auto.commit", "false")
                .set("auto.offset.reset", "latest")
                .set("session.timeout.ms", "6000")
                .set("heartbeat.interval.ms", "500")
                .create::<BaseConsumer>()
                .expect("consumer");
            c.subscribe(&[&t]).expect("subscribe");
            let mut committed = false;
            while !s.load(Ordering::Relaxed) {
                let _ = c.poll(Duration::from_millis(100));
                if !committed
                    && c.assignment()
                        .is_ok_and(|a| a.find_partition(&t, 0).is_some())
                {
                    let mut tpl = TopicPartitionList::new();
                    tpl.add_partition_offset(&t, 0, Offset::Offset(offset))
                        .unwrap();
                    c.commit(&tpl, CommitMode::Sync)
                        .expect("live member commit");
                    committed = true;
                    let _ = ready_tx.send(());
                }
            }
            c.unsubscribe();
        });
        ready_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the live member joined and committed");
        LiveMember {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for LiveMember {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
