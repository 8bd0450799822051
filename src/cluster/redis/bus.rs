//! Pub/sub over connections of its own: one to the one Redis, or one per
//! primary of a Redis Cluster ([`super::shards`]).
//!
//! The node subscribes to a room's channel only while it has local members in
//! it, and to a user's channel only while that user is connected here. A
//! background loop owns the connection: it reconnects with backoff,
//! resubscribes every live channel, and gap-fills each from its stream (a
//! room's history, a user's DM inbox) after the newest id this node
//! delivered there, so a dropped subscription loses nothing. No lock
//! is held across a round trip: concurrent joins subscribe independently.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::future::try_join_all;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::history::topic_entries;
use super::shards::{ShardEvent, ShardEvents, ShardedSubscriber};
use super::{COMMAND_TIMEOUT, Redis, RedisTarget, unavailable};
use crate::cluster::{Bus, ClusterError, ClusterResult, Control, Deliver, Publication, Topic};
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
/// How long a subscribe may wait, its own round trips and another caller's
/// subscription of the same channel included.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(4);
/// How long the gap fill after a reconnect may keep retrying before the
/// connection is dropped and the whole cycle starts again; live
/// publications wait (in the connection's buffer) until the fill is done, so
/// none overtakes a missed one.
const FILL_TIMEOUT: Duration = Duration::from_secs(10);
/// Gap-fill reads in flight at once.
const FILL_CONCURRENCY: usize = 64;
/// Channels resubscribed per second, at the least, when a new subscriber
/// connection resubscribes them all: its bound grows with their number.
const RESUBSCRIBE_RATE: u32 = 20_000;
/// Pause between gap-fill attempts of a channel whose read failed.
const FILL_RETRY: Duration = Duration::from_millis(200);

/// The bus of one node of a cluster. Cloning shares it.
#[derive(Clone)]
pub struct RedisBus {
    inner: Arc<Inner>,
}

struct Inner {
    redis: Redis,
    deliver: Arc<dyn Deliver>,
    /// Channel interest and the live subscriber. A std lock, never held
    /// across a round trip to Redis: subscribing waits for Redis without it.
    state: Mutex<State>,
    /// Woken whenever a channel's subscription settles or the subscriber
    /// connection comes or goes.
    changed: Notify,
}

#[derive(Default)]
struct State {
    channels: HashMap<Topic, Channel>,
    /// `None` while the subscriber connection is down.
    sink: Option<Sink>,
    /// Counts subscriber connections, so a subscription confirmed on one
    /// that has since been replaced is not taken for a live one.
    generation: u64,
}

/// One channel this node wants or has.
#[derive(Default)]
struct Channel {
    /// Subscribe calls not yet matched by an unsubscribe.
    interest: usize,
    /// Redis confirmed the subscription on the current connection.
    subscribed: bool,
    /// Someone is sending SUBSCRIBE or UNSUBSCRIBE for it now; others wait.
    busy: bool,
    /// The newest stored id delivered: drops the overlap of a gap fill with
    /// the live stream, and says where the next gap fill starts. Set before
    /// the first SUBSCRIBE is sent.
    position: Option<MessageId>,
}

/// Held while a task drives a channel's subscription: on drop (done,
/// failed, or cancelled) the channel is no longer busy, is forgotten if
/// nobody wants it and Redis has it not, and waiters look again.
struct Driving<'a> {
    bus: &'a RedisBus,
    topic: &'a Topic,
    /// The channel was released already, when it settled.
    settled: bool,
}

impl Drop for Driving<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        {
            let mut state = self.bus.state();
            if let Some(c) = state.channels.get_mut(self.topic) {
                c.busy = false;
                if c.interest == 0 && !c.subscribed {
                    state.channels.remove(self.topic);
                    metrics::gauge!(telemetry::SUBSCRIBED_CHANNELS).decrement(1);
                }
            }
        }
        self.bus.inner.changed.notify_waiters();
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the subscriber connection to redis is down")]
struct SubscriberDown;

#[derive(Debug, thiserror::Error)]
#[error("redis did not confirm the subscription in time")]
struct SubscribeTimedOut;

