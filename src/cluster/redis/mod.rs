//! Cluster mode: every role kept in Redis, shared by any number of nodes.
//!
//! Commands go through one multiplexed connection per node (on a Redis
//! Cluster, the crate's cluster connection: one per primary, routed by
//! slot): every concurrent command of the node is pipelined on it, so a busy
//! node sends many commands per socket write instead of one round trip per
//! pooled connection. Each command is bounded by a timeout, so an outage
//! answers `Unavailable` instead of hanging; a timeout or failure retires
//! the connection. Retiring does not stop a command already sent: the
//! kernel retransmits it after a partition heals, so every write that must
//! not apply late (appends, presence writes) carries a deadline on the Redis
//! clock ([`Redis::store_deadline`]). Pub/sub runs on connections of its
//! own ([`bus`]). Every multi-step change is one Lua script
//! (`lua/*.lua`, embedded at build time), so it is atomic and one round trip.
//! [`keys`] documents the key layout.

/// A presence or liveness script with the shared entry parser, tally and
/// deadline check in front of it: all read the node's contribution entries.
macro_rules! presence_script {
    ($file:literal) => {
        LazyLock::new(|| {
            Script::new(concat!(
                include_str!("lua/entry.lua"),
                include_str!("lua/deadline.lua"),
                include_str!($file)
            ))
        })
    };
}

mod bus;
mod history;
pub(crate) mod keys;
mod ledger;
mod liveness;
mod presence;
mod shards;
mod uploads;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use std::sync::{Mutex, PoisonError};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, FromRedisValue, RedisFuture, ScriptInvocation};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use bus::RedisBus;
pub use history::RedisHistory;
pub use liveness::RedisLiveness;
pub use presence::RedisPresence;
pub use shards::{ShardEvent, ShardEvents, ShardedSubscriber};
pub use uploads::RedisUploadRecords;

use self::keys::Keys;
use self::ledger::Ledger;
use super::{Backend, ClusterError, ClusterResult, Deliver};
use crate::domain::NodeId;
use crate::telemetry;

/// How long one command may take, connection included, before the caller
/// gets `Unavailable`. Long enough for a busy Redis, short enough that a
/// client is answered quickly during an outage.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// The Redis a cluster of nodes shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One Redis: `redis://host:port/db`.
    Single(String),
    /// A Redis Cluster, by its seed nodes (`redis://host:port` each).
    Cluster(Vec<String>),
}

/// What cluster mode needs to know.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// Where Redis is.
    pub target: RedisTarget,
    /// Prefix of every key and channel.
    pub prefix: String,
    /// This node.
    pub node: NodeId,
    /// Messages kept per history.
    pub history_limit: usize,
    /// How long a quiet history lives; `None`: forever.
    pub history_ttl: Option<Duration>,
    /// How long a dead node's users stay visible.
    pub presence_ttl: Duration,
    /// True with an archive: histories keep what it lacks as its backlog.
    pub archiving: bool,
}

/// The command side shared by the four roles: the node's command
/// connection, the key layout, and one place that turns every failure into
/// [`ClusterError::Unavailable`].
#[derive(Clone)]
pub(crate) struct Redis {
    client: Client,
    connection: Arc<Mutex<Connection>>,
    keys: Keys,
    /// The Redis clock minus this node's, in ms, as last measured
    /// ([`i64::MIN`] until then): writes carry a deadline on the Redis clock.
    clock_offset: Arc<AtomicI64>,
    /// Set when the subscriber lost a connection (a Redis restart, a
    /// failover, a slot migration): presence is rewritten at the next beat.
    topology_changed: Arc<AtomicBool>,
}

/// How long after it is sent a write that must not be stored late may still
/// be stored: half of [`COMMAND_TIMEOUT`], so the node is still waiting for
/// the answer when it passes and answers `unavailable` truthfully.
const STORE_WITHIN: Duration = Duration::from_secs(1);

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// What command connections are made from.
#[derive(Clone)]
enum Client {
    Single(redis::Client),
    /// Connections to every primary, routed by slot, following the cluster
    /// through failovers and slot migrations.
    Cluster(Box<ClusterClient>),
}

