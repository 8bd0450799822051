//! The chat operations both front ends share (WebSocket commands and REST):
//! sending, joining and leaving, presence announcements, reads; the node's
//! liveness beat (`liveness.rs`); and what a session needs from the hub
//! (`output.rs`). This is the only place that combines the hub with the
//! backend roles: `app` builds both and hands them here, and nothing else
//! keeps either.

mod liveness;
mod output;
mod status;
mod uploads;

pub use status::NodeStatus;
use status::RoomRates;

pub use uploads::{Download, MAX_PENDING_UPLOADS, Offer, Put, RETENTION, SendError, UploadFailure};

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use metrics::Histogram;

use crate::archive::ArchiveError;
use crate::archive::archiver::Archiver;
use crate::cluster::{
    Appended, Backend, ClusterError, ClusterResult, Control, Draft, Idempotency, Log, Publication,
    RoomSummary, Stored, Topic, UserConnections,
};
use crate::domain::{Content, IdempotencyKey, MessageId, NodeId, RoomName, UploadId, UserName};
use crate::hub::{Hub, Recipient};
use crate::protocol::{self, DEFAULT_HISTORY_LIMIT, PresenceEvent};
use crate::telemetry;
use crate::uploads::Uploads;

/// What a join returns to the joining connection.
#[derive(Debug)]
pub struct Joined {
    /// Everyone in the room now, the joiner included, sorted.
    pub members: Vec<UserName>,
    /// The last messages, or every kept message after `since`.
    pub history: Vec<Stored>,
    /// True when `since` was older than the kept history.
    pub truncated: bool,
}

/// Cluster-wide counts for `/api/stats`.
#[derive(Debug)]
pub struct Stats {
    /// Online users.
    pub users_online: usize,
    /// Rooms with at least one member.
    pub rooms_active: usize,
    /// Live nodes.
    pub nodes: Vec<NodeId>,
}

/// The chat service of one node.
#[derive(Clone)]
pub struct Chat {
    node: NodeId,
    backend: Backend,
    hub: Arc<Hub>,
    send_latency: Histogram,
    /// Presence events whose publication failed after the presence change
    /// they announce was made; the upkeep retries them.
    unannounced: Arc<Mutex<VecDeque<Announcement>>>,
    /// With an archive: what moves messages into it, and reads it.
    archiver: Option<Arc<Archiver>>,
    /// Where uploads are stored; `None`: uploads are off.
    uploads: Option<Arc<Uploads>>,
    /// The largest upload.
    upload_max_bytes: u64,
    /// Room messages this node stored lately, for its status.
    rates: Arc<RoomRates>,
    /// When this node started, ms since the epoch.
    started_ms: i64,
}

/// The most messages a join with `since` returns (the default hot
/// history's size); a client further behind gets the newest, marked
/// truncated, and pages back for the rest.
const CATCH_UP: usize = 1000;

/// An archive that cannot answer a read is, to the client, the backend
/// being unavailable.
fn archive_unavailable(error: ArchiveError) -> ClusterError {
    metrics::counter!(telemetry::ARCHIVE_ERRORS).increment(1);
    ClusterError::Unavailable(Box::new(error))
}

/// A presence event to publish.
#[derive(Debug, Clone)]
struct Announcement {
    room: RoomName,
    user: UserName,
    event: PresenceEvent,
}

/// Unpublished presence events kept for a retry: plenty for an outage's
/// worth of leaves on one node; past it the oldest go (logged).
const MAX_UNANNOUNCED: usize = 10_000;

impl Chat {
    /// The service over `backend`, fanning out through `hub`, archiving
    /// through `archiver` when there is one.
    pub fn new(
        node: NodeId,
        backend: Backend,
        hub: Arc<Hub>,
        archiver: Option<Arc<Archiver>>,
    ) -> Self {
        Self {
            node,
            backend,
            hub,
            send_latency: metrics::histogram!(telemetry::SEND_LATENCY),
            unannounced: Arc::default(),
            archiver,
            uploads: None,
            upload_max_bytes: 0,
            rates: Arc::default(),
            started_ms: chrono::Utc::now().timestamp_millis(),
        }
    }

    /// The archiver, for the node to run.
    pub fn archiver(&self) -> Option<Arc<Archiver>> {
        self.archiver.clone()
    }

