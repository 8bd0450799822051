//! Capped in-memory histories, one lock per log so rooms do not contend.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;

use super::MemoryBus;
use crate::cluster::{ClusterResult, Draft, History, Log, Publication, Since, Stored, Topic};
use crate::domain::MessageId;

/// The histories of an embedded node.
pub struct MemoryHistory {
    bus: Arc<MemoryBus>,
    limit: usize,
    logs: Mutex<HashMap<Log, Arc<Mutex<LogState>>>>,
}

#[derive(Default)]
struct LogState {
    entries: VecDeque<Stored>,
    last: Option<MessageId>,
    /// The newest id trimmed away; a `since` older than it may miss messages.
    trimmed: Option<MessageId>,
}

impl MemoryHistory {
    /// Histories that keep `limit` messages each and publish through `bus`.
    pub fn new(bus: Arc<MemoryBus>, limit: usize) -> Self {
        Self {
            bus,
            limit,
            logs: Mutex::new(HashMap::new()),
        }
    }

    fn log(&self, log: &Log) -> Option<Arc<Mutex<LogState>>> {
        self.logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(log)
            .cloned()
    }
}

fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

#[async_trait]
impl History for MemoryHistory {
    async fn append(&self, log: &Log, draft: Draft, topics: &[Topic]) -> ClusterResult<Stored> {
        let state = self
            .logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(log.clone())
            .or_default()
            .clone();
        let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
        let id = state.last.unwrap_or(MessageId::MIN).next_after(now_ms());
        let stored = Stored {
            id,
            payload: draft.complete(id),
        };
        state.last = Some(id);
        state.entries.push_back(stored.clone());
        while state.entries.len() > self.limit {
            state.trimmed = state.entries.pop_front().map(|s| s.id);
        }
        // Published while the log is locked, so delivery order is history order.
        for topic in topics {
            self.bus.dispatch(
                topic,
                Publication {
                    id: Some(id),
                    except: None,
                    payload: stored.payload.clone(),
                },
            );
        }
        Ok(stored)
    }

    async fn since(&self, log: &Log, since: MessageId) -> ClusterResult<Since> {
        let Some(state) = self.log(log) else {
            return Ok(Since::default());
        };
        let state = state.lock().unwrap_or_else(PoisonError::into_inner);
        let start = state.entries.partition_point(|s| s.id <= since);
        Ok(Since {
            messages: state.entries.range(start..).cloned().collect(),
            truncated: state.trimmed.is_some_and(|t| since < t),
        })
    }

    async fn before(
        &self,
        log: &Log,
        before: Option<MessageId>,
        limit: usize,
    ) -> ClusterResult<Vec<Stored>> {
        let Some(state) = self.log(log) else {
            return Ok(Vec::new());
        };
        let state = state.lock().unwrap_or_else(PoisonError::into_inner);
        let end = match before {
            Some(before) => state.entries.partition_point(|s| s.id < before),
            None => state.entries.len(),
        };
        let start = end.saturating_sub(limit);
        Ok(state.entries.range(start..end).cloned().collect())
    }
}
