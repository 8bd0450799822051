//! Clients chatting under a fault: each sends on a steady beat (to its room,
//! and by DM to a partner when it has one) while it reads everything, and
//! keeps the record of every command and its fate; the test follows the
//! live counts, stops the chat, drains and counts deliveries with [`tally`].
//!
//! Clients given other nodes to try reconnect and rejoin with `since` when
//! their socket dies; clients given none end their record there.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{Barrier, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use super::node::Endpoint;
use super::{TIMEOUT, eventually_within, get_json};

/// Each chatting client sends at most one command per beat: ten a second.
pub const BEAT: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------
// A split connection: a client that sends on a steady beat while it reads.

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One WebSocket connection, split so that sending never waits for reading.
pub struct Link {
    pub tx: SplitSink<Ws, Message>,
    pub rx: SplitStream<Ws>,
}

/// What the socket gave next.
pub enum Event {
    Frame(Value),
    /// The connection ended (close frame, reset, end of stream).
    Ended(String),
}

impl Link {
    /// Connects and reads `welcome`; `None` when the node does not answer
    /// (a dead node refuses the connection).
    pub async fn open(url: &str) -> Option<Self> {
        let (ws, _) = tokio::time::timeout(TIMEOUT, connect_async(url))
            .await
            .ok()?
            .ok()?;
        let (tx, rx) = ws.split();
        let mut link = Self { tx, rx };
        match tokio::time::timeout(TIMEOUT, link.next()).await {
            Ok(Event::Frame(welcome)) if welcome["type"] == "welcome" => Some(link),
            _ => None,
        }
    }

    /// Sends one frame; false when the connection is gone.
    pub async fn send(&mut self, frame: &Value) -> bool {
        let text = Message::Text(frame.to_string().into());
        matches!(
            tokio::time::timeout(TIMEOUT, self.tx.send(text)).await,
            Ok(Ok(()))
        )
    }

    /// The next text frame, or the end of the connection. Unbounded: the
    /// callers bound every wait.
    pub async fn next(&mut self) -> Event {
        loop {
            match self.rx.next().await {
                Some(Ok(Message::Text(text))) => {
                    return Event::Frame(serde_json::from_str(&text).expect("JSON frame"));
                }
                Some(Ok(Message::Close(close))) => return Event::Ended(format!("{close:?}")),
                Some(Ok(_)) => {}
                Some(Err(error)) => return Event::Ended(error.to_string()),
                None => return Event::Ended("end of stream".to_owned()),
            }
        }
    }
}

/// `(ms, seq)` of a message id, for ordering ids across a Redis restart.
pub fn id_key(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').expect("an id like 1700000000000-0");
    (ms.parse().expect("ms"), seq.parse().expect("seq"))
}

/// Every stored message of `room` as `(id, content)`, oldest first, read
/// page by page through the HTTP API.
pub async fn full_history(node: &impl Endpoint, room: &str) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = Vec::new();
    loop {
        let path = match all.first() {
            Some((oldest, _)) => format!("/api/rooms/{room}/messages?limit=100&before={oldest}"),
            None => format!("/api/rooms/{room}/messages?limit=100"),
        };
        let page: Vec<Value> = get_json(&node.url(&path)).await;
        if page.is_empty() {
            return all;
        }
        let older = page.iter().map(|m| {
            (
                m["id"].as_str().expect("id").to_owned(),
                m["content"].as_str().expect("content").to_owned(),
            )
        });
        all.splice(0..0, older);
    }
}

// ---------------------------------------------------------------------------
// The record of one client.

/// What a client's command is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Room,
    Dm,
}

/// What became of one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Sent, no answer yet (or never, when its socket died and the client
    /// does not reconnect).
    Pending,
    /// Its echo (the message or DM with its ref) came back with this id.
    Accepted(String),
    /// Answered by an error with this code.
    Refused(String),
    /// The socket died before any answer and the client reconnected: stored
    /// or not, nobody said.
    InDoubt,
}

#[derive(Debug)]
pub struct Sent {
    pub kind: Kind,
    pub content: String,
    pub at: Instant,
    pub answered: Option<Instant>,
    pub fate: Fate,
}

/// Where the test is; every chatting client follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Send on every beat.
    Send,
    /// Stop sending; report when every send on a live socket was answered.
    Stop,
    /// Read until the room message `room` and the newest DM of the client's
    /// pair in `dms` were seen, or give up at `until`.
    Drain {
        room: Option<String>,
        dms: Arc<HashMap<usize, String>>,
        until: Instant,
    },
}

