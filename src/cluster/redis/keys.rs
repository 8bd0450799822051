//! Every Redis key and channel chorus uses, built from one prefix
//! (`CHORUS_REDIS_PREFIX`, default `chorus:`, never with braces). One layout
//! serves one Redis and a Redis Cluster: every key carries a hash tag, so that
//! the keys one script touches share a slot, and a room's stream and channel
//! share the room's slot (append and publish stay one atomic script).
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{p}{r:R}:h`, `{p}{d:a:b}:h` | stream | a room's or DM pair's messages (fields `p`, `s`: the encoding around the id) |
//! | `<history>:t` | string | the newest id trimmed from that history |
//! | `<history>:a` | string | with an archive, while messages wait for it: the newest id it holds |
//! | `<history>:i:{user}:{key}` | string | `<id>\n<frame>` of a send under an idempotency key (10 min) |
//! | `{p}{u:U}:x` | stream | user U's DM inbox (fields `m`: `<pair>/<id>`, `f`: the frame), read by the gap fill |
//! | `{p}{u:U}:q` | hash | per DM pair (`a:b`) of U, the newest DM in U's inbox |
//! | `{p}{r:R}:m` | hash | user → connections in room R, cluster-wide; `:v` the version of its size |
//! | `{p}{r:R}:n:{node}` | hash | one node's entries in R: user → `n/incarnation/seq`, `_floor` |
//! | `{p}{P}:online` | hash | user → open connections, for the users of partition P |
//! | `{p}{P}:n:{node}` | hash | one node's user entries in partition P |
//! | `{p}{P}:rooms` | hash | directory of the rooms of partition P: room → `members/version` |
//! | `{p}{P}:gone` | zset | rooms of that directory that emptied → ms, pruned after a minute |
//! | `{p}{P}:nodes` | zset | live nodes of partition P → heartbeat deadline (ms, Redis clock) |
//! | `{p}{P}:reaping` | zset | dead nodes of P being reaped → lease deadline |
//! | `{p}{P}:rooms-of:{node}` | zset | rooms where the node (of partition P) may have entries → seq |
//! | `{p}{created}:rooms` | set | rooms made by `POST /api/rooms` |
//! | `{p}{up:ID}` | hash | upload ID's record (uploader, name, type, size, state, inline, secret) |
//! | `{p}{up:ID}:logs` | set | the logs (`r:R`, `d:a:b`) upload ID was sent to |
//! | `{p}{u:U}:up` | zset | user U's pending uploads → deadline (ms), for the pending cap |
//! | channel `{p}{r:R}` | pub/sub | a room's publications (sharded on a cluster) |
//! | channel `{p}{u:U}` | pub/sub | a user's DMs |
//!
//! A partition `P` is one of [`PARTITIONS`] tags chosen so that their slots
//! spread evenly over the 16 384 slots of a cluster: the cluster-wide
//! tallies (online users, the room directory, the live-node index, each
//! node's user entries) are split across shards instead of loading one.

use std::sync::LazyLock;

use crate::cluster::{Log, Topic};
use crate::domain::{NodeId, RoomName, UploadId, UserName};

/// How many partitions the cluster-wide tallies are split into.
pub(crate) const PARTITIONS: usize = 16;

/// Redis Cluster's slot count.
const SLOTS: u16 = 16_384;

/// One tag per partition, partition `i`'s slot in the `i`-th sixteenth of
/// the slots: short numeric tags collide under CRC16, so each is the first
/// `P<i>.<n>` that lands in its sixteenth.
static PARTITION_TAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    let width = SLOTS / PARTITIONS as u16;
    (0..PARTITIONS)
        .map(|i| {
            (0u32..)
                .map(|n| format!("P{i}.{n}"))
                .find(|tag| usize::from(slot(tag.as_bytes()) / width) == i)
                .unwrap_or_else(|| unreachable!("CRC16 reaches every sixteenth"))
        })
        .collect()
});

/// The hash slot of a key or shard channel: CRC16 (XMODEM) of its hash tag
/// (the text between the first `{` and the next `}`, if not empty), else of
/// the whole name, modulo 16384. The crate's `Slot::for_key` computes the
/// same but does not reveal the number.
pub(crate) fn slot(name: &[u8]) -> u16 {
    let tag = name.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &name[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tag.unwrap_or(name)) % SLOTS
}

/// The partition `name` (a user or room name, a node id) belongs to.
pub(crate) fn partition_of(name: &str) -> usize {
    usize::from(slot(name.as_bytes())) % PARTITIONS
}

/// Builds keys and channels under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// The hash-tagged stem every key of `log` starts with.
    fn log_stem(&self, log: &Log) -> String {
        match log {
            Log::Room(room) => self.room_stem(room),
            Log::Direct(a, b) => format!("{}{{d:{a}:{b}}}", self.prefix),
        }
    }

    fn room_stem(&self, room: &RoomName) -> String {
        format!("{}{{r:{room}}}", self.prefix)
    }

    fn user_stem(&self, user: &UserName) -> String {
        format!("{}{{u:{user}}}", self.prefix)
    }

    fn partition_stem(&self, partition: usize) -> String {
        format!(
            "{}{{{}}}",
            self.prefix,
            PARTITION_TAGS[partition % PARTITIONS]
        )
    }

    pub(crate) fn history(&self, log: &Log) -> String {
        format!("{}:h", self.log_stem(log))
    }

    /// Where the newest id trimmed from `log` is kept.
    pub(crate) fn trimmed(&self, log: &Log) -> String {
        format!("{}:t", self.log_stem(log))
    }

    /// Where the newest id the archive holds is kept while later ones wait.
    pub(crate) fn archived(&self, log: &Log) -> String {
        format!("{}:a", self.log_stem(log))
    }

    /// The ids of `log` deleted while they waited for the archive.
    pub(crate) fn deleted(&self, log: &Log) -> String {
        format!("{}:del", self.log_stem(log))
    }

    /// The pattern [`Keys::archived`] names match, for the sweep.
    pub(crate) fn archived_pattern(&self) -> String {
        format!("{}*}}:a", self.prefix)
    }

    /// The log an [`Keys::archived`] name belongs to.
    pub(crate) fn log_of_archived(&self, key: &str) -> Option<Log> {
        let tag = key.strip_prefix(&self.prefix)?.strip_suffix(":a")?;
        let tag = tag.strip_prefix('{')?.strip_suffix('}')?;
        match tag.split_once(':')? {
            ("r", room) => RoomName::parse(room).ok().map(Log::Room),
            ("d", pair) => {
                let (a, b) = pair.split_once(':')?;
                Some(Log::direct(
                    UserName::parse(a).ok()?,
                    UserName::parse(b).ok()?,
                ))
            }
            _ => None,
        }
    }

    /// Where a send under an idempotency key is remembered.
    pub(crate) fn idempotency(&self, log: &Log, user: &UserName, key: &str) -> String {
        format!("{}:i:{user}:{key}", self.log_stem(log))
    }

    /// A user's DM inbox: every DM to or from the user, in the order the
    /// user's channel carried them.
    pub(crate) fn inbox(&self, user: &UserName) -> String {
        format!("{}:x", self.user_stem(user))
    }

    /// Per DM pair of `user`, the newest DM delivered to the user's inbox.
    pub(crate) fn cursors(&self, user: &UserName) -> String {
        format!("{}:q", self.user_stem(user))
    }

    /// The stream a topic's stored publications can be read back from: a
    /// room's history, a user's inbox.
    pub(crate) fn stream(&self, topic: &Topic) -> String {
        match topic {
            Topic::Room(room) => self.history(&Log::Room(room.clone())),
            Topic::User(user) => self.inbox(user),
        }
    }

    pub(crate) fn channel(&self, topic: &Topic) -> String {
        match topic {
            Topic::Room(room) => self.room_stem(room),
            Topic::User(user) => self.user_stem(user),
        }
    }

    /// The topic a channel name stands for, if it is one of ours.
    pub(crate) fn topic(&self, channel: &str) -> Option<Topic> {
        let tag = channel.strip_prefix(&self.prefix)?;
        let tag = tag.strip_prefix('{')?.strip_suffix('}')?;
        if let Some(room) = tag.strip_prefix("r:") {
            return RoomName::parse(room).ok().map(Topic::Room);
        }
        let user = tag.strip_prefix("u:")?;
        UserName::parse(user).ok().map(Topic::User)
    }

    /// Room `room`'s members tally.
    pub(crate) fn members(&self, room: &RoomName) -> String {
        format!("{}:m", self.room_stem(room))
    }

    /// `node`'s entries in `room`.
    pub(crate) fn room_entries(&self, room: &RoomName, node: &NodeId) -> String {
        format!("{}:n:{node}", self.room_stem(room))
    }

    /// The online tally of partition `partition`.
    pub(crate) fn online(&self, partition: usize) -> String {
        format!("{}:online", self.partition_stem(partition))
    }

    /// `node`'s user entries in partition `partition`.
    pub(crate) fn user_entries(&self, partition: usize, node: &NodeId) -> String {
        format!("{}:n:{node}", self.partition_stem(partition))
    }

    /// The room directory of partition `partition`.
    pub(crate) fn directory(&self, partition: usize) -> String {
        format!("{}:rooms", self.partition_stem(partition))
    }

    /// Rooms of that directory that emptied lately.
    pub(crate) fn gone(&self, partition: usize) -> String {
        format!("{}:gone", self.partition_stem(partition))
    }

    /// The live nodes of partition `partition`.
    pub(crate) fn nodes(&self, partition: usize) -> String {
        format!("{}:nodes", self.partition_stem(partition))
    }

    /// The dead nodes of partition `partition` being reaped.
    pub(crate) fn reaping(&self, partition: usize) -> String {
        format!("{}:reaping", self.partition_stem(partition))
    }

    /// What `node` says about itself with each beat (in `node`'s
    /// partition, so the beat writes it in the same script).
    pub(crate) fn status(&self, node: &NodeId) -> String {
        format!(
            "{}:status:{node}",
            self.partition_stem(partition_of(node.as_str()))
        )
    }

    /// Rooms where `node` may have entries (in `node`'s partition).
    pub(crate) fn rooms_of(&self, node: &NodeId) -> String {
        format!(
            "{}:rooms-of:{node}",
            self.partition_stem(partition_of(node.as_str()))
        )
    }

    fn upload_stem(&self, id: &UploadId) -> String {
        format!("{}{{up:{id}}}", self.prefix)
    }

    /// Upload `id`'s record.
    pub(crate) fn upload(&self, id: &UploadId) -> String {
        self.upload_stem(id)
    }

    /// The logs upload `id` was sent to, in the record's slot.
    pub(crate) fn upload_logs(&self, id: &UploadId) -> String {
        format!("{}:logs", self.upload_stem(id))
    }

    /// `user`'s pending uploads.
    pub(crate) fn pending_uploads(&self, user: &UserName) -> String {
        format!("{}:up", self.user_stem(user))
    }

    /// Rooms made by `POST /api/rooms`: few and cold, so one slot.
    pub(crate) fn created_rooms(&self) -> String {
        format!("{}{{created}}:rooms", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use redis::cluster_routing::Slot;

    use super::*;

    #[test]
    fn archive_marks_round_trip_to_logs() {
        let keys = Keys::new("t1:");
        let room = Log::Room(RoomName::parse("lobby").unwrap());
        let pair = Log::direct(
            UserName::parse("bob").unwrap(),
            UserName::parse("al").unwrap(),
        );
        for log in [room, pair] {
            assert_eq!(
                keys.log_of_archived(&keys.archived(&log)),
                Some(log.clone())
            );
            assert_eq!(
                slot(keys.archived(&log).as_bytes()),
                slot(keys.history(&log).as_bytes())
            );
        }
        assert_eq!(keys.archived_pattern(), "t1:*}:a");
        assert_eq!(keys.log_of_archived("t1:{u:bob}:a"), None);
        assert_eq!(keys.log_of_archived("t2:{r:lobby}:a"), None);
    }

    #[test]
    fn channels_round_trip_to_topics() {
        let keys = Keys::new("t1:");
        let room = Topic::Room(RoomName::parse("lobby").unwrap());
        let user = Topic::User(UserName::parse("bob").unwrap());
        assert_eq!(keys.channel(&room), "t1:{r:lobby}");
        assert_eq!(keys.topic(&keys.channel(&room)), Some(room));
        assert_eq!(keys.topic(&keys.channel(&user)), Some(user));
        assert_eq!(keys.topic("other:{r:lobby}"), None);
        assert_eq!(keys.topic("t1:{r:bad name}"), None);
    }

    #[test]
    fn dm_history_is_one_key_per_pair() {
        let keys = Keys::new("chorus:");
        let (a, b) = (
            UserName::parse("bob").unwrap(),
            UserName::parse("alice").unwrap(),
        );
        let key = keys.history(&Log::direct(a.clone(), b.clone()));
        assert_eq!(key, "chorus:{d:alice:bob}:h");
        assert_eq!(key, keys.history(&Log::direct(b, a)));
    }

    #[test]
    fn a_room_keeps_its_stream_tally_entries_and_channel_in_one_slot() {
        let keys = Keys::new("chorus:");
        let room = RoomName::parse("lobby").unwrap();
        let log = Log::Room(room.clone());
        let node = NodeId::parse("n{1}").unwrap();
        let room_slot = slot(keys.channel(&Topic::Room(room.clone())).as_bytes());
        for key in [
            keys.history(&log),
            keys.trimmed(&log),
            keys.idempotency(&log, &UserName::parse("bob").unwrap(), "k"),
            keys.members(&room),
            keys.room_entries(&room, &node),
        ] {
            assert_eq!(slot(key.as_bytes()), room_slot, "{key}");
        }
    }

    #[test]
    fn slots_are_the_crates() {
        let names: &[&[u8]] = &[
            b"foo",
            b"",
            b"{r:a}",
            b"chorus:{r:a}:h",
            b"{}",
            b"{}x",
            b"a{",
            b"a}b{c",
            b"x{}{y}",
            b"{{a}}",
            b"{a}{b}",
            b"\xff\x00{\xfe}",
        ];
        for name in names {
            assert_eq!(
                Slot::new(slot(name)),
                Some(Slot::for_key(name)),
                "{:?}",
                String::from_utf8_lossy(name)
            );
        }
        // The Redis Cluster specification's example.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"x{foo}y"), 12182);
    }

    #[test]
    fn partitions_spread_over_the_slots_one_per_sixteenth() {
        let keys = Keys::new("chorus:");
        let slots: Vec<u16> = (0..PARTITIONS)
            .map(|p| slot(keys.online(p).as_bytes()))
            .collect();
        for (i, slot) in slots.iter().enumerate() {
            assert_eq!(usize::from(slot / 1024), i, "partition {i} at slot {slot}");
        }
        // On three primaries of equal ranges, each shard holds five or six.
        let mut per_shard = [0; 3];
        for slot in slots {
            per_shard[usize::from(slot) * 3 / 16_384] += 1;
        }
        assert!(
            per_shard.iter().all(|n| (5..=6).contains(n)),
            "{per_shard:?}"
        );
    }
}
