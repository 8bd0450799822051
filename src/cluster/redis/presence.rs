//! Presence in Redis: cluster-wide connection tallies, each node's own
//! contributions kept apart so that a dead node's share can be taken out
//! exactly once (see [`super::liveness`]).

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use redis::Script;

use super::keys::{room_entry, user_entry};
use super::ledger::Ledger;
use super::{Redis, sorted_names};
use crate::cluster::{ClusterError, ClusterResult, Presence, RoomSummary};
use crate::domain::{NodeId, RoomName, UserName};

static SET: LazyLock<Script> = presence_script!("lua/presence_set.lua");
static CREATE_ROOM: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/create_room.lua")));

/// The presence of one node of a cluster.
pub struct RedisPresence {
    redis: Redis,
    node: NodeId,
    /// What this node's connections amount to, shared with its liveness.
    ledger: Arc<Ledger>,
}

impl RedisPresence {
    pub(super) fn new(redis: Redis, node: NodeId, ledger: Arc<Ledger>) -> Self {
        Self {
            redis,
            node,
            ledger,
        }
    }

    /// Moves this node's count for `entry` by one and writes the new count;
    /// returns 1 when the user's cluster-wide tally rose from zero, -1 when
    /// it fell to zero, else 0.
    async fn count(
        &self,
        tally: String,
        entry: String,
        user: &UserName,
        room: Option<&RoomName>,
        up: bool,
    ) -> ClusterResult<i64> {
        let write = self.ledger.write(entry, up);
        let keys = self.redis.keys();
        let mut invocation = SET.prepare_invoke();
        invocation
            .key(keys.node(&self.node))
            .key(tally)
            .arg(&write.entry)
            .arg(user.as_str())
            .arg(self.ledger.incarnation())
            .arg(write.seq)
            .arg(write.count);
        if let Some(room) = room {
            invocation.key(keys.active_rooms()).arg(room.as_str());
        }
        let crossed: i64 = self.redis.invoke("presence", &invocation).await?;
        write.answered();
        Ok(crossed)
    }
}

#[async_trait]
impl Presence for RedisPresence {
    async fn connect(&self, user: &UserName) -> ClusterResult<bool> {
        let tally = self.redis.keys().online();
        let crossed = self
            .count(tally, user_entry(user), user, None, true)
            .await?;
        Ok(crossed == 1)
    }

    async fn disconnect(&self, user: &UserName) -> ClusterResult<bool> {
        let tally = self.redis.keys().online();
        let crossed = self
            .count(tally, user_entry(user), user, None, false)
            .await?;
        Ok(crossed == -1)
    }

    async fn join(&self, room: &RoomName, user: &UserName) -> ClusterResult<bool> {
        let tally = self.redis.keys().members(room);
        let entry = room_entry(room, user);
        let crossed = self.count(tally, entry, user, Some(room), true).await?;
        Ok(crossed == 1)
    }

    async fn leave(&self, room: &RoomName, user: &UserName) -> ClusterResult<bool> {
        let tally = self.redis.keys().members(room);
        let entry = room_entry(room, user);
        let crossed = self.count(tally, entry, user, Some(room), false).await?;
        Ok(crossed == -1)
    }

    async fn members(&self, room: &RoomName) -> ClusterResult<Vec<UserName>> {
        let raw: Vec<String> = self
            .redis
            .query(redis::cmd("HKEYS").arg(self.redis.keys().members(room)))
            .await?;
        Ok(sorted_names(raw, |s| UserName::parse(s).ok()))
    }

    async fn online(&self) -> ClusterResult<Vec<UserName>> {
        let raw: Vec<String> = self
            .redis
            .query(redis::cmd("HKEYS").arg(self.redis.keys().online()))
            .await?;
        Ok(sorted_names(raw, |s| UserName::parse(s).ok()))
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
}
