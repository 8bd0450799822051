//! Fault injection under steady load, with real processes and a real Redis,
//! counting every message:
//! - one node of three is SIGKILLed while a room chats; its clients rejoin
//!   elsewhere with `since`, and every accepted message reaches every client
//!   exactly once, in the order of the room's history; a send cut off by the
//!   crash reaches everyone or no one;
//! - Redis is SIGKILLed and restarted (empty) under load; every send is
//!   answered, by its echo or by `unavailable`, and every accepted message
//!   reaches every member exactly once, in order; none is silently lost;
//! - a reader that stops reading under a flood is closed with 1013 and
//!   counted, while the other readers get every message, in order.
//!
//! Each test prints one `measured:` line with its figures.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::support::chatters::{
    BEAT, Chatter, Chatters, Event, Fate, Link, Record, Sent, Style, Tally, Ws, full_history,
    id_key, sum, tally,
};
use crate::support::node::Endpoint;
use crate::support::raw::{connect_with_small_window, raw_recv, raw_send, read_until_close};
use crate::support::{
    ProcessNode, RedisServer, TIMEOUT, eventually_within, metric, unique, wait_ready,
};

/// The presence TTL of the cluster nodes: small, so a dead node's users go
/// quickly (the contract's `CHORUS_PRESENCE_TTL_SECS`).
const TTL_SECS: &str = "2";
/// Far more than any test here stores, so `since` is never truncated and
/// the whole history can be read back.
const HISTORY_LIMIT: &str = "1000000";
/// How long a phase of a test may take to reach its condition: generous,
/// for a loaded 2-core machine.
const PHASE: Duration = Duration::from_secs(30);

/// A cluster of real `chorus` processes on one real Redis.
struct ProcessCluster {
    redis: RedisServer,
    nodes: Vec<ProcessNode>,
}

impl ProcessCluster {
    /// `n` nodes sharing a fresh Redis under a unique prefix, with `extra`
    /// settings, all ready.
    async fn start(n: usize, extra: &[(&str, &str)]) -> Self {
        let redis = RedisServer::start();
        let url = redis.url();
        let prefix = format!("{}:", unique("faults"));
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let id = format!("{prefix}n{i}").replace(':', "-");
            let mut env = vec![
                ("REDIS_URL", url.as_str()),
                ("CHORUS_REDIS_PREFIX", prefix.as_str()),
                ("CHORUS_NODE_ID", id.as_str()),
                ("CHORUS_PRESENCE_TTL_SECS", TTL_SECS),
                ("CHORUS_HISTORY_LIMIT", HISTORY_LIMIT),
            ];
            env.extend_from_slice(extra);
            nodes.push(ProcessNode::spawn(&env));
        }
        for node in &nodes {
            wait_ready(&node.url("/ready")).await;
        }
        Self { redis, nodes }
    }
}

/// The faults' chatting clients: on every beat, whatever is unanswered.
const STYLE: Style = Style {
    one_in_flight: false,
    dm_every: 0,
    phase: PHASE,
};

/// `clients` clients `u<i>` in `room`, client `i` on node `i % nodes.len()`;
/// when its node dies, a client reconnects to the next that answers and
/// rejoins with `since`.
async fn start_chatters(nodes: &[ProcessNode], clients: usize, room: &str) -> Chatters {
    let n = nodes.len();
    let chatters = (0..clients)
        .map(|index| {
            let home = index % n;
            let user = format!("u{index}");
            Chatter {
                urls: nodes.iter().map(|node| node.ws_url(&user)).collect(),
                user,
                room: room.to_owned(),
                home,
                // Spread the clients of a dead node over the others; a dead
                // node refuses and the next is tried.
                order: (0..n).map(|k| (home + 1 + k + index / n) % n).collect(),
                partner: None,
                pair: index,
            }
        })
        .collect();
    Chatters::start(chatters, STYLE).await
}

