//! Node liveness in Redis: a heartbeat index that says which nodes are
//! alive, the reaping of the contributions of nodes that stopped beating,
//! and the restore of this node's contributions from its ledger when Redis
//! lost or may have missed some.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;

use super::ledger::Ledger;
use super::{Redis, sorted_names};
use crate::cluster::{ClusterResult, Departure, Liveness, RoomChange};
use crate::domain::{NodeId, RoomName, UserName};

static HEARTBEAT: LazyLock<Script> = presence_script!("lua/heartbeat.lua");
static LIVE_NODES: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/live_nodes.lua")));
static REAP: LazyLock<Script> = presence_script!("lua/reap.lua");
static RESTORE: LazyLock<Script> = presence_script!("lua/restore.lua");

/// The liveness of one node of a cluster.
pub struct RedisLiveness {
    redis: Redis,
    node: NodeId,
    ttl: Duration,
    /// What this node's connections amount to, shared with its presence: a
    /// restore rewrites Redis from it.
    ledger: Arc<Ledger>,
}

impl RedisLiveness {
    pub(super) fn new(redis: Redis, node: NodeId, ttl: Duration, ledger: Arc<Ledger>) -> Self {
        Self {
            redis,
            node,
            ttl,
            ledger,
        }
    }

    async fn reap_node(&self, node: &str, mode: &str) -> ClusterResult<Vec<Departure>> {
        let keys = self.redis.keys();
        let Some(node) = NodeId::parse(node) else {
            return Ok(Vec::new());
        };
        let mut invocation = REAP.prepare_invoke();
        invocation
            .key(keys.nodes())
            .key(keys.node(&node))
            .arg(node.as_str())
            .arg(keys.prefix())
            .arg(mode);
        let flat: Vec<String> = self.redis.invoke("reap", &invocation).await?;
        Ok(flat
            .chunks_exact(2)
            .filter_map(|pair| {
                Some(Departure {
                    room: RoomName::parse(&pair[0]).ok()?,
                    user: UserName::parse(&pair[1]).ok()?,
                })
            })
            .collect())
    }
}

#[async_trait]
impl Liveness for RedisLiveness {
    async fn nodes(&self) -> ClusterResult<Vec<NodeId>> {
        let mut invocation = LIVE_NODES.prepare_invoke();
        invocation.key(self.redis.keys().nodes()).arg("live");
        let raw: Vec<String> = self.redis.invoke("nodes", &invocation).await?;
        Ok(sorted_names(raw, NodeId::parse))
    }

    async fn heartbeat(&self) -> ClusterResult<bool> {
        let keys = self.redis.keys();
        // Only zero entries no write in flight can still need: the others
        // wait for a later beat.
        let (settled, zeroed) = self.ledger.take_settled_zeroed();
        let mut invocation = HEARTBEAT.prepare_invoke();
        // Dead after half the TTL without a beat: with beats and reaps every
        // quarter TTL (see `upkeep::interval`), a dead node's users are gone
        // within three quarters of the TTL, and one late beat is tolerated.
        let ttl_ms = u64::try_from((self.ttl / 2).as_millis()).unwrap_or(u64::MAX);
        invocation
            .key(keys.nodes())
            .key(keys.node(&self.node))
            .arg(self.node.as_str())
            .arg(ttl_ms)
            .arg(self.ledger.incarnation())
            .arg(settled);
        for entry in zeroed.keys() {
            invocation.arg(entry);
        }
        let added: i64 = match self.redis.invoke("heartbeat", &invocation).await {
            Ok(added) => added,
            Err(error) => {
                self.ledger.keep_zeroed(zeroed);
                return Err(error);
            }
        };
        let dirty = self.ledger.take_dirty();
        Ok(added == 1 || dirty)
    }

    async fn restore(&self) -> ClusterResult<Vec<RoomChange>> {
        let keys = self.redis.keys();
        let mut invocation = RESTORE.prepare_invoke();
        invocation
            .key(keys.node(&self.node))
            .arg(keys.prefix())
            .arg(self.ledger.incarnation());
        self.ledger.snapshot(|seq, counts| {
            invocation.arg(seq);
            for (entry, count) in counts {
                invocation.arg(entry).arg(*count);
            }
        });
        let flat: Vec<String> = self
            .redis
            .invoke("restore", &invocation)
            .await
            .inspect_err(|_| self.ledger.mark_dirty())?;
        Ok(flat
            .chunks_exact(3)
            .filter_map(|change| {
                Some(RoomChange {
                    joined: change[0] == "+",
                    room: RoomName::parse(&change[1]).ok()?,
                    user: UserName::parse(&change[2]).ok()?,
                })
            })
            .collect())
    }

    async fn reap(&self) -> ClusterResult<Vec<Departure>> {
        let mut invocation = LIVE_NODES.prepare_invoke();
        invocation.key(self.redis.keys().nodes()).arg("dead");
        let dead: Vec<String> = self.redis.invoke("nodes", &invocation).await?;
        let mut departures = Vec::new();
        for node in dead.iter().filter(|n| *n != self.node.as_str()) {
            departures.extend(self.reap_node(node, "dead").await?);
        }
        Ok(departures)
    }

    async fn remove_node(&self) -> ClusterResult<Vec<Departure>> {
        self.reap_node(self.node.as_str(), "self").await
    }
}
