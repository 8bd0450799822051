//! One task per socket: it reads commands, writes fan-out frames from the
//! bounded outbound queue in batches, pings, and ends on drain, overflow,
//! token expiry or a dead peer, always running the same cleanup.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use metrics::Counter;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::{Duration, Instant};
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::Instrument;

use crate::admission::IpPermit;
use crate::cluster::Topic;
use crate::domain::{MessageId, RoomName, UserName};
use crate::error_code::ErrorCode;
use crate::hub::{Delivery, Recipient, Signal};
use crate::protocol::{
    self, CLOSE_GOING_AWAY, CLOSE_INVALID_PAYLOAD, CLOSE_MESSAGE_TOO_BIG, CLOSE_POLICY_VIOLATION,
    CLOSE_PROTOCOL_ERROR, CLOSE_REMOVED, CLOSE_TRY_AGAIN_LATER,
};
use crate::rate::TokenBucket;
use crate::state::AppState;
use crate::telemetry;

/// Queued frames written per flush; bounds the time one session spends
/// writing before it looks at its socket again.
const MAX_BATCH: usize = 64;
/// How long a final close frame may take to leave before the socket is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// The client sent a close frame.
    Closed,
    /// The socket ended or failed without a close.
    Gone,
    /// No frame or pong for the idle timeout.
    Silent,
    /// The server closes with this code and reason.
    Close(u16, &'static str),
}

impl End {
    /// The close code for metrics and logs (1006: no close frame at all).
    fn code(self) -> &'static str {
        match self {
            Self::Closed => "1000",
            Self::Gone | Self::Silent => "1006",
            Self::Close(CLOSE_GOING_AWAY, _) => "1001",
            Self::Close(CLOSE_PROTOCOL_ERROR, _) => "1002",
            Self::Close(CLOSE_INVALID_PAYLOAD, _) => "1007",
            Self::Close(CLOSE_POLICY_VIOLATION, _) => "1008",
            Self::Close(CLOSE_MESSAGE_TOO_BIG, _) => "1009",
            Self::Close(CLOSE_TRY_AGAIN_LATER, _) => "1013",
            Self::Close(CLOSE_REMOVED, _) => "4001",
            Self::Close(..) => "other",
        }
    }
}

/// The state of one connection.
pub(super) struct Session {
    pub(super) state: Arc<AppState>,
    pub(super) socket: WebSocket,
    pub(super) user: UserName,
    /// How the hub reaches this session.
    pub(super) recipient: Recipient,
    /// Joined rooms → the newest message id written for the room, so frames
    /// that overlap the join's history are written once.
    pub(super) rooms: HashMap<RoomName, Option<MessageId>>,
    /// Messages, DMs and typing.
    pub(super) bucket: TokenBucket,
    /// Joins and switches.
    pub(super) joins: TokenBucket,
    /// DMs, on top of `bucket`.
    pub(super) dms: TokenBucket,
    /// History pages: each is a backend read of up to 100 messages, as
    /// costly as a join's, so it gets a bucket like the join bucket.
    pub(super) histories: TokenBucket,
    queue: mpsc::Receiver<Arc<Delivery>>,
    stops: Stops,
    delivered: Counter,
    /// No fan-out write before this instant (see `CHORUS_WRITE_DELAY_MS`).
    next_write: Instant,
    /// When the client's token expires, if it does.
    expires: Option<Instant>,
    /// When the client last sent anything.
    last_heard: Instant,
    /// The connection counts as online: `connect` succeeded, so `finish`
    /// must disconnect (a failed connect undid itself already).
    registered: bool,
    /// Given back when the session is dropped, after `finish`.
    _held: Held,
}

/// The events that end a session whatever it is doing (the node drains, or
/// the session was flagged slow), and the hub's word that a holding
/// session's queue reached the hold limit. Read from atomic flags on every
/// wake: the cancellation tokens this replaces locked two mutexes per turn
/// of the loop, about 7 % of a busy node.
struct Stops {
    state: Arc<AppState>,
    signal: Arc<Signal>,
}

