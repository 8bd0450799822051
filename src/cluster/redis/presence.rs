//! Presence in Redis: cluster-wide connection tallies, each node's own
//! contributions kept apart so that a dead node's share can be taken out
//! exactly once, and a heartbeat index that says which nodes are alive.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;

use super::Redis;
use super::keys::{room_entry, user_entry};
use crate::cluster::{
    ClusterError, ClusterResult, Contributions, Departure, Presence, RoomSummary,
};
use crate::domain::{NodeId, RoomName, UserName};

static ADD: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/presence_add.lua")));
static REMOVE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/presence_remove.lua")));
static HEARTBEAT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/heartbeat.lua")));
static LIVE_NODES: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/live_nodes.lua")));
static REAP: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/reap.lua")));
static RESTORE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/restore.lua")));
static CREATE_ROOM: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/create_room.lua")));

/// The presence of one node of a cluster.
pub struct RedisPresence {
    redis: Redis,
    node: NodeId,
    ttl: Duration,
    /// Set when a write failed: Redis may no longer match this node's sockets,
    /// so the next heartbeat asks for a restore.
    dirty: AtomicBool,
}

fn names<T>(raw: Vec<String>, parse: impl Fn(&str) -> Option<T>) -> Vec<T>
where
    T: Ord,
{
    let mut names: Vec<T> = raw.iter().filter_map(|s| parse(s)).collect();
    names.sort();
    names
}

impl RedisPresence {
    pub(super) fn new(redis: Redis, node: NodeId, ttl: Duration) -> Self {
        Self {
            redis,
            node,
            ttl,
            dirty: AtomicBool::new(false),
        }
    }

    /// Runs a tally script; a failure marks this node's entries dirty.
    async fn tally(
        &self,
        script: &Script,
        tally: String,
        entry: String,
        user: &UserName,
        room: Option<&RoomName>,
    ) -> ClusterResult<bool> {
        let keys = self.redis.keys();
        let mut invocation = script.prepare_invoke();
        invocation
            .key(keys.node(&self.node))
            .key(tally)
            .arg(entry)
            .arg(user.as_str());
        if let Some(room) = room {
            invocation.key(keys.active_rooms()).arg(room.as_str());
        }
        let changed: i64 = self
            .redis
            .invoke("presence", &invocation)
            .await
            .inspect_err(|_| {
                self.dirty.store(true, Ordering::Relaxed);
            })?;
        Ok(changed == 1)
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
impl Presence for RedisPresence {
    async fn connect(&self, user: &UserName) -> ClusterResult<bool> {
        self.tally(
            &ADD,
            self.redis.keys().online(),
            user_entry(user),
            user,
            None,
        )
        .await
    }

    async fn disconnect(&self, user: &UserName) -> ClusterResult<bool> {
        self.tally(
            &REMOVE,
            self.redis.keys().online(),
            user_entry(user),
            user,
            None,
        )
        .await
    }

    async fn join(&self, room: &RoomName, user: &UserName) -> ClusterResult<bool> {
        let tally = self.redis.keys().members(room);
        self.tally(&ADD, tally, room_entry(room, user), user, Some(room))
            .await
    }

    async fn leave(&self, room: &RoomName, user: &UserName) -> ClusterResult<bool> {
        let tally = self.redis.keys().members(room);
        self.tally(&REMOVE, tally, room_entry(room, user), user, Some(room))
            .await
    }

    async fn members(&self, room: &RoomName) -> ClusterResult<Vec<UserName>> {
        let raw: Vec<String> = self
            .redis
            .query(redis::cmd("HKEYS").arg(self.redis.keys().members(room)))
            .await?;
        Ok(names(raw, |s| UserName::parse(s).ok()))
    }

    async fn online(&self) -> ClusterResult<Vec<UserName>> {
        let raw: Vec<String> = self
            .redis
            .query(redis::cmd("HKEYS").arg(self.redis.keys().online()))
            .await?;
        Ok(names(raw, |s| UserName::parse(s).ok()))
    }

    async fn rooms(&self) -> ClusterResult<Vec<RoomSummary>> {
        let keys = self.redis.keys();
        let active: Vec<(String, i64)> = self
            .redis
            .query(redis::cmd("HGETALL").arg(keys.active_rooms()))
            .await?;
        let created: Vec<String> = self
            .redis
            .query(redis::cmd("SMEMBERS").arg(keys.created_rooms()))
            .await?;
        let mut rooms: BTreeMap<RoomName, usize> = created
            .iter()
            .filter_map(|r| RoomName::parse(r).ok())
            .map(|r| (r, 0))
            .collect();
        for (room, members) in active {
            if let Ok(room) = RoomName::parse(&room) {
                rooms.insert(room, usize::try_from(members).unwrap_or(0));
            }
        }
        Ok(rooms
            .into_iter()
            .map(|(name, members)| RoomSummary { name, members })
            .collect())
    }

    async fn create_room(&self, room: &RoomName, max: usize) -> ClusterResult<()> {
        let keys = self.redis.keys();
        let mut invocation = CREATE_ROOM.prepare_invoke();
        invocation
            .key(keys.created_rooms())
            .key(keys.active_rooms())
            .arg(room.as_str())
            .arg(max);
        let created: i64 = self.redis.invoke("create_room", &invocation).await?;
        match created {
            1 => Ok(()),
            -1 => Err(ClusterError::Full),
            _ => Err(ClusterError::Conflict),
        }
    }

    async fn nodes(&self) -> ClusterResult<Vec<NodeId>> {
        let mut invocation = LIVE_NODES.prepare_invoke();
        invocation.key(self.redis.keys().nodes()).arg("live");
        let raw: Vec<String> = self.redis.invoke("nodes", &invocation).await?;
        Ok(names(raw, NodeId::parse))
    }

    async fn heartbeat(&self) -> ClusterResult<bool> {
        let mut invocation = HEARTBEAT.prepare_invoke();
        // Dead after half the TTL without a beat: with beats and reaps every
        // quarter TTL (see `upkeep::interval`), a dead node's users are gone
        // within three quarters of the TTL, and one late beat is tolerated.
        let ttl_ms = u64::try_from((self.ttl / 2).as_millis()).unwrap_or(u64::MAX);
        invocation
            .key(self.redis.keys().nodes())
            .arg(self.node.as_str())
            .arg(ttl_ms);
        let added: i64 = self.redis.invoke("heartbeat", &invocation).await?;
        let dirty = self.dirty.swap(false, Ordering::Relaxed);
        Ok(added == 1 || dirty)
    }

    async fn restore(&self, contributions: &Contributions) -> ClusterResult<()> {
        let keys = self.redis.keys();
        let mut invocation = RESTORE.prepare_invoke();
        invocation.key(keys.node(&self.node)).arg(keys.prefix());
        for (user, connections) in &contributions.users {
            invocation.arg(user_entry(user)).arg(*connections);
        }
        for (room, user, connections) in &contributions.rooms {
            invocation.arg(room_entry(room, user)).arg(*connections);
        }
        let _: i64 = self
            .redis
            .invoke("restore", &invocation)
            .await
            .inspect_err(|_| {
                self.dirty.store(true, Ordering::Relaxed);
            })?;
        Ok(())
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

    async fn remove_node(&self) -> ClusterResult<()> {
        self.reap_node(self.node.as_str(), "self").await.map(drop)
    }
}