/// One command connection: to the one Redis, or to the whole cluster.
#[derive(Clone)]
enum Commands {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Commands {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, redis::Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// How often the cluster client follows a redirection or retries a command
/// (after ASK, MOVED, or TRYAGAIN while a slot migrates) before the caller
/// hears of it; [`COMMAND_TIMEOUT`] bounds the whole.
const CLUSTER_RETRIES: u32 = 5;
/// Waits between those retries, ms: 20 to 20·2ⁿ, at most 250, so the
/// retries of a send fit in its store deadline (the crate's defaults wait
/// over a second before the first).
const CLUSTER_RETRY_WAIT: (u64, u64) = (20, 250);

/// A connection attempt every caller may await; its result is shared.
type Connecting = Shared<BoxFuture<'static, Result<Commands, Arc<redis::RedisError>>>>;

/// The command connection, numbered so that a failure retires only the
/// connection it happened on.
#[derive(Default)]
struct Connection {
    generation: u64,
    /// Being connected (the first caller started it; the others await the
    /// same attempt), or connected.
    current: Option<Connecting>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot connect to redis: {0}")]
struct CannotConnect(Arc<redis::RedisError>);

fn unavailable(error: impl std::error::Error + Send + Sync + 'static) -> ClusterError {
    ClusterError::Unavailable(Box::new(error))
}

#[derive(Debug, thiserror::Error)]
#[error("redis did not answer within {0:?}")]
struct TimedOut(Duration);

impl Redis {
    /// Lazily: the first command connects, so a node starts while Redis is
    /// down.
    fn connect(target: &RedisTarget, prefix: &str) -> ClusterResult<Self> {
        let client = match target {
            RedisTarget::Single(url) => {
                Client::Single(redis::Client::open(url.as_str()).map_err(unavailable)?)
            }
            RedisTarget::Cluster(seeds) => Client::Cluster(Box::new(
                ClusterClient::builder(seeds.iter().map(String::as_str))
                    .connection_timeout(COMMAND_TIMEOUT)
                    .response_timeout(COMMAND_TIMEOUT)
                    .retries(CLUSTER_RETRIES)
                    .min_retry_wait(CLUSTER_RETRY_WAIT.0)
                    .max_retry_wait(CLUSTER_RETRY_WAIT.1)
                    .retry_wait_formula(CLUSTER_RETRY_WAIT.0, 2)
                    .build()
                    .map_err(unavailable)?,
            )),
        };
        Ok(Self {
            client,
            connection: Arc::default(),
            keys: Keys::new(prefix),
            clock_offset: Arc::new(AtomicI64::new(i64::MIN)),
            topology_changed: Arc::default(),
        })
    }

    /// Records the Redis clock read by a command sent at `sent` (this
    /// node's clock, ms) and answered now. A slow round trip (a starved
    /// node, a struggling Redis) says little about when Redis read its
    /// clock, so only a quick one counts: the offset is then off by at most
    /// an eighth of [`STORE_WITHIN`].
    pub(crate) fn observe_clock(&self, redis_ms: i64, sent: i64) {
        let round_trip = unix_ms() - sent;
        if round_trip > i64::try_from(STORE_WITHIN.as_millis() / 4).unwrap_or(i64::MAX) {
            return;
        }
        let midway = sent + round_trip / 2;
        self.clock_offset
            .store(redis_ms - midway, Ordering::Relaxed);
    }

    /// Notes that Redis may have lost acknowledged writes.
    pub(crate) fn topology_changed(&self) {
        self.topology_changed.store(true, Ordering::Relaxed);
    }

    pub(crate) fn take_topology_changed(&self) -> bool {
        self.topology_changed.swap(false, Ordering::Relaxed)
    }

    /// Now on the Redis clock, ms, as far as this node knows it.
    pub(crate) fn redis_now_ms(&self) -> i64 {
        match self.clock_offset.load(Ordering::Relaxed) {
            i64::MIN => unix_ms(),
            offset => unix_ms() + offset,
        }
    }

    /// This node's clock, ms, for [`Redis::observe_clock`].
    pub(crate) fn now_ms() -> i64 {
        unix_ms()
    }

    /// The Redis time after which a write sent now must not be stored; 0
    /// (no limit) until the clock offset is known.
    pub(crate) fn store_deadline(&self) -> i64 {
        match self.clock_offset.load(Ordering::Relaxed) {
            i64::MIN => 0,
            offset => unix_ms() + offset + i64::try_from(STORE_WITHIN.as_millis()).unwrap_or(0),
        }
    }

    /// True on a Redis Cluster: publications go over sharded pub/sub.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.client, Client::Cluster(_))
    }