/// Why [`Stops::fired`] resolved.
enum Fired {
    End(End),
    Pressed,
    /// An administrator made the session leave rooms.
    Leave,
}

impl Stops {
    fn check(&self, holding: bool, leaves: bool) -> Option<Fired> {
        if self.state.is_draining() {
            return Some(Fired::End(End::Close(CLOSE_GOING_AWAY, "node draining")));
        }
        if self.signal.is_slow() {
            return Some(Fired::End(End::Close(
                CLOSE_TRY_AGAIN_LATER,
                "outbound queue full",
            )));
        }
        if self.signal.is_removed() {
            return Some(Fired::End(End::Close(
                CLOSE_REMOVED,
                "removed by an administrator",
            )));
        }
        if leaves && self.signal.has_leaves() {
            return Some(Fired::Leave);
        }
        (holding && self.signal.take_pressure()).then_some(Fired::Pressed)
    }

    /// Resolves when the session must end or, while `holding`, when its
    /// queue reached the hold limit.
    /// With `leaves`, also when an administrator made it leave rooms.
    fn fired(&self, holding: bool, leaves: bool) -> impl Future<Output = Fired> + '_ {
        std::future::poll_fn(move |cx| {
            if let Some(fired) = self.check(holding, leaves) {
                return std::task::Poll::Ready(fired);
            }
            self.signal.register(cx.waker());
            // Flagged between the check and the registration: not missed.
            match self.check(holding, leaves) {
                Some(fired) => std::task::Poll::Ready(fired),
                None => std::task::Poll::Pending,
            }
        })
    }

    /// Resolves when the session must end.
    async fn ended(&self) -> End {
        match self.fired(false, false).await {
            Fired::End(end) => end,
            // Asked for neither.
            Fired::Pressed | Fired::Leave => std::future::pending().await,
        }
    }
}

/// What a connection holds until its session has finished: its place in
/// the node's and its address's connection counts, and in the drain's task
/// count.
pub(super) struct Held {
    pub(super) _permit: OwnedSemaphorePermit,
    pub(super) _ip_permit: Option<IpPermit>,
    pub(super) _task: TaskTrackerToken,
}

/// Runs one connection to its end; `address` is the client's (grouped)
/// address, whose connections share one part of the node's buffered output.
///
/// Not an `async fn`: the session is built and boxed at once, so the task
/// holds one pointer to it. An async fn would keep its arguments (the
/// socket among them) in its state beside the session they were moved
/// into, and every idle connection would carry both.
pub(super) fn run(
    state: Arc<AppState>,
    socket: WebSocket,
    user: UserName,
    expires: Option<Instant>,
    address: IpAddr,
    held: Held,
    rooms: Vec<RoomName>,
) -> impl Future<Output = ()> + Send {
    let id = uuid::Uuid::new_v4();
    let span = tracing::info_span!("session", session = %id, user = %user);
    let session = Box::new(Session::new(state, socket, user, expires, address, held));
    async move {
        let mut session = session;
        metrics::counter!(telemetry::CONNECTIONS_OPENED).increment(1);
        metrics::gauge!(telemetry::CONNECTIONS).increment(1);
        tracing::info!("connected");
        let end = session.serve(&id.to_string(), rooms).await;
        // Boxed, like the command handling in `serve`: a future is as large
        // as its largest await point, and an idle connection should not
        // carry the state of a cleanup it is not running.
        Box::pin(session.finish(end)).await;
        drop(session);
        metrics::gauge!(telemetry::CONNECTIONS).decrement(1);
        metrics::counter!(telemetry::CONNECTIONS_CLOSED, "code" => end.code()).increment(1);
        tracing::info!(code = end.code(), ?end, "disconnected");
    }
    .instrument(span)
}

