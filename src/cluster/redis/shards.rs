//! Sharded pub/sub on a Redis Cluster: one life of the subscriber.
//!
//! A [`ShardedSubscriber`] holds one RESP3 connection to each primary the
//! cluster announced when it connected, and sends every `SSUBSCRIBE` and
//! `SUNSUBSCRIBE` (one channel per command) to the primary owning the
//! channel's slot. It never follows the cluster: any trouble ends the life
//! (a [`ShardEvent::Lost`] on its [`ShardEvents`], all its connections
//! dropped), and its owner builds a new one on a fresh topology,
//! resubscribes, and gap-fills from the streams. So a subscription never
//! silently lapses: while the life lasts, every channel it confirmed is live
//! at its owner.
//!
//! The `redis` crate's cluster pub/sub is not used: in 1.8.1 it resubscribes
//! a node's shard channels in one multi-slot `SSUBSCRIBE`, which the server
//! refuses with CROSSSLOT (unchecked), and it forgets a channel the server
//! unsubscribed when its slot migrated.
//!
//! # Reading the connections' pushes
//!
//! Each connection hands every push to [`Life::on_push`], synchronously, on
//! the connection's own task: `smessage` becomes an event, a `Disconnection`
//! (sent by the crate when the socket closes) ends the life, and so does an
//! unsolicited `sunsubscribe`, which the server sends to every subscriber of
//! a slot when the slot moves to another primary.
//!
//! What is unsolicited is told by the channels we hold (`State::subscribed`):
//! a channel enters it with its `ssubscribe` confirmation, seen here before
//! [`ShardedSubscriber::subscribe`] returns, and leaves it when
//! [`ShardedSubscriber::unsubscribe`] starts, before its SUNSUBSCRIBE is
//! sent. A `sunsubscribe` of a channel we hold is the server's own; one of a
//! channel we do not hold (our unsubscribe's confirmation) is not a loss.
//! Rather than counting the unsubscribes in flight, this stays right when a
//! caller gives up midway: a count left behind by a cancelled unsubscribe,
//! whose command may never have been sent, would later pass the server's
//! `sunsubscribe` of a resubscribed channel for ours, and lose it silently.
//!
//! The crate's multiplexed connection takes every subscription push
//! (`PushKind::has_reply`: ssubscribe, sunsubscribe, …) as the reply of the
//! oldest request in flight on the connection, as well as handing it to the
//! push handler. An unsolicited `sunsubscribe` therefore becomes the reply
//! of whatever was in flight (a PING, an SSUBSCRIBE of another channel), and
//! every later reply on that connection is attributed one request too
//! early. That is the second reason why it ends the life at once. Because
//! the push handler runs before the reply is handed over, a call whose reply
//! arrives after the loss sees it, and every call checks that its reply is
//! the one its command gets (`ssubscribe <channel>`, `sunsubscribe
//! <channel>`, `PONG`), so no misattributed reply passes for a success.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::try_join_all;
use futures_util::stream::FuturesUnordered;
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo,
    ProtocolVersion, PushInfo, PushKind, RedisError, RedisResult, Value,
};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::keys::slot;

/// Messages received but not yet taken from [`ShardEvents`]. A consumer that
/// falls this far behind ends the life instead of growing memory without
/// bound or losing a message silently: its owner resubscribes and gap-fills
/// from the streams, as after any loss. The bus hands each message to the
/// hub without waiting, so only a stalled node gets here.
const EVENT_QUEUE: usize = 16_384;

/// Every hash slot of a Redis Cluster.
const SLOTS: u16 = 16_384;

/// One life of the sharded subscriber: connections to the primaries known
/// when it connected. Cloning shares it. Dropping the last clone and the
/// [`ShardEvents`] closes its connections.
#[derive(Clone)]
pub struct ShardedSubscriber {
    life: Arc<Life>,
}

/// What one life of the subscriber receives, in the order each primary sent
/// it, ending with one [`ShardEvent::Lost`].
pub struct ShardEvents {
    messages: mpsc::Receiver<(String, Bytes)>,
    life: Arc<Life>,
    /// `Lost` was returned: nothing more comes.
    finished: bool,
}

/// One event of a life of the subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardEvent {
    /// A publication on a subscribed shard channel.
    Message {
        /// The channel, as subscribed.
        channel: String,
        /// The published bytes.
        payload: Bytes,
    },
    /// The life ended (why, for the log): resubscribe on a new life and
    /// gap-fill. Always the last event.
    Lost(String),
}