    /// This node's id.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// Stores and delivers a room message with `attachments` (each
    /// `user`'s finished upload), unless `key` names a send of `user` to
    /// `room` already stored (then that one is returned, replayed).
    pub async fn send_message(
        &self,
        room: &RoomName,
        user: &UserName,
        content: &Content,
        attachments: &[UploadId],
        reference: Option<&str>,
        key: Option<&IdempotencyKey>,
    ) -> Result<Appended, SendError> {
        let log = Log::Room(room.clone());
        let attachments = self.attachments(attachments, user, &log).await?;
        let draft = protocol::message(room, user, content, &attachments, reference);
        let topics = [Topic::Room(room.clone())];
        let appended = self
            .append(&log, draft, &topics, user, key, "message")
            .await?;
        if !appended.replayed {
            self.rates.record(room, appended.stored.id.ms());
        }
        Ok(appended)
    }

    /// Stores and publishes, timing it and counting it as accepted.
    async fn append(
        &self,
        log: &Log,
        draft: Draft,
        topics: &[Topic],
        user: &UserName,
        key: Option<&IdempotencyKey>,
        kind: &'static str,
    ) -> ClusterResult<Appended> {
        let started = Instant::now();
        let idempotency = key.map(|key| Idempotency { user, key });
        let appended = self
            .backend
            .history
            .append(log, draft, topics, idempotency)
            .await?;
        if appended.replayed {
            metrics::counter!(telemetry::IDEMPOTENT_REPLAYS, "kind" => kind).increment(1);
        } else {
            if let Some(archiver) = &self.archiver {
                archiver.appended(log);
            }
            self.send_latency.record(started.elapsed());
            metrics::counter!(telemetry::MESSAGES_ACCEPTED, "kind" => kind).increment(1);
        }
        Ok(appended)
    }

    /// Stores a DM in the pair's history and delivers it to every connection
    /// of both users, `attachments` as for `send_message`; with `key`, at
    /// most once per key (see `send_message`).
    pub async fn send_dm(
        &self,
        from: &UserName,
        to: &UserName,
        content: &Content,
        attachments: &[UploadId],
        reference: Option<&str>,
        key: Option<&IdempotencyKey>,
    ) -> Result<Appended, SendError> {
        let log = Log::direct(from.clone(), to.clone());
        let attachments = self.attachments(attachments, from, &log).await?;
        let draft = protocol::dm(from, to, content, &attachments, reference);
        let mut topics = vec![Topic::User(to.clone())];
        if from != to {
            topics.push(Topic::User(from.clone()));
        }
        Ok(self.append(&log, draft, &topics, from, key, "dm").await?)
    }

    /// Tells the other members of `room` that `user` is typing.
    pub async fn typing(&self, room: &RoomName, user: &UserName) -> ClusterResult<()> {
        let payload = protocol::typing(room, user);
        self.publish_except(room, user, payload).await
    }

    /// Tells the other members of `room` that `user` joined or left it. If
    /// the event cannot be published now it is kept and retried by
    /// [`Chat::retry_announcements`], since the presence change it reports
    /// was made.
    async fn announce(
        &self,
        room: &RoomName,
        user: &UserName,
        event: PresenceEvent,
    ) -> ClusterResult<()> {
        let published = self.publish_presence(room, user, event).await;
        if published.is_err() {
            let mut unannounced = self.unannounced();
            if unannounced.len() >= MAX_UNANNOUNCED {
                tracing::warn!("too many unpublished presence events; dropping the oldest");
                unannounced.pop_front();
            }
            unannounced.push_back(Announcement {
                room: room.clone(),
                user: user.clone(),
                event,
            });
        }
        published
    }

    async fn publish_presence(
        &self,
        room: &RoomName,
        user: &UserName,
        event: PresenceEvent,
    ) -> ClusterResult<()> {
        let payload = protocol::presence(room, user, event);
        self.publish_except(room, user, payload).await?;
        let event = match event {
            PresenceEvent::Join => "join",
            PresenceEvent::Leave => "leave",
        };
        metrics::counter!(telemetry::PRESENCE_EVENTS, "event" => event).increment(1);
        Ok(())
    }