/// A presence event a client saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub observer: usize,
    pub user: String,
    pub event: String,
    pub at: Instant,
}

/// Live figures the test waits on while the clients run.
#[derive(Debug)]
pub struct Live {
    /// Echoes, per client.
    accepted: Vec<AtomicUsize>,
    /// Refusals of any code, in all.
    refused: AtomicUsize,
    /// `unavailable` refusals, per client.
    unavailable: Vec<AtomicUsize>,
    /// Clients that rejoined after their socket died.
    rejoined: AtomicUsize,
    /// The newest room message id echoed to its sender: the end of the
    /// room's stream once every send was answered.
    newest_room: Mutex<Option<String>>,
    /// The newest DM id echoed, per pair.
    newest_dm: Mutex<HashMap<usize, String>>,
    presence: Mutex<Vec<Seen>>,
}

impl Live {
    fn new(clients: usize) -> Self {
        Self {
            accepted: (0..clients).map(|_| AtomicUsize::new(0)).collect(),
            refused: AtomicUsize::new(0),
            unavailable: (0..clients).map(|_| AtomicUsize::new(0)).collect(),
            rejoined: AtomicUsize::new(0),
            newest_room: Mutex::new(None),
            newest_dm: Mutex::new(HashMap::new()),
            presence: Mutex::new(Vec::new()),
        }
    }

    /// Echoes so far, per client.
    pub fn accepted(&self) -> Vec<usize> {
        self.accepted
            .iter()
            .map(|a| a.load(Ordering::SeqCst))
            .collect()
    }

    /// Echoes so far, in all.
    pub fn accepted_total(&self) -> usize {
        self.accepted.iter().map(|a| a.load(Ordering::SeqCst)).sum()
    }

    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    pub fn rejoined(&self) -> usize {
        self.rejoined.load(Ordering::SeqCst)
    }

    pub fn newest_room(&self) -> Option<String> {
        self.newest_room.lock().unwrap().clone()
    }

    pub fn presence(&self) -> Vec<Seen> {
        self.presence.lock().unwrap().clone()
    }
}

fn newer(slot: &mut Option<String>, id: &str) {
    if slot.as_deref().is_none_or(|n| id_key(n) < id_key(id)) {
        *slot = Some(id.to_owned());
    }
}

/// Everything one client did and saw.
#[derive(Debug)]
pub struct Record {
    pub index: usize,
    pub user: String,
    pub pair: usize,
    pub room: String,
    pub sends: Vec<Sent>,
    /// Room messages in the order this client got them, live or in a join's
    /// history: `(id, content)`.
    pub got_room: Vec<(String, String)>,
    /// DMs of its pair in arrival order, `(id, content)`.
    pub got_dm: Vec<(String, String)>,
    pub seen_room: HashSet<String>,
    pub seen_dm: HashSet<String>,
    /// When its socket first died and how.
    pub died: Option<(Instant, String)>,
    /// When it had rejoined elsewhere, and on which node.
    pub rejoined: Option<Instant>,
    pub rejoined_on: Option<usize>,
    /// Whether it saw what the drain waits for before the deadline.
    pub drained: bool,
}

impl Record {
    pub fn pending(&self) -> usize {
        self.sends
            .iter()
            .filter(|s| s.fate == Fate::Pending)
            .count()
    }

    /// The unanswered send the frame's ref names, if any.
    fn own_pending(&mut self, frame: &Value) -> Option<&mut Sent> {
        let n: usize = frame["ref"].as_str()?.parse().ok()?;
        self.sends.get_mut(n).filter(|s| s.fate == Fate::Pending)
    }

