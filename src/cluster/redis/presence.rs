//! Presence in Redis: cluster-wide connection tallies, each node's own
//! entries kept apart so that a dead node's share can be taken out exactly
//! once (see [`super::liveness`]). A user's connections in a room count in
//! the room's slot; a user's connections in the user's partition; the room
//! directory, one hash per partition, follows each room's member count.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use futures_util::future::try_join_all;
use redis::Script;

use super::keys::{PARTITIONS, partition_of};
use super::ledger::{Entry, Group, Ledger};
use super::{Redis, not_late, sorted_names};
use crate::cluster::{ClusterError, ClusterResult, Presence, RoomSummary, UserConnections};
use crate::domain::{NodeId, RoomName, UserName};

static SET: LazyLock<Script> = presence_script!("lua/presence_set.lua");
static DIRECTORY: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/directory.lua")));
static CREATE_ROOM: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/create_room.lua")));

/// What a group's tally did: crossed is 1 when the user's count rose from
/// zero, -1 when it fell to zero; members and version (0 when unchanged) are
/// the room's new member count for the directory.
type Moved = (i64, i64, i64);

/// The presence of one node of a cluster.
pub struct RedisPresence {
    redis: Redis,
    node: NodeId,
    /// What this node's connections amount to, shared with its liveness.
    ledger: Arc<Ledger>,
}

impl Redis {
    /// This node's entries in `group`, and the group's tally.
    pub(super) fn group_keys(&self, group: &Group, node: &NodeId) -> (String, String) {
        let keys = self.keys();
        match group {
            Group::Room(room) => (keys.room_entries(room, node), keys.members(room)),
            Group::Users(p) => (keys.user_entries(*p, node), keys.online(*p)),
        }
    }

    /// Records a room's member count, as of `version`, in the directory.
    pub(super) async fn list(
        &self,
        room: &RoomName,
        members: i64,
        version: i64,
    ) -> ClusterResult<()> {
        if version <= 0 {
            return Ok(());
        }
        let keys = self.keys();
        let partition = partition_of(room.as_str());
        let mut invocation = DIRECTORY.prepare_invoke();
        invocation
            .key(keys.directory(partition))
            .key(keys.gone(partition))
            .arg(room.as_str())
            .arg(members.max(0))
            .arg(version);
        let _: i64 = self.invoke("directory", &invocation).await?;
        Ok(())
    }

    /// Every field of one hash per partition, merged.
    async fn partitions<T: redis::FromRedisValue + Send>(
        &self,
        command: &str,
        key: impl Fn(usize) -> String,
    ) -> ClusterResult<Vec<T>> {
        let reads = (0..PARTITIONS).map(|p| {
            let cmd = redis::cmd(command).arg(key(p)).clone();
            async move { self.query::<Vec<T>>(&cmd).await }
        });
        Ok(try_join_all(reads).await?.into_iter().flatten().collect())
    }
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
    /// returns what the tally did.
    async fn count(&self, entry: Entry, up: bool) -> ClusterResult<i64> {
        let write = self.ledger.write(entry, up);
        let group = write.entry.group();
        if let (true, Group::Room(room)) = (write.unlisted_room, &group) {
            // Listed before the entry exists, so a reaper never misses it.
            let _: i64 = self
                .redis
                .query(
                    redis::cmd("ZADD")
                        .arg(self.redis.keys().rooms_of(&self.node))
                        .arg("GT")
                        .arg(write.seq)
                        .arg(room.as_str()),
                )
                .await?;
            self.ledger.listed([room]);
        }
        let (entries, tally) = self.redis.group_keys(&group, &self.node);
        let mut invocation = SET.prepare_invoke();
        invocation
            .key(entries)
            .key(tally)
            .arg(write.entry.user().as_str())
            .arg(self.ledger.incarnation())
            .arg(write.seq)
            .arg(write.count)
            .arg(if matches!(group, Group::Room(_)) {
                "room"
            } else {
                "user"
            })
            .arg(self.redis.store_deadline());
        let reply: redis::Value = self.redis.invoke("presence", &invocation).await?;
        let (crossed, members, version): Moved = redis::from_redis_value(not_late(reply)?)
            .map_err(|e| ClusterError::Unavailable(Box::new(e)))?;
        if let Group::Room(room) = &group {
            self.redis.list(room, members, version).await?;
        }
        write.answered();
        Ok(crossed)
    }
}

