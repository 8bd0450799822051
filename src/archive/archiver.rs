//! Moves the backend's backlog into the archive, in the background.
//!
//! Each node runs one archiver. Every [`DRAIN_EVERY`] it drains the logs its
//! own sends touched (chat tells it of each append) and, every
//! [`SWEEP_EVERY`], every log the backend says has messages waiting, which
//! picks up what a node that died left behind. A drain reads the waiting messages of many logs, stores them
//! in one batch, and only then tells the backend they are archived: a crash
//! at any point leaves them waiting, and the next drain stores them again,
//! which the archive ignores (it is keyed by log and id). Several nodes may
//! drain one log at once for the same reason.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::join_all;
use tokio_util::sync::CancellationToken;

use super::{Archive, ArchiveError, Entry};
use crate::cluster::{Backlog, ClusterError, Log};
use crate::domain::MessageId;
use crate::telemetry;

/// How often every log with waiting messages is looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// How often the logs appended to meanwhile are drained: a busy room's
/// messages of that time go in one read and one write, instead of a
/// round trip to Redis and Postgres each (which cost sends 4x their median
/// latency in the rooms benchmark). It bounds the archive's lag when it
/// keeps up.
const DRAIN_EVERY: Duration = Duration::from_secs(1);
/// Messages read from one log per drain step.
const PER_LOG: usize = 500;
/// Logs read in one drain step.
const LOGS_AT_ONCE: usize = 64;
/// Backend calls in flight at once: a drain's calls queued all together at
/// Redis would hold up the sends behind them.
const CALLS_AT_ONCE: usize = 4;
/// Rows per archive write: large enough to amortize the round trip, small
/// enough that one write stays well inside its timeout.
const BATCH_ROWS: usize = 2000;
/// Waits after a failure, doubling up to the last.
const RETRY_WAITS: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(5));
/// How long a stopping node keeps draining what it has.
const FINAL_DRAIN: Duration = Duration::from_secs(5);

/// The archiver of one node.
pub struct Archiver {
    backlog: Arc<dyn Backlog>,
    archive: Arc<dyn Archive>,
    /// Logs this node appended to since they were last drained.
    dirty: Mutex<HashSet<Log>>,
    /// Set when a drain left a log with more waiting than it reads at once
    /// (a backlog after an outage): the next drain starts at once.
    backlogged: AtomicBool,
    /// Messages deleted while they waited, to remove from the archive.
    deleted: Mutex<Vec<(Log, Vec<MessageId>)>>,
}

#[derive(Debug, thiserror::Error)]
enum DrainError {
    #[error(transparent)]
    Backend(#[from] ClusterError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

impl Archiver {
    /// An archiver moving `backlog` into `archive`.
    pub fn new(backlog: Arc<dyn Backlog>, archive: Arc<dyn Archive>) -> Self {
        Self {
            backlog,
            archive,
            dirty: Mutex::default(),
            backlogged: AtomicBool::new(false),
            deleted: Mutex::default(),
        }
    }

    /// The archive, for reads past the hot history.
    pub fn archive(&self) -> &Arc<dyn Archive> {
        &self.archive
    }

    /// Notes that `log` has a new message waiting. Never blocks.
    pub fn appended(&self, log: &Log) {
        let mut dirty = self.dirty();
        if !dirty.contains(log) {
            dirty.insert(log.clone());
        }
    }

    fn dirty(&self) -> std::sync::MutexGuard<'_, HashSet<Log>> {
        self.dirty.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Prepares the archive (its migrations), then drains until `stop`, and
    /// a last time after it, for at most [`FINAL_DRAIN`].
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut wait = RETRY_WAITS.0;
        while let Err(error) = self.archive.prepare().await {
            metrics::counter!(telemetry::ARCHIVE_ERRORS).increment(1);
            tracing::error!(%error, "the archive is not ready; retrying");
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(RETRY_WAITS.1);
        }
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut drain = tokio::time::interval(DRAIN_EVERY);
        drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut wait = RETRY_WAITS.0;
        loop {
            let backlogged = self.backlogged.swap(false, Ordering::Relaxed);
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                _ = sweep.tick() => self.sweep().await,
                _ = drain.tick() => {}
                () = std::future::ready(()), if backlogged => {}
            }
            if let Err(error) = self.drain().await {
                metrics::counter!(telemetry::ARCHIVE_ERRORS).increment(1);
                tracing::warn!(%error, "archiving failed; the messages wait and are retried");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(RETRY_WAITS.1);
            } else {
                wait = RETRY_WAITS.0;
            }
        }
        if tokio::time::timeout(FINAL_DRAIN, self.drain())
            .await
            .is_err()
        {
            tracing::warn!(
                "stopped before the archive had every message; the next node's sweep moves the rest"
            );
        }
    }