/// A client saw the drain's marker and got `expected`, every message once,
/// in that order.
fn assert_got_exactly(record: &Record, tally: &Tally, expected: &[(String, String)]) {
    assert!(
        record.drained,
        "u{} saw the newest accepted message: {tally:?}",
        record.index
    );
    assert_eq!(
        (tally.duplicates, tally.lost, tally.unexpected),
        (0, 0, 0),
        "u{}: every accepted message exactly once",
        record.index
    );
    assert!(
        record.got_room == expected,
        "u{} saw the messages in the expected order",
        record.index
    );
}

// ---------------------------------------------------------------------------
// A node dies under steady chat.

/// Clients in the room, spread evenly over the three nodes.
const CRASH_CLIENTS: usize = 12;
/// The node that is SIGKILLed.
const DOOMED: usize = 2;
/// The crash test's write delay: a busy connection's frames wait up to this
/// long for one socket write, so a send's echo is usually still on its way
/// when the node dies, and the crash leaves sends in doubt to check.
const CRASH_WRITE_DELAY_MS: &str = "100";
/// Echoes per client before the crash, and again after every client of the
/// dead node has rejoined: a few seconds of chat at the steady beat.
const ROUNDS: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_one_of_three_nodes_under_steady_chat_delivers_every_accepted_message_to_every_client_exactly_once()
 {
    // Arrange: three real nodes; twelve clients, four on each, in one room,
    // each sending ten messages a second.
    let mut cluster =
        ProcessCluster::start(3, &[("CHORUS_WRITE_DELAY_MS", CRASH_WRITE_DELAY_MS)]).await;
    let room = unique("room");
    let mut chatters = start_chatters(&cluster.nodes, CRASH_CLIENTS, &room).await;
    let started = Instant::now();
    chatters
        .wait_for(
            "steady chat before the crash",
            false,
            CRASH_CLIENTS * ROUNDS,
        )
        .await;

    // Act: node 2 dies without cleanup; its clients reconnect elsewhere and
    // rejoin with `since` while the others go on; the chat goes on.
    let killed = Instant::now();
    cluster.nodes[DOOMED].sigkill();
    let doomed_clients = CRASH_CLIENTS / cluster.nodes.len();
    eventually_within("every client of the dead node rejoins", PHASE, || async {
        (chatters.live.rejoined() >= doomed_clients).then_some(())
    })
    .await;
    chatters
        .wait_for("steady chat after the crash", false, CRASH_CLIENTS * ROUNDS)
        .await;
    let unquiet = chatters.stop().await;
    let sending_time = started.elapsed();
    let history = full_history(&cluster.nodes[0], &room).await;
    let last = history.last().expect("a history").0.clone();
    let records = chatters.drain(Some(last), 2 * TIMEOUT).await;

    // Assert: count everything, print it, then check it.
    let stored: HashMap<&str, &str> = history
        .iter()
        .map(|(id, content)| (content.as_str(), id.as_str()))
        .collect();
    let sends = records.iter().flat_map(|r| &r.sends);
    let sent = sends.clone().count();
    let echoed = sends
        .clone()
        .filter(|s| matches!(s.fate, Fate::Accepted(_)))
        .count();
    let in_doubt: Vec<&Sent> = sends.clone().filter(|s| s.fate == Fate::InDoubt).collect();
    let in_doubt_stored = in_doubt
        .iter()
        .filter(|s| stored.contains_key(s.content.as_str()))
        .count();
    let refused = sends
        .clone()
        .filter(|s| matches!(s.fate, Fate::Refused(_)))
        .count();
    let unanswered = sends.clone().filter(|s| s.fate == Fate::Pending).count();
    let tallies: Vec<Tally> = records
        .iter()
        .map(|r| tally(&r.got_room, &history))
        .collect();
    let total = sum(&tallies);
    let reconnects: Vec<(usize, Duration, Duration, usize, &str)> = records
        .iter()
        .filter_map(|r| {
            let (died, why) = r.died.as_ref()?;
            Some((
                r.index,
                died.saturating_duration_since(killed),
                r.rejoined?.saturating_duration_since(killed),
                r.rejoined_on?,
                why.as_str(),
            ))
        })
        .collect();
    let slowest = reconnects.iter().map(|r| r.2).max().unwrap_or_default();
    eprintln!(
        "measured: sigkill 1 of 3 nodes, {CRASH_CLIENTS} clients at {}/s for {sending_time:?}: \
         sent {sent}, accepted {} (echoed {echoed} + in doubt and stored {in_doubt_stored}), \
         in doubt {} ({in_doubt_stored} stored, {} not), refused {refused}, unanswered {unanswered}, \
         deliveries expected {}, delivered {}, duplicates {}, lost {}, unexpected {}, \
         reconnect (SIGKILL -> rejoined) max {slowest:?}",
        1000 / BEAT.as_millis(),
        history.len(),
        in_doubt.len(),
        in_doubt.len() - in_doubt_stored,
        history.len() * records.len(),
        total.delivered,
        total.duplicates,
        total.lost,
        total.unexpected,
    );
    for (index, died, rejoined, node, why) in &reconnects {
        eprintln!(
            "measured: client u{index}: socket died {died:?} after SIGKILL ({why}), \
             rejoined on node {node} after {rejoined:?}"
        );
    }

    assert_eq!(unquiet, 0, "every client's sends were answered in time");
    assert_eq!(unanswered, 0, "no send on a live socket went unanswered");
    assert_eq!(
        reconnects.len(),
        doomed_clients,
        "exactly the dead node's clients reconnected: {reconnects:?}"
    );
    assert!(reconnects.iter().all(|r| r.3 != DOOMED), "{reconnects:?}");
    assert_eq!(stored.len(), history.len(), "no message is stored twice");
    let by_content: HashMap<&str, &Fate> = records
        .iter()
        .flat_map(|r| &r.sends)
        .map(|s| (s.content.as_str(), &s.fate))
        .collect();
    for (id, content) in &history {
        match by_content.get(content.as_str()) {
            Some(Fate::Accepted(echoed)) => assert_eq!(echoed, id, "{content}"),
            Some(Fate::InDoubt) => {}
            other => panic!("{content} ({id}) is stored but was {other:?}"),
        }
    }
    for send in records.iter().flat_map(|r| &r.sends) {
        if let Fate::Accepted(_) = send.fate {
            assert!(
                stored.contains_key(send.content.as_str()),
                "{} was echoed but is not stored",
                send.content
            );
        }
    }
    for (record, tally) in records.iter().zip(&tallies) {
        assert_got_exactly(record, tally, &history);
    }
}

