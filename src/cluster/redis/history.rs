//! Histories as capped Redis streams; appending and publishing are one script.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::{Script, Value};

use super::{Redis, not_late};
use crate::cluster::{
    Appended, Backlog, ClusterError, ClusterResult, Draft, History, Idempotency, Log, Marked,
    Publication, Removal, Since, Stored, Topic,
};
use crate::domain::{IDEMPOTENCY_WINDOW, MessageId, UserName};
use crate::telemetry;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("lua/deadline.lua"),
        include_str!("lua/lifetime.lua"),
        include_str!("lua/append.lua")
    ))
});
static INBOX: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/inbox.lua")));

/// How long an inbox lives after its last DM when histories live forever:
/// it only serves gap fills, which reach back seconds.
const INBOX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// How often a DM delivery reads the pair's history again because another
/// delivery of the pair moved the user's cursor first: each retry finds
/// more delivered, so a few suffice unless the pair is flooded.
const DELIVERY_ATTEMPTS: usize = 8;
static SINCE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/since.lua")));
static BACKLOG: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/backlog.lua")));
static ARCHIVED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("lua/ids.lua"),
        include_str!("lua/lifetime.lua"),
        include_str!("lua/archived.lua")
    ))
});
static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("lua/ids.lua"),
        include_str!("lua/lifetime.lua"),
        include_str!("lua/delete.lua")
    ))
});

/// The histories of a cluster.
pub struct RedisHistory {
    redis: Redis,
    limit: usize,
    /// How long a history lives after its last message, ms; 0: forever.
    ttl_ms: u64,
    /// True with an archive: histories keep what it lacks (see
    /// `archived.lua`).
    archiving: bool,
    inboxes: Inboxes,
}

/// Delivers stored DMs to their users' inboxes; cheap to clone into a retry.
#[derive(Clone)]
struct Inboxes {
    redis: Redis,
    /// An inbox's cap.
    limit: usize,
    /// How long an inbox and its cursors live after their last DM, ms.
    lifetime: u64,
    /// Where deferred deliveries run, so the drain waits for them.
    tracker: TaskTracker,
    /// The drain: deferred deliveries stop at it (the pair's next DM
    /// delivers what they could not).
    stop: CancellationToken,
}

/// Deliveries retried in the background right now, process-wide.
static DEFERRED: AtomicUsize = AtomicUsize::new(0);
/// The most deliveries retried at once: each holds a DM's frame (at most
/// 64 KiB) for up to [`DEFER_FOR`], so this bounds that memory. Past it, a
/// failed delivery waits for the pair's next DM, which delivers everything
/// after the user's cursor.
const MAX_DEFERRED: usize = 10_000;
/// How long a deferred delivery keeps trying.
const DEFER_FOR: Duration = Duration::from_secs(60);

/// Messages over the cap that may wait for the archive in one history: a
/// room at 10 messages a second fills it in close to three hours without
/// the archive. Past it sends to that room are refused as unavailable, so
/// an archive outage cannot run Redis out of memory one busy room at a time.
const MAX_WAITING: usize = 100_000;

/// Marks the sweep reads at once.
const SWEEP_READS: usize = 100;