/// The state shared by the handles, the event stream and the connections'
/// push handlers (which hold it weakly, so a connection does not keep
/// itself alive).
struct Life {
    /// Bounds every wait on Redis.
    timeout: Duration,
    /// Each primary as `host:port`, in the order of `State::connections`.
    addresses: Vec<String>,
    /// Which primary serves which slots.
    slots: SlotMap,
    state: Mutex<State>,
    /// Where the push handlers put messages; [`ShardEvents`] reads them.
    messages: mpsc::Sender<(String, Bytes)>,
    /// Cancelled when the life ends.
    ended: CancellationToken,
}

struct State {
    /// One per primary, in the order of `Life::addresses`; emptied when the
    /// life ends, which closes them once no call holds one.
    connections: Vec<MultiplexedConnection>,
    /// Why the life ended; the first reason wins.
    lost: Option<String>,
    /// The channels we hold, by primary: confirmed by the server and not
    /// being unsubscribed. A `sunsubscribe` of one of them is the server's.
    subscribed: HashSet<(usize, Vec<u8>)>,
}

impl ShardedSubscriber {
    /// Reads the topology (`CLUSTER SHARDS`, from the first seed that
    /// answers; all are asked at once) and opens one RESP3 connection to
    /// each primary serving slots, all within `timeout`. Node connections
    /// take the scheme, credentials and TLS settings of that seed, with the
    /// host and port the topology announces (the seed's host when it
    /// announces none). Returns the handle and the events of this life.
    pub async fn connect(seeds: &[String], timeout: Duration) -> RedisResult<(Self, ShardEvents)> {
        let deadline = Instant::now() + timeout;
        let seeds = seeds
            .iter()
            .map(|seed| template(seed))
            .collect::<RedisResult<Vec<_>>>()?;
        if seeds.is_empty() {
            return Err(RedisError::from((
                ErrorKind::InvalidClientConfig,
                "no Redis Cluster seed",
            )));
        }
        let (seed, primaries) = tokio::time::timeout_at(deadline, topology(&seeds))
            .await
            .map_err(|_| timed_out("reading the cluster topology", timeout))??;
        let (sender, receiver) = mpsc::channel(EVENT_QUEUE);
        let life = Arc::new(Life {
            timeout,
            addresses: primaries
                .iter()
                .map(|p| format!("{}:{}", p.host, p.port))
                .collect(),
            slots: SlotMap::new(&primaries),
            state: Mutex::new(State {
                connections: Vec::new(),
                lost: None,
                subscribed: HashSet::new(),
            }),
            messages: sender,
            ended: CancellationToken::new(),
        });
        let connecting = primaries.iter().enumerate().map(|(index, primary)| {
            connect_primary(
                Arc::downgrade(&life),
                index,
                node_info(&seed, &primary.host, primary.port),
                deadline,
                timeout,
            )
        });
        let connections = tokio::time::timeout_at(deadline, try_join_all(connecting))
            .await
            .map_err(|_| timed_out("connecting to the primaries", timeout))??;
        {
            let mut state = life.state();
            // A connection that closed while the others were connecting.
            if let Some(why) = &state.lost {
                return Err(life_ended(why));
            }
            state.connections = connections;
        }
        let events = ShardEvents {
            messages: receiver,
            life: life.clone(),
            finished: false,
        };
        Ok((Self { life }, events))
    }

    /// `SSUBSCRIBE channel` at the primary owning its slot; `Ok` once that
    /// primary confirmed it while the life lasted: from then on, until
    /// [`Self::unsubscribe`], losing it ends the life. Any failure (MOVED,
    /// ASK, CLUSTERDOWN, a timeout, a closed connection) is an `Err` and
    /// ends the life. A caller that stops waiting may leave the channel
    /// subscribed (its messages come, and its loss ends the life).
    pub async fn subscribe(&self, channel: &str) -> RedisResult<()> {
        let (primary, connection) = self.life.route(channel)?;
        let mut command = redis::cmd("SSUBSCRIBE");
        command.arg(channel);
        self.life
            .call(
                primary,
                connection,
                &command,
                &format!("SSUBSCRIBE {channel}"),
                |reply| confirms(reply, &PushKind::SSubscribe, channel),
            )
            .await
    }

