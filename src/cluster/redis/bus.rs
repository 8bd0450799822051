//! Pub/sub over one dedicated Redis connection per node.
//!
//! The node subscribes to a room's channel only while it has local members in
//! it, and to a user's channel only while that user is connected here. A
//! background loop owns the connection: it reconnects with backoff,
//! resubscribes every live channel, and gap-fills each subscribed room from
//! its history stream after the newest id this node delivered, so a dropped
//! subscription loses nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use redis::aio::PubSubSink;
use tokio_util::sync::CancellationToken;

use super::history::entries;
use super::{COMMAND_TIMEOUT, Redis, unavailable};
use crate::cluster::{Bus, ClusterError, ClusterResult, Deliver, Log, Publication, Topic};
use crate::domain::{MessageId, RoomName, UserName};
use crate::telemetry;

/// First wait before reconnecting the subscriber; doubles up to the maximum.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between reconnect attempts: bounds how long delivery stays
/// down after Redis returns.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often the subscriber connection is pinged: a Redis that stops
/// answering without closing the socket is noticed within this plus the
/// command timeout.
const PING_INTERVAL: Duration = Duration::from_secs(2);

/// The bus of one node of a cluster. Cloning shares it.
#[derive(Clone)]
pub struct RedisBus {
    inner: Arc<Inner>,
}

struct Inner {
    redis: Redis,
    deliver: Arc<dyn Deliver>,
    /// Channel interest and the live subscriber; a tokio lock because
    /// subscribing waits for Redis to confirm, and joins must wait for that.
    subscriptions: tokio::sync::Mutex<Subscriptions>,
    /// Per subscribed room, the newest message id handed to the hub: drops
    /// the overlap of a gap-fill with the live stream, and says where the
    /// next gap-fill starts.
    newest: Mutex<HashMap<RoomName, MessageId>>,
}

#[derive(Default)]
struct Subscriptions {
    counts: HashMap<Topic, usize>,
    /// `None` while the subscriber connection is down.
    sink: Option<PubSubSink>,
}

#[derive(Debug, thiserror::Error)]
#[error("the subscriber connection to redis is down")]
struct SubscriberDown;

/// `<id>\n<except>\n<payload>`: the only framing on the channels, read
/// without decoding the payload. `append.lua` writes the same shape.
fn envelope(publication: &Publication) -> Bytes {
    let id = publication.id.map(|id| id.to_string()).unwrap_or_default();
    let except = publication.except.as_ref().map_or("", UserName::as_str);
    let mut out = BytesMut::with_capacity(id.len() + except.len() + 2 + publication.payload.len());
    out.put_slice(id.as_bytes());
    out.put_u8(b'\n');
    out.put_slice(except.as_bytes());
    out.put_u8(b'\n');
    out.put_slice(&publication.payload);
    out.freeze()
}

fn open_envelope(raw: Bytes) -> Option<Publication> {
    let first = raw.iter().position(|&b| b == b'\n')?;
    let second = first + 1 + raw[first + 1..].iter().position(|&b| b == b'\n')?;
    let id = std::str::from_utf8(&raw[..first]).ok()?;
    let except = std::str::from_utf8(&raw[first + 1..second]).ok()?;
    Some(Publication {
        id: if id.is_empty() {
            None
        } else {
            Some(MessageId::parse(id).ok()?)
        },
        except: if except.is_empty() {
            None
        } else {
            Some(UserName::parse(except).ok()?)
        },
        payload: raw.slice(second + 1..),
    })
}

impl RedisBus {
    pub(super) fn new(redis: Redis, deliver: Arc<dyn Deliver>) -> Self {
        Self {
            inner: Arc::new(Inner {
                redis,
                deliver,
                subscriptions: tokio::sync::Mutex::default(),
                newest: Mutex::default(),
            }),
        }
    }

    fn newest(&self) -> std::sync::MutexGuard<'_, HashMap<RoomName, MessageId>> {
        self.inner
            .newest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands a publication to the hub unless it is a room message this node
    /// already delivered.
    fn dispatch(&self, topic: &Topic, publication: Publication) {
        if let (Topic::Room(room), Some(id)) = (topic, publication.id) {
            let mut newest = self.newest();
            match newest.get_mut(room) {
                Some(seen) if id <= *seen => return,
                Some(seen) => *seen = id,
                // Not subscribed (any more): nobody here listens.
                None => return,
            }
        }
        self.inner.deliver.deliver(topic, publication);
    }

