//! Redis outages under a running cluster: sockets stay open, sends are
//! refused with `unavailable` (never silently lost), `/ready` answers 503;
//! when Redis returns (empty) the nodes reconnect, resubscribe, restore
//! presence and deliver again without any client reconnecting. A subscriber
//! that drops while Redis keeps the data gap-fills what it missed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::support::cluster::RedisConnection;
use crate::support::node::Endpoint;
use crate::support::{
    Cluster, TIMEOUT, TestNode, WsClient, eventually, get_json, get_status, metric, unique,
};

/// Small, so the heartbeat that restores presence runs every ~0.7 s.
const TTL_SECS: u64 = 2;
const GAP_FILL: &str = "chorus_gap_fill_messages_total";
const RECONNECTS: &str = "chorus_pubsub_reconnects_total";

#[derive(Debug, Clone, Copy)]
enum Outage {
    /// SIGTERM: Redis closes its connections.
    Stop,
    /// SIGKILL: Redis vanishes mid-flight.
    Kill,
}

/// Stops Redis. Blocking, so off the runtime's worker: the in-process nodes'
/// tasks queued on that worker would starve meanwhile (a loaded CI run saw
/// a send unanswered for 10 s behind a blocking restart).
fn take_down(cluster: &mut Cluster, outage: Outage) {
    tokio::task::block_in_place(|| match outage {
        Outage::Stop => cluster.redis_mut().stop(),
        Outage::Kill => cluster.redis_mut().kill(),
    })
}

/// Starts Redis again on its port, off the runtime's worker (see
/// [`take_down`]).
fn bring_back(cluster: &mut Cluster) {
    tokio::task::block_in_place(|| cluster.redis_mut().restart());
}

/// Two nodes with a small presence TTL and no rate limit; alice on node 0
/// and bob on node 1, both in `room`, with one message delivered across.
async fn two_members() -> (Cluster, String, WsClient, WsClient) {
    let cluster = Cluster::start_with(2, |s| {
        s.presence_ttl_secs = TTL_SECS;
        s.rate_limit = 0;
    })
    .await;
    let room = unique("room");
    let mut alice = WsClient::connect(&cluster.nodes[0].ws_url("alice")).await;
    alice.join(&room).await;
    let mut bob = WsClient::connect(&cluster.nodes[1].ws_url("bob")).await;
    bob.join(&room).await;
    let sent = alice.say(&room, "before the outage").await;
    assert_eq!(bob.recv_until(|f| f["type"] == "message").await, sent);
    (cluster, room, alice, bob)
}

async fn wait_ready_status(nodes: &[TestNode], status: u16) {
    for node in nodes {
        let url = node.url("/ready");
        eventually(&format!("/ready answers {status}"), || {
            let url = url.clone();
            async move { (get_status(&url).await == Some(status)).then_some(()) }
        })
        .await;
    }
}

/// Waits until every node lists exactly `users` online and in `room`.
async fn wait_presence(nodes: &[TestNode], room: &str, users: &[&str]) {
    for node in nodes {
        let (online, members) = (
            node.url("/api/users"),
            node.url(&format!("/api/rooms/{room}/users")),
        );
        eventually("presence restored", || {
            let (online, members) = (online.clone(), members.clone());
            async move {
                let online: Vec<String> = get_json(&online).await;
                let members: Vec<String> = get_json(&members).await;
                (online == users && members == users).then_some(())
            }
        })
        .await;
    }
}

fn is_unavailable(frame: &Value) -> bool {
    frame["type"] == "error" && frame["code"] == "unavailable"
}

/// Sends a message and returns the direct answer: its echo or an error.
async fn try_say(client: &mut WsClient, room: &str, content: &str) -> Value {
    client
        .request(json!({"type": "message", "room": room, "content": content}))
        .await
}