    /// `SUNSUBSCRIBE channel` at the primary owning its slot; `Ok` once
    /// confirmed. Does not end the life, unless it fails. From the moment it
    /// is called the channel counts as dropped, even if the caller stops
    /// waiting.
    pub async fn unsubscribe(&self, channel: &str) -> RedisResult<()> {
        let (primary, connection) = self.life.route(channel)?;
        // Before it is sent: its confirmation is then not the server's own.
        self.life
            .state()
            .subscribed
            .remove(&(primary, channel.as_bytes().to_vec()));
        let mut command = redis::cmd("SUNSUBSCRIBE");
        command.arg(channel);
        self.life
            .call(
                primary,
                connection,
                &command,
                &format!("SUNSUBSCRIBE {channel}"),
                |reply| confirms(reply, &PushKind::SUnsubscribe, channel),
            )
            .await
    }

    /// PINGs every primary connection at once; `Err` (and the life ends) if
    /// one does not answer `PONG` in time.
    pub async fn ping(&self) -> RedisResult<()> {
        let connections = self.life.connections()?;
        let ping = redis::cmd("PING");
        let pings = connections
            .into_iter()
            .enumerate()
            .map(|(primary, connection)| {
                self.life.call(
                    primary,
                    connection,
                    &ping,
                    "PING",
                    |reply| matches!(reply, Value::SimpleString(s) if s == "PONG"),
                )
            });
        try_join_all(pings).await.map(|_| ())
    }
}

impl ShardEvents {
    /// The next event: messages in the order each primary sent them, then
    /// one [`ShardEvent::Lost`], then `None`. Cancel-safe, for `select!`.
    pub async fn next(&mut self) -> Option<ShardEvent> {
        if self.finished {
            return None;
        }
        // Messages received before the loss come first.
        tokio::select! {
            biased;
            Some((channel, payload)) = self.messages.recv() => {
                return Some(ShardEvent::Message { channel, payload });
            }
            () = self.life.ended.cancelled() => {}
        }
        self.finished = true;
        Some(ShardEvent::Lost(self.life.why()))
    }
}

impl Life {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends the life, once: records why, drops the connections, wakes the
    /// event stream.
    fn end(&self, why: String) {
        let connections = {
            let mut state = self.state();
            if state.lost.is_some() {
                return;
            }
            state.lost = Some(why);
            std::mem::take(&mut state.connections)
        };
        self.ended.cancel();
        // Dropped outside the lock. When this runs in a push handler, the
        // connection's own task is aborted after the push is handled.
        drop(connections);
    }

    fn why(&self) -> String {
        self.state()
            .lost
            .clone()
            .unwrap_or_else(|| "the subscriber ended".to_owned())
    }

    /// `Err` once the life has ended.
    fn alive(&self) -> RedisResult<()> {
        match &self.state().lost {
            Some(why) => Err(life_ended(why)),
            None => Ok(()),
        }
    }

    fn connections(&self) -> RedisResult<Vec<MultiplexedConnection>> {
        let state = self.state();
        match &state.lost {
            Some(why) => Err(life_ended(why)),
            None => Ok(state.connections.clone()),
        }
    }

    /// The primary owning `channel`'s slot and its connection. A slot no
    /// primary served when the life began ends it: a new life may see it
    /// served.
    fn route(&self, channel: &str) -> RedisResult<(usize, MultiplexedConnection)> {
        let slot = slot(channel.as_bytes());
        let found = {
            let state = self.state();
            if let Some(why) = &state.lost {
                return Err(life_ended(why));
            }
            self.slots
                .primary_of(slot)
                .and_then(|primary| Some((primary, state.connections.get(primary)?.clone())))
        };
        found.ok_or_else(|| {
            let why = format!("no primary served slot {slot} (of {channel})");
            self.end(why.clone());
            life_ended(&why)
        })
    }

    /// Sends `command` (`what`, for the log) on the connection to
    /// `primary`, bounded by the timeout; `Ok` if `expected` accepts the reply and the life still
    /// lasts. Anything else ends the life.
    async fn call(
        &self,
        primary: usize,
        mut connection: MultiplexedConnection,
        command: &redis::Cmd,
        what: &str,
        expected: impl FnOnce(&Value) -> bool,
    ) -> RedisResult<()> {
        let address = self.address(primary);
        let reply = tokio::time::timeout(self.timeout, command.query_async(&mut connection)).await;
        let error = match reply {
            Ok(Ok(reply)) if expected(&reply) => return self.alive(),
            Ok(Ok(reply)) => RedisError::from((
                ErrorKind::UnexpectedReturnType,
                "unexpected reply",
                format!("{what} at {address}: {reply:?}"),
            )),
            Ok(Err(error)) => error,
            Err(_) => timed_out(&format!("{what} at {address}"), self.timeout),
        };
        self.end(format!("{what} at {address}: {error}"));
        Err(error)
    }

