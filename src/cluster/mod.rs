//! The cluster seam: the role traits [`Bus`], [`Presence`], [`Liveness`] and
//! [`History`] that every backend implements, and the types that cross them.
//!
//! Nothing here knows about sockets, axum or JSON frames: payloads are opaque
//! bytes, keys are typed names. Publications reach the node-local hub through
//! the [`Deliver`] handler given to a backend when it is built.

pub mod memory;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::domain::{
    FileName, IdempotencyKey, MediaType, MessageId, NodeId, RoomName, UploadId, UserName,
};

/// Where a publication goes: every connection in a room, or every connection
/// of one user.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// The members of a room.
    Room(RoomName),
    /// Every connection of one user (DMs).
    User(UserName),
}

/// One history: a room's, or the shared history of a DM pair.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Log {
    /// A room's messages.
    Room(RoomName),
    /// The messages between two users; build it with [`Log::direct`].
    Direct(UserName, UserName),
}

impl Log {
    /// The log shared by `a` and `b`, the same whichever of them asks.
    pub fn direct(a: UserName, b: UserName) -> Self {
        if a <= b {
            Self::Direct(a, b)
        } else {
            Self::Direct(b, a)
        }
    }

    /// `r:ROOM` or `d:A:B`: how an upload record names the logs it was
    /// sent to (names never hold `:`).
    pub fn tag(&self) -> String {
        match self {
            Self::Room(room) => format!("r:{room}"),
            Self::Direct(a, b) => format!("d:{a}:{b}"),
        }
    }

    /// The log a [`Log::tag`] names; `None` for anything else.
    pub fn from_tag(tag: &str) -> Option<Self> {
        if let Some(room) = tag.strip_prefix("r:") {
            return RoomName::parse(room).ok().map(Self::Room);
        }
        let (a, b) = tag.strip_prefix("d:")?.split_once(':')?;
        Some(Self::direct(
            UserName::parse(a).ok()?,
            UserName::parse(b).ok()?,
        ))
    }
}

/// What the bus hands to subscribers: the payload as it was published, plus
/// the few typed facts the hub needs without decoding it.
#[derive(Debug, Clone)]
pub struct Publication {
    /// The id of a stored message; `None` for ephemeral events.
    pub id: Option<MessageId>,
    /// A user whose connections must not receive it (typing, presence).
    pub except: Option<UserName>,
    /// An instruction for the sessions on the topic instead of a frame
    /// (the payload is then empty and never reaches a client).
    pub control: Option<Control>,
    /// The encoded frame, shared by every recipient.
    pub payload: Bytes,
}

/// What an administrator tells the sessions on a user's topic, on every
/// node: carried by the bus beside the payload, never as a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Close every connection of the user with 4001.
    Disconnect,
    /// Leave this room, as if the connection had sent `leave`.
    Leave(RoomName),
}

/// A message not yet stored: its encoding is `prefix + id + suffix`, because
/// the id is assigned by the history at the moment it is appended.
#[derive(Debug, Clone)]
pub struct Draft {
    /// Bytes before the id.
    pub prefix: Bytes,
    /// Bytes after the id.
    pub suffix: Bytes,
}

impl Draft {
    /// The full encoding once `id` is known.
    pub fn complete(&self, id: MessageId) -> Bytes {
        let id = id.to_string();
        let mut out = Vec::with_capacity(self.prefix.len() + id.len() + self.suffix.len());
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&self.suffix);
        Bytes::from(out)
    }
}

/// A stored message: its id and its full encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Where it stands in its history.
    pub id: MessageId,
    /// The encoded message, exactly as it was delivered.
    pub payload: Bytes,
}

/// A send that a client may retry: the sender and its key for the send.
/// Within [`crate::domain::IDEMPOTENCY_WINDOW`], a repeat of the same key by
/// the same user in the same log is not stored again.
#[derive(Debug, Clone, Copy)]
pub struct Idempotency<'a> {
    /// The sender.
    pub user: &'a UserName,
    /// The sender's key for this send.
    pub key: &'a IdempotencyKey,
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The message, as stored now or, for a repeat, as stored the first time.
    pub stored: Stored,
    /// True when the idempotency key was used already: nothing was stored or
    /// published this time.
    pub replayed: bool,
}

