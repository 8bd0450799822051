//! Capped in-memory histories, one lock per log so rooms do not contend.
//! A log no one wrote to for the history TTL is dropped, and idempotency keys
//! are forgotten after their window, so memory stays bounded.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use super::MemoryBus;
use crate::cluster::{
    Appended, Backlog, ClusterError, ClusterResult, Draft, History, Idempotency, Log, Marked,
    Publication, Removal, Since, Stored, Topic,
};
use crate::domain::{IDEMPOTENCY_WINDOW, IdempotencyKey, MessageId, UserName};

/// How often appends look for expired logs: often enough that an idle log
/// goes soon after its TTL, rarely enough that the scan costs nothing.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// The most bytes of messages an embedded node holds for an archive that
/// does not take them (the database is down): past it, sends are refused as
/// unavailable rather than held without bound or dropped.
const MAX_BACKLOG_BYTES: usize = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("{MAX_BACKLOG_BYTES} bytes of messages wait for the archive already")]
struct BacklogFull;

/// The histories of an embedded node.
pub struct MemoryHistory {
    bus: Arc<MemoryBus>,
    limit: usize,
    /// How long a log lives after its last message; `None`: forever.
    ttl: Option<Duration>,
    /// True with an archive: messages it lacks are neither trimmed nor
    /// expired.
    archiving: bool,
    /// Bytes of the messages waiting for the archive, all logs together.
    backlog_bytes: AtomicUsize,
    logs: Mutex<Logs>,
}

struct Logs {
    by_log: HashMap<Log, Arc<Mutex<LogState>>>,
    next_sweep: Instant,
}

#[derive(Default)]
struct LogState {
    entries: VecDeque<Stored>,
    last: Option<MessageId>,
    /// The newest id trimmed away; a `since` older than it may miss messages.
    trimmed: Option<MessageId>,
    /// When the log expires; pushed back by every append, and unset while
    /// messages wait for the archive.
    expires: Option<Instant>,
    /// While messages wait for the archive: the newest id it holds (every
    /// later one waits). `None`: none waits.
    archived: Option<MessageId>,
    /// Ids deleted while they waited for the archive, which may have
    /// stored them meanwhile (see `Backlog::archived`).
    deleted: Vec<MessageId>,
    /// Sends under an idempotency key, and the order they expire in.
    keys: HashMap<(UserName, IdempotencyKey), Stored>,
    key_expiry: VecDeque<(Instant, (UserName, IdempotencyKey))>,
}

impl LogState {
    fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|at| at <= now)
    }

    /// Expired and holding no idempotency key still in its window: safe to
    /// drop. Keys outlive a shorter history TTL, as they do on Redis.
    fn disposable(&self, now: Instant) -> bool {
        self.expired(now) && self.key_expiry.back().is_none_or(|(at, _)| *at <= now)
    }

    /// An empty log that keeps this one's idempotency keys, and its past
    /// expiry, so the sweep can still drop it once the keys lapse.
    fn emptied(&mut self) -> Self {
        Self {
            expires: self.expires,
            keys: std::mem::take(&mut self.keys),
            key_expiry: std::mem::take(&mut self.key_expiry),
            ..Self::default()
        }
    }
}

impl MemoryHistory {
    /// Histories that keep `limit` messages each, live `ttl` after their last
    /// message (`None`: forever), publish through `bus`, and with
    /// `archiving` keep every message until the archive has it.
    pub fn new(bus: Arc<MemoryBus>, limit: usize, ttl: Option<Duration>, archiving: bool) -> Self {
        Self {
            bus,
            limit,
            ttl,
            archiving,
            backlog_bytes: AtomicUsize::new(0),
            logs: Mutex::new(Logs {
                by_log: HashMap::new(),
                next_sweep: Instant::now() + SWEEP_EVERY,
            }),
        }
    }