impl Session {
    fn new(
        state: Arc<AppState>,
        socket: WebSocket,
        user: UserName,
        expires: Option<Instant>,
        address: IpAddr,
        held: Held,
    ) -> Self {
        let (queue_tx, queue) = mpsc::channel(state.limits.outbound_queue);
        let recipient = state.chat.recipient(user.clone(), queue_tx, address);
        let limits = &state.limits;
        let stops = Stops {
            state: state.clone(),
            signal: recipient.signal.clone(),
        };
        let now = Instant::now().into_std();
        // Enough for a reconnecting client to rejoin every room it may be
        // in at once, and never less than two seconds' worth.
        let join_burst = u32::try_from(limits.max_rooms_per_connection)
            .unwrap_or(u32::MAX)
            .max(limits.join_rate.saturating_mul(2));
        Session {
            bucket: TokenBucket::new(limits.rate_limit, limits.rate_burst, now),
            joins: TokenBucket::new(limits.join_rate, join_burst, now),
            // As many pages at once as joins: a reconnecting client may
            // page back in every room it rejoined.
            histories: TokenBucket::new(limits.join_rate, join_burst, now),
            dms: TokenBucket::new(limits.dm_rate, limits.dm_rate.saturating_mul(2), now),
            stops,
            delivered: metrics::counter!(telemetry::FRAMES_DELIVERED),
            state: state.clone(),
            socket,
            user,
            recipient,
            rooms: HashMap::new(),
            queue,
            next_write: Instant::now(),
            expires,
            last_heard: Instant::now(),
            registered: false,
            _held: held,
        }
    }

    /// Registers the connection, welcomes it, joins `rooms` (from the
    /// connect URL) as if the client had sent a `join` for each, then serves
    /// it until it ends.
    async fn serve(&mut self, id: &str, rooms: Vec<RoomName>) -> End {
        if let Err(error) = Box::pin(self.state.chat.connect(&self.user, &self.recipient)).await {
            tracing::warn!(%error, "could not register the connection");
            return End::Close(CLOSE_TRY_AGAIN_LATER, "backend unavailable");
        }
        self.registered = true;
        let welcome = protocol::welcome(&self.user, self.state.chat.node(), id);
        if let Err(end) = self.send(welcome).await {
            return end;
        }
        for room in rooms {
            let join = protocol::ClientFrame {
                reference: None,
                command: protocol::Command::Join { room, since: None },
            };
            if let Err(end) = Box::pin(self.execute(join)).await {
                return end;
            }
        }
        let interval = self.state.limits.ping_interval;
        let idle_timeout = self.state.limits.idle_timeout;
        let mut ping = tokio::time::interval_at(Instant::now() + interval, interval);
        // Boxed, and only with a token that expires: a timer is about a
        // tenth of an idle connection's state.
        let mut expiry = self
            .expires
            .map(|at| Box::pin(tokio::time::sleep_until(at)));
        // A fan-out frame held back by a session that falls behind: it and
        // the frames queued behind it go out together when the hold ends or
        // the queue reaches the hold limit (the hub then notifies), while
        // input is still read. Meanwhile the session does not wake for each
        // frame the hub queues: at saturation that wake was most of its work.
        let mut held: Option<Arc<Delivery>> = None;
        // One timer for the whole session, reset when holding starts, rather
        // than a fresh one built on every turn of the loop.
        let hold = tokio::time::sleep_until(self.next_write);
        tokio::pin!(hold);
        loop {
            let step = tokio::select! {
                biased;
                fired = self.stops.fired(held.is_some(), true) => match fired {
                    Fired::End(end) => Err(end),
                    Fired::Pressed => self.write_batch(&mut held).await,
                    Fired::Leave => Box::pin(self.leave_as_told()).await,
                },
                () = expired(&mut expiry) => Err(End::Close(CLOSE_POLICY_VIOLATION, "token expired")),
                () = &mut hold, if held.is_some() => {
                    self.write_batch(&mut held).await
                }
                // Queued output goes before more input: a client that sends a
                // burst and reads is never mistaken for a slow reader, and a
                // sender cannot outrun its own echoes.
                Some(delivery) = self.queue.recv(), if held.is_none() => {
                    let now = Instant::now();
                    let prompt = now >= self.next_write || self.keeps_up(&delivery, now);
                    held = Some(delivery);
                    if prompt {
                        self.write_batch(&mut held).await
                    } else {
                        hold.as_mut().reset(self.next_write);
                        Ok(())
                    }
                }
                inbound = self.socket.recv() => {
                    self.last_heard = Instant::now();
                    // Boxed: commands (a join with its history, say) need
                    // far more state than waiting does, and every idle
                    // connection would carry it.
                    Box::pin(self.on_inbound(inbound)).await
                }
                _ = ping.tick() => {
                    if self.last_heard.elapsed() > idle_timeout {
                        metrics::counter!(telemetry::IDLE_DISCONNECTS).increment(1);
                        Err(End::Silent)
                    } else {
                        self.write(Message::Ping(bytes::Bytes::new())).await
                    }
                }
            };
            if let Err(end) = step {
                // Held frames still count as buffered until they are written
                // or, here, dropped.
                self.state
                    .chat
                    .release(&self.recipient, held.map_or(0, |d| d.frame.len()));
                return end;
            }
        }
    }