    fn address(&self, primary: usize) -> &str {
        self.addresses.get(primary).map_or("?", String::as_str)
    }

    /// A push from the connection to `primary` (see the module
    /// documentation).
    fn on_push(&self, primary: usize, push: PushInfo) {
        match push.kind {
            PushKind::SMessage => self.on_message(push.data),
            PushKind::SSubscribe => {
                // Also the reply of our SSUBSCRIBE, checked there.
                if let Some(Value::BulkString(channel)) = push.data.first() {
                    self.state().subscribed.insert((primary, channel.clone()));
                }
            }
            PushKind::SUnsubscribe => {
                let Some(Value::BulkString(channel)) = push.data.first() else {
                    return;
                };
                let held = self.state().subscribed.remove(&(primary, channel.clone()));
                if held {
                    // Unsolicited: the slot moved, so the channel must be
                    // subscribed where it went. And this push was taken as
                    // the reply of the oldest request in flight on this
                    // connection, so later replies are misattributed.
                    self.end(format!(
                        "{} unsubscribed {} by itself (its slot moved)",
                        self.address(primary),
                        String::from_utf8_lossy(channel)
                    ));
                }
                // Otherwise our unsubscribe's confirmation (checked as its
                // reply), or the server's of a channel nobody wants any
                // more: if that one was taken as the reply of a request in
                // flight, the request's check fails and ends the life.
            }
            PushKind::Disconnection => {
                self.end(format!(
                    "the connection to {} closed",
                    self.address(primary)
                ));
            }
            // Nothing else belongs to sharded pub/sub.
            _ => {}
        }
    }

    /// An `smessage` push: `[channel, payload]`.
    fn on_message(&self, data: Vec<Value>) {
        if self.ended.is_cancelled() {
            return;
        }
        let mut data = data.into_iter();
        let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
            (data.next(), data.next())
        else {
            tracing::warn!("ignoring a malformed smessage push");
            return;
        };
        // We subscribe by `&str`, so the server names our channels in UTF-8.
        let Ok(channel) = String::from_utf8(channel) else {
            tracing::warn!("ignoring an smessage on a channel that is not UTF-8");
            return;
        };
        match self.messages.try_send((channel, Bytes::from(payload))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.end(format!(
                "the consumer fell behind by {EVENT_QUEUE} messages"
            )),
            Err(TrySendError::Closed(_)) => self.end("the event stream was dropped".to_owned()),
        }
    }
}

/// True if `reply` is the `kind` confirmation of `channel`.
fn confirms(reply: &Value, kind: &PushKind, channel: &str) -> bool {
    matches!(
        reply,
        Value::Push { kind: k, data }
            if k == kind
                && matches!(data.first(), Some(Value::BulkString(c)) if c == channel.as_bytes())
    )
}

fn life_ended(why: &str) -> RedisError {
    RedisError::from((
        ErrorKind::Io,
        "the sharded subscriber's life ended",
        why.to_owned(),
    ))
}

fn timed_out(what: &str, timeout: Duration) -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{what} took longer than {timeout:?}"),
    ))
}

/// A primary as `CLUSTER SHARDS` announced it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Primary {
    host: String,
    port: u16,
    /// Inclusive ranges.
    slots: Vec<(u16, u16)>,
}

/// Slot ranges to primaries (by index), sorted by start.
struct SlotMap(Vec<(u16, u16, usize)>);

impl SlotMap {
    fn new(primaries: &[Primary]) -> Self {
        let mut ranges: Vec<(u16, u16, usize)> = primaries
            .iter()
            .enumerate()
            .flat_map(|(i, p)| p.slots.iter().map(move |&(start, end)| (start, end, i)))
            .collect();
        ranges.sort_unstable();
        Self(ranges)
    }

    fn primary_of(&self, slot: u16) -> Option<usize> {
        let after = self.0.partition_point(|&(start, _, _)| start <= slot);
        let &(_, end, primary) = self.0.get(after.checked_sub(1)?)?;
        (slot <= end).then_some(primary)
    }
}