/// The messages after a given id.
#[derive(Debug, Clone, Default)]
pub struct Since {
    /// The kept messages after the id, oldest first: the newest ones when
    /// there were more than asked for.
    pub messages: Vec<Stored>,
    /// True when messages after the id are missing: trimmed away, or more
    /// than asked for.
    pub truncated: bool,
    /// True when the history still holds the id or an older message, so it
    /// holds every message after the id (whatever an archive keeps).
    pub complete: bool,
}

/// A user who left a room because the node holding its connections died
/// or left the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Departure {
    /// The room left.
    pub room: RoomName,
    /// The user who is no longer in it anywhere in the cluster.
    pub user: UserName,
}

/// A user whose presence in a room changed cluster-wide when a node's
/// presence was rewritten: the rooms are told, as for a live join or leave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomChange {
    /// The room.
    pub room: RoomName,
    /// The user now in it, or no longer in it anywhere.
    pub user: UserName,
    /// True when the user is in the room again, false when it left.
    pub joined: bool,
}

/// An online user, for the admin API (serialized as it answers).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UserConnections {
    /// The user.
    pub user: UserName,
    /// Its open connections, cluster-wide.
    pub connections: usize,
    /// The nodes holding them, sorted.
    pub nodes: Vec<NodeId>,
}

/// A room in the cluster-wide directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSummary {
    /// The room.
    pub name: RoomName,
    /// How many distinct users are in it now.
    pub members: usize,
}

/// Receives every publication on a topic this node subscribed to. Called from
/// the backend's delivery path, so it must not block.
pub trait Deliver: Send + Sync + 'static {
    /// One publication on `topic`.
    fn deliver(&self, topic: &Topic, publication: Publication);
}

/// Why a backend call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The backend could not be reached or did not answer in time; nothing
    /// was done.
    #[error("backend unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The thing to create exists already.
    #[error("already exists")]
    Conflict,
    /// The thing to create would go over its bound.
    #[error("at its limit")]
    Full,
}

/// Shorthand for backend results.
pub type ClusterResult<T> = Result<T, ClusterError>;

/// Publish/subscribe per topic across the cluster.
#[async_trait]
pub trait Bus: Send + Sync {
    /// Sends an ephemeral publication (never stored) to every subscriber of
    /// `topic` on every node.
    async fn publish(&self, topic: &Topic, publication: Publication) -> ClusterResult<()>;

    /// Starts receiving `topic` on this node. Calls are counted: the node
    /// stays subscribed until as many [`Bus::unsubscribe`] calls. When this
    /// returns, every later publication on `topic` reaches the [`Deliver`]
    /// handler.
    async fn subscribe(&self, topic: &Topic) -> ClusterResult<()>;

    /// Drops one count of interest in `topic`; the last one stops delivery.
    async fn unsubscribe(&self, topic: &Topic);

    /// Succeeds when the backend behind the bus answers now (readiness).
    async fn ping(&self) -> ClusterResult<()>;
}

/// Connection-counted membership and the room directory, cluster-wide.
#[async_trait]
pub trait Presence: Send + Sync {
    /// Counts one more connection of `user` on this node. Returns true when
    /// it is the user's first connection anywhere (the user came online).
    async fn connect(&self, user: &UserName) -> ClusterResult<bool>;

    /// Drops one connection of `user` on this node. Returns true when it was
    /// the user's last anywhere.
    async fn disconnect(&self, user: &UserName) -> ClusterResult<bool>;

    /// Counts one more connection of `user` in `room` on this node. Returns
    /// true when it is the user's first connection in the room cluster-wide.
    async fn join(&self, room: &RoomName, user: &UserName) -> ClusterResult<bool>;

    /// Drops one connection of `user` from `room`. Returns true when it was
    /// the user's last connection in the room cluster-wide.
    async fn leave(&self, room: &RoomName, user: &UserName) -> ClusterResult<bool>;

    /// The distinct users in `room`, sorted.
    async fn members(&self, room: &RoomName) -> ClusterResult<Vec<UserName>>;

    /// Every online user, sorted.
    async fn online(&self) -> ClusterResult<Vec<UserName>>;

    /// Every online user with its connections cluster-wide and which of
    /// `nodes` (the live ones) hold them, sorted by user.
    async fn connections(&self, nodes: &[NodeId]) -> ClusterResult<Vec<UserConnections>>;