// ---------------------------------------------------------------------------
// Redis dies and comes back under load.

/// Clients in the room, spread over the two nodes.
const OUTAGE_CLIENTS: usize = 8;
/// Refusals per client while Redis is down: three seconds at the steady
/// beat, long enough for the subscribers to back off to their longest wait.
const OUTAGE_ROUNDS: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_under_load_answers_every_send_and_loses_no_accepted_message() {
    // Arrange: two real nodes; eight clients, four on each, in one room,
    // each sending ten messages a second across the whole test.
    let mut cluster = ProcessCluster::start(2, &[]).await;
    let room = unique("room");
    let mut chatters = start_chatters(&cluster.nodes, OUTAGE_CLIENTS, &room).await;
    let started = Instant::now();
    chatters
        .wait_for("steady chat before the outage", false, OUTAGE_CLIENTS * 20)
        .await;

    // Act: Redis is SIGKILLed; sends go on; it restarts (empty) on the same
    // port; sends go on until delivery has resumed for a while.
    tokio::task::block_in_place(|| cluster.redis.kill());
    let killed = Instant::now();
    chatters
        .wait_for(
            "sends refused during the outage",
            true,
            OUTAGE_CLIENTS * OUTAGE_ROUNDS,
        )
        .await;
    tokio::task::block_in_place(|| cluster.redis.restart());
    let outage = killed.elapsed();
    let restarted = Instant::now();
    chatters
        .wait_for("delivery after the restart", false, 1)
        .await;
    let resumed = restarted.elapsed();
    chatters
        .wait_for("steady chat after the restart", false, OUTAGE_CLIENTS * 30)
        .await;
    let unquiet = chatters.stop().await;
    let sending_time = started.elapsed();
    let newest = chatters.live.newest_room().expect("messages were accepted");
    let records = chatters.drain(Some(newest), 2 * TIMEOUT).await;

    // Assert: count everything, print it, then check it.
    let mut accepted: BTreeMap<(u64, u64), (String, String)> = BTreeMap::new();
    let mut refused: HashMap<&str, &str> = HashMap::new();
    let (mut sent, mut unanswered, mut in_doubt) = (0, 0, 0);
    for send in records.iter().flat_map(|r| &r.sends) {
        sent += 1;
        match &send.fate {
            Fate::Accepted(id) => {
                accepted.insert(id_key(id), (id.clone(), send.content.clone()));
            }
            Fate::Refused(code) => {
                refused.insert(&send.content, code);
            }
            Fate::Pending => unanswered += 1,
            Fate::InDoubt => in_doubt += 1,
        }
    }
    let expected: Vec<(String, String)> = accepted.into_values().collect();
    let tallies: Vec<Tally> = records
        .iter()
        .map(|r| tally(&r.got_room, &expected))
        .collect();
    let total = sum(&tallies);
    let refused_delivered: Vec<&str> = records
        .iter()
        .flat_map(|r| &r.got_room)
        .filter(|(_, content)| refused.contains_key(content.as_str()))
        .map(|(_, content)| content.as_str())
        .collect();
    let unavailable = refused.values().filter(|c| **c == "unavailable").count();
    eprintln!(
        "measured: redis killed {outage:?} and restarted under load, {OUTAGE_CLIENTS} clients at {}/s \
         for {sending_time:?}: sent {sent}, accepted {}, answered unavailable {unavailable}, \
         other refusals {}, unanswered {unanswered}, in doubt {in_doubt}, \
         deliveries expected {}, delivered {}, duplicates {}, lost {}, unexpected {}, \
         refused but delivered {}, first echo {resumed:?} after the restart",
        1000 / BEAT.as_millis(),
        expected.len(),
        refused.len() - unavailable,
        expected.len() * records.len(),
        total.delivered,
        total.duplicates,
        total.lost,
        total.unexpected,
        refused_delivered.len(),
    );

    assert_eq!(unquiet, 0, "every client's sends were answered in time");
    assert_eq!(
        (unanswered, in_doubt),
        (0, 0),
        "every send answered, no socket died"
    );
    assert_eq!(
        refused.len(),
        unavailable,
        "every refusal is unavailable: {refused:?}"
    );
    assert!(unavailable > 0, "the outage refused sends");
    assert!(
        refused_delivered.is_empty(),
        "a refused send was not sent: {refused_delivered:?}"
    );
    for (record, tally) in records.iter().zip(&tallies) {
        assert!(
            record.died.is_none(),
            "u{}'s socket stayed open: {:?}",
            record.index,
            record.died
        );
        assert_got_exactly(record, tally, &expected);
    }
    // Redis came back empty: it holds what was accepted after the restart,
    // the newest messages, and nothing refused.
    let history = full_history(&cluster.nodes[1], &room).await;
    assert!(!history.is_empty());
    assert!(
        expected.ends_with(&history),
        "the history is the newest accepted messages"
    );
}

