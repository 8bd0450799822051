//! The **ledger**: this process's own presence counts, the truth Redis is
//! rewritten from. Presence numbers every write through it; liveness reads it
//! to restore the node's entries and to compact the zero entries no write in
//! flight can still need. Both roles hold the one ledger.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use super::keys::partition_of;
use crate::domain::{RoomName, UserName};

/// What one of this node's entries counts: a user's connections in a room,
/// or a user's connections.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Entry {
    Room(RoomName, UserName),
    User(UserName),
}

/// Where entries live in Redis: a room's keys, or a partition of the users.
/// One script touches one group, so one slot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Group {
    Room(RoomName),
    Users(usize),
}

impl Entry {
    pub(super) fn group(&self) -> Group {
        match self {
            Self::Room(room, _) => Group::Room(room.clone()),
            Self::User(user) => Group::Users(partition_of(user.as_str())),
        }
    }

    pub(super) fn user(&self) -> &UserName {
        match self {
            Self::Room(_, user) | Self::User(user) => user,
        }
    }
}

/// This process's counts, the incarnation they are written under, and
/// whether Redis may differ from them.
pub(super) struct Ledger {
    /// Tells this process's entries from those an earlier process with the
    /// same node id left behind (a node restarted by compose, a StatefulSet
    /// or systemd keeps its id).
    incarnation: String,
    book: Mutex<Book>,
    /// Set when Redis may not match the ledger (a write failed or was
    /// abandoned, or this process has not taken over its id yet), so the next
    /// heartbeat asks for a restore.
    dirty: AtomicBool,
}

/// This node's own counts, and the sequence numbers that let Redis apply
/// writes racing each other and restores in any order.
#[derive(Default)]
struct Book {
    /// Entry → connections, only entries above zero.
    counts: HashMap<Entry, usize>,
    /// Room → entries above zero in it.
    rooms: HashMap<RoomName, usize>,
    /// Rooms of `rooms` that Redis lists among this node's rooms (so a
    /// reaper finds them): until then, every write that adds to a room
    /// lists it first, so concurrent joins cannot write an entry a reaper
    /// would miss.
    listed: HashSet<RoomName>,
    /// The last sequence number handed out.
    seq: u64,
    /// Writes sent and not yet answered.
    in_flight: BTreeSet<u64>,
    /// Groups where an entry was written as zero (or a restore rewrote
    /// them), with the newest such write: Redis keeps zero entries (as a
    /// guard against older writes still on their way) until a heartbeat
    /// compacts those no write in flight can still need.
    zeroed: HashMap<Group, u64>,
}

impl Book {
    /// Every write up to this number has finished one way or the other.
    fn settled(&self) -> u64 {
        self.in_flight
            .first()
            .map_or(self.seq, |oldest| oldest.saturating_sub(1))
    }

    /// Records that `group` holds zero entries as of write `seq`.
    fn zeroed(&mut self, group: Group, seq: u64) {
        let newest = self.zeroed.entry(group).or_insert(seq);
        *newest = (*newest).max(seq);
    }

    /// Sets `entry`'s count.
    fn set(&mut self, entry: &Entry, count: usize) {
        let before = self.counts.get(entry).copied().unwrap_or(0);
        if count == 0 {
            self.counts.remove(entry);
        } else {
            self.counts.insert(entry.clone(), count);
        }
        let Entry::Room(room, _) = entry else {
            return;
        };
        match (before, count) {
            (0, 1..) => *self.rooms.entry(room.clone()).or_default() += 1,
            (1.., 0) => {
                if let Some(n) = self.rooms.get_mut(room) {
                    *n -= 1;
                    if *n == 0 {
                        self.rooms.remove(room);
                        self.listed.remove(room);
                    }
                }
            }
            _ => {}
        }
    }
}

impl Ledger {
    /// The empty ledger of a new process, under a fresh incarnation.
    pub(super) fn new() -> Self {
        Self {
            incarnation: uuid::Uuid::new_v4().simple().to_string(),
            book: Mutex::default(),
            // A new process first takes its node id over.
            dirty: AtomicBool::new(true),
        }
    }