    fn logs(&self) -> std::sync::MutexGuard<'_, Logs> {
        self.logs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A live log, if there is one.
    fn log(&self, log: &Log) -> Option<Arc<Mutex<LogState>>> {
        let state = self.logs().by_log.get(log).cloned()?;
        let expired = lock(&state).expired(Instant::now());
        (!expired).then_some(state)
    }

    /// The log to append to, a fresh one if it is missing or expired; drops
    /// every expired log now and then.
    fn log_for_append(&self, log: &Log) -> Arc<Mutex<LogState>> {
        let now = Instant::now();
        let mut logs = self.logs();
        if now >= logs.next_sweep {
            logs.by_log.retain(|_, state| !lock(state).disposable(now));
            logs.next_sweep = now + SWEEP_EVERY;
        }
        let state = logs.by_log.entry(log.clone()).or_default();
        let mut current = lock(state);
        if current.expired(now) {
            // Reset in place: the history goes, the keys stay.
            *current = current.emptied();
        }
        drop(current);
        state.clone()
    }
}

impl MemoryHistory {
    /// Trims to the cap, sparing what the archive lacks.
    fn trim(&self, state: &mut LogState) {
        while state.entries.len() > self.limit
            && let Some(front) = state.entries.front()
            && state.archived.is_none_or(|archived| front.id <= archived)
        {
            state.trimmed = state.entries.pop_front().map(|s| s.id);
        }
    }
}

fn lock(state: &Mutex<LogState>) -> std::sync::MutexGuard<'_, LogState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

#[async_trait]
impl History for MemoryHistory {
    async fn append(
        &self,
        log: &Log,
        draft: Draft,
        topics: &[Topic],
        idempotency: Option<Idempotency<'_>>,
    ) -> ClusterResult<Appended> {
        let state = self.log_for_append(log);
        let mut state = lock(&state);
        let now = Instant::now();
        while let Some((at, _)) = state.key_expiry.front()
            && *at <= now
        {
            if let Some((_, key)) = state.key_expiry.pop_front() {
                state.keys.remove(&key);
            }
        }
        let key = idempotency.map(|i| (i.user.clone(), i.key.clone()));
        if let Some(seen) = key.as_ref().and_then(|k| state.keys.get(k)) {
            return Ok(Appended {
                stored: seen.clone(),
                replayed: true,
            });
        }
        let id = state.last.unwrap_or(MessageId::MIN).next_after(now_ms());
        let stored = Stored {
            id,
            payload: draft.complete(id),
        };
        if self.archiving {
            if self.backlog_bytes.load(Ordering::Relaxed) >= MAX_BACKLOG_BYTES {
                return Err(ClusterError::Unavailable(Box::new(BacklogFull)));
            }
            self.backlog_bytes
                .fetch_add(stored.payload.len(), Ordering::Relaxed);
            // None waited: the archive has every message before this one.
            let before = state.last.unwrap_or(MessageId::MIN);
            state.archived.get_or_insert(before);
        }
        state.last = Some(id);
        state.entries.push_back(stored.clone());
        self.trim(&mut state);
        state.expires = match state.archived {
            Some(_) => None,
            None => self.ttl.map(|ttl| now + ttl),
        };
        if let Some(key) = key {
            state.keys.insert(key.clone(), stored.clone());
            state.key_expiry.push_back((now + IDEMPOTENCY_WINDOW, key));
        }
        // Published while the log is locked, so delivery order is history order.
        for topic in topics {
            self.bus.dispatch(
                topic,
                Publication {
                    id: Some(id),
                    except: None,
                    control: None,
                    payload: stored.payload.clone(),
                },
            );
        }
        Ok(Appended {
            stored,
            replayed: false,
        })
    }

