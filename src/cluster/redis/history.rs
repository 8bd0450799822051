//! Histories as capped Redis streams; appending and publishing are one script.

use std::sync::LazyLock;

use async_trait::async_trait;
use bytes::Bytes;
use redis::{Script, Value};

use super::Redis;
use super::keys::Keys;
use crate::cluster::{
    Appended, ClusterError, ClusterResult, Draft, History, Idempotency, Log, Since, Stored, Topic,
};
use crate::domain::{IDEMPOTENCY_WINDOW, MessageId, UserName};

static APPEND: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/append.lua")));
static SINCE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/since.lua")));

/// The histories of a cluster.
pub struct RedisHistory {
    redis: Redis,
    limit: usize,
    /// How long a history lives after its last message, ms; 0: forever.
    ttl_ms: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("unexpected reply from redis: {0}")]
struct Malformed(&'static str);

fn malformed(what: &'static str) -> ClusterError {
    ClusterError::Unavailable(Box::new(Malformed(what)))
}

/// One stream entry as stored by `append.lua`: the encoding around the id.
fn entry(value: Value) -> ClusterResult<Stored> {
    let Value::Array(mut parts) = value else {
        return Err(malformed("stream entry"));
    };
    let fields = parts.pop().ok_or_else(|| malformed("entry fields"))?;
    let id: String = parts
        .pop()
        .and_then(|v| redis::from_redis_value(v).ok())
        .ok_or_else(|| malformed("entry id"))?;
    let id = MessageId::parse(&id).map_err(|_| malformed("entry id"))?;
    let fields: Vec<Vec<u8>> =
        redis::from_redis_value(fields).map_err(|_| malformed("entry fields"))?;
    let (mut prefix, mut suffix) = (None, None);
    for pair in fields.chunks_exact(2) {
        match pair[0].as_slice() {
            b"p" => prefix = Some(Bytes::copy_from_slice(&pair[1])),
            b"s" => suffix = Some(Bytes::copy_from_slice(&pair[1])),
            _ => {}
        }
    }
    let draft = Draft {
        prefix: prefix.ok_or_else(|| malformed("entry prefix"))?,
        suffix: suffix.ok_or_else(|| malformed("entry suffix"))?,
    };
    Ok(Stored {
        id,
        payload: draft.complete(id),
    })
}

/// Stream entries as returned by XRANGE/XREVRANGE.
pub(super) fn entries(value: Value) -> ClusterResult<Vec<Stored>> {
    let Value::Array(items) = value else {
        return Err(malformed("stream range"));
    };
    items.into_iter().map(entry).collect()
}

impl RedisHistory {
    pub(super) fn new(redis: Redis, limit: usize, ttl: Option<std::time::Duration>) -> Self {
        let ttl_ms = ttl.map_or(0, |ttl| u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        Self {
            redis,
            limit,
            ttl_ms,
        }
    }
}

#[async_trait]
impl History for RedisHistory {
    async fn append(
        &self,
        log: &Log,
        draft: Draft,
        topics: &[Topic],
        idempotency: Option<Idempotency<'_>>,
    ) -> ClusterResult<Appended> {
        let keys = self.redis.keys();
        let mut invocation = APPEND.prepare_invoke();
        // Without a key the script never reads its record; any key of the
        // log stands in.
        let record = idempotency.map_or_else(
            || keys.trimmed(log),
            |i| keys.idempotency(log, i.user, i.key.as_str()),
        );
        invocation
            .key(keys.history(log))
            .key(keys.trimmed(log))
            .key(record)
            .arg(self.limit)
            .arg(draft.prefix.as_ref())
            .arg(draft.suffix.as_ref())
            .arg(self.ttl_ms);
        invocation.arg(Keys::pair_tag(log));
        let partners: Vec<(&UserName, &UserName)> = match log {
            Log::Room(_) => Vec::new(),
            Log::Direct(a, b) if a == b => vec![(a, b)],
            Log::Direct(a, b) => vec![(a, b), (b, a)],
        };
        invocation
            .arg(if idempotency.is_some() { "1" } else { "0" })
            .arg(u64::try_from(IDEMPOTENCY_WINDOW.as_millis()).unwrap_or(u64::MAX))
            .arg(partners.len());
        for (user, partner) in &partners {
            invocation.key(keys.partners(user)).arg(partner.as_str());
        }
        for topic in topics {
            invocation.arg(keys.channel(topic));
        }
        let reply: Vec<Vec<u8>> = self.redis.invoke("append", &invocation).await?;
        let mut reply = reply.into_iter();
        let id = reply
            .next()
            .and_then(|id| MessageId::parse(std::str::from_utf8(&id).ok()?).ok())
            .ok_or_else(|| malformed("message id"))?;
        Ok(match reply.next() {
            Some(frame) => Appended {
                stored: Stored {
                    id,
                    payload: Bytes::from(frame),
                },
                replayed: true,
            },
            None => Appended {
                stored: Stored {
                    id,
                    payload: draft.complete(id),
                },
                replayed: false,
            },
        })
    }

    async fn since(&self, log: &Log, since: MessageId) -> ClusterResult<Since> {
        // Redis refuses an exclusive range that starts after its last id.
        if since == MessageId::MAX {
            return Ok(Since {
                messages: Vec::new(),
                truncated: false,
            });
        }
        let keys = self.redis.keys();
        let mut invocation = SINCE.prepare_invoke();
        invocation
            .key(keys.history(log))
            .key(keys.trimmed(log))
            .arg(since.to_string());
        let (trimmed, found): (String, Value) = self.redis.invoke("since", &invocation).await?;
        let trimmed = MessageId::parse(&trimmed).map_err(|_| malformed("trimmed id"))?;
        Ok(Since {
            messages: entries(found)?,
            truncated: since < trimmed,
        })
    }

    async fn before(
        &self,
        log: &Log,
        before: Option<MessageId>,
        limit: usize,
    ) -> ClusterResult<Vec<Stored>> {
        // Redis refuses an exclusive range that ends before its first id.
        if before == Some(MessageId::MIN) {
            return Ok(Vec::new());
        }
        let end = before.map_or_else(|| "+".to_owned(), |id| format!("({id}"));
        let found: Value = self
            .redis
            .query(
                redis::cmd("XREVRANGE")
                    .arg(self.redis.keys().history(log))
                    .arg(end)
                    .arg("-")
                    .arg("COUNT")
                    .arg(limit),
            )
            .await?;
        let mut messages = entries(found)?;
        messages.reverse();
        Ok(messages)
    }
}