    fn unannounced(&self) -> std::sync::MutexGuard<'_, VecDeque<Announcement>> {
        self.unannounced
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes the presence events that failed before, oldest first,
    /// unless the user's presence in the room has changed back since (a
    /// late `leave` must not follow a newer join). Stops at the first
    /// failure, keeping the rest.
    async fn retry_announcements(&self) {
        let pending: Vec<Announcement> = self.unannounced().drain(..).collect();
        let mut pending = pending.into_iter();
        while let Some(a) = pending.next() {
            let present = match self.backend.presence.members(&a.room).await {
                Ok(members) => members.contains(&a.user),
                Err(_) => {
                    self.requeue(a, pending);
                    return;
                }
            };
            let still_true = present == matches!(a.event, PresenceEvent::Join);
            if still_true
                && self
                    .publish_presence(&a.room, &a.user, a.event)
                    .await
                    .is_err()
            {
                self.requeue(a, pending);
                return;
            }
        }
    }

    fn requeue(&self, first: Announcement, rest: impl Iterator<Item = Announcement>) {
        let mut unannounced = self.unannounced();
        let newer = std::mem::take(&mut *unannounced);
        unannounced.push_back(first);
        unannounced.extend(rest);
        unannounced.extend(newer);
    }

    async fn publish_except(
        &self,
        room: &RoomName,
        user: &UserName,
        payload: Bytes,
    ) -> ClusterResult<()> {
        let publication = Publication {
            id: None,
            except: Some(user.clone()),
            control: None,
            payload,
        };
        self.backend
            .bus
            .publish(&Topic::Room(room.clone()), publication)
            .await
    }

    /// Starts listening to `topic` for `recipient`: locally at once, and on the
    /// bus before returning, so nothing published afterwards is missed.
    async fn listen(&self, topic: &Topic, recipient: &Recipient) -> ClusterResult<()> {
        self.hub.add(topic, recipient);
        if let Err(e) = self.backend.bus.subscribe(topic).await {
            self.hub.remove(topic, recipient.session);
            return Err(e);
        }
        Ok(())
    }

    async fn unlisten(&self, topic: &Topic, session: u64) {
        self.hub.remove(topic, session);
        self.backend.bus.unsubscribe(topic).await;
    }

    /// Registers a new connection of `user`: its DMs start flowing and the
    /// user counts as online.
    pub async fn connect(&self, user: &UserName, recipient: &Recipient) -> ClusterResult<()> {
        let topic = Topic::User(user.clone());
        self.listen(&topic, recipient).await?;
        if let Err(e) = self.backend.presence.connect(user).await {
            self.unlisten(&topic, recipient.session).await;
            return Err(e);
        }
        Ok(())
    }

    /// Ends a connection of `user` (after it left its rooms).
    pub async fn disconnect(&self, user: &UserName, session: u64) {
        self.unlisten(&Topic::User(user.clone()), session).await;
        if let Err(error) = self.backend.presence.disconnect(user).await {
            tracing::warn!(%error, user = %user, "could not record a disconnect; the presence reaper will");
        }
    }

    /// Joins `room` on one connection: subscribes first, then counts the
    /// presence and reads history, so no message falls between the history
    /// and the live stream (the session drops the overlap by id).
    pub async fn join(
        &self,
        room: &RoomName,
        user: &UserName,
        recipient: &Recipient,
        since: Option<MessageId>,
    ) -> ClusterResult<Joined> {
        let topic = Topic::Room(room.clone());
        self.listen(&topic, recipient).await?;
        let first = match self.backend.presence.join(room, user).await {
            Ok(first) => first,
            Err(error) => {
                self.unlisten(&topic, recipient.session).await;
                return Err(error);
            }
        };
        if first && let Err(error) = self.announce(room, user, PresenceEvent::Join).await {
            tracing::warn!(%error, room = %room, "could not announce a join");
        }
        match self.snapshot(room, since).await {
            Ok(joined) => Ok(joined),
            Err(error) => {
                // The session records no room for a failed join, so it would
                // never leave it: undo the presence now, like a leave.
                if let Err(undo) = self.leave(room, user, recipient.session).await {
                    tracing::warn!(error = %undo, room = %room, "could not undo the presence of a failed join");
                }
                Err(error)
            }
        }
    }

    /// The members and history a join returns, without joining: for a
    /// connection that is in the room already.
    pub async fn snapshot(
        &self,
        room: &RoomName,
        since: Option<MessageId>,
    ) -> ClusterResult<Joined> {
        let log = Log::Room(room.clone());
        let (history, truncated) = match since {
            Some(since) => self.since(&log, since).await?,
            None => self.last_messages(&log).await?,
        };
        let members = self.backend.presence.members(room).await?;
        Ok(Joined {
            members,
            history,
            truncated,
        })
    }