    /// The command that publishes: `SPUBLISH` on a cluster (the message
    /// travels only through the shard that owns the channel), else `PUBLISH`.
    pub(crate) fn publish_command(&self) -> &'static str {
        if self.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// The current connection and its number, connecting if there is none.
    /// No lock is held while connecting: callers share one attempt.
    async fn connection(&self) -> ClusterResult<(u64, Commands)> {
        let (generation, connecting) = {
            let mut state = self.state();
            let connecting = state
                .current
                .get_or_insert_with(|| {
                    let client = self.client.clone();
                    async move {
                        match client {
                            Client::Single(client) => {
                                let config = AsyncConnectionConfig::new()
                                    .set_connection_timeout(Some(COMMAND_TIMEOUT));
                                client
                                    .get_multiplexed_async_connection_with_config(&config)
                                    .await
                                    .map(Commands::Single)
                            }
                            Client::Cluster(client) => {
                                client.get_async_connection().await.map(Commands::Cluster)
                            }
                        }
                        .map_err(Arc::new)
                    }
                    .boxed()
                    .shared()
                })
                .clone();
            (state.generation, connecting)
        };
        match connecting.await {
            Ok(connection) => Ok((generation, connection)),
            Err(error) => {
                self.retire(generation);
                Err(unavailable(CannotConnect(error)))
            }
        }
    }