    /// Takes in one frame from the server.
    fn absorb(&mut self, frame: &Value, live: &Live) {
        let now = Instant::now();
        let id = || frame["id"].as_str().expect("id").to_owned();
        let content = || frame["content"].as_str().expect("content").to_owned();
        match frame["type"].as_str() {
            Some("message") if frame["room"] == self.room.as_str() => {
                let id = id();
                self.seen_room.insert(id.clone());
                self.got_room.push((id.clone(), content()));
                let index = self.index;
                if frame["user"] == self.user.as_str()
                    && let Some(send) = self.own_pending(frame)
                    && send.kind == Kind::Room
                {
                    send.fate = Fate::Accepted(id.clone());
                    send.answered = Some(now);
                    live.accepted[index].fetch_add(1, Ordering::SeqCst);
                    newer(&mut live.newest_room.lock().unwrap(), &id);
                }
            }
            Some("dm")
                if frame["from"] == self.user.as_str() || frame["to"] == self.user.as_str() =>
            {
                let id = id();
                self.seen_dm.insert(id.clone());
                self.got_dm.push((id.clone(), content()));
                let (index, pair) = (self.index, self.pair);
                if frame["from"] == self.user.as_str()
                    && let Some(send) = self.own_pending(frame)
                    && send.kind == Kind::Dm
                {
                    send.fate = Fate::Accepted(id.clone());
                    send.answered = Some(now);
                    live.accepted[index].fetch_add(1, Ordering::SeqCst);
                    let mut newest = live.newest_dm.lock().unwrap();
                    let mut slot = newest.get(&pair).cloned();
                    newer(&mut slot, &id);
                    newest.insert(pair, slot.expect("set"));
                }
            }
            Some("error") => {
                let index = self.index;
                if let Some(send) = self.own_pending(frame) {
                    let code = frame["code"].as_str().expect("code").to_owned();
                    if code == "unavailable" {
                        live.unavailable[index].fetch_add(1, Ordering::SeqCst);
                    }
                    live.refused.fetch_add(1, Ordering::SeqCst);
                    send.fate = Fate::Refused(code);
                    send.answered = Some(now);
                }
            }
            Some("presence") if frame["room"] == self.room.as_str() => {
                live.presence.lock().unwrap().push(Seen {
                    observer: self.index,
                    user: frame["user"].as_str().expect("user").to_owned(),
                    event: frame["event"].as_str().expect("event").to_owned(),
                    at: now,
                });
            }
            _ => {}
        }
    }

    /// Joins the room on `link` (after `since` when given) and takes in the
    /// joined history; `None` when the connection ended or the join failed.
    async fn join(
        &mut self,
        link: &mut Link,
        since: Option<&str>,
        reference: &str,
        live: &Live,
    ) -> Option<()> {
        let mut frame = json!({"type": "join", "room": self.room, "ref": reference});
        if let Some(since) = since {
            frame["since"] = json!(since);
        }
        if !link.send(&frame).await {
            return None;
        }
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let Ok(Event::Frame(frame)) = tokio::time::timeout_at(deadline, link.next()).await
            else {
                return None;
            };
            if frame["ref"] != reference {
                self.absorb(&frame, live);
                continue;
            }
            if frame["type"] != "joined" {
                return None;
            }
            assert!(
                frame.get("truncated").is_none(),
                "{}: nothing is trimmed from this history: {frame}",
                self.user
            );
            for message in frame["history"].as_array().expect("history") {
                self.absorb(message, live);
            }
            return Some(());
        }
    }

    /// The socket died: every unanswered send is in doubt. Reconnects to the
    /// first node of `order` that answers and joins with `since` = the last
    /// id seen.
    async fn rejoin(&mut self, urls: &[String], order: &[usize], live: &Live) -> Link {
        for send in &mut self.sends {
            if send.fate == Fate::Pending {
                send.fate = Fate::InDoubt;
            }
        }
        // "0-0" (before every id) when nothing was seen yet.
        let since = self
            .got_room
            .last()
            .map_or_else(|| "0-0".to_owned(), |(id, _)| id.clone());
        let deadline = Instant::now() + 2 * TIMEOUT;
        for attempt in 0.. {
            for &n in order {
                let Some(mut link) = Link::open(&urls[n]).await else {
                    continue;
                };
                let reference = format!("rejoin{attempt}.{n}");
                if self
                    .join(&mut link, Some(&since), &reference, live)
                    .await
                    .is_some()
                {
                    self.rejoined = Some(Instant::now());
                    self.rejoined_on = Some(n);
                    live.rejoined.fetch_add(1, Ordering::SeqCst);
                    return link;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} found no node to rejoin within {:?}",
                self.user,
                2 * TIMEOUT
            );
            // Pacing retries, as `eventually` does.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        unreachable!()
    }
}

// ---------------------------------------------------------------------------
// The clients.

/// How one chatting client starts.
pub struct Chatter {
    pub user: String,
    pub room: String,
    /// Its `ws://…/ws?username=<user>` on every node it may use.
    pub urls: Vec<String>,
    /// The node it starts on.
    pub home: usize,
    /// The nodes to try, in order, when its socket dies. Empty: it does not
    /// reconnect; its record ends there, its unanswered sends pending.
    pub order: Vec<usize>,
    /// Its DM partner, if it sends DMs, and the pair they make.
    pub partner: Option<String>,
    pub pair: usize,
}

