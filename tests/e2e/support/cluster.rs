//! A cluster under test: several in-process nodes sharing one store under a
//! unique key prefix. The store is the [`Backing`]: a real `redis-server` of
//! the cluster's own, a Redis Cluster shared with other tests (see
//! [`SharedRedisCluster`]), or a Redis Cluster of its own to break. A scenario written as a function of the backing
//! runs on both through [`on_both_backings!`].

use chorus::config::Settings;
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::node::Endpoint;
use super::redis_cluster::hash_slot;
use super::{ProcessNode, RedisCluster, RedisServer, SharedRedisCluster, TestNode, unique};

/// What the nodes of a [`Cluster`] share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// One `redis-server`, the cluster's own (`REDIS_URL`).
    Redis,
    /// A Redis Cluster of 3 primaries and 3 replicas (`REDIS_CLUSTER_URLS`),
    /// shared with the other tests of the run, which use other prefixes.
    RedisCluster,
    /// A Redis Cluster like it, started for this cluster alone (about 2.5 s
    /// more): for a test that kills, stops or restarts its nodes.
    OwnedRedisCluster,
}

/// The running store behind a [`Backing`].
enum Store {
    Redis(RedisServer),
    RedisCluster(&'static RedisCluster),
    OwnedRedisCluster(RedisCluster),
}

/// The Redis Cluster of every cluster-backed [`Cluster`] of this process:
/// `scripts/test.sh`'s shared one, else one started on first use.
static REDIS_CLUSTER: SharedRedisCluster = SharedRedisCluster::new();

pub struct Cluster {
    store: Store,
    pub prefix: String,
    pub nodes: Vec<TestNode>,
}

impl Cluster {
    /// `n` nodes with default settings on a fresh Redis.
    pub async fn start(n: usize) -> Self {
        Self::start_with_on(Backing::Redis, n, |_| {}).await
    }

    /// `n` nodes on a fresh Redis, each with settings adjusted by `adjust`.
    pub async fn start_with(n: usize, adjust: impl Fn(&mut Settings)) -> Self {
        Self::start_with_on(Backing::Redis, n, adjust).await
    }

    /// `n` nodes with default settings on `backing`.
    pub async fn start_on(backing: Backing, n: usize) -> Self {
        Self::start_with_on(backing, n, |_| {}).await
    }

    /// `n` nodes on `backing`, each with settings adjusted by `adjust`.
    pub async fn start_with_on(backing: Backing, n: usize, adjust: impl Fn(&mut Settings)) -> Self {
        let store = match backing {
            Backing::Redis => Store::Redis(RedisServer::start()),
            Backing::RedisCluster => Store::RedisCluster(REDIS_CLUSTER.get().await),
            Backing::OwnedRedisCluster => Store::OwnedRedisCluster(RedisCluster::start().await),
        };
        let mut cluster = Self {
            store,
            prefix: format!("{}:", unique("test")),
            nodes: Vec::with_capacity(n),
        };
        for i in 0..n {
            let id = cluster.node_id(&format!("n{i}"));
            let node = cluster.spawn_node(&id, &adjust).await;
            cluster.nodes.push(node);
        }
        cluster.wait_ready().await;
        cluster
    }

    /// What the nodes share.
    pub fn backing(&self) -> Backing {
        match self.store {
            Store::Redis(_) => Backing::Redis,
            Store::RedisCluster(_) => Backing::RedisCluster,
            Store::OwnedRedisCluster(_) => Backing::OwnedRedisCluster,
        }
    }

    /// Points `settings` at this cluster's store and prefix.
    fn share(&self, settings: &mut Settings) {
        settings.redis_prefix = self.prefix.clone();
        match &self.store {
            Store::Redis(server) => {
                settings.redis_url = Some(server.url());
                settings.redis_cluster_urls = None;
            }
            Store::RedisCluster(_) | Store::OwnedRedisCluster(_) => {
                settings.redis_url = None;
                settings.redis_cluster_urls = Some(self.redis_cluster().urls());
            }
        }
    }

    /// The cluster's own `redis-server`, for the tests that stop, kill or
    /// pause it, or read it in ways only one Redis allows.
    pub fn redis(&self) -> &RedisServer {
        match &self.store {
            Store::Redis(server) => server,
            Store::RedisCluster(_) | Store::OwnedRedisCluster(_) => {
                panic!("this test runs on one Redis only")
            }
        }
    }