    /// Leaves `room` on one connection; announces the leave when it was the
    /// user's last connection in the room anywhere.
    pub async fn leave(&self, room: &RoomName, user: &UserName, session: u64) -> ClusterResult<()> {
        self.unlisten(&Topic::Room(room.clone()), session).await;
        if self.backend.presence.leave(room, user).await?
            && let Err(error) = self.announce(room, user, PresenceEvent::Leave).await
        {
            // Recorded, so not an error of the leave: announced later.
            tracing::warn!(%error, room = %room, "could not announce a leave yet; will retry");
        }
        Ok(())
    }

    /// Closes every connection of `user`, on every node, with 4001: a
    /// control publication on the user's topic, which every node with a
    /// connection of the user listens to.
    pub async fn remove_user(&self, user: &UserName) -> ClusterResult<()> {
        self.control(user, Control::Disconnect).await
    }

    /// Makes every connection of `user`, on every node, leave `room` as if
    /// it had sent `leave`.
    pub async fn kick(&self, room: &RoomName, user: &UserName) -> ClusterResult<()> {
        self.control(user, Control::Leave(room.clone())).await
    }

    /// Deletes message `id` from `room`'s history and from the archive;
    /// the room hears `deleted`. False when neither held it.
    pub async fn delete_message(&self, room: &RoomName, id: MessageId) -> ClusterResult<bool> {
        let log = Log::Room(room.clone());
        let topic = Topic::Room(room.clone());
        let event = protocol::deleted(room, id);
        let removal = self
            .backend
            .history
            .delete(&log, id, std::slice::from_ref(&topic), event.clone())
            .await?;
        let mut archived = false;
        // One still waiting is not in the archive, or is in an archiver's
        // hands: that archiver removes it after storing it.
        if let Some(archiver) = &self.archiver
            && !removal.waiting
        {
            archived = archiver
                .archive()
                .delete(&log, id)
                .await
                .map_err(archive_unavailable)?;
        }
        if archived && !removal.removed {
            // Only the archive held it: readers of older pages hear of it.
            let publication = Publication {
                id: None,
                except: None,
                control: None,
                payload: event,
            };
            self.backend.bus.publish(&topic, publication).await?;
        }
        Ok(removal.removed || archived)
    }

    /// Every online user, its connections and the live nodes holding them.
    pub async fn connections(&self) -> ClusterResult<Vec<UserConnections>> {
        let nodes = self.backend.liveness.nodes().await?;
        self.backend.presence.connections(&nodes).await
    }

    async fn control(&self, user: &UserName, control: Control) -> ClusterResult<()> {
        let publication = Publication {
            id: None,
            except: None,
            control: Some(control),
            payload: Bytes::new(),
        };
        self.backend
            .bus
            .publish(&Topic::User(user.clone()), publication)
            .await
    }

    /// A page of a room's or DM pair's history, oldest first: from the hot
    /// history, and from the archive for what lies before it.
    pub async fn history(
        &self,
        log: &Log,
        before: Option<MessageId>,
        limit: usize,
    ) -> ClusterResult<Vec<Stored>> {
        let hot = self.backend.history.before(log, before, limit).await?;
        let Some(archiver) = &self.archiver else {
            return Ok(hot);
        };
        if hot.len() >= limit {
            return Ok(hot);
        }
        // The hot history holds every message it has before `before`, and
        // the archive every one it trimmed: the older part starts right
        // below the oldest hot message.
        let boundary = hot.first().map(|m| m.id).or(before);
        let mut page = archiver
            .archive()
            .before(log, boundary, limit - hot.len())
            .await
            .map_err(archive_unavailable)?;
        page.extend(hot);
        Ok(page)
    }

    /// The last messages a join returns. An archive that cannot answer
    /// leaves the hot part, marked truncated: a join does not fail for it.
    async fn last_messages(&self, log: &Log) -> ClusterResult<(Vec<Stored>, bool)> {
        match self.history(log, None, DEFAULT_HISTORY_LIMIT).await {
            Ok(messages) => Ok((messages, false)),
            Err(_) if self.archiver.is_some() => {
                let hot = self
                    .backend
                    .history
                    .before(log, None, DEFAULT_HISTORY_LIMIT)
                    .await?;
                Ok((hot, true))
            }
            Err(error) => Err(error),
        }
    }

