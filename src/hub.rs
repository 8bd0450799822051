//! The node-local registry of who listens to what (room → sessions, user →
//! sessions) and the only fan-out to sockets.
//!
//! A publication is validated and wrapped once per node, then each local
//! recipient gets a pointer to the same bytes through its bounded queue. A
//! full queue never blocks the others: that recipient is flagged slow and its
//! session closes with 1013.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::task::Waker;

use axum::extract::ws::Utf8Bytes;
use futures_util::task::AtomicWaker;
use metrics::{Counter, Histogram};
use tokio::sync::mpsc::{self, error::TrySendError};

use crate::cluster::{Control, Deliver, Publication, Topic};
use crate::domain::{MessageId, RoomName, UserName};
use crate::telemetry;

/// One frame on its way to local sockets, shared by every recipient.
#[derive(Debug)]
pub struct Delivery {
    /// The topic it was published on.
    pub topic: Topic,
    /// The stored message's id, for room messages.
    pub id: Option<MessageId>,
    /// A user whose connections skip it.
    pub except: Option<UserName>,
    /// The encoded frame.
    pub frame: Utf8Bytes,
    /// When the hub queued it: how long it waited tells a session whether
    /// it keeps up.
    pub queued: std::time::Instant,
}

/// The hub's handle on one session: where to queue its frames and how to tell
/// it that it fell behind.
#[derive(Debug, Clone)]
pub struct Recipient {
    /// Unique per session on this node.
    pub session: u64,
    /// The session's user.
    pub user: UserName,
    /// The session's bounded outbound queue.
    pub queue: mpsc::Sender<Arc<Delivery>>,
    /// How the hub reaches the session: flagged slow when the queue
    /// overflowed or the client address's share of buffered output ran out,
    /// pressed when the queue reached the hold limit.
    pub signal: Arc<Signal>,
    /// The bytes queued for every connection of the session's client
    /// address; `None` when per-address limits are off.
    pub share: Option<Arc<AddressShare>>,
}

/// Flags a session checks on every wake, and its task's waker, so that the
/// hub (and the drain) can wake it. Lock-free: a session that keeps up
/// checks them once per frame it writes.
#[derive(Debug, Default)]
pub struct Signal {
    waker: AtomicWaker,
    slow: AtomicBool,
    pressure: AtomicBool,
    /// An administrator removed the connection.
    removed: AtomicBool,
    /// Rooms an administrator made the connection leave, not yet left;
    /// `leaving` says the list is not empty without locking it.
    leaving: AtomicBool,
    leaves: Mutex<Vec<RoomName>>,
}

impl Signal {
    /// Marks the session too slow and wakes it; true the first time.
    pub fn flag_slow(&self) -> bool {
        let first = !self.slow.swap(true, Ordering::AcqRel);
        self.waker.wake();
        first
    }

    /// Whether the session was flagged slow.
    pub fn is_slow(&self) -> bool {
        self.slow.load(Ordering::Acquire)
    }