/// Sends until one message is accepted (the first attempts after Redis
/// returns may still be refused), pacing retries like `eventually`. Returns
/// the accepted echo and the contents that were refused.
async fn say_until_accepted(client: &mut WsClient, room: &str) -> (Value, Vec<String>) {
    let deadline = Instant::now() + TIMEOUT;
    let mut refused = Vec::new();
    for attempt in 0.. {
        let content = format!("after {attempt}");
        let answer = try_say(client, room, &content).await;
        if answer["type"] == "message" {
            return (answer, refused);
        }
        assert!(is_unavailable(&answer), "{answer}");
        refused.push(content);
        assert!(Instant::now() < deadline, "no send accepted in {TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    unreachable!()
}

fn contents(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .filter(|f| f["type"] == "message")
        .map(|f| f["content"].as_str().unwrap().to_owned())
        .collect()
}

fn ids(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .filter(|f| f["type"] == "message")
        .map(|f| f["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn room_history(client: &mut WsClient, room: &str) -> Vec<Value> {
    let page = client
        .request(json!({"type": "history", "room": room, "limit": 100}))
        .await;
    assert_eq!(page["type"], "history", "{page}");
    page["messages"].as_array().unwrap().clone()
}

/// The whole story of one outage: refused while down, back on its own when
/// Redis restarts empty.
async fn outage_and_recovery(outage: Outage) {
    // Arrange
    let (mut cluster, room, mut alice, mut bob) = two_members().await;

    let metrics_url = cluster.nodes[0].url("/metrics");
    let reconnects_before = metric(&metrics_url, RECONNECTS).await;

    // Act: Redis goes away.
    take_down(&mut cluster, outage);

    // Assert: refused, not closed, not ready.
    wait_ready_status(&cluster.nodes, 503).await;
    let mut refused = Vec::new();
    for (n, client) in [&mut alice, &mut bob].into_iter().enumerate() {
        let content = format!("during {n}");
        // `request` tags the send with a ref and waits for the frame that
        // echoes it.
        let answer = try_say(client, &room, &content).await;
        assert!(is_unavailable(&answer), "refused with the ref: {answer}");
        refused.push(content);
        let pong = client.request(json!({"type": "ping"})).await;
        assert_eq!(pong["type"], "pong", "the socket stays open: {pong}");
    }

    // A long outage: every subscriber backs off to its longest wait (two
    // nodes, six attempts each: 0.1 + 0.2 + … + 2 s).
    eventually("subscribers at their longest backoff", || {
        let url = metrics_url.clone();
        async move { (metric(&url, RECONNECTS).await - reconnects_before >= 12.0).then_some(()) }
    })
    .await;

    // Act: Redis returns, empty; no client reconnects.
    bring_back(&mut cluster);
    let restarted = Instant::now();
    let watching = tokio::spawn(async move {
        let (skipped, first) = bob.collect_until(|f| f["type"] == "message").await;
        (bob, skipped, first, restarted.elapsed())
    });
    let (accepted, retried) = say_until_accepted(&mut alice, &room).await;
    let (mut bob, skipped, first, delivered_after) = watching.await.unwrap();
    eprintln!(
        "measured: redis restart ({outage:?}) -> first message delivered across nodes: {delivered_after:?} ({} refused retries)",
        retried.len()
    );
    refused.extend(retried);

    // Assert: the accepted message is the first bob gets; nothing refused
    // ever arrives or is stored.
    assert_eq!(first, accepted);
    assert!(contents(&skipped).is_empty(), "{skipped:?}");
    wait_ready_status(&cluster.nodes, 200).await;
    wait_presence(&cluster.nodes, &room, &["alice", "bob"]).await;
    let rooms: Value = get_json(&cluster.nodes[1].url("/api/rooms")).await;
    assert_eq!(rooms, json!([{"name": room, "members": 2}]));
    let back = bob.say(&room, "and back").await;
    let (between, got) = alice
        .collect_until(|f| f["type"] == "message" && f["id"] == back["id"])
        .await;
    assert_eq!(got, back);
    assert!(contents(&between).is_empty(), "{between:?}");
    let stored = contents(&room_history(&mut bob, &room).await);
    assert!(
        stored.iter().all(|c| !refused.contains(c)),
        "refused messages are not stored: {stored:?}"
    );
    let accepted_content = accepted["content"].as_str().unwrap().to_owned();
    assert!(
        stored.ends_with(&[accepted_content, "and back".to_owned()]),
        "{stored:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_redis_refuses_sends_keeps_sockets_open_and_the_cluster_recovers_on_restart() {
    outage_and_recovery(Outage::Stop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_redis_refuses_sends_keeps_sockets_open_and_the_cluster_recovers_on_restart() {
    outage_and_recovery(Outage::Kill).await;
}

/// What happened to one send.
#[derive(Debug)]
enum Outcome {
    Accepted { id: String, content: String },
    Refused { content: String },
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_send_across_a_redis_outage_is_either_delivered_or_refused() {
    // Arrange: alice sends without pause, each send waiting for its answer;
    // bob reads everything.
    let (mut cluster, room, mut alice, mut bob) = two_members().await;
    let stop = Arc::new(AtomicBool::new(false));
    let (outcomes_tx, mut outcomes) = mpsc::unbounded_channel();
    let sending = tokio::spawn({
        let (room, stop) = (room.clone(), stop.clone());
        async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let content = format!("m{n}");
                n += 1;
                let answer = try_say(&mut alice, &room, &content).await;
                let outcome = if answer["type"] == "message" {
                    assert_eq!(answer["content"], content.as_str());
                    let id = answer["id"].as_str().unwrap().to_owned();
                    Outcome::Accepted { id, content }
                } else {
                    assert!(is_unavailable(&answer), "{answer}");
                    // Refusals come back at once; do not spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    Outcome::Refused { content }
                };
                outcomes_tx.send(outcome).unwrap();
            }
            let done = alice.say(&room, "done").await;
            (alice, done)
        }
    });
    let mut all = Vec::new();
    let mut wait_for = async |accepted: bool, count: usize, all: &mut Vec<Outcome>| {
        let mut seen = 0;
        while seen < count {
            let outcome = tokio::time::timeout(TIMEOUT, outcomes.recv())
                .await
                .expect("an outcome in time")
                .expect("sender alive");
            if matches!(outcome, Outcome::Accepted { .. }) == accepted {
                seen += 1;
            }
            all.push(outcome);
        }
    };

    // Act: accepted, then down, then back.
    wait_for(true, 5, &mut all).await;
    take_down(&mut cluster, Outage::Kill);
    wait_for(false, 5, &mut all).await;
    bring_back(&mut cluster);
    wait_for(true, 5, &mut all).await;
    stop.store(true, Ordering::Relaxed);
    let (_alice, done) = sending.await.unwrap();
    while let Ok(outcome) = outcomes.try_recv() {
        all.push(outcome);
    }
    let (frames, last) = bob
        .collect_until(|f| f["type"] == "message" && f["id"] == done["id"])
        .await;

    // Assert: sent = delivered + refused; bob got exactly the accepted ones,
    // once each, in the order they were accepted.
    let accepted: Vec<(&String, &String)> = all
        .iter()
        .filter_map(|o| match o {
            Outcome::Accepted { id, content } => Some((id, content)),
            Outcome::Refused { .. } => None,
        })
        .collect();
    let refused: BTreeSet<&String> = all
        .iter()
        .filter_map(|o| match o {
            Outcome::Refused { content } => Some(content),
            Outcome::Accepted { .. } => None,
        })
        .collect();
    let delivered: Vec<(String, String)> = frames
        .iter()
        .filter(|f| f["type"] == "message")
        .map(|f| {
            (
                f["id"].as_str().unwrap().to_owned(),
                f["content"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    eprintln!(
        "sent {}: delivered {}, refused {}",
        all.len(),
        delivered.len(),
        refused.len()
    );
    assert_eq!(all.len(), delivered.len() + refused.len());
    let expected: Vec<(String, String)> = accepted
        .iter()
        .map(|(id, content)| ((*id).clone(), (*content).clone()))
        .collect();
    assert_eq!(delivered, expected);
    assert!(delivered.iter().all(|(_, c)| !refused.contains(c)));
    assert_eq!(last, done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_published_while_a_subscriber_is_down_are_gap_filled_once_and_in_order() {
    // Arrange: node A as the default Redis user; node B as its own user, so
    // its pub/sub rights alone can be revoked while Redis keeps every key.
    let cluster = Cluster::start_with(1, |s| s.presence_ttl_secs = TTL_SECS).await;
    let mut admin = cluster.redis_connection().await;
    let acl = |args: &[&str]| {
        let mut cmd = redis::cmd("ACL");
        cmd.arg("SETUSER").arg("node-b").arg(args);
        cmd
    };
    let () = acl(&["on", ">secret", "~*", "&*", "+@all"])
        .query_async(&mut admin)
        .await
        .unwrap();
    let port = cluster.redis().port();
    let node_b = cluster
        .spawn_node(&cluster.node_id("b"), |s| {
            s.presence_ttl_secs = TTL_SECS;
            s.redis_url = Some(format!("redis://node-b:secret@127.0.0.1:{port}/0"));
        })
        .await;
    let node_a = &cluster.nodes[0];
    wait_ready_status(std::slice::from_ref(&node_b), 200).await;
    let room = unique("room");
    let mut alice = WsClient::connect(&node_a.ws_url("alice")).await;
    alice.join(&room).await;
    let mut bob = WsClient::connect(&node_b.ws_url("bob")).await;
    bob.join(&room).await;
    let warm_up = alice.say(&room, "warm-up").await;
    assert_eq!(bob.recv_until(|f| f["type"] == "message").await, warm_up);
    let filled_before = metric(&node_b.url("/metrics"), GAP_FILL).await;

    // Act: B's subscriber is cut off (Redis drops a subscriber whose channel
    // rights are revoked, and refuses it again); alice talks meanwhile.
    let () = acl(&["resetchannels"])
        .query_async(&mut admin)
        .await
        .unwrap();
    wait_ready_status(std::slice::from_ref(&node_b), 503).await;
    const MISSED: usize = 10;
    let mut sent = Vec::new();
    for n in 0..MISSED {
        sent.push(alice.say(&room, &format!("while down {n}")).await);
    }
    let () = acl(&["allchannels"]).query_async(&mut admin).await.unwrap();

    // Assert: B catches up by itself; bob gets each missed message once, in
    // order, and then live messages again.
    let last = sent.last().unwrap()["id"].clone();
    let (frames, got) = bob
        .collect_until(|f| f["type"] == "message" && f["id"] == last)
        .await;
    let mut received: Vec<Value> = frames
        .into_iter()
        .filter(|f| f["type"] == "message")
        .collect();
    received.push(got);
    assert_eq!(received, sent, "every missed message once, in order");
    wait_ready_status(std::slice::from_ref(&node_b), 200).await;
    let live = alice.say(&room, "live again").await;
    let (between, got) = bob
        .collect_until(|f| f["type"] == "message" && f["id"] == live["id"])
        .await;
    assert_eq!(got, live);
    assert!(ids(&between).is_empty(), "nothing twice: {between:?}");
    let history = room_history(&mut bob, &room).await;
    let mut expected = vec![warm_up];
    expected.extend(sent);
    expected.push(live);
    assert_eq!(ids(&history), ids(&expected));
    let filled = metric(&node_b.url("/metrics"), GAP_FILL).await - filled_before;
    eprintln!("gap-filled messages: {filled}");
    assert!(filled >= MISSED as f64, "{filled}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_subscriber_connections_repeatedly_loses_and_duplicates_no_message() {
    // Arrange
    let (cluster, room, mut alice, mut bob) = two_members().await;
    let mut admin = cluster.redis_connection().await;
    let channel = format!("{}{{r:{room}}}", cluster.prefix);
    let reconnects_before = metric(&cluster.nodes[0].url("/metrics"), RECONNECTS).await;
    const ROUNDS: usize = 5;
    const BURST: usize = 5;

    // Act: drop every subscriber, send a burst at once, wait for both nodes
    // to be subscribed again; again.
    for round in 0..ROUNDS {
        let _: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut admin)
            .await
            .unwrap();
        for n in 0..BURST {
            alice
                .send(json!({"type": "message", "room": room, "content": format!("{round}.{n}")}))
                .await;
        }
        eventually("both nodes subscribed again", || {
            let (mut admin, channel) = (admin.clone(), channel.clone());
            async move {
                let (_, count): (String, i64) = redis::cmd("PUBSUB")
                    .arg("NUMSUB")
                    .arg(&channel)
                    .query_async(&mut admin)
                    .await
                    .ok()?;
                (count == 2).then_some(())
            }
        })
        .await;
    }
    alice
        .send(json!({"type": "message", "room": room, "content": "done"}))
        .await;

    // Assert: both members got every message once, in history order.
    let mut sequences = Vec::new();
    for client in [&mut alice, &mut bob] {
        let (mut frames, last) = client
            .collect_until(|f| f["type"] == "message" && f["content"] == "done")
            .await;
        assert!(
            frames.iter().all(|f| f["type"] != "error"),
            "every send accepted: {frames:?}"
        );
        frames.push(last);
        sequences.push(ids(&frames));
    }
    let history = room_history(&mut bob, &room).await;
    let expected = ids(&history)[1..].to_vec();
    assert_eq!(expected.len(), ROUNDS * BURST + 1);
    for seen in sequences {
        assert_eq!(seen, expected, "once each, in order");
    }
    let reconnects =
        metric(&cluster.nodes[0].url("/metrics"), RECONNECTS).await - reconnects_before;
    let filled = metric(&cluster.nodes[0].url("/metrics"), GAP_FILL).await;
    eprintln!("subscriber reconnects: {reconnects}, gap-filled messages: {filled}");
    assert!(reconnects >= (ROUNDS * 2) as f64, "{reconnects}");
}

/// The pub/sub connections of the cluster's Redis: client id → last command.
async fn subscribers(admin: &mut RedisConnection) -> Vec<(String, String)> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(admin)
        .await
        .unwrap();
    list.lines()
        .map(|line| {
            let field = |name: &str| {
                line.split(' ')
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                    .unwrap_or_default()
                    .to_owned()
            };
            (field("id"), field("cmd"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribed_nodes_keepalive_ping_does_not_drop_its_subscriber_connection() {
    // Arrange: both nodes subscribed to a room and a user channel.
    let (cluster, room, mut alice, mut bob) = two_members().await;
    let mut admin = cluster.redis_connection().await;
    let before: BTreeSet<String> = subscribers(&mut admin)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(before.len(), 2, "one subscriber connection per node");

    // Act: wait until both connections answered a keepalive PING while
    // subscribed (every 2 s).
    eventually("a keepalive ping on each subscriber connection", || {
        let (mut admin, before) = (admin.clone(), before.clone());
        async move {
            let now = subscribers(&mut admin).await;
            let pinged = now
                .iter()
                .filter(|(id, cmd)| before.contains(id) && cmd == "ping")
                .count();
            (pinged == before.len()).then_some(())
        }
    })
    .await;

    // Assert: the same connections are still there, and ephemeral events
    // (never gap-filled) still flow.
    let after: BTreeSet<String> = subscribers(&mut admin)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(after, before, "no reconnect after a ping");
    alice.send(json!({"type": "typing", "room": room})).await;
    let typing = bob.recv_until(|f| f["type"] == "typing").await;
    assert_eq!(typing["user"], "alice");
}

/// A `switch` whose join of `to` fails must not have left `from`. A Redis
/// outage is the trigger: with the subscriber down, a join is refused with
/// `unavailable` at once and deterministically (the rooms limit or the join
/// rate are checked before anything, so they cannot make the join fail
/// after a leave).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_refused_during_an_outage_keeps_the_client_in_its_room() {
    // Arrange
    let (mut cluster, room, mut alice, mut bob) = two_members().await;
    let elsewhere = unique("elsewhere");
    take_down(&mut cluster, Outage::Stop);
    wait_ready_status(&cluster.nodes, 503).await;

    // Act
    alice
        .send(json!({"type": "switch", "from": room, "to": elsewhere, "ref": "s"}))
        .await;
    let (_, answer) = alice.collect_until(|f| f["ref"] == "s").await;
    bring_back(&mut cluster);

    // Assert: refused, naming the cause, and no `left` came before it.
    assert!(is_unavailable(&answer), "{answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.contains(&elsewhere) && message.contains(&room),
        "the error names the rooms: {answer}"
    );
    wait_ready_status(&cluster.nodes, 200).await;
    wait_presence(&cluster.nodes, &room, &["alice", "bob"]).await;
    let nobody: Vec<String> =
        get_json(&cluster.nodes[1].url(&format!("/api/rooms/{elsewhere}/users"))).await;
    assert!(nobody.is_empty(), "{nobody:?}");
    let (sent, _) = say_until_accepted(&mut bob, &room).await;
    let got = alice
        .recv_until(|f| f["type"] == "message" && f["id"] == sent["id"])
        .await;
    assert_eq!(got, sent, "alice still gets the room's messages");
}
