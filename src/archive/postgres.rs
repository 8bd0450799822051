//! The archive in Postgres (`DATABASE_URL`): one table keyed by log and id,
//! created by the migrations in `migrations/`, which the node applies itself.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::{Archive, ArchiveError, ArchiveResult, Entry, log_name};
use crate::cluster::{Log, Stored};
use crate::domain::MessageId;

/// Longest wait for a pooled connection: past it a call fails as
/// unavailable instead of queueing behind a stalled database.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a write or the migrations may take.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a read may take: a user waits for it.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections per node: the archiver writes one batch at a time and reads
/// are short; a few leave room for both without crowding the database.
const MAX_CONNECTIONS: u32 = 8;
/// Reads in flight at once: the rest of the pool stays the archiver's, so
/// a flood of history pages cannot hold up archiving.
const MAX_READS: usize = 6;

/// The archive in one Postgres database.
pub struct PostgresArchive {
    pool: PgPool,
    /// Set once the migrations ran: every call waits for them, so a read
    /// racing the start finds the table.
    migrated: tokio::sync::OnceCell<()>,
    reads: tokio::sync::Semaphore,
}

fn unavailable(error: impl std::error::Error + Send + Sync + 'static) -> ArchiveError {
    ArchiveError::Unavailable(Box::new(error))
}

#[derive(Debug, thiserror::Error)]
#[error("no answer within {0:?}")]
struct TimedOut(Duration);

/// Runs `query`, bounded by [`STATEMENT_TIMEOUT`].
async fn bounded<T>(query: impl Future<Output = Result<T, sqlx::Error>>) -> ArchiveResult<T> {
    within(STATEMENT_TIMEOUT, query).await
}

/// Runs `query`, bounded by `limit`.
async fn within<T>(
    limit: Duration,
    query: impl Future<Output = Result<T, sqlx::Error>>,
) -> ArchiveResult<T> {
    tokio::time::timeout(limit, query)
        .await
        .map_err(|_| unavailable(TimedOut(limit)))?
        .map_err(unavailable)
}

/// An id part as Postgres stores it; ids come from clocks and counters far
/// below `i64::MAX`, and the ends of the range clamp.
fn column(part: u64) -> i64 {
    i64::try_from(part).unwrap_or(i64::MAX)
}

impl PostgresArchive {
    /// A pool for `url`, connecting lazily: a database that is down at start
    /// delays the archive, not the chat. A malformed URL is refused now.
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|error| anyhow::anyhow!("not a usable Postgres URL: {error}"))?
            .application_name("chorus");
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options);
        Ok(Self {
            pool,
            migrated: tokio::sync::OnceCell::new(),
            reads: tokio::sync::Semaphore::new(MAX_READS),
        })
    }

    /// The pool, once the migrations this version ships ran (concurrent
    /// nodes serialize on sqlx's advisory lock).
    async fn ready(&self) -> ArchiveResult<&PgPool> {
        self.migrated
            .get_or_try_init(|| {
                bounded(async {
                    sqlx::migrate!("./migrations")
                        .run(&self.pool)
                        .await
                        .map_err(sqlx::Error::from)
                })
            })
            .await?;
        Ok(&self.pool)
    }

    /// A read's turn and the pool, within [`READ_TIMEOUT`].
    async fn reader(&self) -> ArchiveResult<(tokio::sync::SemaphorePermit<'_>, &PgPool)> {
        let timed_out = || unavailable(TimedOut(READ_TIMEOUT));
        tokio::time::timeout(READ_TIMEOUT, async {
            let turn = self.reads.acquire().await.map_err(unavailable)?;
            Ok((turn, self.ready().await?))
        })
        .await
        .map_err(|_| timed_out())?
    }

    fn rows(rows: Vec<(i64, i64, Vec<u8>)>) -> ArchiveResult<Vec<Stored>> {
        rows.into_iter()
            .map(|(ms, seq, frame)| {
                let (Ok(ms), Ok(seq)) = (u64::try_from(ms), u64::try_from(seq)) else {
                    return Err(ArchiveError::Corrupt(format!("negative id {ms}-{seq}")));
                };
                Ok(Stored {
                    id: MessageId::new(ms, seq),
                    payload: Bytes::from(frame),
                })
            })
            .collect()
    }
}

#[async_trait]
impl Archive for PostgresArchive {
    async fn prepare(&self) -> ArchiveResult<()> {
        self.ready().await.map(|_| ())
    }

    async fn store(&self, batch: &[Entry]) -> ArchiveResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut logs = Vec::with_capacity(batch.len());
        let mut ms = Vec::with_capacity(batch.len());
        let mut seq = Vec::with_capacity(batch.len());
        let mut frames = Vec::with_capacity(batch.len());
        for entry in batch {
            logs.push(log_name(&entry.log));
            ms.push(column(entry.message.id.ms()));
            seq.push(column(entry.message.id.seq()));
            frames.push(entry.message.payload.to_vec());
        }
        // One statement, so one transaction: the batch is in or not at all.
        bounded(
            sqlx::query(
                "INSERT INTO messages (log, id_ms, id_seq, frame) \
                 SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::bytea[]) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(logs)
            .bind(ms)
            .bind(seq)
            .bind(frames)
            .execute(self.ready().await?),
        )
        .await?;
        Ok(())
    }

    async fn before(
        &self,
        log: &Log,
        before: Option<MessageId>,
        limit: usize,
    ) -> ArchiveResult<Vec<Stored>> {
        let before = before.unwrap_or(MessageId::MAX);
        let (_turn, pool) = self.reader().await?;
        let mut rows: Vec<(i64, i64, Vec<u8>)> = within(
            READ_TIMEOUT,
            sqlx::query_as(
                "SELECT id_ms, id_seq, frame FROM messages \
                 WHERE log = $1 AND (id_ms, id_seq) < ($2, $3) \
                 ORDER BY id_ms DESC, id_seq DESC LIMIT $4",
            )
            .bind(log_name(log))
            .bind(column(before.ms()))
            .bind(column(before.seq()))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(pool),
        )
        .await?;
        rows.reverse();
        Self::rows(rows)
    }

    async fn after(&self, log: &Log, after: MessageId, limit: usize) -> ArchiveResult<Vec<Stored>> {
        let (_turn, pool) = self.reader().await?;
        let rows: Vec<(i64, i64, Vec<u8>)> = within(
            READ_TIMEOUT,
            sqlx::query_as(
                "SELECT id_ms, id_seq, frame FROM messages \
                 WHERE log = $1 AND (id_ms, id_seq) > ($2, $3) \
                 ORDER BY id_ms, id_seq LIMIT $4",
            )
            .bind(log_name(log))
            .bind(column(after.ms()))
            .bind(column(after.seq()))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(pool),
        )
        .await?;
        Self::rows(rows)
    }

    async fn delete(&self, log: &Log, id: MessageId) -> ArchiveResult<bool> {
        let done = bounded(
            sqlx::query("DELETE FROM messages WHERE log = $1 AND id_ms = $2 AND id_seq = $3")
                .bind(log_name(log))
                .bind(column(id.ms()))
                .bind(column(id.seq()))
                .execute(self.ready().await?),
        )
        .await?;
        Ok(done.rows_affected() > 0)
    }
}