// ---------------------------------------------------------------------------
// A reader that stops reading under a flood.

/// Frames queued per connection before it counts as slow: small, so the
/// reader that stopped is closed as soon as the kernel buffers of its
/// connection are full.
const QUEUE: &str = "64";
/// Connections flooding the room.
const FLOODERS: usize = 3;
/// Connections that only read, as fast as they can.
const READERS: usize = 3;
/// Messages a flooder writes back to back before it looks at the readers.
const WINDOW: usize = 8;
/// How far the flood may run ahead of the slowest reading connection. With
/// [`FLOODERS`] × [`WINDOW`] it keeps every reading connection's queue under
/// [`QUEUE`] (32 + 24 < 64) however the threads are scheduled, so only the
/// reader that stopped can be the slow one. The flood is as fast as the
/// readers read.
const LAG: usize = 32;
/// The flood gives up here: far more than the kernel buffers of one
/// loopback connection hold (a few megabytes, a few thousand messages).
const FLOOD_MAX: usize = 20_000;
/// Messages the flood goes on for after the slow reader was flagged, to
/// measure the others' rate after it.
const TAIL: usize = 1_000;
/// The close counter of the contract's slow-consumer rule.
const SLOW_DISCONNECTS: &str = "chorus_slow_consumer_disconnects_total";