    async fn since(&self, log: &Log, since: MessageId, limit: usize) -> ClusterResult<Since> {
        let Some(state) = self.log(log) else {
            return Ok(Since::default());
        };
        let state = lock(&state);
        let first = state.entries.partition_point(|s| s.id <= since);
        let start = first.max(state.entries.len().saturating_sub(limit));
        Ok(Since {
            messages: state.entries.range(start..).cloned().collect(),
            truncated: start > first || state.trimmed.is_some_and(|t| since < t),
            complete: state.entries.front().is_some_and(|s| s.id <= since),
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
        let state = lock(&state);
        let end = match before {
            Some(before) => state.entries.partition_point(|s| s.id < before),
            None => state.entries.len(),
        };
        let start = end.saturating_sub(limit);
        Ok(state.entries.range(start..end).cloned().collect())
    }

    async fn delete(
        &self,
        log: &Log,
        id: MessageId,
        topics: &[Topic],
        event: Bytes,
    ) -> ClusterResult<Removal> {
        let Some(state) = self.log(log) else {
            return Ok(Removal::default());
        };
        let mut state = lock(&state);
        let Ok(at) = state.entries.binary_search_by_key(&id, |s| s.id) else {
            return Ok(Removal::default());
        };
        let gone = state.entries.remove(at);
        let mut removal = Removal {
            removed: true,
            waiting: false,
        };
        if let Some(archived) = state.archived
            && id > archived
        {
            removal.waiting = true;
            state.deleted.push(id);
            if let Some(gone) = gone {
                self.backlog_bytes
                    .fetch_sub(gone.payload.len(), Ordering::Relaxed);
            }
            if state.entries.back().is_none_or(|last| last.id <= archived) {
                // It was the last one waiting: none does now.
                state.archived = None;
                state.expires = self.ttl.map(|ttl| Instant::now() + ttl);
            }
        }
        // Under the log's lock, as appends publish: no reader of the
        // history finds it after the event.
        for topic in topics {
            self.bus.dispatch(
                topic,
                Publication {
                    id: None,
                    except: None,
                    control: None,
                    payload: event.clone(),
                },
            );
        }
        Ok(removal)
    }
}

#[async_trait]
impl Backlog for MemoryHistory {
    async fn waiting(&self) -> ClusterResult<Vec<Log>> {
        Ok(self
            .logs()
            .by_log
            .iter()
            .filter(|(_, state)| lock(state).archived.is_some())
            .map(|(log, _)| log.clone())
            .collect())
    }

    async fn unarchived(&self, log: &Log, limit: usize) -> ClusterResult<Vec<Stored>> {
        let Some(state) = self.logs().by_log.get(log).cloned() else {
            return Ok(Vec::new());
        };
        let state = lock(&state);
        let Some(archived) = state.archived else {
            return Ok(Vec::new());
        };
        let start = state.entries.partition_point(|s| s.id <= archived);
        Ok(state.entries.range(start..).take(limit).cloned().collect())
    }

    async fn archived(&self, log: &Log, upto: MessageId) -> ClusterResult<Marked> {
        let Some(state) = self.logs().by_log.get(log).cloned() else {
            return Ok(Marked {
                done: true,
                deleted: Vec::new(),
            });
        };
        let mut state = lock(&state);
        let deleted = state
            .deleted
            .iter()
            .copied()
            .filter(|id| *id <= upto)
            .collect();
        let Some(archived) = state.archived else {
            return Ok(Marked {
                done: true,
                deleted,
            });
        };
        if upto > archived {
            let released: usize = state
                .entries
                .iter()
                .filter(|s| s.id > archived && s.id <= upto)
                .map(|s| s.payload.len())
                .sum();
            self.backlog_bytes.fetch_sub(released, Ordering::Relaxed);
            state.archived = Some(upto);
        }
        self.trim(&mut state);
        let done = state.last.is_none_or(|last| last <= upto);
        if done {
            state.archived = None;
            state.expires = self.ttl.map(|ttl| Instant::now() + ttl);
        }
        Ok(Marked { done, deleted })
    }

    async fn forget_deleted(&self, log: &Log, ids: &[MessageId]) -> ClusterResult<()> {
        if let Some(state) = self.logs().by_log.get(log).cloned() {
            lock(&state).deleted.retain(|id| !ids.contains(id));
        }
        Ok(())
    }
}