/// A seed's connection settings, as every connection of a life uses them:
/// RESP3 (pushes), database 0 (the only one a cluster has).
fn template(seed: &str) -> RedisResult<ConnectionInfo> {
    let info = seed.into_connection_info()?;
    if !matches!(
        info.addr(),
        ConnectionAddr::Tcp(..) | ConnectionAddr::TcpTls { .. }
    ) {
        return Err(RedisError::from((
            ErrorKind::InvalidClientConfig,
            "a cluster seed must be a redis:// or rediss:// URL",
            seed.to_owned(),
        )));
    }
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3)
        .set_db(0);
    Ok(info.set_redis_settings(settings))
}

/// The template's settings at `host:port`.
fn node_info(template: &ConnectionInfo, host: &str, port: u16) -> ConnectionInfo {
    let addr = match template.addr() {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => ConnectionAddr::Tcp(host.to_owned(), port),
    };
    template.clone().set_addr(addr)
}

fn host_of(info: &ConnectionInfo) -> &str {
    match info.addr() {
        ConnectionAddr::Tcp(host, _) | ConnectionAddr::TcpTls { host, .. } => host,
        _ => "",
    }
}

/// Asks every seed at once; the first usable answer wins, with the seed that
/// gave it. Sharded pub/sub came with Redis 7.0, as did `CLUSTER SHARDS`.
async fn topology(seeds: &[ConnectionInfo]) -> RedisResult<(ConnectionInfo, Vec<Primary>)> {
    let mut asking: FuturesUnordered<_> = seeds
        .iter()
        .map(|seed| async move { (seed, ask_topology(seed).await) })
        .collect();
    let mut failures = Vec::new();
    while let Some((seed, answer)) = asking.next().await {
        match answer {
            Ok(primaries) => return Ok((seed.clone(), primaries)),
            Err(error) => failures.push(format!("{}: {error}", address_of(seed))),
        }
    }
    Err(RedisError::from((
        ErrorKind::Io,
        "no seed gave a usable cluster topology",
        failures.join("; "),
    )))
}

async fn ask_topology(seed: &ConnectionInfo) -> RedisResult<Vec<Primary>> {
    let mut connection = redis::Client::open(seed.clone())?
        .get_multiplexed_async_connection()
        .await?;
    let reply: Value = redis::cmd("CLUSTER")
        .arg("SHARDS")
        .query_async(&mut connection)
        .await?;
    let tls = matches!(seed.addr(), ConnectionAddr::TcpTls { .. });
    parse_shards(&reply, host_of(seed), tls)
        .map_err(|why| RedisError::from((ErrorKind::Parse, "unusable CLUSTER SHARDS reply", why)))
}

fn address_of(info: &ConnectionInfo) -> String {
    match info.addr() {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            format!("{host}:{port}")
        }
        other => format!("{other:?}"),
    }
}

/// Opens the connection to primary `index`, its pushes going to the life.
async fn connect_primary(
    life: Weak<Life>,
    index: usize,
    info: ConnectionInfo,
    deadline: Instant,
    timeout: Duration,
) -> RedisResult<MultiplexedConnection> {
    let address = address_of(&info);
    let on_push = move |push: PushInfo| -> Result<(), std::convert::Infallible> {
        if let Some(life) = life.upgrade() {
            life.on_push(index, push);
        }
        Ok(())
    };
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(deadline.saturating_duration_since(Instant::now())))
        .set_response_timeout(Some(timeout))
        .set_push_sender(on_push);
    redis::Client::open(info)?
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|error| {
            RedisError::from((
                error.kind(),
                "cannot connect to a primary",
                format!("{address}: {error}"),
            ))
        })
}