/// A joined connection to `room` as `user`.
async fn joined_link(node: &impl Endpoint, user: &str, room: &str) -> Link {
    let mut link = Link::open(&node.ws_url(user)).await.expect("connects");
    assert!(
        link.send(&json!({"type": "join", "room": room, "ref": "join"}))
            .await
    );
    loop {
        let Event::Frame(frame) = tokio::time::timeout(TIMEOUT, link.next())
            .await
            .expect("joined in time")
        else {
            panic!("{user} was closed before joining");
        };
        if frame["ref"] == "join" {
            assert_eq!(frame["type"], "joined", "{frame}");
            return link;
        }
    }
}

/// One message as a reading connection got it.
struct Arrival {
    id: String,
    content: String,
    at: Instant,
}

/// Reads room messages until the one whose content is `end`, counting them
/// in `seen` and waking the flooders on `progress`. Any close fails the test:
/// only the reader that stopped may be closed.
async fn read_all(
    who: String,
    mut rx: SplitStream<Ws>,
    seen: Arc<AtomicUsize>,
    progress: Arc<watch::Sender<()>>,
) -> Vec<Arrival> {
    let mut got = Vec::new();
    loop {
        let next = tokio::time::timeout(TIMEOUT, rx.next())
            .await
            .unwrap_or_else(|_| panic!("{who}: a frame in time after {} messages", got.len()));
        let text = match next {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(close))) => {
                panic!("{who} was closed after {} messages: {close:?}", got.len())
            }
            Some(Ok(_)) => continue,
            other => panic!(
                "{who}: connection lost after {} messages: {other:?}",
                got.len()
            ),
        };
        let frame: Value = serde_json::from_str(&text).expect("JSON frame");
        if frame["type"] != "message" {
            continue;
        }
        let content = frame["content"].as_str().expect("content").to_owned();
        let end = content == "end";
        got.push(Arrival {
            id: frame["id"].as_str().expect("id").to_owned(),
            content,
            at: Instant::now(),
        });
        seen.fetch_add(1, Ordering::SeqCst);
        progress.send_replace(());
        if end {
            return got;
        }
    }
}

/// What the flooders share.
#[derive(Clone)]
struct Flood {
    room: String,
    /// Messages written so far, by every flooder.
    sent: Arc<AtomicUsize>,
    /// Messages each reading connection got so far.
    seen: Vec<Arc<AtomicUsize>>,
    progress: watch::Receiver<()>,
    stop: Arc<AtomicBool>,
}

impl Flood {
    /// Waits until no reading connection is more than [`LAG`] behind.
    async fn wait_for_readers(&mut self) {
        loop {
            self.progress.borrow_and_update();
            let least = self
                .seen
                .iter()
                .map(|s| s.load(Ordering::SeqCst))
                .min()
                .expect("readers");
            if self.sent.load(Ordering::SeqCst) <= least + LAG {
                return;
            }
            tokio::time::timeout(TIMEOUT, self.progress.changed())
                .await
                .expect("the readers keep up")
                .expect("the readers are alive");
        }
    }

