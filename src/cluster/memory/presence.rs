//! In-memory presence: connection counts per user and per (room, user), and
//! the set of rooms created explicitly.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;

use crate::cluster::{
    ClusterError, ClusterResult, Departure, Presence, RoomSummary, UserConnections,
};
use crate::domain::{NodeId, RoomName, UserName};

/// The presence of an embedded node: it is the whole cluster.
#[derive(Default)]
pub struct MemoryPresence {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// User → open connections.
    online: HashMap<UserName, usize>,
    /// Room → user → connections in the room. A room is removed when empty.
    rooms: HashMap<RoomName, HashMap<UserName, usize>>,
    /// Rooms made by `POST /api/rooms`; listed even while empty.
    created: BTreeSet<RoomName>,
}

/// Adds one to `counts[key]`; true when it went from zero.
fn increment<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: K) -> bool {
    let count = counts.entry(key).or_default();
    *count += 1;
    *count == 1
}

/// Takes one from `counts[key]`; true when it reached zero (and removes it).
fn decrement<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) -> bool {
    match counts.get_mut(key) {
        Some(count) if *count > 1 => {
            *count -= 1;
            false
        }
        Some(_) => {
            counts.remove(key);
            true
        }
        None => false,
    }
}

impl MemoryPresence {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets every connection (the node leaves); created rooms stay.
    /// Returns every member of every room, who all left.
    pub(super) fn clear_connections(&self) -> Vec<Departure> {
        let mut state = self.state();
        state.online.clear();
        state
            .rooms
            .drain()
            .flat_map(|(room, members)| {
                members.into_keys().map(move |user| Departure {
                    room: room.clone(),
                    user,
                })
            })
            .collect()
    }
}

#[async_trait]
impl Presence for MemoryPresence {
    async fn connect(&self, user: &UserName) -> ClusterResult<bool> {
        Ok(increment(&mut self.state().online, user.clone()))
    }

    async fn disconnect(&self, user: &UserName) -> ClusterResult<bool> {
        Ok(decrement(&mut self.state().online, user))
    }

    async fn join(&self, room: &RoomName, user: &UserName) -> ClusterResult<bool> {
        let mut state = self.state();
        Ok(increment(
            state.rooms.entry(room.clone()).or_default(),
            user.clone(),
        ))
    }

    async fn leave(&self, room: &RoomName, user: &UserName) -> ClusterResult<bool> {
        let mut state = self.state();
        let Some(members) = state.rooms.get_mut(room) else {
            return Ok(false);
        };
        let last = decrement(members, user);
        if members.is_empty() {
            state.rooms.remove(room);
        }
        Ok(last)
    }

    async fn members(&self, room: &RoomName) -> ClusterResult<Vec<UserName>> {
        let mut members: Vec<UserName> = self
            .state()
            .rooms
            .get(room)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        members.sort();
        Ok(members)
    }

    async fn online(&self) -> ClusterResult<Vec<UserName>> {
        let mut users: Vec<UserName> = self.state().online.keys().cloned().collect();
        users.sort();
        Ok(users)
    }

    async fn connections(&self, nodes: &[NodeId]) -> ClusterResult<Vec<UserConnections>> {
        // The one node holds every connection.
        let mut users: Vec<UserConnections> = self
            .state()
            .online
            .iter()
            .map(|(user, &connections)| UserConnections {
                user: user.clone(),
                connections,
                nodes: nodes.to_vec(),
            })
            .collect();
        users.sort_by(|a, b| a.user.cmp(&b.user));
        Ok(users)
    }

    async fn rooms(&self) -> ClusterResult<Vec<RoomSummary>> {
        let state = self.state();
        let mut rooms: BTreeMap<&RoomName, usize> = state.created.iter().map(|r| (r, 0)).collect();
        for (room, members) in &state.rooms {
            rooms.insert(room, members.len());
        }
        Ok(rooms
            .into_iter()
            .map(|(name, members)| RoomSummary {
                name: name.clone(),
                members,
            })
            .collect())
    }

    async fn create_room(&self, room: &RoomName, max: usize) -> ClusterResult<()> {
        let mut state = self.state();
        if state.rooms.contains_key(room) || state.created.contains(room) {
            return Err(ClusterError::Conflict);
        }
        if state.created.len() >= max {
            return Err(ClusterError::Full);
        }
        state.created.insert(room.clone());
        Ok(())
    }
}
