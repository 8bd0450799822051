//! The **ledger**: this process's own presence counts, the truth Redis is
//! rewritten from. Presence numbers every write through it; liveness reads it
//! to restore the node's entries and to compact the zero entries no write in
//! flight can still need. Both roles hold the one ledger.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

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

impl Book {
    /// Every write up to this number has finished one way or the other.
    fn settled(&self) -> u64 {
        self.in_flight
            .first()
            .map_or(self.seq, |oldest| oldest.saturating_sub(1))
    }

    /// Records that `entry` was written as zero by write `seq`.
    fn zeroed(&mut self, entry: String, seq: u64) {
        let newest = self.zeroed.entry(entry).or_insert(seq);
        *newest = (*newest).max(seq);
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
    pub(super) fn write(&self, entry: String, up: bool) -> Write<'_> {
        let (seq, count) = {
            let mut book = self.book();
            let count = book.counts.get(&entry).copied().unwrap_or(0);
            let count = if up {
                count + 1
            } else {
                count.saturating_sub(1)
            };
            if count == 0 {
                book.counts.remove(&entry);
            } else {
                book.counts.insert(entry.clone(), count);
            }
            book.seq += 1;
            let seq = book.seq;
            book.in_flight.insert(seq);
            (seq, count)
        };
        Write {
            ledger: self,
            seq,
            entry,
            count,
            up,
            answered: false,
        }
    }

    /// The number every write up to which has finished, and the zero entries
    /// written by those: a heartbeat may compact them. They are the caller's
    /// now; [`Ledger::keep_zeroed`] gives them back if it could not.
    pub(super) fn take_settled_zeroed(&self) -> (u64, HashMap<String, u64>) {
        let mut book = self.book();
        let settled = book.settled();
        let (done, kept) = std::mem::take(&mut book.zeroed)
            .into_iter()
            .partition(|(_, seq)| *seq <= settled);
        book.zeroed = kept;
        (settled, done)
    }

    /// Takes back zero entries a heartbeat did not compact.
    pub(super) fn keep_zeroed(&self, zeroed: HashMap<String, u64>) {
        let mut book = self.book();
        for (entry, seq) in zeroed {
            book.zeroed(entry, seq);
        }
    }

    /// Hands `read` the counts and the number of the last write, taken
    /// together: every write numbered up to it is in the counts, every later
    /// one is not.
    pub(super) fn snapshot<R>(&self, read: impl FnOnce(u64, &HashMap<String, usize>) -> R) -> R {
        let book = self.book();
        read(book.seq, &book.counts)
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
    pub(super) entry: String,
    /// The entry's new count.
    pub(super) count: usize,
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
                book.zeroed(std::mem::take(&mut self.entry), self.seq);
            }
            return;
        }
        self.ledger.mark_dirty();
        if self.up
            && let Some(n) = book.counts.get_mut(&self.entry)
        {
            *n -= 1;
            if *n == 0 {
                book.counts.remove(&self.entry);
            }
        }
    }
}
