//! The archive: where every accepted room message and DM is kept for good,
//! behind the hot history of the backend. The [`Archive`] role stores and
//! reads messages by log and id; `postgres` and `dynamodb` implement it. The
//! [`Archiver`](archiver::Archiver) moves what a backend holds for it (its
//! [`Backlog`](crate::cluster::Backlog)) into the archive, in the
//! background, so a send never waits for it.

pub mod archiver;
pub mod dynamodb;
pub mod postgres;

use async_trait::async_trait;

use crate::cluster::{Log, Stored};
use crate::domain::MessageId;

/// Why an archive call failed. Nothing half-done: a store either wrote every
/// message of its batch or may be repeated as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The archive could not be reached or did not answer in time.
    #[error("archive unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The archive answered with something this version cannot read.
    #[error("archive holds an unreadable row: {0}")]
    Corrupt(String),
}

/// Shorthand for archive results.
pub type ArchiveResult<T> = Result<T, ArchiveError>;

/// A message to archive, with the log it belongs to.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its room or DM pair.
    pub log: Log,
    /// Its id and frame, exactly as delivered.
    pub message: Stored,
}

/// Durable, ordered storage of every message, keyed by log and id.
#[async_trait]
pub trait Archive: Send + Sync {
    /// Makes the archive ready to store (creates or migrates its tables);
    /// idempotent, and safe on several nodes at once.
    async fn prepare(&self) -> ArchiveResult<()>;

    /// Stores `batch`. A message stored already is left as it is, so a batch
    /// may be stored again after a crash or a timeout without duplicates.
    async fn store(&self, batch: &[Entry]) -> ArchiveResult<()>;

    /// Up to `limit` messages of `log` before `before` (the newest when
    /// `None`), oldest first.
    async fn before(
        &self,
        log: &Log,
        before: Option<MessageId>,
        limit: usize,
    ) -> ArchiveResult<Vec<Stored>>;

    /// Up to `limit` messages of `log` after `after`, oldest first.
    async fn after(&self, log: &Log, after: MessageId, limit: usize) -> ArchiveResult<Vec<Stored>>;

    /// Removes message `id` of `log`; true when it was there.
    async fn delete(&self, log: &Log, id: MessageId) -> ArchiveResult<bool>;
}

/// The name of a log in the archive: `r:ROOM` or `d:A:B` (names cannot hold
/// a colon, so the two kinds never meet).
pub fn log_name(log: &Log) -> String {
    match log {
        Log::Room(room) => format!("r:{room}"),
        Log::Direct(a, b) => format!("d:{a}:{b}"),
    }
}