/// The least a history lives while messages wait for the archive: the
/// longest archive outage it is kept through without a new message.
const WAITING_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// A history's lifetime while messages wait, ms: at least
/// [`WAITING_LIFETIME`], 0 (forever) if the history lives forever.
fn waiting_lifetime(ttl_ms: u64) -> u64 {
    if ttl_ms == 0 {
        0
    } else {
        ttl_ms.max(u64::try_from(WAITING_LIFETIME.as_millis()).unwrap_or(u64::MAX))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{MAX_WAITING} messages of this history wait for the archive already")]
struct BacklogFull;

#[derive(Debug, thiserror::Error)]
#[error("other deliveries of the DM pair kept moving the user's cursor")]
struct CursorKeptMoving;

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

/// One inbox entry as stored by `inbox.lua`: its inbox id, and the DM.
fn inbox_entry(value: Value) -> ClusterResult<(MessageId, Stored)> {
    let (position, fields): (String, Vec<(String, Vec<u8>)>) =
        redis::from_redis_value(value).map_err(|_| malformed("inbox entry"))?;
    let position = MessageId::parse(&position).map_err(|_| malformed("inbox id"))?;
    let (mut id, mut frame) = (None, None);
    for (name, value) in fields {
        match name.as_str() {
            "m" => {
                id = std::str::from_utf8(&value)
                    .ok()
                    .and_then(|m| m.rsplit_once('/'))
                    .and_then(|(_, id)| MessageId::parse(id).ok());
            }
            "f" => frame = Some(Bytes::from(value)),
            _ => {}
        }
    }
    Ok((
        position,
        Stored {
            id: id.ok_or_else(|| malformed("inbox message id"))?,
            payload: frame.ok_or_else(|| malformed("inbox frame"))?,
        },
    ))
}

/// The entries of a topic's stream (see [`super::keys::Keys::stream`]), as
/// its channel carried them, each with its id in that stream: a room's
/// messages, a user's inbox.
pub(super) fn topic_entries(
    topic: &Topic,
    value: Value,
) -> ClusterResult<Vec<(MessageId, Stored)>> {
    match topic {
        Topic::Room(_) => Ok(entries(value)?.into_iter().map(|m| (m.id, m)).collect()),
        Topic::User(_) => {
            let Value::Array(items) = value else {
                return Err(malformed("inbox range"));
            };
            items.into_iter().map(inbox_entry).collect()
        }
    }
}

impl RedisHistory {
    pub(super) fn new(
        redis: Redis,
        limit: usize,
        ttl: Option<Duration>,
        archiving: bool,
        tracker: TaskTracker,
        stop: CancellationToken,
    ) -> Self {
        let ttl_ms = ttl.map_or(0, |ttl| u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        let lifetime = if ttl_ms > 0 {
            ttl_ms
        } else {
            u64::try_from(INBOX_LIFETIME.as_millis()).unwrap_or(u64::MAX)
        };
        Self {
            inboxes: Inboxes {
                redis: redis.clone(),
                limit,
                lifetime,
                tracker,
                stop,
            },
            redis,
            limit,
            ttl_ms,
            archiving,
        }
    }
}

impl Inboxes {
    /// Delivers, or when Redis does not take it now, keeps trying in the
    /// background: the DM is stored, so its sender was told it was sent.
    async fn deliver_or_defer(
        self,
        log: Log,
        user: UserName,
        stored: Stored,
        previous: Option<String>,
    ) {
        if self
            .deliver_dm(&log, &user, &stored, previous.as_deref())
            .await
            .is_ok()
        {
            return;
        }
        metrics::counter!(telemetry::DM_DELIVERIES_DEFERRED).increment(1);
        if DEFERRED.fetch_add(1, Ordering::Relaxed) >= MAX_DEFERRED {
            DEFERRED.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!(%user, "too many DM deliveries deferred; this one waits for its pair's next DM");
            return;
        }
        let tracker = self.tracker.clone();
        tracker.spawn(async move {
            let deadline = tokio::time::Instant::now() + DEFER_FOR;
            let mut pause = Duration::from_millis(100);
            while tokio::time::Instant::now() < deadline {
                tokio::select! {
                    () = self.stop.cancelled() => break,
                    () = tokio::time::sleep(pause) => {}
                }
                // Without `previous`: it reads what the cursor still lacks.
                if self.deliver_dm(&log, &user, &stored, None).await.is_ok() {
                    break;
                }
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            DEFERRED.fetch_sub(1, Ordering::Relaxed);
        });
    }

    /// Delivers the DMs of `log` up to `stored` to `user`'s inbox and
    /// channel, in the pair's history order. `previous` is the id before
    /// `stored` in the pair's history when known (a fresh append): then
    /// nothing else is normally missing and one script does it. Otherwise, or
    /// when another delivery moved the user's cursor first, the pair's
    /// history after the cursor is read and delivered in one go.
    async fn deliver_dm(
        &self,
        log: &Log,
        user: &UserName,
        stored: &Stored,
        previous: Option<&str>,
    ) -> ClusterResult<()> {
        let keys = self.redis.keys();
        let Log::Direct(a, b) = log else {
            return Ok(());
        };
        let pair = format!("{a}:{b}");
        let lifetime = self.lifetime;
        let mut expected = previous.map(str::to_owned);
        let mut batch = vec![(stored.id, stored.payload.clone())];
        for _ in 0..DELIVERY_ATTEMPTS {
            let cursor = match expected.take() {
                Some(cursor) => cursor,
                None => {
                    let cursor: Option<String> = self
                        .redis
                        .query(redis::cmd("HGET").arg(keys.cursors(user)).arg(&pair))
                        .await?;
                    let cursor = cursor.unwrap_or_default();
                    batch = self.pair_after(log, &cursor, stored.id, lifetime).await?;
                    cursor
                }
            };
            if batch.is_empty() {
                return Ok(());
            }
            let mut invocation = INBOX.prepare_invoke();
            invocation
                .key(keys.inbox(user))
                .key(keys.cursors(user))
                .arg(&pair)
                .arg(&cursor)
                .arg(self.limit)
                .arg(lifetime)
                .arg(self.redis.publish_command())
                .arg(keys.channel(&Topic::User(user.clone())));
            for (id, frame) in &batch {
                invocation.arg(id.to_string()).arg(frame.as_ref());
            }
            let reply: Vec<String> = self.redis.invoke("inbox", &invocation).await?;
            match reply.as_slice() {
                [moved, now] if moved == "moved" => {
                    batch = self.pair_after(log, now, stored.id, lifetime).await?;
                    expected = Some(now.clone());
                }
                _ => return Ok(()),
            }
        }
        Err(ClusterError::Unavailable(Box::new(CursorKeptMoving)))
    }

    /// The pair's messages after `cursor` up to `last`. Without a cursor
    /// (none delivered within the inbox's lifetime), those of that
    /// lifetime: older ones were delivered then.
    async fn pair_after(
        &self,
        log: &Log,
        cursor: &str,
        last: MessageId,
        lifetime: u64,
    ) -> ClusterResult<Vec<(MessageId, Bytes)>> {
        let start = if cursor.is_empty() {
            // Stream ids are on the Redis clock.
            let now = u64::try_from(self.redis.redis_now_ms()).unwrap_or(0);
            format!("{}-0", now.saturating_sub(lifetime))
        } else {
            format!("({cursor}")
        };
        let found = self
            .redis
            .query(
                redis::cmd("XRANGE")
                    .arg(self.redis.keys().history(log))
                    .arg(start)
                    .arg(last.to_string()),
            )
            .await?;
        Ok(entries(found)?
            .into_iter()
            .map(|m| (m.id, m.payload))
            .collect())
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
            // Without an archive the mark never exists: a key that does
            // stands in, as a missing one would stall a slot migration.
            .key(if self.archiving {
                keys.archived(log)
            } else {
                keys.trimmed(log)
            })
            .arg(self.limit)
            .arg(draft.prefix.as_ref())
            .arg(draft.suffix.as_ref())
            .arg(self.ttl_ms)
            .arg(if idempotency.is_some() { "1" } else { "0" })
            .arg(u64::try_from(IDEMPOTENCY_WINDOW.as_millis()).unwrap_or(u64::MAX))
            .arg(self.redis.publish_command())
            .arg(if matches!(log, Log::Direct(..)) {
                "1"
            } else {
                "0"
            })
            .arg(self.redis.store_deadline())
            .arg(if self.archiving {
                waiting_lifetime(self.ttl_ms).to_string()
            } else {
                String::new()
            })
            .arg(MAX_WAITING);
        // A room's channel shares the room's slot: published in the script.
        // A user's is in the user's slot: delivered after, through the inbox.
        for topic in topics.iter().filter(|t| matches!(t, Topic::Room(_))) {
            invocation.arg(keys.channel(topic));
        }
        let reply: Value = self.redis.invoke("append", &invocation).await?;
        let reply: Vec<Vec<u8>> =
            redis::from_redis_value(not_late(reply)?).map_err(|_| malformed("append reply"))?;
        if reply.first().is_some_and(|first| first == b"full") {
            return Err(ClusterError::Unavailable(Box::new(BacklogFull)));
        }
        let mut reply = reply.into_iter();
        let id = reply
            .next()
            .and_then(|id| MessageId::parse(std::str::from_utf8(&id).ok()?).ok())
            .ok_or_else(|| malformed("message id"))?;
        let previous = reply
            .next()
            .and_then(|previous| String::from_utf8(previous).ok())
            .ok_or_else(|| malformed("previous id"))?;
        let appended = match reply.next() {
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
        };
        // Both users' inboxes at once. The DM is stored: from here on the
        // send succeeded (an `unavailable` answer would say it was not), and
        // a delivery Redis does not take now is retried in the background;
        // past that, the pair's next DM delivers what a cursor lacks.
        let previous = (!appended.replayed).then_some(previous);
        let deliveries = topics.iter().filter_map(|topic| match topic {
            Topic::User(user) => Some(self.inboxes.clone().deliver_or_defer(
                log.clone(),
                user.clone(),
                appended.stored.clone(),
                previous.clone(),
            )),
            Topic::Room(_) => None,
        });
        futures_util::future::join_all(deliveries).await;
        Ok(appended)
    }

    async fn since(&self, log: &Log, since: MessageId, limit: usize) -> ClusterResult<Since> {
        // Redis refuses an exclusive range that starts after its last id.
        if since == MessageId::MAX {
            return Ok(Since {
                messages: Vec::new(),
                truncated: false,
                complete: true,
            });
        }
        let keys = self.redis.keys();
        let mut invocation = SINCE.prepare_invoke();
        invocation
            .key(keys.history(log))
            .key(keys.trimmed(log))
            .arg(since.to_string())
            .arg(limit);
        let (trimmed, oldest, found, more): (String, String, Value, i64) =
            self.redis.invoke("since", &invocation).await?;
        let trimmed = MessageId::parse(&trimmed).map_err(|_| malformed("trimmed id"))?;
        let mut messages = entries(found)?;
        messages.reverse();
        Ok(Since {
            messages,
            truncated: more == 1 || since < trimmed,
            complete: MessageId::parse(&oldest).is_ok_and(|oldest| oldest <= since),
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

    async fn delete(
        &self,
        log: &Log,
        id: MessageId,
        topics: &[Topic],
        event: Bytes,
    ) -> ClusterResult<Removal> {
        let keys = self.redis.keys();
        let publication = Publication {
            id: None,
            except: None,
            control: None,
            payload: event,
        };
        let mut invocation = DELETE.prepare_invoke();
        // Without an archive the mark and the deleted ids are never read:
        // a key of the log that always exists stands in (see append).
        let (mark, deleted) = if self.archiving {
            (keys.archived(log), keys.deleted(log))
        } else {
            (keys.trimmed(log), keys.trimmed(log))
        };
        invocation
            .key(keys.history(log))
            .key(mark)
            .key(deleted)
            .key(keys.trimmed(log))
            .arg(id.to_string())
            .arg(self.redis.publish_command())
            .arg(super::bus::envelope(&publication).as_ref())
            .arg(if self.archiving { "1" } else { "" })
            .arg(waiting_lifetime(self.ttl_ms))
            .arg(self.ttl_ms);
        for topic in topics.iter().filter(|t| matches!(t, Topic::Room(_))) {
            invocation.arg(keys.channel(topic));
        }
        let (removed, waiting): (i64, i64) = self.redis.invoke("delete", &invocation).await?;
        Ok(Removal {
            removed: removed == 1,
            waiting: waiting == 1,
        })
    }
}

#[async_trait]
impl Backlog for RedisHistory {
    async fn waiting(&self) -> ClusterResult<Vec<Log>> {
        let keys = self.redis.keys();
        let mut marks = self.redis.scan(&keys.archived_pattern()).await?;
        // A key met on two primaries while its slot migrates is swept once.
        marks.sort_unstable();
        marks.dedup();
        let mut waiting = Vec::new();
        // Every archived log has a mark; only those not "-" wait. Read in
        // bounded groups, each mark in its own slot.
        for group in marks.chunks(SWEEP_READS) {
            let values = futures_util::future::join_all(group.iter().map(|mark| async move {
                let mut get = redis::cmd("GET");
                get.arg(mark);
                self.redis.query::<Option<String>>(&get).await
            }))
            .await;
            for (mark, value) in group.iter().zip(values) {
                if value?.is_some_and(|v| v != "-")
                    && let Some(log) = keys.log_of_archived(mark)
                {
                    waiting.push(log);
                }
            }
        }
        Ok(waiting)
    }

    async fn unarchived(&self, log: &Log, limit: usize) -> ClusterResult<Vec<Stored>> {
        let keys = self.redis.keys();
        let mut invocation = BACKLOG.prepare_invoke();
        invocation
            .key(keys.history(log))
            .key(keys.archived(log))
            .arg(limit);
        let found: Value = self.redis.invoke("backlog", &invocation).await?;
        entries(found)
    }

    async fn archived(&self, log: &Log, upto: MessageId) -> ClusterResult<Marked> {
        let keys = self.redis.keys();
        let mut invocation = ARCHIVED.prepare_invoke();
        invocation
            .key(keys.history(log))
            .key(keys.trimmed(log))
            .key(keys.archived(log))
            .key(keys.deleted(log))
            .arg(upto.to_string())
            .arg(self.limit)
            .arg(self.ttl_ms);
        let (done, deleted): (i64, Vec<String>) =
            self.redis.invoke("archived", &invocation).await?;
        Ok(Marked {
            done: done == 1,
            deleted: deleted
                .iter()
                .filter_map(|id| MessageId::parse(id).ok())
                .collect(),
        })
    }

    async fn forget_deleted(&self, log: &Log, ids: &[MessageId]) -> ClusterResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut forget = redis::cmd("SREM");
        forget.arg(self.redis.keys().deleted(log));
        for id in ids {
            forget.arg(id.to_string());
        }
        let _: i64 = self.redis.query(&forget).await?;
        Ok(())
    }
}
