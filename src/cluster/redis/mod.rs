//! Cluster mode: every role kept in Redis, shared by any number of nodes.
//!
//! Commands go through a `deadpool-redis` pool with timeouts, so an outage
//! answers `Unavailable` instead of hanging. Pub/sub runs on one dedicated
//! connection per node ([`bus`]). Every multi-step change is one Lua script
//! (`lua/*.lua`, embedded at build time), so it is atomic and one round trip.
//! [`keys`] documents the key layout.

mod bus;
mod history;
pub(crate) mod keys;
mod presence;

use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_redis::{Manager, Pool, Runtime};
use redis::{AsyncConnectionConfig, FromRedisValue, ScriptInvocation};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use bus::RedisBus;
pub use history::RedisHistory;
pub use presence::RedisPresence;

use self::keys::Keys;
use super::{Backend, ClusterError, ClusterResult, Deliver};
use crate::domain::NodeId;
use crate::telemetry;

/// How long one command may take, connection included, before the caller
/// gets `Unavailable`. Long enough for a busy Redis, short enough that a
/// client is answered quickly during an outage.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Pooled command connections per node. Commands are multiplexed, so a few
/// connections carry thousands of requests per second.
const POOL_SIZE: usize = 16;

/// What cluster mode needs to know.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://host:port/db`.
    pub url: String,
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
}

/// The command side shared by the three roles: a pool, the key layout, and
/// one place that turns every failure into [`ClusterError::Unavailable`].
#[derive(Clone)]
pub(crate) struct Redis {
    pool: Pool,
    keys: Keys,
}

fn unavailable(error: impl std::error::Error + Send + Sync + 'static) -> ClusterError {
    ClusterError::Unavailable(Box::new(error))
}

#[derive(Debug, thiserror::Error)]
#[error("redis did not answer within {0:?}")]
struct TimedOut(Duration);

impl Redis {
    fn connect(url: &str, prefix: &str) -> ClusterResult<Self> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT));
        let manager = Manager::new_with_config(url, config).map_err(unavailable)?;
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(COMMAND_TIMEOUT))
            .create_timeout(Some(COMMAND_TIMEOUT))
            .recycle_timeout(Some(COMMAND_TIMEOUT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(unavailable)?;
        Ok(Self {
            pool,
            keys: Keys::new(prefix),
        })
    }

    /// Runs a script (EVALSHA, loading it on first use); `op` names it in
    /// metrics.
    pub(crate) async fn invoke<T: FromRedisValue>(
        &self,
        op: &'static str,
        invocation: &ScriptInvocation<'_>,
    ) -> ClusterResult<T> {
        self.timed(op, async {
            let mut conn = self.pool.get().await.map_err(unavailable)?;
            invocation
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)
        })
        .await
    }

    /// Runs one command; its name labels the metrics.
    pub(crate) async fn query<T: FromRedisValue>(&self, command: &redis::Cmd) -> ClusterResult<T> {
        self.timed(command_name(command), async {
            let mut conn = self.pool.get().await.map_err(unavailable)?;
            command.query_async(&mut conn).await.map_err(unavailable)
        })
        .await
    }

    /// Bounds a call by [`COMMAND_TIMEOUT`] and records its latency, or its
    /// failure.
    async fn timed<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = ClusterResult<T>>,
    ) -> ClusterResult<T> {
        let started = Instant::now();
        let result = tokio::time::timeout(COMMAND_TIMEOUT, call)
            .await
            .unwrap_or_else(|_| Err(unavailable(TimedOut(COMMAND_TIMEOUT))));
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
}

/// The command's name as a metric label; a fixed set, so labels stay few.
fn command_name(command: &redis::Cmd) -> &'static str {
    const KNOWN: &[&str] = &[
        "XRANGE",
        "XREVRANGE",
        "PUBLISH",
        "PING",
        "HKEYS",
        "HGETALL",
        "SMEMBERS",
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
        let redis = Redis::connect(&settings.url, &settings.prefix)?;
        let client = redis::Client::open(settings.url.as_str()).map_err(unavailable)?;
        let bus = RedisBus::new(redis.clone(), deliver);
        tracker.spawn(bus.clone().run(client, stop));
        Ok(Self {
            bus: Arc::new(bus),
            presence: Arc::new(RedisPresence::new(
                redis.clone(),
                settings.node.clone(),
                settings.presence_ttl,
            )),
            history: Arc::new(RedisHistory::new(
                redis,
                settings.history_limit,
                settings.history_ttl,
            )),
        })
    }
}