    /// [`Cluster::redis`], to stop, kill or restart it.
    pub fn redis_mut(&mut self) -> &mut RedisServer {
        match &mut self.store {
            Store::Redis(server) => server,
            Store::RedisCluster(_) | Store::OwnedRedisCluster(_) => {
                panic!("this test runs on one Redis only")
            }
        }
    }

    /// The Redis Cluster the nodes share (with [`Backing::RedisCluster`],
    /// shared with other tests too: it refuses to kill or restart a node).
    pub fn redis_cluster(&self) -> &RedisCluster {
        match &self.store {
            Store::RedisCluster(cluster) => cluster,
            Store::OwnedRedisCluster(cluster) => cluster,
            Store::Redis(_) => panic!("this test runs on a Redis Cluster only"),
        }
    }

    /// Waits until every node answers `/ready` with 200.
    pub async fn wait_ready(&self) {
        for node in &self.nodes {
            super::wait_ready(&node.url("/ready")).await;
        }
    }

    /// Starts another in-process node of this cluster. `adjust` runs after
    /// the cluster's settings are applied, so it may change them (a Redis URL
    /// with credentials, a shorter TTL).
    pub async fn spawn_node(&self, node_id: &str, adjust: impl FnOnce(&mut Settings)) -> TestNode {
        TestNode::spawn_with(|s| {
            self.share(s);
            s.node_id = Some(node_id.to_owned());
            adjust(s);
        })
        .await
    }

    /// A node id unique to this cluster (`suffix` must be a valid id part).
    pub fn node_id(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix).replace(':', "-")
    }

    /// A connection to the cluster's store, as an operator would use: one
    /// Redis, or a cluster connection that routes each key to its primary.
    pub async fn redis_connection(&self) -> RedisConnection {
        match &self.store {
            Store::Redis(server) => {
                let client = redis::Client::open(server.url()).expect("redis url");
                let connection =
                    tokio::time::timeout(super::TIMEOUT, client.get_multiplexed_async_connection())
                        .await
                        .expect("redis connects in time")
                        .expect("redis connects");
                RedisConnection::Redis(connection)
            }
            Store::RedisCluster(_) | Store::OwnedRedisCluster(_) => {
                RedisConnection::RedisCluster(self.redis_cluster().connection().await)
            }
        }
    }

    /// The pub/sub channels under this cluster's prefix that have a
    /// subscriber now, sorted (on a Redis Cluster: the shard channels of
    /// every primary).
    pub async fn subscribed_channels(&self) -> Vec<String> {
        let pattern = format!("{}*", self.prefix);
        let mut channels: Vec<String> = match &self.store {
            Store::Redis(_) => {
                let mut redis = self.redis_connection().await;
                redis::cmd("PUBSUB")
                    .arg("CHANNELS")
                    .arg(&pattern)
                    .query_async(&mut redis)
                    .await
                    .expect("PUBSUB CHANNELS")
            }
            Store::RedisCluster(_) | Store::OwnedRedisCluster(_) => {
                let cluster = self.redis_cluster();
                let mut all = Vec::new();
                for primary in cluster.topology().await.primaries() {
                    let mut redis = cluster.node_connection(primary).await;
                    let on_primary: Vec<String> = redis::cmd("PUBSUB")
                        .arg("SHARDCHANNELS")
                        .arg(&pattern)
                        .query_async(&mut redis)
                        .await
                        .expect("PUBSUB SHARDCHANNELS");
                    all.extend(on_primary);
                }
                all
            }
        };
        channels.sort();
        channels
    }

    /// How many connections subscribe to `channel` (on a Redis Cluster: to
    /// the shard channel, at the primary serving its slot).
    pub async fn subscribers(&self, channel: &str) -> usize {
        let (command, mut redis) = match &self.store {
            Store::Redis(_) => ("NUMSUB", self.redis_connection().await),
            Store::RedisCluster(_) | Store::OwnedRedisCluster(_) => {
                let cluster = self.redis_cluster();
                let owner = cluster.topology().await.primary_of_slot(hash_slot(channel));
                let redis = cluster.node_connection(owner).await;
                ("SHARDNUMSUB", RedisConnection::Node(redis))
            }
        };
        let (_, count): (String, usize) = redis::cmd("PUBSUB")
            .arg(command)
            .arg(channel)
            .query_async(&mut redis)
            .await
            .unwrap_or_else(|e| panic!("PUBSUB {command} {channel}: {e}"));
        count
    }