    /// Rooms with members or created explicitly, by name.
    async fn rooms(&self) -> ClusterResult<Vec<RoomSummary>>;

    /// Adds `room` to the directory; [`ClusterError::Conflict`] if it is
    /// listed already, [`ClusterError::Full`] if `max` rooms were created
    /// already (rooms with members do not count).
    async fn create_room(&self, room: &RoomName, max: usize) -> ClusterResult<()>;
}

/// Which nodes are alive, and what follows from a node's death or return:
/// a node beats to stay listed; one whose beats stop has its entries reaped
/// by a survivor; one whose entries the backend lost or may have missed
/// rewrites them from its own connections.
#[async_trait]
pub trait Liveness: Send + Sync {
    /// The nodes that are alive, sorted.
    async fn nodes(&self) -> ClusterResult<Vec<NodeId>>;

    /// Marks this node alive, with `status` (what the node says about
    /// itself, opaque here) readable by every node until the beat expires.
    /// Returns true when the backend may no longer match this node's
    /// sockets (it lost the node's entries, a write failed, or this process
    /// just took over the node id from an earlier one) and
    /// [`Liveness::restore`] must rewrite them.
    async fn heartbeat(&self, status: &[u8]) -> ClusterResult<bool>;

    /// Every live node, sorted, with the status of its last beat (`None`
    /// when that has expired already).
    async fn statuses(&self) -> ClusterResult<Vec<(NodeId, Option<Bytes>)>>;

    /// Rewrites this node's entries from what its connections amount to now
    /// (an earlier process's under the same id are removed), adjusting the
    /// cluster-wide views, and returns the users whose presence in a room
    /// changed, for the caller to announce.
    async fn restore(&self) -> ClusterResult<Vec<RoomChange>>;

    /// Finds nodes whose heartbeat expired, removes their entries, and returns
    /// the departures that follow. Each dead node's entries are returned to
    /// exactly one caller in the cluster.
    async fn reap(&self) -> ClusterResult<Vec<Departure>>;

    /// Removes every entry of this node at once (clean shutdown): its users
    /// leave, the rooms it created stay listed. Returns who thereby left a
    /// room everywhere, to be announced like the reaped.
    async fn remove_node(&self) -> ClusterResult<Vec<Departure>>;
}

/// Stored, ordered, capped message histories.
#[async_trait]
pub trait History: Send + Sync {
    /// Stores `draft` at the end of `log` and publishes it to `topics` in one
    /// atomic step, so that every subscriber sees messages in history order,
    /// unless `idempotency` names a send already stored. The log's hot
    /// history lives on for the backend's history TTL after this append.
    async fn append(
        &self,
        log: &Log,
        draft: Draft,
        topics: &[Topic],
        idempotency: Option<Idempotency<'_>>,
    ) -> ClusterResult<Appended>;

    /// The kept messages after `since`, oldest first: the newest `limit`
    /// when there are more.
    async fn since(&self, log: &Log, since: MessageId, limit: usize) -> ClusterResult<Since>;

    /// Up to `limit` messages before `before` (or the newest when `None`),
    /// oldest first.
    async fn before(
        &self,
        log: &Log,
        before: Option<MessageId>,
        limit: usize,
    ) -> ClusterResult<Vec<Stored>>;

    /// Deletes message `id` from `log` and, if it was there, publishes
    /// `event` on `topics` in the same step.
    async fn delete(
        &self,
        log: &Log,
        id: MessageId,
        topics: &[Topic],
        event: Bytes,
    ) -> ClusterResult<Removal>;
}

/// What deleting a message from a history found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Removal {
    /// The message was in the history (and the room has been told).
    pub removed: bool,
    /// It was still waiting for the archive: the archiver removes it from
    /// the archive if it stored it meanwhile (see [`Marked::deleted`]).
    pub waiting: bool,
}

/// What recording an archiver's progress returns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Marked {
    /// No message of the log waits any more.
    pub done: bool,
    /// Messages up to the mark deleted while they waited: the archive may
    /// have stored them; the archiver removes them, then forgets them
    /// ([`Backlog::forget_deleted`]).
    pub deleted: Vec<MessageId>,
}

