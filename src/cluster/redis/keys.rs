//! Every Redis key and channel chorus uses, built from one prefix
//! (`CHORUS_REDIS_PREFIX`, default `chorus:`). Names never contain `:`, so the
//! layout is unambiguous.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{p}history:room:{room}` | stream | a room's messages (fields `p`, `s`: the encoding around the id) |
//! | `{p}history:dm:{a}:{b}` | stream | a DM pair's messages, `a` < `b` |
//! | `<history key>:trimmed` | string | the newest id trimmed from that history |
//! | `<history key>:idem:{user}:{key}` | string | `<id>\n<frame>` of a send under an idempotency key (10 min) |
//! | `{p}partners:{user}` | zset | DM partner → ms of the last DM, for the subscriber's gap fill |
//! | `{p}room:{room}:members` | hash | user → connections in the room, cluster-wide |
//! | `{p}online` | hash | user → open connections, cluster-wide |
//! | `{p}rooms:active` | hash | room → distinct members |
//! | `{p}rooms:created` | set | rooms made by `POST /api/rooms` |
//! | `{p}nodes` | zset | node → heartbeat deadline (ms, Redis clock) |
//! | `{p}node:{node}` | hash | that node's contributions: `r:{room}:{user}` / `u:{user}` → connections |
//! | channel `{p}room:{room}` | pub/sub | a room's publications |
//! | channel `{p}user:{user}` | pub/sub | a user's DMs |

use crate::cluster::{Log, Topic};
use crate::domain::{NodeId, RoomName, UserName};

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

    /// The prefix itself (scripts build tally keys from it).
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn history(&self, log: &Log) -> String {
        match log {
            Log::Room(room) => format!("{}history:room:{room}", self.prefix),
            Log::Direct(a, b) => format!("{}history:dm:{a}:{b}", self.prefix),
        }
    }

    /// Where the newest id trimmed from `log` is kept.
    pub(crate) fn trimmed(&self, log: &Log) -> String {
        format!("{}:trimmed", self.history(log))
    }

    /// Where a send under an idempotency key is remembered.
    pub(crate) fn idempotency(&self, log: &Log, user: &UserName, key: &str) -> String {
        format!("{}:idem:{user}:{key}", self.history(log))
    }

    /// The tag a DM pair's publications carry (`a:b`, as in its history
    /// key), so a subscriber can tell pairs apart; empty for a room.
    pub(crate) fn pair_tag(log: &Log) -> String {
        match log {
            Log::Room(_) => String::new(),
            Log::Direct(a, b) => format!("{a}:{b}"),
        }
    }

    /// The DM partners of `user`, by the time of their last DM.
    pub(crate) fn partners(&self, user: &UserName) -> String {
        format!("{}partners:{user}", self.prefix)
    }

    pub(crate) fn channel(&self, topic: &Topic) -> String {
        match topic {
            Topic::Room(room) => format!("{}room:{room}", self.prefix),
            Topic::User(user) => format!("{}user:{user}", self.prefix),
        }
    }

    /// The topic a channel name stands for, if it is one of ours.
    pub(crate) fn topic(&self, channel: &str) -> Option<Topic> {
        let rest = channel.strip_prefix(&self.prefix)?;
        if let Some(room) = rest.strip_prefix("room:") {
            return RoomName::parse(room).ok().map(Topic::Room);
        }
        let user = rest.strip_prefix("user:")?;
        UserName::parse(user).ok().map(Topic::User)
    }

    pub(crate) fn members(&self, room: &RoomName) -> String {
        format!("{}room:{room}:members", self.prefix)
    }

    pub(crate) fn online(&self) -> String {
        format!("{}online", self.prefix)
    }

    pub(crate) fn active_rooms(&self) -> String {
        format!("{}rooms:active", self.prefix)
    }

    pub(crate) fn created_rooms(&self) -> String {
        format!("{}rooms:created", self.prefix)
    }

    pub(crate) fn nodes(&self) -> String {
        format!("{}nodes", self.prefix)
    }

    pub(crate) fn node(&self, node: &NodeId) -> String {
        format!("{}node:{node}", self.prefix)
    }
}

/// This node's entry for a user's connections in a room.
pub(crate) fn room_entry(room: &RoomName, user: &UserName) -> String {
    format!("r:{room}:{user}")
}

/// This node's entry for a user's connections.
pub(crate) fn user_entry(user: &UserName) -> String {
    format!("u:{user}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_round_trip_to_topics() {
        let keys = Keys::new("t1:");
        let room = Topic::Room(RoomName::parse("lobby").unwrap());
        let user = Topic::User(UserName::parse("bob").unwrap());
        assert_eq!(keys.channel(&room), "t1:room:lobby");
        assert_eq!(keys.topic(&keys.channel(&room)), Some(room));
        assert_eq!(keys.topic(&keys.channel(&user)), Some(user));
        assert_eq!(keys.topic("other:room:lobby"), None);
        assert_eq!(keys.topic("t1:room:bad name"), None);
    }

    #[test]
    fn dm_history_is_one_key_per_pair() {
        let keys = Keys::new("chorus:");
        let (a, b) = (
            UserName::parse("bob").unwrap(),
            UserName::parse("alice").unwrap(),
        );
        let key = keys.history(&Log::direct(a.clone(), b.clone()));
        assert_eq!(key, "chorus:history:dm:alice:bob");
        assert_eq!(key, keys.history(&Log::direct(b, a)));
    }
}