/// How all the clients of a test chat.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    /// Send only while nothing sent is unanswered, so each answer's delay
    /// is its own; otherwise send on every beat.
    pub one_in_flight: bool,
    /// Every this-many-th command of a client with a partner is a DM.
    pub dm_every: usize,
    /// How long joining, and each wait for the counts, may take.
    pub phase: Duration,
}

/// One running client.
struct Client {
    index: usize,
    spec: Chatter,
    style: Style,
    phase: watch::Receiver<Phase>,
    /// Everyone joined: the test starts the clock.
    ready: Arc<Barrier>,
    /// Told once this client is quiet after [`Phase::Send`].
    quiet: mpsc::UnboundedSender<usize>,
    live: Arc<Live>,
}

impl Client {
    /// Its socket died: rejoins elsewhere if it may, or ends its record.
    async fn lost(&self, record: &mut Record, why: String) -> Option<Link> {
        record.died.get_or_insert((Instant::now(), why));
        if self.spec.order.is_empty() {
            return None;
        }
        Some(
            record
                .rejoin(&self.spec.urls, &self.spec.order, &self.live)
                .await,
        )
    }

    /// Runs the client to the end of [`Phase::Drain`] and returns its record.
    async fn run(mut self) -> Record {
        let user = self.spec.user.clone();
        let mut record = Record {
            index: self.index,
            user: user.clone(),
            pair: self.spec.pair,
            room: self.spec.room.clone(),
            sends: Vec::new(),
            got_room: Vec::new(),
            got_dm: Vec::new(),
            seen_room: HashSet::new(),
            seen_dm: HashSet::new(),
            died: None,
            rejoined: None,
            rejoined_on: None,
            drained: false,
        };
        let mut link = Link::open(&self.spec.urls[self.spec.home])
            .await
            .expect("the client connects");
        record
            .join(&mut link, None, "join", &self.live)
            .await
            .expect("the client joins");
        self.ready.wait().await;
        let mut beat = tokio::time::interval(BEAT);
        // After a stall, go on at the steady rate rather than catch up in a
        // burst.
        beat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut beats = 0;
        let mut reported = false;
        loop {
            let phase = self.phase.borrow_and_update().clone();
            let until = match &phase {
                Phase::Drain { room, dms, until } => {
                    let room_done = room.as_ref().is_none_or(|id| record.seen_room.contains(id));
                    let dm_done = dms
                        .get(&record.pair)
                        .is_none_or(|id| record.seen_dm.contains(id));
                    if room_done && dm_done {
                        record.drained = true;
                        return record;
                    }
                    Some(*until)
                }
                _ => None,
            };
            if phase != Phase::Send && !reported && record.pending() == 0 {
                let _ = self.quiet.send(self.index);
                reported = true;
            }
            let may_send =
                phase == Phase::Send && (!self.style.one_in_flight || record.pending() == 0);
            tokio::select! {
                _ = beat.tick(), if may_send => {
                    beats += 1;
                    let seq = record.sends.len();
                    let content = format!("{user}:{seq}");
                    let (kind, frame) = match &self.spec.partner {
                        Some(partner) if beats % self.style.dm_every == 0 => (
                            Kind::Dm,
                            json!({"type": "dm", "to": partner, "content": content, "ref": seq.to_string()}),
                        ),
                        _ => (
                            Kind::Room,
                            json!({"type": "message", "room": self.spec.room, "content": content, "ref": seq.to_string()}),
                        ),
                    };
                    record.sends.push(Sent { kind, content, at: Instant::now(), answered: None, fate: Fate::Pending });
                    if !link.send(&frame).await {
                        match self.lost(&mut record, "send failed".to_owned()).await {
                            Some(relinked) => link = relinked,
                            None => return record,
                        }
                    }
                }
                event = link.next() => match event {
                    Event::Frame(frame) => record.absorb(&frame, &self.live),
                    Event::Ended(why) => match self.lost(&mut record, why).await {
                        Some(relinked) => link = relinked,
                        None => return record,
                    },
                },
                changed = self.phase.changed() => {
                    if changed.is_err() {
                        return record;
                    }
                }
                () = async { tokio::time::sleep_until(until.unwrap_or_else(Instant::now)).await },
                    if until.is_some() => return record,
            }
        }
    }
}

/// The clients of a chatting test, started together.
pub struct Chatters {
    phase: watch::Sender<Phase>,
    quiet: mpsc::UnboundedReceiver<usize>,
    tasks: Vec<JoinHandle<Record>>,
    pub live: Arc<Live>,
    style: Style,
}

