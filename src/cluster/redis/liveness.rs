//! Node liveness in Redis: a heartbeat index (one per partition of the node
//! ids) that says which nodes are alive, the reaping of the entries of nodes
//! that stopped beating, and the restore of this node's entries from its
//! ledger when Redis lost or may have missed some. Reaping and restoring go
//! group by group (each room, each partition of the users), one script each,
//! so every script stays in one slot of a cluster.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::future::try_join_all;
use redis::Script;

use super::keys::{PARTITIONS, partition_of};
use super::ledger::{Group, Ledger};
use super::{Redis, sorted_names};
use crate::cluster::{ClusterResult, Departure, Liveness, RoomChange};
use crate::domain::{NodeId, RoomName, UserName};

static BEAT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/beat.lua")));
static COMPACT: LazyLock<Script> = presence_script!("lua/compact.lua");
static UNLIST: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/unlist.lua")));
static LIVE_NODES: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/live_nodes.lua")));
static CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/claim.lua")));
static REAP_GROUP: LazyLock<Script> = presence_script!("lua/reap_group.lua");
static RELEASE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/release.lua")));
static RESTORE_GROUP: LazyLock<Script> = presence_script!("lua/restore_group.lua");

/// The liveness of one node of a cluster.
pub struct RedisLiveness {
    redis: Redis,
    node: NodeId,
    ttl: Duration,
    /// What this node's connections amount to, shared with its presence: a
    /// restore rewrites Redis from it.
    ledger: Arc<Ledger>,
}

fn kind(group: &Group) -> &'static str {
    match group {
        Group::Room(_) => "room",
        Group::Users(_) => "user",
    }
}