/// The primaries serving slots in a `CLUSTER SHARDS` reply (RESP3 maps or
/// RESP2 flat arrays): for each shard with slots, its `master` whose health
/// is `online`, at its preferred endpoint (`seed_host` when unknown) and its
/// TLS port on a TLS cluster. A shard without an online primary makes the
/// whole reply unusable: the cluster is failing over, and a later life will
/// see the promoted replica.
fn parse_shards(reply: &Value, seed_host: &str, tls: bool) -> Result<Vec<Primary>, String> {
    let Value::Array(shards) = reply else {
        return Err(format!("not an array: {reply:?}"));
    };
    let mut primaries = Vec::new();
    for shard in shards {
        let entries = fields(shard).ok_or_else(|| format!("a shard is not a map: {shard:?}"))?;
        let slots = match field(&entries, "slots") {
            Some(Value::Array(bounds)) => bounds
                .chunks(2)
                .map(|pair| match pair {
                    [Value::Int(start), Value::Int(end)] => u16::try_from(*start)
                        .ok()
                        .zip(u16::try_from(*end).ok())
                        .filter(|(start, end)| start <= end && *end < SLOTS),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| format!("bad slots in {shard:?}"))?,
            _ => return Err(format!("no slots in {shard:?}")),
        };
        if slots.is_empty() {
            continue;
        }
        let Some(Value::Array(nodes)) = field(&entries, "nodes") else {
            return Err(format!("no nodes in {shard:?}"));
        };
        let primary = nodes
            .iter()
            .filter_map(fields)
            .find(|node| {
                text(field(node, "role")) == Some("master")
                    && text(field(node, "health")) == Some("online")
            })
            .ok_or_else(|| format!("slots {slots:?} have no online primary"))?;
        let plain = int(field(&primary, "port"));
        let secure = int(field(&primary, "tls-port"));
        let port = if tls {
            secure.or(plain)
        } else {
            plain.or(secure)
        }
        .and_then(|port| u16::try_from(port).ok())
        .filter(|&port| port != 0)
        .ok_or_else(|| format!("no port for the primary of slots {slots:?}"))?;
        let host = match text(field(&primary, "endpoint")) {
            None | Some("" | "?") => seed_host,
            Some(endpoint) => endpoint,
        };
        primaries.push(Primary {
            host: host.to_owned(),
            port,
            slots,
        });
    }
    if primaries.is_empty() {
        return Err("no shard serves slots".to_owned());
    }
    Ok(primaries)
}

/// The entries of a RESP3 map or of a RESP2 flat array of pairs.
fn fields(value: &Value) -> Option<Vec<(&Value, &Value)>> {
    match value {
        Value::Map(entries) => Some(entries.iter().map(|(k, v)| (k, v)).collect()),
        Value::Array(flat) if flat.len() % 2 == 0 => {
            Some(flat.chunks(2).map(|kv| (&kv[0], &kv[1])).collect())
        }
        _ => None,
    }
}

fn field<'a>(fields: &[(&Value, &'a Value)], name: &str) -> Option<&'a Value> {
    fields
        .iter()
        .find(|(key, _)| text(Some(key)) == Some(name))
        .map(|(_, value)| *value)
}

fn text(value: Option<&Value>) -> Option<&str> {
    match value? {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok(),
        Value::SimpleString(s) | Value::VerbatimString { text: s, .. } => Some(s),
        _ => None,
    }
}