    /// Adds every log the backend says has messages waiting.
    async fn sweep(&self) {
        match self.backlog.waiting().await {
            Ok(logs) => {
                if !logs.is_empty() {
                    self.dirty().extend(logs);
                }
            }
            Err(error) => {
                metrics::counter!(telemetry::ARCHIVE_ERRORS).increment(1);
                tracing::warn!(%error, "could not look for messages waiting for the archive");
            }
        }
    }

    /// Archives what waits in the logs dirty now, [`LOGS_AT_ONCE`] at a
    /// time. On failure the logs not done are dirty again.
    async fn drain(&self) -> Result<(), DrainError> {
        let logs: Vec<Log> = std::mem::take(&mut *self.dirty()).into_iter().collect();
        let mut oldest_ms = None;
        let mut result = Ok(());
        for (at, chunk) in logs.chunks(LOGS_AT_ONCE).enumerate() {
            if let Err(error) = self.step(chunk, &mut oldest_ms).await {
                self.dirty()
                    .extend(logs[at * LOGS_AT_ONCE..].iter().cloned());
                result = Err(error);
                break;
            }
        }
        if let Err(error) = self.remove_deleted().await
            && result.is_ok()
        {
            result = Err(error);
        }
        // Set on failure too: a lag that grows while the archive is down is
        // what its alert watches.
        let lag = oldest_ms.map_or(0.0, |ms: u64| {
            let now = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
            Duration::from_millis(now.saturating_sub(ms)).as_secs_f64()
        });
        metrics::gauge!(telemetry::ARCHIVE_LAG).set(lag);
        result
    }

    fn unstored(&self) -> std::sync::MutexGuard<'_, Vec<(Log, Vec<MessageId>)>> {
        self.deleted.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Removes from the archive the messages deleted while they waited
    /// (it may have just stored them), then has the backend forget them.
    /// What fails is kept for the next drain.
    async fn remove_deleted(&self) -> Result<(), DrainError> {
        let pending = std::mem::take(&mut *self.unstored());
        let mut result = Ok(());
        for (log, ids) in pending {
            if result.is_ok() {
                result = self.remove(&log, &ids).await;
            }
            if result.is_err() {
                self.unstored().push((log, ids));
            }
        }
        result
    }

    async fn remove(&self, log: &Log, ids: &[MessageId]) -> Result<(), DrainError> {
        for id in ids {
            self.archive.delete(log, *id).await?;
        }
        self.backlog.forget_deleted(log, ids).await?;
        tracing::info!(log = %crate::archive::log_name(log), count = ids.len(), "removed messages deleted while they waited from the archive");
        Ok(())
    }

    /// One batch from `logs`; a log with more waiting goes back to the
    /// dirty set.
    async fn step(&self, logs: &[Log], oldest_ms: &mut Option<u64>) -> Result<(), DrainError> {
        let mut reads = Vec::with_capacity(logs.len());
        for group in logs.chunks(CALLS_AT_ONCE) {
            let group = group
                .iter()
                .map(|log| self.backlog.unarchived(log, PER_LOG));
            reads.extend(join_all(group).await);
        }
        let mut batch = Vec::new();
        let mut reached = Vec::new();
        let mut unread = None;
        for (log, read) in logs.iter().zip(reads) {
            let messages = match read {
                Ok(messages) => messages,
                Err(error) => {
                    // One log that cannot be read holds up no other.
                    self.dirty().insert(log.clone());
                    unread = Some(error);
                    continue;
                }
            };
            let (Some(first), Some(last)) = (messages.first(), messages.last()) else {
                continue;
            };
            *oldest_ms = Some(oldest_ms.map_or(first.id.ms(), |ms| ms.min(first.id.ms())));
            reached.push((log, last.id, messages.len() == PER_LOG));
            batch.extend(messages.into_iter().map(|message| Entry {
                log: log.clone(),
                message,
            }));
        }
        for rows in batch.chunks(BATCH_ROWS) {
            self.archive.store(rows).await?;
        }
        metrics::counter!(telemetry::ARCHIVE_STORED).increment(batch.len() as u64);
        let mut marks = Vec::with_capacity(reached.len());
        for group in reached.chunks(CALLS_AT_ONCE) {
            let group = group
                .iter()
                .map(|(log, upto, _)| self.backlog.archived(log, *upto));
            marks.extend(join_all(group).await);
        }
        let mut again = Vec::new();
        let mut failed = None;
        for ((log, _, full), mark) in reached.into_iter().zip(marks) {
            if let Ok(marked) = &mark
                && !marked.deleted.is_empty()
            {
                self.unstored().push((log.clone(), marked.deleted.clone()));
            }
            match mark {
                Ok(_) if full => {
                    self.backlogged.store(true, Ordering::Relaxed);
                    again.push(log.clone());
                }
                Ok(marked) if !marked.done => again.push(log.clone()),
                Ok(_) => {}
                Err(error) => {
                    // Stored but not marked: stored again next time.
                    again.push(log.clone());
                    failed = Some(error);
                }
            }
        }
        self.dirty().extend(again);
        match failed.or(unread) {
            Some(error) => Err(error.into()),
            None => Ok(()),
        }
    }
}