impl Chatters {
    /// Starts one client per `chatters`, client `i` being `chatters[i]`;
    /// returns once all have joined and started their beat.
    pub async fn start(chatters: Vec<Chatter>, style: Style) -> Self {
        let clients = chatters.len();
        let (phase, phase_rx) = watch::channel(Phase::Send);
        let (quiet_tx, quiet) = mpsc::unbounded_channel();
        let ready = Arc::new(Barrier::new(clients + 1));
        let live = Arc::new(Live::new(clients));
        let tasks = chatters
            .into_iter()
            .enumerate()
            .map(|(index, spec)| {
                let client = Client {
                    index,
                    spec,
                    style,
                    phase: phase_rx.clone(),
                    ready: ready.clone(),
                    quiet: quiet_tx.clone(),
                    live: live.clone(),
                };
                tokio::spawn(client.run())
            })
            .collect();
        tokio::time::timeout(style.phase, ready.wait())
            .await
            .expect("every client joins in time");
        Self {
            phase,
            quiet,
            tasks,
            live,
            style,
        }
    }

    /// Waits until the clients' echoes (or refusals, with `refused`), in
    /// all, grow by `more` from now.
    pub async fn wait_for(&self, what: &str, refused: bool, more: usize) {
        let count = |l: &Live| {
            if refused {
                l.refused()
            } else {
                l.accepted_total()
            }
        };
        let target = count(&self.live) + more;
        eventually_within(what, self.style.phase, || async {
            (count(&self.live) >= target).then_some(())
        })
        .await;
    }

    /// Waits until each of `clients` has `more` echoes beyond `from`.
    pub async fn wait_accepted(&self, what: &str, clients: &[usize], from: &[usize], more: usize) {
        eventually_within(what, self.style.phase, || async {
            let now = self.live.accepted();
            clients
                .iter()
                .all(|&c| now[c] >= from[c] + more)
                .then_some(())
        })
        .await;
    }

    /// Stops the sending and waits until each client's sends are all
    /// answered (or in doubt); returns how many clients never got quiet.
    pub async fn stop(&mut self) -> usize {
        self.phase.send_replace(Phase::Stop);
        let mut quiet = 0;
        let deadline = Instant::now() + 2 * TIMEOUT;
        while quiet < self.tasks.len() {
            match tokio::time::timeout_at(deadline, self.quiet.recv()).await {
                Ok(Some(_)) => quiet += 1,
                _ => break,
            }
        }
        self.tasks.len() - quiet
    }

    /// Lets every client read until it has seen the room message `room`
    /// and the newest DM echoed to its pair, for up to `within`, and returns
    /// the records, by client index.
    pub async fn drain(self, room: Option<String>, within: Duration) -> Vec<Record> {
        let dms = Arc::new(self.live.newest_dm.lock().unwrap().clone());
        let until = Instant::now() + within;
        self.phase.send_replace(Phase::Drain { room, dms, until });
        let mut records = Vec::with_capacity(self.tasks.len());
        for task in self.tasks {
            records.push(
                tokio::time::timeout(within + TIMEOUT, task)
                    .await
                    .expect("the client finishes draining")
                    .expect("the client task"),
            );
        }
        records
    }
}

// ---------------------------------------------------------------------------
// Counting deliveries.

/// Deliveries of one client against the expected sequence.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    /// Distinct expected messages it got.
    pub delivered: usize,
    /// Messages it got more than once.
    pub duplicates: usize,
    /// Expected messages it never got.
    pub lost: usize,
    /// Messages it got that were not expected.
    pub unexpected: usize,
}

pub fn tally(got: &[(String, String)], expected: &[(String, String)]) -> Tally {
    let want: HashSet<&str> = expected.iter().map(|(id, _)| id.as_str()).collect();
    let mut once = HashSet::new();
    let mut tally = Tally::default();
    for (id, _) in got {
        if !once.insert(id.as_str()) {
            tally.duplicates += 1;
        } else if want.contains(id.as_str()) {
            tally.delivered += 1;
        } else {
            tally.unexpected += 1;
        }
    }
    tally.lost = want.len() - tally.delivered;
    tally
}

pub fn sum(tallies: &[Tally]) -> Tally {
    tallies.iter().fold(Tally::default(), |a, t| Tally {
        delivered: a.delivered + t.delivered,
        duplicates: a.duplicates + t.duplicates,
        lost: a.lost + t.lost,
        unexpected: a.unexpected + t.unexpected,
    })
}