    /// Starts the real binary as another node of this cluster, with `extra`
    /// settings.
    pub fn spawn_process(&self, node_id: &str, extra: &[(&str, &str)]) -> ProcessNode {
        let store = match &self.store {
            Store::Redis(server) => ("REDIS_URL", server.url()),
            Store::RedisCluster(_) | Store::OwnedRedisCluster(_) => {
                ("REDIS_CLUSTER_URLS", self.redis_cluster().urls())
            }
        };
        let mut env = vec![
            (store.0, store.1.as_str()),
            ("CHORUS_REDIS_PREFIX", self.prefix.as_str()),
            ("CHORUS_NODE_ID", node_id),
        ];
        env.extend_from_slice(extra);
        ProcessNode::spawn(&env)
    }
}

/// Where a scenario runs: one embedded node, its state in memory (the
/// product's single-node mode), or two nodes sharing a backing. A scenario
/// puts its clients on [`Deployment::a`] and [`Deployment::b`]: the same
/// node in memory, two nodes otherwise, so that on a backing everything it
/// checks crosses from one node to the other.
pub enum Deployment {
    Memory(TestNode),
    Nodes(Cluster),
}

impl Deployment {
    /// One embedded node (`on` is `None`) or two nodes on the backing, every
    /// node with settings adjusted by `adjust`.
    pub async fn start(on: Option<Backing>, adjust: impl Fn(&mut Settings)) -> Self {
        match on {
            None => Self::Memory(TestNode::spawn_with(adjust).await),
            Some(backing) => Self::Nodes(Cluster::start_with_on(backing, 2, adjust).await),
        }
    }

    /// The node a scenario's first client uses.
    pub fn a(&self) -> &TestNode {
        match self {
            Self::Memory(node) => node,
            Self::Nodes(cluster) => &cluster.nodes[0],
        }
    }

    /// The other node (the same one in memory).
    pub fn b(&self) -> &TestNode {
        match self {
            Self::Memory(node) => node,
            Self::Nodes(cluster) => &cluster.nodes[1],
        }
    }
}

/// A connection to a [`Cluster`]'s store; `redis::AsyncCommands` work on it
/// whatever the backing, for the commands a Redis Cluster routes by key.
#[derive(Clone)]
pub enum RedisConnection {
    /// To the one `redis-server`.
    Redis(MultiplexedConnection),
    /// A cluster connection, following the cluster's redirections.
    RedisCluster(ClusterConnection),
    /// To one node of a Redis Cluster alone, for what only it can answer.
    Node(MultiplexedConnection),
}

impl redis::aio::ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Redis(c) | Self::Node(c) => c.req_packed_command(cmd),
            Self::RedisCluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Redis(c) | Self::Node(c) => c.req_packed_commands(pipeline, offset, count),
            Self::RedisCluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Redis(c) | Self::Node(c) => c.get_db(),
            Self::RedisCluster(c) => c.get_db(),
        }
    }
}

/// For each `scenario`, an `async fn(Backing)` of the calling module, a
/// module of the same name with one test per backing: `on_redis` and
/// `on_redis_cluster` (`cargo nextest run -E 'test(/on_redis_cluster$/)'`
/// runs every such scenario on the Redis Cluster).
///
/// - `via start;`: each scenario takes what `start(backing).await` (an
///   `async fn` of the calling module) returns: a deployment built on the
///   backing.
/// - `and in_memory;`: each scenario is an `async fn(Option<Backing>)`, and
///   the module has a third test, `in_memory`, that passes `None` (one
///   embedded node; see [`Deployment::start`]).
macro_rules! on_both_backings {
    (via $start:ident; $($scenario:ident),+ $(,)?) => {
        $(
            mod $scenario {
                use $crate::support::cluster::Backing;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_redis() {
                    super::$scenario(super::$start(Backing::Redis).await).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_redis_cluster() {
                    super::$scenario(super::$start(Backing::RedisCluster).await).await;
                }
            }
        )+
    };
    (and in_memory; $($scenario:ident),+ $(,)?) => {
        $(
            mod $scenario {
                use $crate::support::cluster::Backing;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn in_memory() {
                    super::$scenario(None).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_redis() {
                    super::$scenario(Some(Backing::Redis)).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_redis_cluster() {
                    super::$scenario(Some(Backing::RedisCluster)).await;
                }
            }
        )+
    };
    ($($scenario:ident),+ $(,)?) => {
        $(
            mod $scenario {
                use $crate::support::cluster::Backing;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_redis() {
                    super::$scenario(Backing::Redis).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_redis_cluster() {
                    super::$scenario(Backing::RedisCluster).await;
                }
            }
        )+
    };
}
pub(crate) use on_both_backings;