#[async_trait]
impl Presence for RedisPresence {
    async fn connect(&self, user: &UserName) -> ClusterResult<bool> {
        Ok(self.count(Entry::User(user.clone()), true).await? == 1)
    }

    async fn disconnect(&self, user: &UserName) -> ClusterResult<bool> {
        Ok(self.count(Entry::User(user.clone()), false).await? == -1)
    }

    async fn join(&self, room: &RoomName, user: &UserName) -> ClusterResult<bool> {
        Ok(self
            .count(Entry::Room(room.clone(), user.clone()), true)
            .await?
            == 1)
    }

    async fn leave(&self, room: &RoomName, user: &UserName) -> ClusterResult<bool> {
        Ok(self
            .count(Entry::Room(room.clone(), user.clone()), false)
            .await?
            == -1)
    }

    async fn members(&self, room: &RoomName) -> ClusterResult<Vec<UserName>> {
        let raw: Vec<String> = self
            .redis
            .query(redis::cmd("HKEYS").arg(self.redis.keys().members(room)))
            .await?;
        Ok(sorted_names(raw, |s| UserName::parse(s).ok()))
    }

    async fn online(&self) -> ClusterResult<Vec<UserName>> {
        let keys = self.redis.keys();
        let raw: Vec<String> = self.redis.partitions("HKEYS", |p| keys.online(p)).await?;
        Ok(sorted_names(raw, |s| UserName::parse(s).ok()))
    }

    async fn connections(&self, nodes: &[NodeId]) -> ClusterResult<Vec<UserConnections>> {
        let keys = self.redis.keys();
        // The tallies (one read per partition), then each node's user
        // entries (one per node and partition), all at once.
        let tallies = self
            .redis
            .partitions::<(String, i64)>("HGETALL", |p| keys.online(p));
        let entries = nodes.iter().map(|node| async move {
            let held: Vec<(String, String)> = self
                .redis
                .partitions("HGETALL", |p| keys.user_entries(p, node))
                .await?;
            ClusterResult::Ok((node, held))
        });
        let (tallies, entries) =
            futures_util::future::try_join(tallies, try_join_all(entries)).await?;
        let mut users: BTreeMap<UserName, UserConnections> = tallies
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .filter_map(|(user, n)| {
                let user = UserName::parse(&user).ok()?;
                Some((
                    user.clone(),
                    UserConnections {
                        user,
                        connections: usize::try_from(n).unwrap_or(0),
                        nodes: Vec::new(),
                    },
                ))
            })
            .collect();
        // Nodes in the order given (sorted); an entry is "count/…".
        for (node, held) in entries {
            for (user, entry) in held {
                let count = entry.split('/').next().and_then(|n| n.parse::<u64>().ok());
                let Ok(user) = UserName::parse(&user) else {
                    continue;
                };
                if count.is_some_and(|n| n > 0)
                    && let Some(found) = users.get_mut(&user)
                {
                    found.nodes.push(node.clone());
                }
            }
        }
        Ok(users.into_values().collect())
    }

    async fn rooms(&self) -> ClusterResult<Vec<RoomSummary>> {
        let keys = self.redis.keys();
        let listed: Vec<(String, String)> = self
            .redis
            .partitions("HGETALL", |p| keys.directory(p))
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
        for (room, entry) in listed {
            let members = entry
                .split_once('/')
                .and_then(|(n, _)| n.parse::<usize>().ok())
                .unwrap_or(0);
            if let (Ok(room), 1..) = (RoomName::parse(&room), members) {
                rooms.insert(room, members);
            }
        }
        Ok(rooms
            .into_iter()
            .map(|(name, members)| RoomSummary { name, members })
            .collect())
    }

    async fn create_room(&self, room: &RoomName, max: usize) -> ClusterResult<()> {
        let keys = self.redis.keys();
        let listed: Option<String> = self
            .redis
            .query(
                redis::cmd("HGET")
                    .arg(keys.directory(partition_of(room.as_str())))
                    .arg(room.as_str()),
            )
            .await?;
        if listed.is_some_and(|entry| !entry.starts_with("0/")) {
            return Err(ClusterError::Conflict);
        }
        let mut invocation = CREATE_ROOM.prepare_invoke();
        invocation
            .key(keys.created_rooms())
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