    /// The newest id in a room's history now: where a later gap-fill starts.
    async fn stream_tip(&self, room: &RoomName) -> ClusterResult<MessageId> {
        let redis = &self.inner.redis;
        let found = redis
            .query(
                redis::cmd("XREVRANGE")
                    .arg(redis.keys().history(&Log::Room(room.clone())))
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1),
            )
            .await?;
        Ok(entries(found)?.first().map_or(MessageId::MIN, |m| m.id))
    }

    /// Owns the subscriber connection until `stop`: connect, resubscribe,
    /// gap-fill, deliver; on failure wait and start again.
    pub(super) async fn run(self, client: redis::Client, stop: CancellationToken) {
        let mut backoff = MIN_BACKOFF;
        let mut first = true;
        loop {
            let served = tokio::select! {
                () = stop.cancelled() => return,
                served = self.serve(&client, first) => served,
            };
            first = false;
            self.inner.subscriptions.lock().await.sink = None;
            if served {
                backoff = MIN_BACKOFF;
            }
            metrics::counter!(telemetry::PUBSUB_RECONNECTS).increment(1);
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One life of the subscriber connection. Returns true if it got as far
    /// as delivering (so the next attempt starts with a short backoff).
    async fn serve(&self, client: &redis::Client, first: bool) -> bool {
        let pubsub = match tokio::time::timeout(COMMAND_TIMEOUT, client.get_async_pubsub()).await {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(error)) => {
                tracing::warn!(%error, "redis subscriber cannot connect");
                return false;
            }
            Err(_) => {
                tracing::warn!("redis subscriber connect timed out");
                return false;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        {
            let mut subscriptions = self.inner.subscriptions.lock().await;
            let keys = self.inner.redis.keys();
            let channels: Vec<String> = subscriptions
                .counts
                .keys()
                .map(|t| keys.channel(t))
                .collect();
            if !channels.is_empty() {
                match tokio::time::timeout(COMMAND_TIMEOUT, sink.subscribe(&channels)).await {
                    Ok(Ok(())) => {}
                    _ => {
                        tracing::warn!("redis subscriber could not resubscribe");
                        return false;
                    }
                }
            }
            subscriptions.sink = Some(sink.clone());
        }
        if !first {
            tracing::info!("redis subscriber reconnected");
        }
        self.gap_fill().await;
        let mut ping = tokio::time::interval(PING_INTERVAL);
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else {
                        tracing::warn!("redis subscriber connection closed");
                        return true;
                    };
                    self.on_message(&message);
                }
                _ = ping.tick() => {
                    // Any reply will do: a subscribed RESP2 connection answers
                    // PING with the array ["pong", ""], not "PONG".
                    let answered =
                        tokio::time::timeout(COMMAND_TIMEOUT, sink.ping::<redis::Value>()).await;
                    if !matches!(answered, Ok(Ok(_))) {
                        tracing::warn!("redis subscriber stopped answering");
                        return true;
                    }
                }
            }
        }
    }

    fn on_message(&self, message: &redis::Msg) {
        let keys = self.inner.redis.keys();
        let Some(topic) = keys.topic(message.get_channel_name()) else {
            return;
        };
        let Some(publication) = open_envelope(Bytes::copy_from_slice(message.get_payload_bytes()))
        else {
            tracing::warn!(
                channel = message.get_channel_name(),
                "ignoring a malformed publication"
            );
            return;
        };
        self.dispatch(&topic, publication);
    }

    /// Delivers every message each subscribed room received after the newest
    /// one this node delivered: those published while the subscriber was down.
    async fn gap_fill(&self) {
        let rooms: Vec<(RoomName, MessageId)> = self
            .newest()
            .iter()
            .map(|(r, id)| (r.clone(), *id))
            .collect();
        let redis = &self.inner.redis;
        for (room, after) in rooms {
            let found = redis
                .query(
                    redis::cmd("XRANGE")
                        .arg(redis.keys().history(&Log::Room(room.clone())))
                        .arg(format!("({after}"))
                        .arg("+"),
                )
                .await
                .and_then(entries);
            let missed = match found {
                Ok(missed) => missed,
                Err(error) => {
                    tracing::warn!(%error, room = %room, "gap-fill failed");
                    continue;
                }
            };
            metrics::counter!(telemetry::GAP_FILL_MESSAGES).increment(missed.len() as u64);
            let topic = Topic::Room(room);
            for message in missed {
                self.dispatch(
                    &topic,
                    Publication {
                        id: Some(message.id),
                        except: None,
                        payload: message.payload,
                    },
                );
            }
        }
    }
}

