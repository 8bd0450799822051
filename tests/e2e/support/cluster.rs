//! A cluster under test: one real `redis-server` and several in-process
//! nodes sharing it under a unique key prefix.

use chorus::config::Settings;

use super::node::Endpoint;
use super::{ProcessNode, RedisServer, TestNode, unique};

pub struct Cluster {
    pub redis: RedisServer,
    pub prefix: String,
    pub nodes: Vec<TestNode>,
}

impl Cluster {
    /// `n` nodes with default settings on a fresh Redis.
    pub async fn start(n: usize) -> Self {
        Self::start_with(n, |_| {}).await
    }

    /// `n` nodes, each with settings adjusted by `adjust`.
    pub async fn start_with(n: usize, adjust: impl Fn(&mut Settings)) -> Self {
        let redis = RedisServer::start();
        let prefix = format!("{}:", unique("test"));
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let node = TestNode::spawn_with(|s| {
                s.redis_url = Some(redis.url());
                s.redis_prefix = prefix.clone();
                s.node_id = Some(format!("{prefix}n{i}").replace(':', "-"));
                adjust(s);
            })
            .await;
            nodes.push(node);
        }
        let cluster = Self {
            redis,
            prefix,
            nodes,
        };
        cluster.wait_ready().await;
        cluster
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
            s.redis_url = Some(self.redis.url());
            s.redis_prefix = self.prefix.clone();
            s.node_id = Some(node_id.to_owned());
            adjust(s);
        })
        .await
    }

    /// A node id unique to this cluster (`suffix` must be a valid id part).
    pub fn node_id(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix).replace(':', "-")
    }

    /// A direct connection to the cluster's Redis, as an operator would use.
    pub async fn redis_connection(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.redis.url()).expect("redis url");
        tokio::time::timeout(super::TIMEOUT, client.get_multiplexed_async_connection())
            .await
            .expect("redis connects in time")
            .expect("redis connects")
    }

    /// Starts the real binary as another node of this cluster, with `extra`
    /// settings.
    pub fn spawn_process(&self, node_id: &str, extra: &[(&str, &str)]) -> ProcessNode {
        let url = self.redis.url();
        let mut env = vec![
            ("REDIS_URL", url.as_str()),
            ("CHORUS_REDIS_PREFIX", self.prefix.as_str()),
            ("CHORUS_NODE_ID", node_id),
        ];
        env.extend_from_slice(extra);
        ProcessNode::spawn(&env)
    }
}