fn int(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Int(n) => Some(*n),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn map(entries: Vec<(&str, Value)>) -> Value {
        Value::Map(entries.into_iter().map(|(k, v)| (bulk(k), v)).collect())
    }

    fn node(port: i64, role: &str, health: &str, endpoint: &str) -> Value {
        map(vec![
            ("id", bulk("0123")),
            ("port", Value::Int(port)),
            ("ip", bulk("10.0.0.1")),
            ("endpoint", bulk(endpoint)),
            ("role", bulk(role)),
            ("replication-offset", Value::Int(0)),
            ("health", bulk(health)),
        ])
    }

    fn shard(slots: &[i64], nodes: Vec<Value>) -> Value {
        map(vec![
            (
                "slots",
                Value::Array(slots.iter().map(|&s| Value::Int(s)).collect()),
            ),
            ("nodes", Value::Array(nodes)),
        ])
    }

    #[test]
    fn cluster_shards_yields_the_online_primary_of_each_shard_with_slots() {
        let reply = Value::Array(vec![
            shard(
                &[0, 5460, 6000, 6000],
                vec![
                    node(7003, "replica", "online", "10.0.0.4"),
                    node(7000, "master", "online", "10.0.0.1"),
                ],
            ),
            shard(
                &[5461, 5999, 6001, 16383],
                vec![
                    // Not online (7.0.15 says `fail`; the documentation,
                    // `failed`), whatever its role says.
                    node(7001, "master", "fail", "10.0.0.2"),
                    node(7004, "master", "online", "?"),
                ],
            ),
            // After a failover, 7.0.15 lists the dead primary as a shard of
            // its own, without slots.
            shard(&[], vec![node(7005, "master", "fail", "10.0.0.6")]),
        ]);

        let primaries = parse_shards(&reply, "seed.example", false).unwrap();

        assert_eq!(
            primaries,
            [
                Primary {
                    host: "10.0.0.1".to_owned(),
                    port: 7000,
                    slots: vec![(0, 5460), (6000, 6000)]
                },
                Primary {
                    host: "seed.example".to_owned(),
                    port: 7004,
                    slots: vec![(5461, 5999), (6001, 16383)]
                },
            ]
        );
        let map = SlotMap::new(&primaries);
        for (slot, primary) in [
            (0, Some(0)),
            (5460, Some(0)),
            (5461, Some(1)),
            (5999, Some(1)),
            (6000, Some(0)),
            (6001, Some(1)),
            (16383, Some(1)),
            (16384, None),
        ] {
            assert_eq!(map.primary_of(slot), primary, "slot {slot}");
        }
    }

    #[test]
    fn cluster_shards_in_resp2_and_on_tls_reads_the_same() {
        let flat = |entries: Vec<(&str, Value)>| {
            Value::Array(
                entries
                    .into_iter()
                    .flat_map(|(k, v)| [bulk(k), v])
                    .collect(),
            )
        };
        let reply = Value::Array(vec![flat(vec![
            (
                "slots",
                Value::Array(vec![Value::Int(0), Value::Int(16383)]),
            ),
            (
                "nodes",
                Value::Array(vec![flat(vec![
                    ("port", Value::Int(7000)),
                    ("tls-port", Value::Int(7400)),
                    ("endpoint", bulk("a.example")),
                    ("role", bulk("master")),
                    ("health", bulk("online")),
                ])]),
            ),
        ])]);

        let plain = parse_shards(&reply, "seed", false).unwrap();
        let secure = parse_shards(&reply, "seed", true).unwrap();

        assert_eq!((plain[0].host.as_str(), plain[0].port), ("a.example", 7000));
        assert_eq!(secure[0].port, 7400);
    }

    #[test]
    fn a_shard_without_an_online_primary_makes_the_topology_unusable() {
        let failing_over = Value::Array(vec![shard(
            &[0, 16383],
            vec![
                node(7000, "master", "failed", "10.0.0.1"),
                node(7003, "replica", "online", "10.0.0.4"),
            ],
        )]);
        let bad_slots = Value::Array(vec![shard(
            &[0, 16384],
            vec![node(7000, "master", "online", "h")],
        )]);

        assert!(parse_shards(&failing_over, "seed", false).is_err());
        assert!(parse_shards(&bad_slots, "seed", false).is_err());
        assert!(parse_shards(&Value::Array(vec![]), "seed", false).is_err());
        assert!(parse_shards(&Value::Okay, "seed", false).is_err());
    }

    #[test]
    fn node_connections_keep_the_seeds_credentials_and_speak_resp3() {
        let seed = template("redis://user:secret@seed.example:7000/3").unwrap();

        let node = node_info(&seed, "10.0.0.9", 7009);

        assert_eq!(address_of(&node), "10.0.0.9:7009");
        assert!(matches!(node.addr(), ConnectionAddr::Tcp(..)));
        let settings = node.redis_settings();
        assert_eq!(settings.username(), Some("user"));
        assert_eq!(settings.password(), Some("secret"));
        assert_eq!(settings.protocol(), ProtocolVersion::RESP3);
        assert_eq!(settings.db(), 0);
        assert!(template("redis+unix:///tmp/redis.sock").is_err());
        assert!(template("not a url").is_err());
    }

    #[test]
    fn only_the_awaited_confirmation_is_accepted_as_a_reply() {
        let push = |kind, channel: &str| Value::Push {
            kind,
            data: vec![bulk(channel), Value::Int(1)],
        };

        assert!(confirms(
            &push(PushKind::SSubscribe, "a"),
            &PushKind::SSubscribe,
            "a"
        ));
        assert!(!confirms(
            &push(PushKind::SSubscribe, "b"),
            &PushKind::SSubscribe,
            "a"
        ));
        assert!(!confirms(
            &push(PushKind::SUnsubscribe, "a"),
            &PushKind::SSubscribe,
            "a"
        ));
        assert!(!confirms(
            &Value::SimpleString("PONG".into()),
            &PushKind::SSubscribe,
            "a"
        ));
    }
}