    pub(super) fn incarnation(&self) -> &str {
        &self.incarnation
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves this node's count for `entry` by one and numbers the write of
    /// the new count; the caller sends it and says whether Redis answered.
    pub(super) fn write(&self, entry: Entry, up: bool) -> Write<'_> {
        let (seq, count, unlisted_room) = {
            let mut book = self.book();
            let count = book.counts.get(&entry).copied().unwrap_or(0);
            let count = if up {
                count + 1
            } else {
                count.saturating_sub(1)
            };
            book.set(&entry, count);
            let unlisted_room =
                matches!(&entry, Entry::Room(room, _) if up && !book.listed.contains(room));
            book.seq += 1;
            let seq = book.seq;
            book.in_flight.insert(seq);
            (seq, count, unlisted_room)
        };
        Write {
            ledger: self,
            seq,
            entry,
            count,
            unlisted_room,
            up,
            answered: false,
        }
    }

    /// The number every write up to which has finished, and the groups whose
    /// zero entries were written by those: a heartbeat may compact them.
    /// They are the caller's now; [`Ledger::keep_zeroed`] gives back those
    /// it could not compact.
    pub(super) fn take_settled_zeroed(&self) -> (u64, HashMap<Group, u64>) {
        let mut book = self.book();
        let settled = book.settled();
        let (done, kept) = std::mem::take(&mut book.zeroed)
            .into_iter()
            .partition(|(_, seq)| *seq <= settled);
        book.zeroed = kept;
        (settled, done)
    }

    /// Takes back zero entries a heartbeat did not compact.
    pub(super) fn keep_zeroed(&self, zeroed: impl IntoIterator<Item = (Group, u64)>) {
        let mut book = self.book();
        for (group, seq) in zeroed {
            book.zeroed(group, seq);
        }
    }

    /// The counts by group and the number of the last write, taken together:
    /// every write numbered up to it is in the counts, every later one is
    /// not.
    pub(super) fn snapshot(&self) -> (u64, HashMap<Group, Vec<(UserName, usize)>>) {
        let book = self.book();
        let mut groups: HashMap<Group, Vec<(UserName, usize)>> = HashMap::new();
        for (entry, count) in &book.counts {
            groups
                .entry(entry.group())
                .or_default()
                .push((entry.user().clone(), *count));
        }
        (book.seq, groups)
    }

    /// Redis lists `rooms` among this node's rooms now.
    pub(super) fn listed<'r>(&self, rooms: impl IntoIterator<Item = &'r RoomName>) {
        let mut book = self.book();
        for room in rooms {
            if book.rooms.contains_key(room) {
                book.listed.insert(room.clone());
            }
        }
    }

    /// The rooms where this node has entries now.
    pub(super) fn rooms(&self) -> HashSet<RoomName> {
        self.book().rooms.keys().cloned().collect()
    }

    /// Redis may no longer match the ledger: the next heartbeat asks for a
    /// restore.
    pub(super) fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Whether Redis may differ from the ledger, clearing the mark.
    pub(super) fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::Relaxed)
    }
}

/// A write on its way to Redis. Unanswered (it failed, or its caller gave
/// up), it leaves Redis in doubt, so the node restores at its next
/// heartbeat; and an unanswered connect or join is taken out of the ledger,
/// since its caller undoes it (a leave stands: the connection is gone
/// whatever Redis says).
pub(super) struct Write<'a> {
    ledger: &'a Ledger,
    /// The write's number.
    pub(super) seq: u64,
    /// The entry written.
    pub(super) entry: Entry,
    /// The entry's new count.
    pub(super) count: usize,
    /// The entry adds to a room Redis does not yet list among the node's
    /// rooms: the room must be listed before the entry is written.
    pub(super) unlisted_room: bool,
    up: bool,
    answered: bool,
}

impl Write<'_> {
    /// Redis applied the write (or found it outdated).
    pub(super) fn answered(mut self) {
        self.answered = true;
    }
}

impl Drop for Write<'_> {
    fn drop(&mut self) {
        let mut book = self.ledger.book();
        book.in_flight.remove(&self.seq);
        if self.answered {
            if self.count == 0 {
                book.zeroed(self.entry.group(), self.seq);
            }
            return;
        }
        self.ledger.mark_dirty();
        if self.up
            && let Some(n) = book.counts.get(&self.entry).copied()
        {
            book.set(&self.entry, n - 1);
        }
    }
}