/// Every group a node may have entries in: its rooms and every partition.
fn groups(rooms: impl IntoIterator<Item = RoomName>) -> Vec<Group> {
    rooms
        .into_iter()
        .map(Group::Room)
        .chain((0..PARTITIONS).map(Group::Users))
        .collect()
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

    fn ms(duration: Duration) -> u64 {
        u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
    }

    /// The nodes of every partition in `mode` ("live" or "dead").
    async fn listed(&self, mode: &str) -> ClusterResult<Vec<String>> {
        let keys = self.redis.keys();
        let reads = (0..PARTITIONS).map(|p| {
            let mut invocation = LIVE_NODES.prepare_invoke();
            invocation.key(keys.nodes(p)).key(keys.reaping(p)).arg(mode);
            async move { self.redis.invoke::<Vec<String>>("nodes", &invocation).await }
        });
        Ok(try_join_all(reads).await?.into_iter().flatten().collect())
    }

    /// Takes every entry of `node` out of the tallies, if this caller wins
    /// the claim on it, and returns who thereby left a room everywhere.
    async fn reap_node(&self, node: &NodeId, mode: &str) -> ClusterResult<Vec<Departure>> {
        let keys = self.redis.keys();
        let partition = partition_of(node.as_str());
        let mut claim = CLAIM.prepare_invoke();
        claim
            .key(keys.nodes(partition))
            .key(keys.reaping(partition))
            .key(keys.rooms_of(node))
            .arg(node.as_str())
            .arg(mode)
            // How long a reaper has before another takes the job over
            // (finishing what is left: every step is idempotent): half the
            // TTL, so a dead reaper's nodes are still reaped within it.
            .arg(Self::ms(self.ttl / 2));
        let Some(claimed): Option<Vec<(String, String)>> =
            self.redis.invoke("claim", &claim).await?
        else {
            return Ok(Vec::new());
        };
        let rooms = claimed.iter().filter_map(|(r, _)| RoomName::parse(r).ok());
        let reaps = groups(rooms).into_iter().map(|group| async move {
            let (entries, tally) = self.redis.group_keys(&group, node);
            let mut invocation = REAP_GROUP.prepare_invoke();
            invocation.key(entries).key(tally).arg(kind(&group));
            let (members, version, users): (i64, i64, Vec<String>) =
                self.redis.invoke("reap", &invocation).await?;
            let Group::Room(room) = group else {
                return Ok(Vec::new());
            };
            self.redis.list(&room, members, version).await?;
            Ok::<_, crate::cluster::ClusterError>(
                users
                    .iter()
                    .filter_map(|u| UserName::parse(u).ok())
                    .map(|user| Departure {
                        room: room.clone(),
                        user,
                    })
                    .collect::<Vec<_>>(),
            )
        });
        // Every group's departures are this caller's alone (the group is
        // gone once reaped), so those of the groups that were reaped are
        // returned even when another group failed: the next reaper, after
        // the lease, finishes the rest.
        let mut departures = Vec::new();
        let mut failure = None;
        for reaped in futures_util::future::join_all(reaps).await {
            match reaped {
                Ok(left) => departures.extend(left),
                Err(error) => failure = Some(error),
            }
        }
        if let Some(error) = failure {
            tracing::warn!(%error, %node, "reap not finished; the lease passes it on");
            return Ok(departures);
        }
        let mut release = RELEASE.prepare_invoke();
        release
            .key(keys.reaping(partition))
            .key(keys.rooms_of(node))
            .key(keys.nodes(partition))
            .arg(node.as_str());
        for (room, score) in &claimed {
            release.arg(room).arg(score);
        }
        let _: i64 = self.redis.invoke("release", &release).await?;
        Ok(departures)
    }

    /// Compacts the groups whose zero entries no write in flight can still
    /// need, and takes the rooms left without entries off the node's list.
    async fn compact(&self) -> ClusterResult<()> {
        let (settled, zeroed) = self.ledger.take_settled_zeroed();
        if zeroed.is_empty() {
            return Ok(());
        }
        let compactions = zeroed.iter().map(|(group, seq)| async move {
            let (entries, _) = self.redis.group_keys(group, &self.node);
            let mut invocation = COMPACT.prepare_invoke();
            invocation
                .key(entries)
                .arg(self.ledger.incarnation())
                .arg(settled);
            let gone: ClusterResult<i64> = self.redis.invoke("compact", &invocation).await;
            (group.clone(), *seq, gone)
        });
        let mut failed = Vec::new();
        let mut emptied = Vec::new();
        for (group, seq, gone) in futures_util::future::join_all(compactions).await {
            match (gone, group) {
                (Err(_), group) => failed.push((group, seq)),
                (Ok(1), Group::Room(room)) => emptied.push(room),
                _ => {}
            }
        }
        self.ledger.keep_zeroed(failed);
        if !emptied.is_empty() {
            let mut invocation = UNLIST.prepare_invoke();
            invocation
                .key(self.redis.keys().rooms_of(&self.node))
                .arg(settled);
            for room in &emptied {
                invocation.arg(room.as_str());
            }
            let _: i64 = self.redis.invoke("unlist", &invocation).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Liveness for RedisLiveness {
    async fn nodes(&self) -> ClusterResult<Vec<NodeId>> {
        let raw = self.listed("live").await?;
        Ok(sorted_names(raw, NodeId::parse))
    }

    async fn heartbeat(&self, status: &[u8]) -> ClusterResult<bool> {
        let keys = self.redis.keys();
        let partition = partition_of(self.node.as_str());
        let mut invocation = BEAT.prepare_invoke();
        // Dead after half the TTL without a beat: with beats and reaps every
        // quarter TTL (see `upkeep::interval`), a dead node's users are gone
        // within three quarters of the TTL, and one late beat is tolerated.
        invocation
            .key(keys.nodes(partition))
            .key(keys.reaping(partition))
            .key(keys.status(&self.node))
            .arg(self.node.as_str())
            .arg(Self::ms(self.ttl / 2))
            .arg(status)
            .arg(Self::ms(self.ttl / 2));
        let sent = Redis::now_ms();
        // A beat that failed may still have been applied (and its "not
        // listed" answer lost with it): restore at the next one that works.
        let (beat, redis_ms): (i64, i64) = self
            .redis
            .invoke("heartbeat", &invocation)
            .await
            .inspect_err(|_| self.ledger.mark_dirty())?;
        self.redis.observe_clock(redis_ms, sent);
        if beat == 2 {
            // A reaper is taking this node's entries out; once it is done,
            // the node is unlisted and the next beat restores them.
            self.ledger.mark_dirty();
            return Ok(false);
        }
        if let Err(error) = self.compact().await {
            // What is left stays listed (harmless) or kept for the next beat.
            tracing::debug!(%error, "compaction did not finish");
        }
        // After a failover or migration the shards may have lost writes
        // they acknowledged (replication is asynchronous): rewrite.
        if self.redis.take_topology_changed() {
            self.ledger.mark_dirty();
        }
        let dirty = self.ledger.take_dirty();
        Ok(beat == 1 || dirty)
    }

    async fn statuses(&self) -> ClusterResult<Vec<(NodeId, Option<Bytes>)>> {
        let nodes = self.nodes().await?;
        let keys = self.redis.keys();
        let reads = nodes.iter().map(|node| async move {
            let status: Option<Vec<u8>> = self
                .redis
                .query(redis::cmd("GET").arg(keys.status(node)))
                .await?;
            Ok::<_, crate::cluster::ClusterError>((node.clone(), status.map(Bytes::from)))
        });
        try_join_all(reads).await
    }

    async fn restore(&self) -> ClusterResult<Vec<RoomChange>> {
        let keys = self.redis.keys();
        let listed: Vec<String> = self
            .redis
            .query(
                redis::cmd("ZRANGE")
                    .arg(keys.rooms_of(&self.node))
                    .arg(0)
                    .arg(-1),
            )
            .await
            .inspect_err(|_| self.ledger.mark_dirty())?;
        let (snap, mut counts) = self.ledger.snapshot();
        let mut rooms: BTreeSet<RoomName> = self.ledger.rooms().into_iter().collect();
        if !rooms.is_empty() {
            let mut list = redis::cmd("ZADD");
            list.arg(keys.rooms_of(&self.node)).arg("GT");
            for room in &rooms {
                list.arg(snap).arg(room.as_str());
            }
            let _: i64 = self
                .redis
                .query(&list)
                .await
                .inspect_err(|_| self.ledger.mark_dirty())?;
            self.ledger.listed(&rooms);
        }
        rooms.extend(listed.iter().filter_map(|r| RoomName::parse(r).ok()));
        let all = groups(rooms);
        let restores = all.iter().map(|group| {
            let users = counts.remove(group).unwrap_or_default();
            async move {
                let (entries, tally) = self.redis.group_keys(group, &self.node);
                let mut invocation = RESTORE_GROUP.prepare_invoke();
                invocation
                    .key(entries)
                    .key(tally)
                    .arg(kind(group))
                    .arg(self.ledger.incarnation())
                    .arg(snap);
                for (user, count) in &users {
                    invocation.arg(user.as_str()).arg(*count);
                }
                let (members, version, changes): (i64, i64, Vec<String>) =
                    self.redis.invoke("restore", &invocation).await?;
                let Group::Room(room) = group else {
                    return Ok(Vec::new());
                };
                self.redis.list(room, members, version).await?;
                Ok::<_, crate::cluster::ClusterError>(
                    changes
                        .chunks_exact(2)
                        .filter_map(|change| {
                            Some(RoomChange {
                                joined: change[0] == "+",
                                room: room.clone(),
                                user: UserName::parse(&change[1]).ok()?,
                            })
                        })
                        .collect::<Vec<_>>(),
                )
            }
        });
        let changes = try_join_all(restores)
            .await
            .inspect_err(|_| self.ledger.mark_dirty())?;
        // Every group now has a floor at the snapshot; the next compaction
        // after it settles drops the groups left empty.
        self.ledger.keep_zeroed(
            all.into_iter()
                .map(|group| (group, snap))
                .collect::<HashMap<_, _>>(),
        );
        Ok(changes.into_iter().flatten().collect())
    }

    async fn reap(&self) -> ClusterResult<Vec<Departure>> {
        let dead = self.listed("dead").await?;
        let mut departures = Vec::new();
        for node in dead.iter().filter(|n| *n != self.node.as_str()) {
            if let Some(node) = NodeId::parse(node) {
                departures.extend(self.reap_node(&node, "dead").await?);
            }
        }
        Ok(departures)
    }

    async fn remove_node(&self) -> ClusterResult<Vec<Departure>> {
        self.reap_node(&self.node, "self").await
    }
}