    /// Leaves the rooms an administrator named, as a client `leave` would:
    /// `left` to the client, presence `leave` once the user's last
    /// connection in the room is gone.
    async fn leave_as_told(&mut self) -> Result<(), End> {
        for room in self.recipient.signal.take_leaves() {
            if self.rooms.contains_key(&room) {
                let leave = protocol::ClientFrame {
                    reference: None,
                    command: protocol::Command::Leave { room },
                };
                self.execute(leave).await?;
            }
        }
        Ok(())
    }

    async fn on_inbound(
        &mut self,
        inbound: Option<Result<Message, axum::Error>>,
    ) -> Result<(), End> {
        match inbound {
            Some(Ok(Message::Close(_))) => Err(End::Closed),
            None => Err(End::Gone),
            Some(Err(error)) => Err(read_error(error)),
            Some(Ok(Message::Text(text))) => self.on_text(text).await,
            Some(Ok(Message::Binary(_))) => {
                self.send_error(
                    ErrorCode::BadRequest,
                    "binary frames are not supported; send JSON text",
                    None,
                )
                .await
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(()),
        }
    }

    async fn on_text(&mut self, text: Utf8Bytes) -> Result<(), End> {
        let frame = protocol::ClientFrame::decode(text.as_str());
        drop(text);
        match frame {
            Ok(frame) => self.execute(frame).await,
            Err(e) => {
                self.send_error(e.code, &e.message, e.reference.as_deref())
                    .await
            }
        }
    }

    /// Sends an `error` frame and counts it.
    pub(super) async fn send_error(
        &mut self,
        code: ErrorCode,
        message: &str,
        reference: Option<&str>,
    ) -> Result<(), End> {
        metrics::counter!(telemetry::ERRORS, "code" => code.as_str()).increment(1);
        self.send(protocol::error(code, message, reference)).await
    }

    /// Sends one direct reply, counted as buffered output while it waits
    /// for the socket.
    pub(super) async fn send(&mut self, frame: String) -> Result<(), End> {
        let size = frame.len();
        self.state.chat.hold(&self.recipient, size);
        let written = self.write(Message::Text(frame.into())).await;
        self.state.chat.release(&self.recipient, size);
        written
    }

    /// What a write races: the session's own end conditions keep running
    /// while the socket is full.
    fn deadlines(&self) -> Deadlines {
        Deadlines {
            expires: self.expires,
            silent_at: self.last_heard + self.state.limits.idle_timeout,
            write_timeout: self.state.limits.write_timeout,
        }
    }

    /// Writes and flushes one frame, giving up if the session must end.
    async fn write(&mut self, message: Message) -> Result<(), End> {
        let deadlines = self.deadlines();
        guarded(&self.stops, &deadlines, self.socket.send(message)).await
    }

    /// Writes the `held` frame and whatever else is queued (up to a batch),
    /// then flushes once, and holds the next fan-out write back for the write
    /// delay: a busy room costs one socket write per delay rather than one
    /// per message.
    async fn write_batch(&mut self, held: &mut Option<Arc<Delivery>>) -> Result<(), End> {
        // This write empties the queue down to below the hold limit (or as
        // far as a batch goes): an earlier word of pressure is answered.
        self.stops.signal.take_pressure();
        let mut batch = Vec::with_capacity(1 + self.queue.len().min(MAX_BATCH));
        // Counted out of the node's buffered bytes once per batch, not per
        // frame: the counter is shared by every session of the node.
        let mut taken = 0;
        if let Some(delivery) = held.take() {
            taken += delivery.frame.len();
            if self.accepts(&delivery) {
                batch.push(delivery.frame.clone());
            }
        }
        while batch.len() < MAX_BATCH {
            let Ok(delivery) = self.queue.try_recv() else {
                break;
            };
            taken += delivery.frame.len();
            if self.accepts(&delivery) {
                batch.push(delivery.frame.clone());
            }
        }
        self.state.chat.release(&self.recipient, taken);
        if batch.is_empty() {
            return Ok(());
        }
        let written = batch.len() as u64;
        let deadlines = self.deadlines();
        // Each frame restarts the write timeout: a socket that keeps taking
        // bytes, however slowly, is not stuck.
        for frame in batch {
            guarded(
                &self.stops,
                &deadlines,
                self.socket.feed(Message::Text(frame)),
            )
            .await?;
        }
        guarded(&self.stops, &deadlines, self.socket.flush()).await?;
        self.delivered.increment(written);
        self.next_write = Instant::now() + self.state.limits.write_delay;
        Ok(())
    }

    /// Whether this session keeps up with its fan-out: nothing queued behind
    /// the frame, which waited less than a fifth of the write delay. Then the
    /// frame goes out at once, and only a session that falls behind (a busy
    /// room on a busy node) holds frames for the write delay to batch them.
    fn keeps_up(&self, delivery: &Delivery, now: Instant) -> bool {
        self.queue.is_empty()
            && now.into_std().saturating_duration_since(delivery.queued)
                < self.state.limits.write_delay / 5
    }

    /// Whether a fan-out frame is for this connection now: not excluded, for
    /// a room still joined, and newer than what the room already got.
    fn accepts(&mut self, delivery: &Delivery) -> bool {
        if delivery.except.as_ref() == Some(&self.user) {
            return false;
        }
        let Topic::Room(room) = &delivery.topic else {
            return true;
        };
        let Some(newest) = self.rooms.get_mut(room) else {
            return false;
        };
        if let Some(id) = delivery.id {
            if newest.is_some_and(|newest| id <= newest) {
                return false;
            }
            *newest = Some(id);
        }
        true
    }

    /// Sends the close frame, then leaves every room and unregisters.
    async fn finish(&mut self, end: End) {
        // Closed first, so nothing arrives after the count is settled, and
        // before the close frame: a peer that stopped reading may hold that
        // for its whole timeout, and the node should not queue for it meanwhile.
        self.queue.close();
        let mut dequeued = 0;
        while let Ok(delivery) = self.queue.try_recv() {
            dequeued += delivery.frame.len();
        }
        self.state.chat.release(&self.recipient, dequeued);
        if let End::Close(code, reason) = end {
            let close = Message::Close(Some(CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            }));
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                if self.socket.send(close).await.is_ok() {
                    // Wait for the peer's close so the frame is not lost to a reset.
                    while let Some(Ok(m)) = self.socket.recv().await {
                        if matches!(m, Message::Close(_)) {
                            break;
                        }
                    }
                }
            })
            .await;
        }
        let chat = &self.state.chat;
        // Offline first, so that whoever hears the `leave` events already
        // sees the user gone from the online list.
        if self.registered {
            chat.disconnect(&self.user, self.recipient.session).await;
        }
        for room in std::mem::take(&mut self.rooms).into_keys() {
            if let Err(error) = chat.leave(&room, &self.user, self.recipient.session).await {
                tracing::warn!(%error, room = %room, "could not record a leave; the presence reaper will");
            }
        }
    }
}

