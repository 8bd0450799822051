//! Upload records in Redis: one hash and one set per upload, both under the
//! upload's own hash tag (one slot on a cluster), and each user's pending
//! uploads in a sorted set under the user's tag. Every write sets a
//! lifetime in the same script, so no key outlives its upload.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;

use super::Redis;
use crate::cluster::{ClusterError, ClusterResult, Log, UploadRecord, UploadRecords, UploadState};
use crate::domain::{FileName, MediaType, UploadId, UserName};

static PENDING: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/upload_pending.lua")));
static CREATE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/upload_create.lua")));
static SETTLE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/upload_settle.lua")));
static ATTACH: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/upload_attach.lua")));

/// [`UploadRecords`] of a cluster.
pub struct RedisUploadRecords {
    redis: Redis,
}

impl RedisUploadRecords {
    pub(crate) fn new(redis: Redis) -> Self {
        Self { redis }
    }

    /// Writes the record's hash as it is, with its lifetime.
    async fn put(&self, record: &UploadRecord, ttl: Duration) -> ClusterResult<()> {
        let keys = self.redis.keys();
        let (state, inline) = state_fields(record.state);
        let size = record.size.to_string();
        let mut create = CREATE.prepare_invoke();
        create.key(keys.upload(&record.id)).arg(millis(ttl));
        for (field, value) in [
            ("uploader", record.uploader.as_str()),
            ("name", record.name.as_str()),
            ("type", record.media_type.as_str()),
            ("size", size.as_str()),
            ("state", state),
            ("inline", inline),
            ("secret", record.secret.as_deref().unwrap_or_default()),
        ] {
            create.arg(field).arg(value);
        }
        let _: i64 = self.redis.invoke("upload_create", &create).await?;
        Ok(())
    }
}

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The state as the record's `state` and `inline` fields spell it.
fn state_fields(state: UploadState) -> (&'static str, &'static str) {
    match state {
        UploadState::Pending => ("pending", "0"),
        UploadState::Finished { inline: true } => ("finished", "1"),
        UploadState::Finished { inline: false } => ("finished", "0"),
        UploadState::Rejected => ("rejected", "0"),
    }
}

/// A record read back; `None` when a field is missing or does not parse
/// (a record written by some other version is treated as gone).
fn parse_record(
    id: &UploadId,
    mut fields: HashMap<String, String>,
    logs: &[String],
) -> Option<UploadRecord> {
    let state = match (
        fields.get("state")?.as_str(),
        fields.get("inline")?.as_str(),
    ) {
        ("pending", _) => UploadState::Pending,
        ("finished", inline) => UploadState::Finished {
            inline: inline == "1",
        },
        _ => UploadState::Rejected,
    };
    Some(UploadRecord {
        id: id.clone(),
        uploader: UserName::parse(fields.get("uploader")?).ok()?,
        name: FileName::parse(fields.get("name")?).ok()?,
        media_type: MediaType::parse(fields.get("type")?).ok()?,
        size: fields.get("size")?.parse().ok()?,
        state,
        secret: fields.remove("secret").filter(|s| !s.is_empty()),
        logs: logs.iter().filter_map(|t| Log::from_tag(t)).collect(),
    })
}

#[async_trait]
impl UploadRecords for RedisUploadRecords {
    async fn create(
        &self,
        record: &UploadRecord,
        ttl: Duration,
        max_pending: usize,
    ) -> ClusterResult<()> {
        let keys = self.redis.keys();
        let now = self.redis.redis_now_ms();
        let deadline = now.saturating_add(i64::try_from(millis(ttl)).unwrap_or(i64::MAX));
        let mut pending = PENDING.prepare_invoke();
        pending
            .key(keys.pending_uploads(&record.uploader))
            .arg(record.id.as_str())
            .arg(now)
            .arg(deadline)
            .arg(max_pending)
            .arg(millis(ttl));
        let counted: i64 = self.redis.invoke("upload_pending", &pending).await?;
        if counted == 0 {
            return Err(ClusterError::Full);
        }
        self.put(record, ttl).await
    }

    async fn get(&self, id: &UploadId) -> ClusterResult<Option<UploadRecord>> {
        let keys = self.redis.keys();
        let fields: HashMap<String, String> = self
            .redis
            .query(redis::cmd("HGETALL").arg(keys.upload(id)))
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let logs: Vec<String> = self
            .redis
            .query(redis::cmd("SMEMBERS").arg(keys.upload_logs(id)))
            .await?;
        Ok(parse_record(id, fields, &logs))
    }

    async fn restore(&self, record: &UploadRecord, ttl: Duration) -> ClusterResult<()> {
        self.put(record, ttl).await?;
        // The logs through the attach script, which sets their lifetime.
        for log in &record.logs {
            self.attach(&record.id, &record.uploader, log, ttl).await?;
        }
        Ok(())
    }

    async fn settle(
        &self,
        record: &UploadRecord,
        to: UploadState,
        ttl: Duration,
    ) -> ClusterResult<bool> {
        let keys = self.redis.keys();
        let (state, inline) = state_fields(to);
        let mut settle = SETTLE.prepare_invoke();
        settle
            .key(keys.upload(&record.id))
            .key(keys.upload_logs(&record.id))
            .arg(state)
            .arg(inline)
            .arg(millis(ttl));
        let moved: i64 = self.redis.invoke("upload_settle", &settle).await?;
        // No longer pending, so no longer counted against the cap; if this
        // fails the entry ages out at its deadline anyway.
        let _: ClusterResult<i64> = self
            .redis
            .query(
                redis::cmd("ZREM")
                    .arg(keys.pending_uploads(&record.uploader))
                    .arg(record.id.as_str()),
            )
            .await;
        Ok(moved == 1)
    }

    async fn attach(
        &self,
        id: &UploadId,
        uploader: &UserName,
        log: &Log,
        ttl: Duration,
    ) -> ClusterResult<Option<UploadRecord>> {
        let keys = self.redis.keys();
        let mut attach = ATTACH.prepare_invoke();
        attach
            .key(keys.upload(id))
            .key(keys.upload_logs(id))
            .arg(uploader.as_str())
            .arg(log.tag())
            .arg(millis(ttl));
        let attached: i64 = self.redis.invoke("upload_attach", &attach).await?;
        if attached == 0 {
            return Ok(None);
        }
        self.get(id).await
    }
}