#[async_trait]
impl Bus for RedisBus {
    async fn publish(&self, topic: &Topic, publication: Publication) -> ClusterResult<()> {
        let redis = &self.inner.redis;
        let _: i64 = redis
            .query(
                redis::cmd("PUBLISH")
                    .arg(redis.keys().channel(topic))
                    .arg(envelope(&publication).as_ref()),
            )
            .await?;
        Ok(())
    }

    async fn subscribe(&self, topic: &Topic) -> ClusterResult<()> {
        let mut subscriptions = self.inner.subscriptions.lock().await;
        if let Some(count) = subscriptions.counts.get_mut(topic) {
            *count += 1;
            return Ok(());
        }
        let Some(mut sink) = subscriptions.sink.clone() else {
            return Err(unavailable(SubscriberDown));
        };
        if let Topic::Room(room) = topic {
            // Read before subscribing: nothing that arrives live can be
            // older, so the overlap check never drops a live message.
            let tip = self.stream_tip(room).await?;
            self.newest().insert(room.clone(), tip);
        }
        let channel = self.inner.redis.keys().channel(topic);
        let confirmed = tokio::time::timeout(COMMAND_TIMEOUT, sink.subscribe(&channel)).await;
        if !matches!(confirmed, Ok(Ok(()))) {
            if let Topic::Room(room) = topic {
                self.newest().remove(room);
            }
            return Err(unavailable(SubscriberDown));
        }
        subscriptions.counts.insert(topic.clone(), 1);
        metrics::gauge!(telemetry::SUBSCRIBED_CHANNELS).increment(1);
        Ok(())
    }

    async fn unsubscribe(&self, topic: &Topic) {
        let mut subscriptions = self.inner.subscriptions.lock().await;
        let Some(count) = subscriptions.counts.get_mut(topic) else {
            return;
        };
        *count -= 1;
        if *count > 0 {
            return;
        }
        subscriptions.counts.remove(topic);
        metrics::gauge!(telemetry::SUBSCRIBED_CHANNELS).decrement(1);
        if let Topic::Room(room) = topic {
            self.newest().remove(room);
        }
        if let Some(mut sink) = subscriptions.sink.clone() {
            let channel = self.inner.redis.keys().channel(topic);
            // A failure here only leaves extra traffic until the next
            // reconnect, which subscribes to live channels alone.
            let _ = tokio::time::timeout(COMMAND_TIMEOUT, sink.unsubscribe(&channel)).await;
        }
    }

    async fn ping(&self) -> ClusterResult<()> {
        if self.inner.subscriptions.lock().await.sink.is_none() {
            return Err(ClusterError::Unavailable(Box::new(SubscriberDown)));
        }
        let _: String = self.inner.redis.query(&redis::cmd("PING")).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_without_touching_the_payload() {
        let publication = Publication {
            id: Some(MessageId::new(5, 1)),
            except: Some(UserName::parse("bob").unwrap()),
            payload: Bytes::from_static(b"{\"a\":\"x\\ny\"}\n"),
        };
        let opened = open_envelope(envelope(&publication)).unwrap();
        assert_eq!(opened.id, publication.id);
        assert_eq!(opened.except, publication.except);
        assert_eq!(opened.payload, publication.payload);

        let bare = open_envelope(Bytes::from_static(b"\n\n{}")).unwrap();
        assert_eq!(
            (bare.id, bare.except, bare.payload.as_ref()),
            (None, None, &b"{}"[..])
        );
        assert!(open_envelope(Bytes::from_static(b"no newline")).is_none());
        assert!(open_envelope(Bytes::from_static(b"garbage\n\n{}")).is_none());
    }
}