    /// Tells a holding session that its queue reached the hold limit.
    pub fn press(&self) {
        self.pressure.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Whether the queue reached the hold limit since the last call.
    pub fn take_pressure(&self) -> bool {
        self.pressure.swap(false, Ordering::AcqRel)
    }

    /// Marks the session removed by an administrator and wakes it.
    pub fn remove(&self) {
        self.removed.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Whether an administrator removed the session.
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    /// Tells the session to leave `room` and wakes it.
    pub fn leave(&self, room: RoomName) {
        self.leaves
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(room);
        self.leaving.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// The rooms to leave since the last call (cheap when there are none).
    pub fn take_leaves(&self) -> Vec<RoomName> {
        if !self.leaving.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        std::mem::take(&mut *self.leaves.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Whether rooms wait to be left.
    pub fn has_leaves(&self) -> bool {
        self.leaving.load(Ordering::Acquire)
    }

    /// Wakes the session to look at its flags and the node's.
    pub fn wake(&self) {
        self.waker.wake();
    }

    /// Where [`Signal::wake`] reaches the session's task.
    pub fn register(&self, waker: &Waker) {
        self.waker.register(waker);
    }
}

/// The most frames a session holds before it writes them, for a queue of
/// `capacity`: half the queue, so that a client reading as fast as it can is
/// never taken for a slow one, and at most 64.
fn hold_limit(capacity: usize) -> usize {
    (capacity / 2).clamp(1, 64)
}

/// Output queued for the connections of one client address, together.
#[derive(Debug, Default)]
pub struct AddressShare {
    bytes: AtomicUsize,
}

/// Who on this node listens to which topic.
pub struct Hub {
    /// Copy-on-write recipient lists: fan-out clones the `Arc` and releases
    /// the lock before touching any queue.
    topics: RwLock<HashMap<Topic, Arc<[Recipient]>>>,
    next_session: AtomicU64,
    /// Bytes of frames sitting in the queues, all recipients together. Added
    /// before a fan-out hands anything out (so a fast reader never releases
    /// bytes not yet counted), corrected for refused hand-offs after it.
    buffered: AtomicUsize,
    /// Most bytes the connections of one client address may have queued:
    /// one address alone must not push the node over its buffered limit.
    /// `None`: per-address limits are off.
    share_limit: Option<usize>,
    /// Client address (grouped, see `admission`) → its share, while it
    /// has connections.
    shares: Mutex<HashMap<IpAddr, Weak<AddressShare>>>,
    slow_disconnects: Counter,
    fanout_latency: Histogram,
    fanout_recipients: Histogram,
}

impl Hub {
    /// A hub whose client addresses may each queue `share_limit` bytes
    /// (`None`: no per-address limit).
    pub fn new(share_limit: Option<usize>) -> Self {
        Self {
            topics: RwLock::default(),
            next_session: AtomicU64::new(1),
            buffered: AtomicUsize::new(0),
            share_limit,
            shares: Mutex::default(),
            slow_disconnects: metrics::counter!(telemetry::SLOW_CONSUMER_DISCONNECTS),
            fanout_latency: metrics::histogram!(telemetry::FANOUT_LATENCY),
            fanout_recipients: metrics::histogram!(telemetry::FANOUT_RECIPIENTS),
        }
    }
}

impl Hub {
    /// Bytes of output queued for this node's sessions now.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered.load(Ordering::Relaxed)
    }

    /// The share of the client address `address`, for a new session.
    pub fn share(&self, address: IpAddr) -> Option<Arc<AddressShare>> {
        self.share_limit?;
        let mut shares = self.shares.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(share) = shares.get(&address).and_then(Weak::upgrade) {
            return Some(share);
        }
        // Addresses whose connections all ended leave dead entries; sweep
        // them as the map grows, so it stays the size of the live ones.
        if shares.len() >= 64 && shares.len().is_power_of_two() {
            shares.retain(|_, share| share.strong_count() > 0);
        }
        let share = Arc::new(AddressShare::default());
        shares.insert(address, Arc::downgrade(&share));
        Some(share)
    }

    /// Counts `bytes` of a direct reply as queued for `recipient` while it
    /// is written; [`Hub::release`] gives them back.
    pub fn hold(&self, recipient: &Recipient, bytes: usize) {
        self.buffered.fetch_add(bytes, Ordering::Relaxed);
        if let Some(share) = &recipient.share {
            share.bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// Called by a session for the bytes it wrote or dropped.
    pub fn release(&self, recipient: &Recipient, bytes: usize) {
        if bytes > 0 {
            self.buffered.fetch_sub(bytes, Ordering::Relaxed);
            if let Some(share) = &recipient.share {
                share.bytes.fetch_sub(bytes, Ordering::Relaxed);
            }
        }
    }

    /// A fresh session number for [`Recipient::session`].
    pub fn next_session(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds `recipient` to `topic`. Adding a session twice is harmless.
    pub fn add(&self, topic: &Topic, recipient: &Recipient) {
        let mut topics = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        let list = topics.entry(topic.clone()).or_insert_with(|| Arc::from([]));
        if list.iter().any(|r| r.session == recipient.session) {
            return;
        }
        let mut grown = Vec::with_capacity(list.len() + 1);
        grown.extend_from_slice(list);
        grown.push(recipient.clone());
        *list = Arc::from(grown);
    }

    /// Removes `session` from `topic`.
    pub fn remove(&self, topic: &Topic, session: u64) {
        let mut topics = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        let Some(list) = topics.get_mut(topic) else {
            return;
        };
        let kept: Vec<Recipient> = list
            .iter()
            .filter(|r| r.session != session)
            .cloned()
            .collect();
        if kept.is_empty() {
            topics.remove(topic);
        } else {
            *list = Arc::from(kept);
        }
    }

    /// The sessions on this node now: each listens to its user's topic.
    pub fn connections(&self) -> usize {
        self.topics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(topic, _)| matches!(topic, Topic::User(_)))
            .map(|(_, recipients)| recipients.len())
            .sum()
    }

    /// The topics with local listeners now, for resubscribing and gap-filling.
    pub fn topics(&self) -> Vec<Topic> {
        self.topics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    fn flag_slow(&self, recipient: &Recipient) {
        if recipient.signal.flag_slow() {
            self.slow_disconnects.increment(1);
        }
    }

    /// Wakes every registered session, to see that the node drains.
    pub fn wake_all(&self) {
        let topics = self.topics.read().unwrap_or_else(PoisonError::into_inner);
        for recipient in topics.values().flat_map(|recipients| recipients.iter()) {
            recipient.signal.wake();
        }
    }

    fn recipients(&self, topic: &Topic) -> Option<Arc<[Recipient]>> {
        self.topics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(topic)
            .cloned()
    }
}

impl Deliver for Hub {
    fn deliver(&self, topic: &Topic, publication: Publication) {
        let Some(recipients) = self.recipients(topic) else {
            return;
        };
        // An administrator's word for the sessions, never a frame: it goes
        // to their signals, past the queues (a full queue must not lose it).
        if let Some(control) = publication.control {
            for recipient in recipients.iter() {
                match &control {
                    Control::Disconnect => recipient.signal.remove(),
                    Control::Leave(room) => recipient.signal.leave(room.clone()),
                }
            }
            return;
        }
        let started = std::time::Instant::now();
        let frame = match Utf8Bytes::try_from(publication.payload) {
            Ok(frame) => frame,
            Err(error) => {
                tracing::error!(%error, ?topic, "dropping a publication that is not UTF-8");
                return;
            }
        };
        let delivery = Arc::new(Delivery {
            topic: topic.clone(),
            id: publication.id,
            except: publication.except,
            frame,
            queued: started,
        });
        let size = delivery.frame.len();
        self.buffered
            .fetch_add(size * recipients.len(), Ordering::Relaxed);
        let mut refused = 0;
        for recipient in recipients.iter() {
            // Charged to the address before it is queued (like `buffered`
            // above), so the session can never give back bytes not yet
            // counted; past the share, this connection goes like a slow one
            // (its session gives the bytes back when it ends).
            let share = recipient.share.as_ref().zip(self.share_limit);
            let over = share.is_some_and(|(share, limit)| {
                share.bytes.fetch_add(size, Ordering::Relaxed) + size > limit
            });
            let queued = match recipient.queue.try_send(delivery.clone()) {
                Ok(()) => {
                    let capacity = recipient.queue.max_capacity();
                    if capacity - recipient.queue.capacity() >= hold_limit(capacity) {
                        recipient.signal.press();
                    }
                    true
                }
                Err(TrySendError::Full(_)) => {
                    self.flag_slow(recipient);
                    false
                }
                // The session is ending; it no longer needs frames.
                Err(TrySendError::Closed(_)) => false,
            };
            if !queued {
                refused += 1;
                if let Some((share, _)) = share {
                    share.bytes.fetch_sub(size, Ordering::Relaxed);
                }
            } else if over {
                self.flag_slow(recipient);
            }
        }
        if refused > 0 {
            self.buffered.fetch_sub(size * refused, Ordering::Relaxed);
        }
        self.fanout_latency.record(started.elapsed());
        self.fanout_recipients.record(recipients.len() as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn recipient(hub: &Hub, capacity: usize) -> (Recipient, mpsc::Receiver<Arc<Delivery>>) {
        recipient_from(hub, capacity, "192.0.2.1")
    }

    fn recipient_from(
        hub: &Hub,
        capacity: usize,
        address: &str,
    ) -> (Recipient, mpsc::Receiver<Arc<Delivery>>) {
        let (queue, rx) = mpsc::channel(capacity);
        let r = Recipient {
            session: hub.next_session(),
            user: UserName::parse("u").unwrap(),
            queue,
            share: hub.share(address.parse().unwrap()),
            signal: Arc::default(),
        };
        (r, rx)
    }

    fn publication(text: &'static str) -> Publication {
        Publication {
            id: None,
            except: None,
            control: None,
            payload: Bytes::from_static(text.as_bytes()),
        }
    }

    #[test]
    fn every_recipient_shares_one_frame_and_a_full_queue_only_flags_its_owner() {
        let hub = Hub::new(None);
        let topic = Topic::Room(crate::domain::RoomName::parse("r").unwrap());
        let (fast, mut fast_rx) = recipient(&hub, 8);
        let (slow, _slow_rx) = recipient(&hub, 1);
        hub.add(&topic, &fast);
        hub.add(&topic, &slow);
        hub.add(&topic, &slow);

        hub.deliver(&topic, publication("one"));
        hub.deliver(&topic, publication("two"));

        let one = fast_rx.try_recv().unwrap();
        let two = fast_rx.try_recv().unwrap();
        assert_eq!((one.frame.as_str(), two.frame.as_str()), ("one", "two"));
        assert!(slow.signal.is_slow());
        assert!(!fast.signal.is_slow());
    }

    #[test]
    fn a_queue_that_reaches_the_hold_limit_presses_its_session() {
        let hub = Hub::new(None);
        let topic = Topic::Room(crate::domain::RoomName::parse("r").unwrap());
        let (r, _rx) = recipient(&hub, 8);
        hub.add(&topic, &r);
        assert_eq!(hold_limit(8), 4);
        for _ in 0..3 {
            hub.deliver(&topic, publication("x"));
        }
        assert!(!r.signal.take_pressure());
        hub.deliver(&topic, publication("x"));
        assert!(r.signal.take_pressure());
        assert!(!r.signal.take_pressure(), "taken once");
    }

    #[test]
    fn admin_controls_reach_the_signals_of_the_topic_and_never_a_queue() {
        let hub = Hub::new(None);
        let topic = Topic::User(UserName::parse("alice").unwrap());
        let (r, mut rx) = recipient(&hub, 8);
        let (other, _other_rx) = recipient(&hub, 8);
        hub.add(&topic, &r);
        let room = crate::domain::RoomName::parse("lobby").unwrap();
        let control = |control| Publication {
            id: None,
            except: None,
            control: Some(control),
            payload: bytes::Bytes::new(),
        };
        hub.deliver(&topic, control(Control::Leave(room.clone())));
        assert!(r.signal.has_leaves() && !r.signal.is_removed());
        assert_eq!(r.signal.take_leaves(), vec![room]);
        assert!(r.signal.take_leaves().is_empty(), "taken once");
        hub.deliver(&topic, control(Control::Disconnect));
        assert!(r.signal.is_removed());
        assert!(!other.signal.is_removed(), "not on the topic");
        assert!(rx.try_recv().is_err(), "no frame queued");
        assert_eq!(hub.buffered_bytes(), 0);
    }

    #[test]
    fn removed_sessions_get_nothing() {
        let hub = Hub::new(None);
        let topic = Topic::User(UserName::parse("bob").unwrap());
        let (r, mut rx) = recipient(&hub, 8);
        hub.add(&topic, &r);
        hub.remove(&topic, r.session);
        hub.deliver(&topic, publication("x"));
        assert!(rx.try_recv().is_err());
        assert!(hub.topics().is_empty());
    }

    #[test]
    fn buffered_bytes_count_what_is_queued_and_not_what_was_refused() {
        let hub = Hub::new(None);
        let topic = Topic::Room(crate::domain::RoomName::parse("r").unwrap());
        let (a, mut a_rx) = recipient(&hub, 8);
        let (full, _full_rx) = recipient(&hub, 1);
        let (gone, gone_rx) = recipient(&hub, 8);
        drop(gone_rx);
        for r in [&a, &full, &gone] {
            hub.add(&topic, r);
        }

        hub.deliver(&topic, publication("12345"));
        assert_eq!(hub.buffered_bytes(), 10, "a and full queued 5 bytes each");
        hub.deliver(&topic, publication("123"));
        assert_eq!(hub.buffered_bytes(), 13, "only a took the second frame");

        let taken: usize = std::iter::from_fn(|| a_rx.try_recv().ok())
            .map(|d| d.frame.len())
            .sum();
        hub.release(&a, taken);
        assert_eq!(hub.buffered_bytes(), 5);
    }

    #[test]
    fn an_address_past_its_share_has_the_connection_that_crossed_it_flagged_slow() {
        let hub = Hub::new(Some(8));
        let topic = Topic::Room(crate::domain::RoomName::parse("r").unwrap());
        let (a1, _a1_rx) = recipient_from(&hub, 8, "192.0.2.1");
        let (a2, _a2_rx) = recipient_from(&hub, 8, "192.0.2.1");
        let (b, _b_rx) = recipient_from(&hub, 8, "198.51.100.1");
        for r in [&a1, &a2, &b] {
            hub.add(&topic, r);
        }

        hub.deliver(&topic, publication("1234"));
        assert!(!a1.signal.is_slow() && !a2.signal.is_slow(), "8 of 8");
        hub.deliver(&topic, publication("1"));
        assert!(a1.signal.is_slow() || a2.signal.is_slow(), "past 8");
        assert!(!b.signal.is_slow(), "other addresses unaffected");
        assert!(Arc::ptr_eq(
            a1.share.as_ref().unwrap(),
            a2.share.as_ref().unwrap()
        ));
    }
}