/// How a node subscribes: one connection to the one Redis, or (Redis
/// Cluster) the sharded subscriber, one connection per primary.
enum Connector {
    Plain(redis::Client),
    Sharded(Vec<String>),
}

/// The command side of one life of the subscriber. Cloning shares it.
#[derive(Clone)]
enum Sink {
    Plain(PubSubSink),
    Sharded(ShardedSubscriber),
}

/// The publications of one life of the subscriber.
enum Incoming {
    Plain(PubSubStream),
    Sharded(ShardEvents),
}

impl Connector {
    fn new(target: RedisTarget) -> redis::RedisResult<Self> {
        Ok(match target {
            RedisTarget::Single(url) => Self::Plain(redis::Client::open(url)?),
            RedisTarget::Cluster(seeds) => Self::Sharded(seeds),
        })
    }

    async fn connect(&self) -> redis::RedisResult<(Sink, Incoming)> {
        match self {
            Self::Plain(client) => {
                let pubsub = tokio::time::timeout(COMMAND_TIMEOUT, client.get_async_pubsub())
                    .await
                    .map_err(|_| {
                        redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))
                    })??;
                let (sink, stream) = pubsub.split();
                Ok((Sink::Plain(sink), Incoming::Plain(stream)))
            }
            Self::Sharded(seeds) => {
                let (subscriber, events) =
                    ShardedSubscriber::connect(seeds, COMMAND_TIMEOUT).await?;
                Ok((Sink::Sharded(subscriber), Incoming::Sharded(events)))
            }
        }
    }
}

impl Sink {
    /// Subscribes every channel of `channels` (one command per channel on a
    /// cluster: each goes to its slot's primary).
    async fn subscribe(&mut self, channels: &[String]) -> redis::RedisResult<()> {
        match self {
            Self::Plain(sink) => sink.subscribe(channels).await,
            Self::Sharded(subscriber) => {
                try_join_all(channels.iter().map(|c| subscriber.subscribe(c))).await?;
                Ok(())
            }
        }
    }

    async fn unsubscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            Self::Plain(sink) => sink.unsubscribe(channel).await,
            Self::Sharded(subscriber) => subscriber.unsubscribe(channel).await,
        }
    }

    async fn ping(&mut self) -> redis::RedisResult<()> {
        match self {
            // Any reply will do: a subscribed RESP2 connection answers PING
            // with the array ["pong", ""], not "PONG".
            Self::Plain(sink) => sink.ping::<redis::Value>().await.map(drop),
            Self::Sharded(subscriber) => subscriber.ping().await,
        }
    }
}

impl Incoming {
    /// The next publication's channel and payload; `None` once this life of
    /// the subscriber is over.
    async fn next(&mut self) -> Option<(String, Bytes)> {
        match self {
            Self::Plain(stream) => stream.next().await.map(|message| {
                (
                    message.get_channel_name().to_owned(),
                    Bytes::copy_from_slice(message.get_payload_bytes()),
                )
            }),
            Self::Sharded(events) => match events.next().await? {
                ShardEvent::Message { channel, payload } => Some((channel, payload)),
                ShardEvent::Lost(why) => {
                    tracing::warn!(%why, "sharded subscriber lost");
                    None
                }
            },
        }
    }
}

/// `<position>\n<id>\n<except>\n<payload>`: the only framing on the
/// channels, read without decoding the payload. `position` is the entry's id
/// in the channel's stream (a room's history, a user's inbox), `id` the
/// message's, left empty when the same; an ephemeral publication has
/// neither. `append.lua` and `inbox.lua` write the same shape. A control
/// publication (never stored, never excepting anyone) puts its [`Control`]
/// on the `except` line behind a `!`, which no user name holds.
pub(super) fn envelope(publication: &Publication) -> Bytes {
    let id = publication.id.map(|id| id.to_string()).unwrap_or_default();
    let control = match &publication.control {
        None => None,
        Some(Control::Disconnect) => Some("!disconnect".to_owned()),
        Some(Control::Leave(room)) => Some(format!("!leave:{room}")),
    };
    let except = match &control {
        Some(control) => control.as_str(),
        None => publication.except.as_ref().map_or("", UserName::as_str),
    };
    let mut out = BytesMut::with_capacity(id.len() + except.len() + 3 + publication.payload.len());
    out.put_slice(id.as_bytes());
    out.put_slice(b"\n\n");
    out.put_slice(except.as_bytes());
    out.put_u8(b'\n');
    out.put_slice(&publication.payload);
    out.freeze()
}