/// The messages a backend keeps for the archive until the archive has them.
/// With an archive, a history never trims or expires a message the archive
/// lacks: the hot history and the archive together hold every message, and
/// the hot part ends where the archive's begins.
#[async_trait]
pub trait Backlog: Send + Sync {
    /// Every log with messages waiting, found by a sweep of the whole
    /// backend (the archiver also hears of each append directly).
    async fn waiting(&self) -> ClusterResult<Vec<Log>>;

    /// Up to `limit` of the messages of `log` waiting, oldest first.
    async fn unarchived(&self, log: &Log, limit: usize) -> ClusterResult<Vec<Stored>>;

    /// Records that the archive holds every message of `log` up to `upto`:
    /// from now on the history may trim them, and once none wait, expire.
    async fn archived(&self, log: &Log, upto: MessageId) -> ClusterResult<Marked>;

    /// Forgets deleted ids [`Backlog::archived`] returned, once the archive
    /// no longer holds them.
    async fn forget_deleted(&self, log: &Log, ids: &[MessageId]) -> ClusterResult<()>;
}

/// Where an upload stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadState {
    /// Announced; its bytes have not been checked yet.
    Pending,
    /// Its bytes are stored and match the announced size and type.
    Finished {
        /// Whether it may be served `inline` (a raster image whose first
        /// bytes match its type).
        inline: bool,
    },
    /// Its bytes did not match what was announced; it can never be attached.
    Rejected,
}

/// What chorus keeps about one upload (the bytes live elsewhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRecord {
    /// The upload.
    pub id: UploadId,
    /// Who announced it; the only user who may attach it.
    pub uploader: UserName,
    /// The file's name as given.
    pub name: FileName,
    /// The announced type.
    pub media_type: MediaType,
    /// The announced size in bytes.
    pub size: u64,
    /// Pending, finished or rejected.
    pub state: UploadState,
    /// The local PUT's one-time secret; `None` when the bytes go to S3.
    pub secret: Option<String>,
    /// The logs it was sent to, which decide who may fetch it.
    pub logs: Vec<Log>,
}

/// Upload records, cluster-wide. Every record has a lifetime: a write
/// sets it, so nothing an upload leaves behind lives for ever.
#[async_trait]
pub trait UploadRecords: Send + Sync {
    /// Stores a new pending `record` living `ttl`, unless its uploader has
    /// `max_pending` pending records already ([`ClusterError::Full`]).
    async fn create(
        &self,
        record: &UploadRecord,
        ttl: Duration,
        max_pending: usize,
    ) -> ClusterResult<()>;

    /// The record, if it is there.
    async fn get(&self, id: &UploadId) -> ClusterResult<Option<UploadRecord>>;

    /// Puts back a record kept elsewhere (the local folder's copy, after a
    /// restart), as it is, living `ttl`.
    async fn restore(&self, record: &UploadRecord, ttl: Duration) -> ClusterResult<()>;

    /// Moves the pending `record` to `to`, living `ttl` from now. False
    /// when it was no longer pending (or is gone): someone else settled it.
    async fn settle(
        &self,
        record: &UploadRecord,
        to: UploadState,
        ttl: Duration,
    ) -> ClusterResult<bool>;

    /// Adds `log` to the logs of upload `id` if `uploader` made it and it is
    /// finished, and makes it live `ttl` from now; the record as it is
    /// then, or `None` when it is not `uploader`'s finished upload.
    async fn attach(
        &self,
        id: &UploadId,
        uploader: &UserName,
        log: &Log,
        ttl: Duration,
    ) -> ClusterResult<Option<UploadRecord>>;
}

/// The roles of one backend, chosen once at start-up.
#[derive(Clone)]
pub struct Backend {
    /// Publish/subscribe.
    pub bus: Arc<dyn Bus>,
    /// Membership and directory.
    pub presence: Arc<dyn Presence>,
    /// Which nodes are alive, and the repair of their entries.
    pub liveness: Arc<dyn Liveness>,
    /// Message histories.
    pub history: Arc<dyn History>,
    /// What the histories keep for the archive; `None` without one.
    pub backlog: Option<Arc<dyn Backlog>>,
    /// What is known about uploads.
    pub uploads: Arc<dyn UploadRecords>,
}