/// Resolves when the token expires; never without one.
async fn expired(expiry: &mut Option<Pin<Box<tokio::time::Sleep>>>) {
    match expiry {
        Some(at) => at.as_mut().await,
        None => std::future::pending().await,
    }
}

/// When a waiting write gives up.
struct Deadlines {
    expires: Option<Instant>,
    silent_at: Instant,
    write_timeout: Duration,
}

/// Runs one write step unless the session must end first: it drains or was
/// flagged slow, the token expires, the peer has been silent for the idle
/// timeout, or the socket takes nothing for the write timeout (a reader that
/// stopped reading: closed with 1013 and counted as a slow consumer). The
/// step is tried alone first: a write the socket takes at once (nearly all
/// of them) builds no timer at all.
async fn guarded(
    stops: &Stops,
    deadlines: &Deadlines,
    step: impl Future<Output = Result<(), axum::Error>>,
) -> Result<(), End> {
    let mut step = std::pin::pin!(step);
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(step.as_mut().poll(cx))).await;
    if let std::task::Poll::Ready(done) = first {
        return done.map_err(|_| End::Gone);
    }
    // Boxed: its timers would otherwise sit in every idle session's state.
    Box::pin(wait_for_socket(stops, deadlines, step)).await
}

/// The rest of a write step the socket did not take at once.
async fn wait_for_socket(
    stops: &Stops,
    deadlines: &Deadlines,
    step: Pin<&mut impl Future<Output = Result<(), axum::Error>>>,
) -> Result<(), End> {
    let expiry = async {
        match deadlines.expires {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        done = step => done.map_err(|_| End::Gone),
        end = stops.ended() => Err(end),
        () = expiry => Err(End::Close(CLOSE_POLICY_VIOLATION, "token expired")),
        () = tokio::time::sleep_until(deadlines.silent_at) => {
            metrics::counter!(telemetry::IDLE_DISCONNECTS).increment(1);
            Err(End::Silent)
        }
        () = tokio::time::sleep(deadlines.write_timeout) => {
            metrics::counter!(telemetry::SLOW_CONSUMER_DISCONNECTS).increment(1);
            Err(End::Close(CLOSE_TRY_AGAIN_LATER, "the socket took nothing for the write timeout"))
        }
    }
}

/// Maps a read failure to how the session ends: an oversized frame gets
/// 1009, a text frame that is not UTF-8 1007, any other breach of the
/// WebSocket protocol 1002; anything else means the peer is gone.
fn read_error(error: axum::Error) -> End {
    match error
        .into_inner()
        .downcast::<tungstenite::Error>()
        .map(|e| *e)
    {
        Ok(tungstenite::Error::Capacity(_)) => End::Close(CLOSE_MESSAGE_TOO_BIG, "frame too large"),
        Ok(tungstenite::Error::Utf8(_)) => {
            End::Close(CLOSE_INVALID_PAYLOAD, "text frame is not valid UTF-8")
        }
        Ok(tungstenite::Error::Protocol(_)) => {
            End::Close(CLOSE_PROTOCOL_ERROR, "WebSocket protocol violation")
        }
        _ => End::Gone,
    }
}