    /// Floods in windows until told to stop (or [`FLOOD_MAX`]); returns the
    /// sink for the closing message and how many it sent.
    async fn run(
        mut self,
        k: usize,
        mut tx: SplitSink<Ws, Message>,
    ) -> (SplitSink<Ws, Message>, usize) {
        let filler = "x".repeat(1000);
        let mut seq = 0;
        while !self.stop.load(Ordering::SeqCst) && self.sent.load(Ordering::SeqCst) < FLOOD_MAX {
            self.wait_for_readers().await;
            for _ in 0..WINDOW {
                self.sent.fetch_add(1, Ordering::SeqCst);
                let frame = json!({
                    "type": "message",
                    "room": self.room,
                    "content": format!("f{k}:{seq}:{filler}"),
                    "ref": seq.to_string(),
                });
                tokio::time::timeout(TIMEOUT, tx.send(Message::Text(frame.to_string().into())))
                    .await
                    .expect("send in time")
                    .expect("send");
                seq += 1;
            }
        }
        (tx, seq)
    }
}

/// Messages per second among `arrivals` in `(from, to]`.
fn rate(arrivals: &[Arrival], from: Instant, to: Instant) -> f64 {
    let n = arrivals
        .iter()
        .filter(|a| a.at > from && a.at <= to)
        .count();
    n as f64 / to.saturating_duration_since(from).as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_under_a_flood_is_closed_with_1013_while_the_others_keep_full_rate() {
    // Arrange: a node of its own (its metrics count only this test) with a
    // small outbound queue and no rate limit; a reader that will never read,
    // three that read, three flooders (which read too).
    let node = ProcessNode::spawn(&[
        ("CHORUS_OUTBOUND_QUEUE", QUEUE),
        ("CHORUS_RATE_LIMIT", "0"),
        ("CHORUS_HISTORY_LIMIT", HISTORY_LIMIT),
    ]);
    let metrics_url = node.url("/metrics");
    let slow_before = metric(&metrics_url, SLOW_DISCONNECTS).await;
    let room = unique("room");
    let mut slow = connect_with_small_window(&node, "slow").await;
    raw_send(&mut slow, json!({"type": "join", "room": room})).await;
    assert_eq!(raw_recv(&mut slow).await["type"], "joined");
    let (progress, progress_rx) = watch::channel(());
    let progress = Arc::new(progress);
    let mut reading = Vec::new();
    let mut senders = Vec::new();
    let mut seen = Vec::new();
    let mut sinks = Vec::new();
    for i in 0..READERS + FLOODERS {
        let user = if i < READERS {
            format!("reader{i}")
        } else {
            format!("flooder{}", i - READERS)
        };
        let link = joined_link(&node, &user, &room).await;
        let count = Arc::new(AtomicUsize::new(0));
        seen.push(count.clone());
        reading.push(tokio::spawn(read_all(
            user,
            link.rx,
            count,
            progress.clone(),
        )));
        if i < READERS {
            sinks.push(link.tx);
        } else {
            senders.push(link.tx);
        }
    }
    let flood = Flood {
        room: room.clone(),
        sent: Arc::new(AtomicUsize::new(0)),
        seen: seen.clone(),
        progress: progress_rx,
        stop: Arc::new(AtomicBool::new(false)),
    };

    // Act: the flood, while the slow reader never reads.
    let started = Instant::now();
    let flooding: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(k, tx)| tokio::spawn(flood.clone().run(k, tx)))
        .collect();
    let flagged = eventually_within("the reader that stopped to be flagged slow", PHASE, || {
        let url = metrics_url.clone();
        async move { (metric(&url, SLOW_DISCONNECTS).await > slow_before).then(Instant::now) }
    })
    .await;
    let sent_at_flag = flood.sent.load(Ordering::SeqCst);
    // Flagged: it reads again, and finds its backlog and then the close.
    let slow_reading = tokio::spawn(async move {
        let (messages, code) = read_until_close(&mut slow).await;
        let ids: Vec<String> = messages
            .iter()
            .map(|m| m["id"].as_str().expect("id").to_owned())
            .collect();
        (ids, code)
    });
    eventually_within("the flood to go on after the close", PHASE, || async {
        (flood.sent.load(Ordering::SeqCst) >= sent_at_flag + TAIL).then_some(())
    })
    .await;
    flood.stop.store(true, Ordering::SeqCst);
    let stopped = Instant::now();
    let mut sent_by = Vec::new();
    let mut tails = Vec::new();
    for task in flooding {
        let (tx, n) = tokio::time::timeout(PHASE, task)
            .await
            .expect("the flooders stop")
            .expect("a flooder");
        tails.push(tx);
        sent_by.push(n);
    }
    let sent = flood.sent.load(Ordering::SeqCst);
    eventually_within(
        "every reading connection to get the whole flood",
        PHASE,
        || async {
            seen.iter()
                .all(|s| s.load(Ordering::SeqCst) >= sent)
                .then_some(())
        },
    )
    .await;
    let end = json!({"type": "message", "room": room, "content": "end"});
    tails[0]
        .send(Message::Text(end.to_string().into()))
        .await
        .expect("send end");
    let mut arrivals = Vec::new();
    for task in reading {
        arrivals.push(
            tokio::time::timeout(PHASE, task)
                .await
                .expect("the readers finish")
                .expect("a reader"),
        );
    }
    let (slow_got, code) = tokio::time::timeout(PHASE, slow_reading)
        .await
        .expect("the slow reader is closed in time")
        .expect("the slow reader");
    let slow_after = metric(&metrics_url, SLOW_DISCONNECTS).await;
    let history = full_history(&node, &room).await;

    // Assert: count, print, check.
    let last_flood = arrivals[..READERS]
        .iter()
        .filter_map(|a| a.iter().rev().find(|m| m.content != "end").map(|m| m.at))
        .max()
        .expect("arrivals");
    let before: Vec<f64> = arrivals[..READERS]
        .iter()
        .map(|a| rate(a, started, flagged))
        .collect();
    let after: Vec<f64> = arrivals[..READERS]
        .iter()
        .map(|a| rate(a, flagged, last_flood))
        .collect();
    let mean = |rates: &[f64]| rates.iter().sum::<f64>() / rates.len() as f64;
    let flood_time = stopped.saturating_duration_since(started);
    eprintln!(
        "measured: flood of {sent} messages from {FLOODERS} senders in {flood_time:?} ({:.0}/s; \
         {:.0}/s before the flag, {:.0}/s after), slow reader flagged after {sent_at_flag} messages \
         ({:?} in) and closed with {code} having read {}; {READERS} readers: {:.0} msg/s each \
         before, {:.0} msg/s after (per reader before {before:.0?}, after {after:.0?}); \
         every reader got {} of {} messages",
        sent as f64 / flood_time.as_secs_f64(),
        sent_at_flag as f64 / flagged.saturating_duration_since(started).as_secs_f64(),
        (sent - sent_at_flag) as f64 / stopped.saturating_duration_since(flagged).as_secs_f64(),
        flagged.saturating_duration_since(started),
        slow_got.len(),
        mean(&before),
        mean(&after),
        arrivals.iter().map(Vec::len).min().unwrap_or_default(),
        history.len(),
    );

    assert_eq!(code, 1013, "the slow reader is told to reconnect later");
    assert_eq!(
        slow_after - slow_before,
        1.0,
        "one slow consumer counted, and only one"
    );
    assert_eq!(sent_by.iter().sum::<usize>(), sent);
    assert_eq!(history.len(), sent + 1, "every message stored once");
    let history_ids: Vec<&str> = history.iter().map(|(id, _)| id.as_str()).collect();
    assert!(
        slow_got.len() < sent_at_flag,
        "it was closed when it fell behind ({} of {sent_at_flag})",
        slow_got.len()
    );
    assert!(
        slow_got
            .iter()
            .map(String::as_str)
            .eq(history_ids[..slow_got.len()].iter().copied()),
        "what it got before the close is a gap-free prefix"
    );
    for (i, got) in arrivals.iter().enumerate() {
        assert!(
            got.iter()
                .map(|a| (a.id.as_str(), a.content.as_str()))
                .eq(history.iter().map(|(id, c)| (id.as_str(), c.as_str()))),
            "reading connection {i} got every message once, in the order of the history \
             ({} of {})",
            got.len(),
            history.len()
        );
    }
    drop(sinks);
}