    /// Every message of `log` after `since` (at most [`CATCH_UP`], the
    /// newest), and whether some may be missing. With an archive, the
    /// messages between `since` and the hot history's oldest come from it.
    async fn since(&self, log: &Log, since: MessageId) -> ClusterResult<(Vec<Stored>, bool)> {
        let hot = self.backend.history.since(log, since, CATCH_UP).await?;
        let Some(archiver) = &self.archiver else {
            return Ok((hot.messages, hot.truncated));
        };
        // The hot history reaching back to `since` has every message after
        // it; so does a reply already full.
        let room = CATCH_UP.saturating_sub(hot.messages.len());
        if hot.complete || room == 0 {
            return Ok((hot.messages, hot.truncated));
        }
        let boundary = hot.messages.first().map(|m| m.id);
        let before_hot = |m: &Stored| boundary.is_none_or(|b| m.id < b);
        let gap = match archiver.archive().after(log, since, room + 1).await {
            Ok(older) if older.iter().filter(|m| before_hot(m)).count() > room => {
                // More than fit: the newest of them, the rest a page away.
                archiver
                    .archive()
                    .before(log, boundary, room)
                    .await
                    .map(|newest| (newest, true))
            }
            Ok(older) => Ok((older.into_iter().filter(before_hot).collect(), false)),
            Err(error) => Err(error),
        };
        match gap {
            Ok((mut messages, truncated)) => {
                messages.extend(hot.messages);
                Ok((messages, truncated))
            }
            Err(error) => {
                // The hot part still helps a reconnecting client; it is told
                // that messages may be missing.
                metrics::counter!(telemetry::ARCHIVE_ERRORS).increment(1);
                tracing::warn!(%error, "could not read the archive for a join");
                Ok((hot.messages, true))
            }
        }
    }

    /// Users in `room`, sorted.
    pub async fn members(&self, room: &RoomName) -> ClusterResult<Vec<UserName>> {
        self.backend.presence.members(room).await
    }

    /// Online users, sorted.
    pub async fn online(&self) -> ClusterResult<Vec<UserName>> {
        self.backend.presence.online().await
    }

    /// The room directory.
    pub async fn rooms(&self) -> ClusterResult<Vec<RoomSummary>> {
        self.backend.presence.rooms().await
    }

    /// The names of the rooms with at least one online member, sorted.
    pub async fn active_rooms(&self) -> ClusterResult<Vec<RoomName>> {
        let mut active: Vec<RoomName> = self
            .backend
            .presence
            .rooms()
            .await?
            .into_iter()
            .filter(|r| r.members > 0)
            .map(|r| r.name)
            .collect();
        active.sort_unstable();
        Ok(active)
    }

    /// Creates an empty listed room.
    pub async fn create_room(&self, room: &RoomName, max: usize) -> ClusterResult<()> {
        self.backend.presence.create_room(room, max).await
    }

    /// Cluster-wide counts.
    pub async fn stats(&self) -> ClusterResult<Stats> {
        let users_online = self.backend.presence.online().await?.len();
        let rooms_active = self.active_rooms().await?.len();
        let nodes = self.backend.liveness.nodes().await?;
        Ok(Stats {
            users_online,
            rooms_active,
            nodes,
        })
    }

    /// What this node says about itself now.
    pub fn status(&self) -> NodeStatus {
        let now = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
        let mut status = NodeStatus {
            connections: self.hub.connections(),
            started_ms: self.started_ms,
            rates: self.rates.per_minute(now),
            ..NodeStatus::default()
        };
        status.count();
        status
    }

    /// Every live node with what it said about itself in its last beat
    /// (this node: now).
    pub async fn nodes(&self) -> ClusterResult<Vec<(NodeId, Option<NodeStatus>)>> {
        let statuses = self.backend.liveness.statuses().await?;
        Ok(statuses
            .into_iter()
            .map(|(node, status)| {
                let status = if node == self.node {
                    Some(self.status())
                } else {
                    status.and_then(|s| serde_json::from_slice(&s).ok())
                };
                (node, status)
            })
            .collect())
    }

    /// Succeeds when the backend answers.
    pub async fn ready(&self) -> ClusterResult<()> {
        self.backend.bus.ping().await
    }
}