    /// Drops connection `generation` if it is still the current one: the
    /// next command connects afresh, and once the commands still holding it
    /// end, its socket closes with whatever it had not yet sent.
    fn retire(&self, generation: u64) {
        let mut state = self.state();
        if state.generation == generation {
            state.generation += 1;
            state.current = None;
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs a script (EVALSHA, loading it on first use); `op` names it in
    /// metrics.
    pub(crate) async fn invoke<T: FromRedisValue>(
        &self,
        op: &'static str,
        invocation: &ScriptInvocation<'_>,
    ) -> ClusterResult<T> {
        self.timed(op, async |conn| {
            invocation.invoke_async(conn).await.map_err(unavailable)
        })
        .await
    }

    /// Runs one command; its name labels the metrics.
    pub(crate) async fn query<T: FromRedisValue>(&self, command: &redis::Cmd) -> ClusterResult<T> {
        self.timed(command_name(command), async |conn| {
            command.query_async(conn).await.map_err(unavailable)
        })
        .await
    }

    /// Runs `call` on the connection, bounded by [`COMMAND_TIMEOUT`]
    /// (connecting included), and records its latency, or its failure; a
    /// failure retires the connection.
    async fn timed<T>(
        &self,
        op: &'static str,
        call: impl AsyncFnOnce(&mut Commands) -> ClusterResult<T>,
    ) -> ClusterResult<T> {
        let started = Instant::now();
        let mut used = None;
        let attempt = async {
            let (generation, mut connection) = self.connection().await?;
            used = Some(generation);
            call(&mut connection).await
        };
        let result = tokio::time::timeout(COMMAND_TIMEOUT, attempt)
            .await
            .unwrap_or_else(|_| Err(unavailable(TimedOut(COMMAND_TIMEOUT))));
        if result.is_err()
            && let Some(generation) = used
        {
            self.retire(generation);
        }
        match &result {
            Ok(_) => metrics::histogram!(telemetry::REDIS_COMMAND_LATENCY, "op" => op)
                .record(started.elapsed()),
            Err(_) => metrics::counter!(telemetry::REDIS_ERRORS, "op" => op).increment(1),
        }
        result
    }

    pub(crate) fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Every key matching `pattern`, on every primary of a cluster: `SCAN`
    /// step by step, each step bounded like any command, so Redis never
    /// blocks on it.
    pub(crate) async fn scan(&self, pattern: &str) -> ClusterResult<Vec<String>> {
        let mut found = Vec::new();
        // Cursors still to follow, by primary (`None`: every primary, or the
        // one Redis).
        let mut pending: Vec<(Option<String>, u64)> = vec![(None, 0)];
        while let Some((node, cursor)) = pending.pop() {
            let mut step = redis::cmd("SCAN");
            step.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000);
            let replies = self
                .timed("SCAN", async |conn| match conn {
                    Commands::Single(conn) => {
                        let reply = step.query_async(conn).await.map_err(unavailable)?;
                        Ok(vec![(None, reply)])
                    }
                    Commands::Cluster(conn) => scan_step(conn, step, node).await,
                })
                .await?;
            for (node, reply) in replies {
                let (next, keys): (u64, Vec<String>) =
                    redis::from_redis_value(reply).map_err(unavailable)?;
                found.extend(keys);
                if next != 0 {
                    pending.push((node, next));
                }
            }
        }
        Ok(found)
    }
}

/// One `SCAN` step on a cluster: on every primary at the start (the reply
/// maps each address to its cursor and keys), then on one by address.
async fn scan_step(
    conn: &mut ClusterConnection,
    step: redis::Cmd,
    node: Option<String>,
) -> ClusterResult<Vec<(Option<String>, redis::Value)>> {
    use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};
    let Some(address) = node else {
        let every = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
        let reply = conn.route_command(step, every).await.map_err(unavailable)?;
        let redis::Value::Map(replies) = reply else {
            return Err(unavailable(UnexpectedScan));
        };
        return replies
            .into_iter()
            .map(|(address, reply)| {
                let address: String = redis::from_redis_value(address).map_err(unavailable)?;
                Ok((Some(address), reply))
            })
            .collect();
    };
    let (host, port) = address
        .rsplit_once(':')
        .and_then(|(host, port)| Some((host.to_owned(), port.parse().ok()?)))
        .ok_or_else(|| unavailable(UnexpectedScan))?;
    let one = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
    let reply = conn.route_command(step, one).await.map_err(unavailable)?;
    Ok(vec![(Some(address), reply)])
}

#[derive(Debug, thiserror::Error)]
#[error("a SCAN over the cluster's primaries got an unexpected reply")]
struct UnexpectedScan;

#[derive(Debug, thiserror::Error)]
#[error("the write reached redis after the node stopped waiting for it")]
pub(crate) struct Late;

/// A script's reply, or [`Late`] when it refused to apply a write past its
/// store deadline (see [`Redis::store_deadline`]).
pub(crate) fn not_late(reply: redis::Value) -> ClusterResult<redis::Value> {
    let late = match &reply {
        redis::Value::Array(items) => matches!(
            items.first(),
            Some(redis::Value::BulkString(b)) if b.as_slice() == b"late"
        ),
        _ => false,
    };
    if late {
        Err(ClusterError::Unavailable(Box::new(Late)))
    } else {
        Ok(reply)
    }
}

/// The names Redis returned that parse, sorted.
fn sorted_names<T: Ord>(raw: Vec<String>, parse: impl Fn(&str) -> Option<T>) -> Vec<T> {
    let mut names: Vec<T> = raw.iter().filter_map(|s| parse(s)).collect();
    names.sort();
    names
}

/// The command's name as a metric label; a fixed set, so labels stay few.
fn command_name(command: &redis::Cmd) -> &'static str {
    const KNOWN: &[&str] = &[
        "XRANGE",
        "XREVRANGE",
        "PUBLISH",
        "SPUBLISH",
        "PING",
        "HGET",
        "HKEYS",
        "HGETALL",
        "SMEMBERS",
        "ZADD",
        "ZRANGE",
    ];
    let name = match command.args_iter().next() {
        Some(redis::Arg::Simple(name)) => name,
        _ => return "other",
    };
    KNOWN
        .iter()
        .find(|known| known.as_bytes().eq_ignore_ascii_case(name))
        .copied()
        .unwrap_or("other")
}

impl Backend {
    /// The Redis backend of one node of a cluster. Connects lazily: a node
    /// starts while Redis is down and catches up when it returns. The
    /// subscriber task runs on `tracker` until `stop` is cancelled.
    pub fn redis(
        settings: &RedisSettings,
        deliver: Arc<dyn Deliver>,
        stop: CancellationToken,
        tracker: &TaskTracker,
    ) -> ClusterResult<Self> {
        let redis = Redis::connect(&settings.target, &settings.prefix)?;
        let bus = RedisBus::new(redis.clone(), deliver);
        tracker.spawn(bus.clone().run(settings.target.clone(), stop.clone()));
        let ledger = Arc::new(Ledger::new());
        let history = Arc::new(RedisHistory::new(
            redis.clone(),
            settings.history_limit,
            settings.history_ttl,
            settings.archiving,
            tracker.clone(),
            stop,
        ));
        Ok(Self {
            backlog: settings
                .archiving
                .then(|| history.clone() as Arc<dyn super::Backlog>),
            history,
            bus: Arc::new(bus),
            presence: Arc::new(RedisPresence::new(
                redis.clone(),
                settings.node.clone(),
                ledger.clone(),
            )),
            liveness: Arc::new(RedisLiveness::new(
                redis.clone(),
                settings.node.clone(),
                settings.presence_ttl,
                ledger,
            )),
            uploads: Arc::new(RedisUploadRecords::new(redis.clone())),
        })
    }
}
