//! Presence in Redis: cluster-wide connection tallies, each node's own
//! contributions kept apart so that a dead node's share can be taken out
//! exactly once, and a heartbeat index that says which nodes are alive.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;

use super::Redis;
use super::keys::{room_entry, user_entry};
use crate::cluster::{ClusterError, ClusterResult, Departure, Presence, RoomChange, RoomSummary};
use crate::domain::{NodeId, RoomName, UserName};

/// A presence script with the shared entry parser in front of it.
macro_rules! presence_script {
    ($file:literal) => {
        LazyLock::new(|| Script::new(concat!(include_str!("lua/entry.lua"), include_str!($file))))
    };
}

static SET: LazyLock<Script> = presence_script!("lua/presence_set.lua");
static HEARTBEAT: LazyLock<Script> = presence_script!("lua/heartbeat.lua");
static LIVE_NODES: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/live_nodes.lua")));
static REAP: LazyLock<Script> = presence_script!("lua/reap.lua");
static RESTORE: LazyLock<Script> = presence_script!("lua/restore.lua");
static CREATE_ROOM: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/create_room.lua")));

/// The presence of one node of a cluster.
pub struct RedisPresence {
    redis: Redis,
    node: NodeId,
    ttl: Duration,
    /// Tells this process's entries from those an earlier process with the
    /// same node id left behind (a node restarted by compose, a StatefulSet
    /// or systemd keeps its id).
    incarnation: String,
    /// What this node's connections amount to: the truth Redis is rewritten
    /// from.
    ledger: Mutex<Ledger>,
    /// Set when Redis may not match the ledger (a write failed or was
    /// abandoned, or this process has not taken over its id yet), so the next
    /// heartbeat asks for a restore.
    dirty: AtomicBool,
}

/// This node's own counts, and the sequence numbers that let Redis apply
/// writes racing each other and restores in any order.
#[derive(Default)]
struct Ledger {
    /// Entry (see `keys::room_entry`, `keys::user_entry`) → connections, only
    /// entries above zero.
    counts: HashMap<String, usize>,
    /// The last sequence number handed out.
    seq: u64,
    /// Writes sent and not yet answered.
    in_flight: BTreeSet<u64>,
    /// Entries written as zero, with the number of that write: Redis keeps
    /// them (as a guard against older writes still on their way) until a
    /// heartbeat compacts those no write in flight can still need.
    zeroed: HashMap<String, u64>,
}

impl Ledger {
    /// Every write up to this number has finished one way or the other.
    fn settled(&self) -> u64 {
        self.in_flight
            .first()
            .map_or(self.seq, |oldest| oldest.saturating_sub(1))
    }
}

/// A write on its way to Redis. Unanswered (it failed, or its caller gave
/// up), it leaves Redis in doubt, so the node restores at its next
/// heartbeat; and an unanswered connect or join is taken out of the ledger,
/// since its caller undoes it (a leave stands: the connection is gone
/// whatever Redis says).
struct InFlight<'a> {
    presence: &'a RedisPresence,
    seq: u64,
    entry: String,
    count: usize,
    up: bool,
    answered: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut ledger = self.presence.ledger();
        ledger.in_flight.remove(&self.seq);
        if self.answered {
            if self.count == 0 {
                let seq = self.seq;
                let newest = ledger
                    .zeroed
                    .entry(std::mem::take(&mut self.entry))
                    .or_insert(seq);
                *newest = (*newest).max(seq);
            }
            return;
        }
        self.presence.dirty.store(true, Ordering::Relaxed);
        if self.up
            && let Some(n) = ledger.counts.get_mut(&self.entry)
        {
            *n -= 1;
            if *n == 0 {
                ledger.counts.remove(&self.entry);
            }
        }
    }
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
            incarnation: uuid::Uuid::new_v4().simple().to_string(),
            ledger: Mutex::default(),
            // A new process first takes its node id over.
            dirty: AtomicBool::new(true),
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
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
        let (seq, count) = {
            let mut ledger = self.ledger();
            let count = ledger.counts.get(&entry).copied().unwrap_or(0);
            let count = if up {
                count + 1
            } else {
                count.saturating_sub(1)
            };
            if count == 0 {
                ledger.counts.remove(&entry);
            } else {
                ledger.counts.insert(entry.clone(), count);
            }
            ledger.seq += 1;
            let seq = ledger.seq;
            ledger.in_flight.insert(seq);
            (seq, count)
        };
        let mut flight = InFlight {
            presence: self,
            seq,
            entry,
            count,
            up,
            answered: false,
        };
        let keys = self.redis.keys();
        let mut invocation = SET.prepare_invoke();
        invocation
            .key(keys.node(&self.node))
            .key(tally)
            .arg(&flight.entry)
            .arg(user.as_str())
            .arg(&self.incarnation)
            .arg(seq)
            .arg(count);
        if let Some(room) = room {
            invocation.key(keys.active_rooms()).arg(room.as_str());
        }
        let crossed: i64 = self.redis.invoke("presence", &invocation).await?;
        flight.answered = true;
        Ok(crossed)
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
        let keys = self.redis.keys();
        // Only zero entries no write in flight can still need: the others
        // wait for a later beat.
        let (settled, zeroed) = {
            let mut ledger = self.ledger();
            let settled = ledger.settled();
            let (done, kept) = std::mem::take(&mut ledger.zeroed)
                .into_iter()
                .partition(|(_, seq)| *seq <= settled);
            ledger.zeroed = kept;
            (settled, done)
        };
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
            .arg(&self.incarnation)
            .arg(settled);
        for entry in zeroed.keys() {
            invocation.arg(entry);
        }
        let added: i64 = match self.redis.invoke("heartbeat", &invocation).await {
            Ok(added) => added,
            Err(error) => {
                let mut ledger = self.ledger();
                for (entry, seq) in zeroed {
                    let newest = ledger.zeroed.entry(entry).or_insert(seq);
                    *newest = (*newest).max(seq);
                }
                return Err(error);
            }
        };
        let dirty = self.dirty.swap(false, Ordering::Relaxed);
        Ok(added == 1 || dirty)
    }

    async fn restore(&self) -> ClusterResult<Vec<RoomChange>> {
        let keys = self.redis.keys();
        let mut invocation = RESTORE.prepare_invoke();
        invocation
            .key(keys.node(&self.node))
            .arg(keys.prefix())
            .arg(&self.incarnation);
        {
            // The snapshot and its number are taken together: every write
            // numbered up to it is in the snapshot, every later one is not.
            let ledger = self.ledger();
            invocation.arg(ledger.seq);
            for (entry, count) in &ledger.counts {
                invocation.arg(entry).arg(*count);
            }
        }
        let flat: Vec<String> = self
            .redis
            .invoke("restore", &invocation)
            .await
            .inspect_err(|_| {
                self.dirty.store(true, Ordering::Relaxed);
            })?;
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

    async fn remove_node(&self) -> ClusterResult<()> {
        self.reap_node(self.node.as_str(), "self").await.map(drop)
    }
}
