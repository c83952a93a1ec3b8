//! Piece tasks, each known by its request id, so that a task that panics is still
//! accounted for: its piece must not stay "in flight" with nobody fetching it.

use std::collections::HashMap;
use std::future::Future;

use tokio::task::{Id, JoinSet};

/// A set of spawned tasks, each tagged with the request it serves.
pub(super) struct PieceTasks<T> {
    set: JoinSet<T>,
    requests: HashMap<Id, u64>,
}

/// A task that ended without an answer: the request it served, and why.
#[derive(Debug)]
pub(super) struct Lost {
    pub request: u64,
    pub why: String,
}

impl<T: Send + 'static> PieceTasks<T> {
    pub fn new() -> Self {
        PieceTasks {
            set: JoinSet::new(),
            requests: HashMap::new(),
        }
    }

    pub fn spawn(&mut self, request: u64, task: impl Future<Output = T> + Send + 'static) {
        let handle = self.set.spawn(task);
        self.requests.insert(handle.id(), request);
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// The next task to end: its output, or the request of one that panicked or was
    /// cancelled. `None` when no task is left.
    pub async fn next(&mut self) -> Option<Result<T, Lost>> {
        loop {
            match self.set.join_next_with_id().await? {
                Ok((id, out)) => {
                    self.requests.remove(&id);
                    return Some(Ok(out));
                }
                Err(e) => {
                    let Some(request) = self.requests.remove(&e.id()) else {
                        continue;
                    };
                    let why = if e.is_panic() {
                        let p = e.into_panic();
                        p.downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| p.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "a panic".into())
                    } else {
                        "cancelled".into()
                    };
                    return Some(Err(Lost { request, why }));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_panics_is_named_by_its_request() {
        let mut t = PieceTasks::new();
        t.spawn(7, async { 70 });
        t.spawn(8, async { panic!("piece 8 broke") });
        let mut got = Vec::new();
        while let Some(r) = t.next().await {
            got.push(r.map_err(|l| (l.request, l.why)));
        }
        got.sort_by_key(|r| r.is_err());
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].as_ref().unwrap(), &70);
        assert_eq!(
            got[1].as_ref().unwrap_err(),
            &(8, "piece 8 broke".to_string())
        );
        assert!(t.requests.is_empty());
    }
}