/// The publication and its position in its channel's stream.
fn open_envelope(raw: Bytes) -> Option<(Option<MessageId>, Publication)> {
    let mut lines = raw.splitn(4, |&b| b == b'\n');
    let position = std::str::from_utf8(lines.next()?).ok()?;
    let id = std::str::from_utf8(lines.next()?).ok()?;
    let except = std::str::from_utf8(lines.next()?).ok()?;
    lines.next()?;
    let header = position.len() + id.len() + except.len() + 3;
    let parse = |id: &str| {
        if id.is_empty() {
            Some(None)
        } else {
            MessageId::parse(id).ok().map(Some)
        }
    };
    let position = parse(position)?;
    let (except, control) = match except.strip_prefix('!') {
        None if except.is_empty() => (None, None),
        None => (Some(UserName::parse(except).ok()?), None),
        Some("disconnect") => (None, Some(Control::Disconnect)),
        Some(other) => {
            let room = RoomName::parse(other.strip_prefix("leave:")?).ok()?;
            (None, Some(Control::Leave(room)))
        }
    };
    let publication = Publication {
        id: if id.is_empty() { position } else { parse(id)? },
        except,
        control,
        payload: raw.slice(header..),
    };
    Some((position, publication))
}

impl RedisBus {
    pub(super) fn new(redis: Redis, deliver: Arc<dyn Deliver>) -> Self {
        Self {
            inner: Arc::new(Inner {
                redis,
                deliver,
                state: Mutex::default(),
                changed: Notify::new(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands a publication to the hub unless it is a stored message this
    /// node already delivered (or one from before the channel's start).
    fn dispatch(&self, topic: &Topic, position: Option<MessageId>, publication: Publication) {
        if let Some(id) = position {
            let mut state = self.state();
            let Some(seen) = state
                .channels
                .get_mut(topic)
                .and_then(|c| c.position.as_mut())
            else {
                // Not subscribed (any more): nobody here listens.
                return;
            };
            if id <= *seen {
                return;
            }
            *seen = id;
        }
        self.inner.deliver.deliver(topic, publication);
    }

    /// Where a new subscription of `topic` starts: the newest id of its
    /// stream, read before subscribing so nothing live can be older.
    async fn start_position(&self, topic: &Topic) -> ClusterResult<MessageId> {
        let redis = &self.inner.redis;
        let found = redis
            .query(
                redis::cmd("XREVRANGE")
                    .arg(redis.keys().stream(topic))
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1),
            )
            .await?;
        Ok(topic_entries(topic, found)?
            .first()
            .map_or(MessageId::MIN, |(position, _)| *position))
    }

    /// Sends SUBSCRIBE or UNSUBSCRIBE for `topic` until Redis matches the
    /// interest in it. The caller set the channel busy; this clears it.
    async fn drive(&self, topic: &Topic) -> ClusterResult<()> {
        let channel = self.inner.redis.keys().channel(topic);
        // Clears `busy` on every other way out, a cancelled caller's included.
        let mut driving = Driving {
            bus: self,
            topic,
            settled: false,
        };
        loop {
            let (want, positioned, sink, generation) = {
                let mut state = self.state();
                let sink = state.sink.clone();
                let generation = state.generation;
                let Some(c) = state.channels.get_mut(topic) else {
                    return Ok(());
                };
                let want = c.interest > 0;
                if want == c.subscribed {
                    // Settled: decided and released in one critical section,
                    // so an unsubscribe that saw `busy` cannot be missed.
                    c.busy = false;
                    if !want {
                        state.channels.remove(topic);
                        metrics::gauge!(telemetry::SUBSCRIBED_CHANNELS).decrement(1);
                    }
                    driving.settled = true;
                    drop(state);
                    self.inner.changed.notify_waiters();
                    return Ok(());
                }
                (want, c.position.is_some(), sink, generation)
            };
            let Some(mut sink) = sink else {
                return Err(unavailable(SubscriberDown));
            };
            if !want {
                // A failure only leaves extra traffic until the next
                // reconnect, which subscribes to wanted channels alone.
                let _ = tokio::time::timeout(COMMAND_TIMEOUT, sink.unsubscribe(&channel)).await;
                if let Some(c) = self.state().channels.get_mut(topic) {
                    c.subscribed = false;
                }
                continue;
            }
            if !positioned {
                let position = self.start_position(topic).await?;
                if let Some(c) = self.state().channels.get_mut(topic) {
                    c.position.get_or_insert(position);
                }
            }
            let confirmed = tokio::time::timeout(
                COMMAND_TIMEOUT,
                sink.subscribe(std::slice::from_ref(&channel)),
            )
            .await;
            if !matches!(confirmed, Ok(Ok(()))) {
                return Err(unavailable(SubscriberDown));
            }
            let mut state = self.state();
            // Confirmed on a connection since replaced: go round again.
            if state.generation == generation
                && let Some(c) = state.channels.get_mut(topic)
            {
                c.subscribed = true;
            }
        }
    }

    /// Waits until `topic` is subscribed, driving the subscription when
    /// nobody else is.
    async fn settle(&self, topic: &Topic, deadline: Instant) -> ClusterResult<()> {
        loop {
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let drive = {
                let mut state = self.state();
                if state.sink.is_none() {
                    return Err(unavailable(SubscriberDown));
                }
                let Some(c) = state.channels.get_mut(topic) else {
                    return Err(unavailable(SubscriberDown));
                };
                if c.subscribed {
                    return Ok(());
                }
                // Drive it unless someone else already does.
                !std::mem::replace(&mut c.busy, true)
            };
            if drive {
                tokio::time::timeout_at(deadline, self.drive(topic))
                    .await
                    .unwrap_or_else(|_| Err(unavailable(SubscribeTimedOut)))?;
                continue;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(unavailable(SubscribeTimedOut));
            }
        }
    }

    /// Drops one count of interest in `topic`, unsubscribing after the last.
    async fn lose_interest(&self, topic: &Topic) {
        let drive = {
            let mut state = self.state();
            let Some(c) = state.channels.get_mut(topic) else {
                return;
            };
            c.interest = c.interest.saturating_sub(1);
            if c.interest > 0 || c.busy {
                false
            } else if c.subscribed {
                c.busy = true;
                true
            } else {
                state.channels.remove(topic);
                metrics::gauge!(telemetry::SUBSCRIBED_CHANNELS).decrement(1);
                false
            }
        };
        if drive {
            let _ = self.drive(topic).await;
        }
    }

    /// Owns the subscriber connection until `stop`: connect, resubscribe,
    /// gap-fill, deliver; on failure wait and start again.
    pub(super) async fn run(self, target: RedisTarget, stop: CancellationToken) {
        let connector = match Connector::new(target) {
            Ok(connector) => connector,
            Err(error) => {
                tracing::error!(%error, "redis subscriber cannot start");
                return;
            }
        };
        let mut backoff = MIN_BACKOFF;
        let mut first = true;
        loop {
            let served = tokio::select! {
                () = stop.cancelled() => return,
                served = self.serve(&connector, first) => served,
            };
            first = false;
            self.inner.redis.topology_changed();
            {
                let mut state = self.state();
                state.sink = None;
                for c in state.channels.values_mut() {
                    c.subscribed = false;
                }
            }
            self.inner.changed.notify_waiters();
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
    /// as resubscribing (so the next attempt starts with a short backoff).
    async fn serve(&self, connector: &Connector, first: bool) -> bool {
        let (mut sink, mut stream) = match connector.connect().await {
            Ok(connected) => connected,
            Err(error) => {
                tracing::warn!(%error, "redis subscriber cannot connect");
                return false;
            }
        };
        let wanted: Vec<Topic> = self
            .state()
            .channels
            .iter()
            // A channel without a position yet is being subscribed by its
            // driver, which reads the position first: subscribed here, its
            // messages before the position is set would be dropped.
            .filter(|(_, c)| c.interest > 0 && c.position.is_some())
            .map(|(t, _)| t.clone())
            .collect();
        if !wanted.is_empty() {
            let keys = self.inner.redis.keys();
            let channels: Vec<String> = wanted.iter().map(|t| keys.channel(t)).collect();
            if !matches!(
                tokio::time::timeout(
                    COMMAND_TIMEOUT
                        + Duration::from_secs(1)
                            * (u32::try_from(channels.len()).unwrap_or(u32::MAX)
                                / RESUBSCRIBE_RATE),
                    sink.subscribe(&channels)
                )
                .await,
                Ok(Ok(()))
            ) {
                tracing::warn!("redis subscriber could not resubscribe");
                return false;
            }
        }
        {
            let mut state = self.state();
            state.generation += 1;
            state.sink = Some(sink.clone());
            for topic in &wanted {
                if let Some(c) = state.channels.get_mut(topic) {
                    c.subscribed = true;
                }
            }
        }
        self.inner.changed.notify_waiters();
        if !first {
            tracing::info!("redis subscriber reconnected");
        }
        // Channels nobody wants any more since the list was taken.
        for topic in wanted {
            let idle = self
                .state()
                .channels
                .get_mut(&topic)
                .is_some_and(|c| c.interest == 0 && !std::mem::replace(&mut c.busy, true));
            if idle {
                let _ = self.drive(&topic).await;
            }
        }
        if !self.gap_fill().await {
            tracing::warn!("gap fill did not complete; reconnecting to try again");
            return true;
        }
        let mut ping = tokio::time::interval(PING_INTERVAL);
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some((channel, payload)) = message else {
                        tracing::warn!("redis subscriber connection closed");
                        return true;
                    };
                    self.on_message(&channel, payload);
                }
                _ = ping.tick() => {
                    let answered = tokio::time::timeout(COMMAND_TIMEOUT, sink.ping()).await;
                    if !matches!(answered, Ok(Ok(_))) {
                        tracing::warn!("redis subscriber stopped answering");
                        return true;
                    }
                }
            }
        }
    }

    fn on_message(&self, channel: &str, payload: Bytes) {
        let keys = self.inner.redis.keys();
        let Some(topic) = keys.topic(channel) else {
            return;
        };
        let Some((position, publication)) = open_envelope(payload) else {
            tracing::warn!(channel, "ignoring a malformed publication");
            return;
        };
        self.dispatch(&topic, position, publication);
    }

    /// Delivers every stored message published on a subscribed channel
    /// after the newest one this node delivered there: those published while
    /// the subscriber was down, rooms and DMs alike. A channel whose read
    /// fails is retried; returns false if some could not be filled in time.
    async fn gap_fill(&self) -> bool {
        let deadline = Instant::now() + FILL_TIMEOUT;
        let mut pending: Vec<Topic> = self
            .state()
            .channels
            .iter()
            .filter(|(_, c)| c.position.is_some())
            .map(|(t, _)| t.clone())
            .collect();
        loop {
            // Channels fill independently (live delivery waits for all of
            // them), so many at once: a node with thousands of channels
            // would not finish one read at a time.
            let results: Vec<(Topic, ClusterResult<()>)> = futures_util::stream::iter(pending)
                .map(|topic| async move {
                    let filled = self.fill(&topic).await;
                    (topic, filled)
                })
                .buffer_unordered(FILL_CONCURRENCY)
                .collect()
                .await;
            let mut failed = Vec::new();
            for (topic, filled) in results {
                if let Err(error) = filled {
                    tracing::warn!(%error, ?topic, "gap fill failed; retrying");
                    failed.push(topic);
                }
            }
            if failed.is_empty() {
                return true;
            }
            if Instant::now() + FILL_RETRY >= deadline {
                return false;
            }
            tokio::time::sleep(FILL_RETRY).await;
            pending = failed;
        }
    }

    /// Gap-fills one channel from its stream.
    async fn fill(&self, topic: &Topic) -> ClusterResult<()> {
        let redis = &self.inner.redis;
        let after = self.state().channels.get(topic).and_then(|c| c.position);
        let Some(after) = after.filter(|after| *after != MessageId::MAX) else {
            return Ok(());
        };
        let found = redis
            .query(
                redis::cmd("XRANGE")
                    .arg(redis.keys().stream(topic))
                    .arg(format!("({after}"))
                    .arg("+"),
            )
            .await
            .and_then(|found| topic_entries(topic, found))?;
        metrics::counter!(telemetry::GAP_FILL_MESSAGES).increment(found.len() as u64);
        for (position, message) in found {
            self.dispatch(
                topic,
                Some(position),
                Publication {
                    id: Some(message.id),
                    except: None,
                    control: None,
                    payload: message.payload,
                },
            );
        }
        Ok(())
    }
}

#[async_trait]
impl Bus for RedisBus {
    async fn publish(&self, topic: &Topic, publication: Publication) -> ClusterResult<()> {
        let redis = &self.inner.redis;
        let _: i64 = redis
            .query(
                redis::cmd(redis.publish_command())
                    .arg(redis.keys().channel(topic))
                    .arg(envelope(&publication).as_ref()),
            )
            .await?;
        Ok(())
    }

    async fn subscribe(&self, topic: &Topic) -> ClusterResult<()> {
        {
            let mut state = self.state();
            if state.sink.is_none() {
                return Err(unavailable(SubscriberDown));
            }
            let c = state.channels.entry(topic.clone()).or_insert_with(|| {
                metrics::gauge!(telemetry::SUBSCRIBED_CHANNELS).increment(1);
                Channel::default()
            });
            c.interest += 1;
        }
        let settled = self.settle(topic, Instant::now() + SUBSCRIBE_TIMEOUT).await;
        if settled.is_err() {
            self.lose_interest(topic).await;
        }
        settled
    }

    async fn unsubscribe(&self, topic: &Topic) {
        self.lose_interest(topic).await;
    }

    async fn ping(&self) -> ClusterResult<()> {
        if self.state().sink.is_none() {
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
            control: None,
            payload: Bytes::from_static(b"{\"a\":\"x\\ny\"}\n"),
        };
        let (position, opened) = open_envelope(envelope(&publication)).unwrap();
        assert_eq!(position, publication.id);
        assert_eq!(opened.id, publication.id);
        assert_eq!(opened.except, publication.except);
        assert_eq!(opened.payload, publication.payload);

        let (position, dm) = open_envelope(Bytes::from_static(b"7-0\n1-0\n\n{\"a\":1}")).unwrap();
        assert_eq!(
            (position, dm.id),
            (Some(MessageId::new(7, 0)), Some(MessageId::new(1, 0)))
        );
        assert_eq!(dm.payload.as_ref(), b"{\"a\":1}");

        let (position, bare) = open_envelope(Bytes::from_static(b"\n\n\n{}")).unwrap();
        assert_eq!(
            (position, bare.id, bare.except, bare.payload.as_ref()),
            (None, None, None, &b"{}"[..])
        );
        for control in [
            Control::Disconnect,
            Control::Leave(RoomName::parse("lobby").unwrap()),
        ] {
            let publication = Publication {
                id: None,
                except: None,
                control: Some(control.clone()),
                payload: Bytes::new(),
            };
            let (_, opened) = open_envelope(envelope(&publication)).unwrap();
            assert_eq!((opened.control, opened.except), (Some(control), None));
        }
        assert!(open_envelope(Bytes::from_static(b"\n\n!what\n")).is_none());
        assert!(open_envelope(Bytes::from_static(b"no newline")).is_none());
        assert!(open_envelope(Bytes::from_static(b"garbage\n\n\n{}")).is_none());
    }
}
