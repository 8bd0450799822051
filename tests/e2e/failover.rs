//! Failover: a node of a cluster dies without cleanup (SIGKILL) or drains
//! (SIGTERM). Its users leave every view on the surviving nodes, the rooms are
//! told, users with another connection elsewhere stay, and its clients that
//! reconnect elsewhere with `since` miss nothing. Every scenario runs with the
//! nodes on one Redis and on a Redis Cluster.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chorus::config::Settings;
use serde_json::{Value, json};

use crate::support::cluster::on_both_backings;
use crate::support::node::Endpoint;
use crate::support::{
    Backing, Cluster, ProcessNode, TestNode, WsClient, eventually, eventually_within, get_json,
    ids, unique,
};

/// The presence TTL of every node in the crash tests: small, so the dead
/// node's users go quickly.
const TTL_SECS: u64 = 2;
const TTL: Duration = Duration::from_secs(TTL_SECS);
/// How long a dead node's users may stay visible in these tests: the
/// contract's TTL, plus one second of slack for a loaded machine (the design
/// reaps within three quarters of the TTL).
const REAP_BOUND: Duration = Duration::from_secs(TTL_SECS + 1);
/// The TTL of the drain test: long, so only a clean removal passes its bound.
const LONG_TTL_SECS: u64 = 30;
/// "At once" for a drained node's users: far below [`LONG_TTL_SECS`].
const DRAIN_BOUND: Duration = Duration::from_secs(5);
/// The contract's budget from SIGTERM to exit.
const EXIT_BUDGET: Duration = Duration::from_secs(10);

/// A cluster of `n` in-process nodes on `backing` and one real process (the node to
/// crash or drain), all with a presence TTL of `ttl_secs`. Returns once every
/// node sees the process node as live.
async fn cluster_with_process(
    backing: Backing,
    n: usize,
    ttl_secs: u64,
    adjust: impl Fn(&mut Settings),
) -> (Cluster, ProcessNode, String) {
    let cluster = Cluster::start_with_on(backing, n, |s| {
        s.presence_ttl_secs = ttl_secs;
        adjust(s);
    })
    .await;
    let id = cluster.node_id("proc");
    let ttl = ttl_secs.to_string();
    let process = cluster.spawn_process(&id, &[("CHORUS_PRESENCE_TTL_SECS", ttl.as_str())]);
    for node in &cluster.nodes {
        let url = node.url("/api/stats");
        let id = id.clone();
        eventually("the process node is listed as live", || {
            let (url, id) = (url.clone(), id.clone());
            async move { live_nodes(&url).await.contains(&id).then_some(()) }
        })
        .await;
    }
    (cluster, process, id)
}

async fn live_nodes(stats_url: &str) -> BTreeSet<String> {
    let stats: Value = get_json(stats_url).await;
    stats["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n.as_str().expect("node id").to_owned())
        .collect()
}

async fn users(node: &TestNode) -> Vec<String> {
    get_json(&node.url("/api/users")).await
}

async fn room_users(node: &TestNode, room: &str) -> Vec<String> {
    get_json(&node.url(&format!("/api/rooms/{room}/users"))).await
}

fn is_presence(frame: &Value, room: &str, user: &str, event: &str) -> bool {
    frame["type"] == "presence"
        && frame["room"] == room
        && frame["user"] == user
        && frame["event"] == event
}

/// Waits, within what is left of `bound` since `start`, for a frame
/// matching `pred`; returns it, the frames skipped, and when it came.
async fn within(
    client: &mut WsClient,
    start: Instant,
    bound: Duration,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> (Vec<Value>, Value, Duration) {
    let left = bound.saturating_sub(start.elapsed());
    let (skipped, frame) = tokio::time::timeout(left, client.collect_until(pred))
        .await
        .unwrap_or_else(|_| panic!("no {what} within {bound:?}"));
    (skipped, frame, start.elapsed())
}

/// Waits until `client` has heard a presence `leave` for every (room, user)
/// of `expected`, in any order, within `bound` since `start`. Returns when
/// each came, and every other frame read meanwhile.
async fn leaves_within(
    client: &mut WsClient,
    expected: &[(&str, &str)],
    start: Instant,
    bound: Duration,
) -> (Vec<(String, Duration)>, Vec<Value>) {
    let mut pending: Vec<(&str, &str)> = expected.to_vec();
    let mut heard = Vec::new();
    let mut others = Vec::new();
    while !pending.is_empty() {
        let (skipped, frame, at) = within(client, start, bound, "presence leave", |f| {
            pending
                .iter()
                .any(|(room, user)| is_presence(f, room, user, "leave"))
        })
        .await;
        others.extend(skipped);
        pending.retain(|(room, user)| !is_presence(&frame, room, user, "leave"));
        heard.push((format!("{}/{}", frame["room"], frame["user"]), at));
    }
    (heard, others)
}

/// The ids of a room's stored messages, oldest first (at most 100).
async fn room_history(client: &mut WsClient, room: &str) -> Vec<String> {
    let page = client
        .request(json!({"type": "history", "room": room, "limit": 100}))
        .await;
    assert_eq!(page["type"], "history", "{page}");
    ids(&page["messages"])
}

on_both_backings!(
    users_of_a_killed_node_leave_every_view_and_the_rooms_are_told_within_the_ttl,
    a_user_also_connected_to_a_surviving_node_stays_online_and_in_the_room_when_a_node_dies,
    clients_of_a_killed_node_rejoin_elsewhere_with_since_and_get_exactly_what_they_missed,
    sigterm_on_a_cluster_node_closes_with_1001_and_removes_its_users_and_itself_at_once,
);

async fn users_of_a_killed_node_leave_every_view_and_the_rooms_are_told_within_the_ttl(
    backing: Backing,
) {
    // Arrange: two surviving nodes with a watcher each; alice (two rooms) and
    // bob (one room) only on the node about to crash.
    let (cluster, mut doomed, doomed_id) = cluster_with_process(backing, 2, TTL_SECS, |_| {}).await;
    let (room, other) = (unique("room"), unique("other"));
    let mut watchers = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        let mut watcher = WsClient::connect(&node.ws_url(&format!("watcher{i}"))).await;
        watcher.join(&room).await;
        watchers.push(watcher);
    }
    watchers[0].join(&other).await;
    let mut alice = WsClient::connect(&doomed.ws_url("alice")).await;
    alice.join(&room).await;
    alice.join(&other).await;
    let mut bob = WsClient::connect(&doomed.ws_url("bob")).await;
    bob.join(&room).await;
    for watcher in &mut watchers {
        watcher
            .recv_until(|f| is_presence(f, &room, "bob", "join"))
            .await;
    }
    for node in &cluster.nodes {
        assert_eq!(users(node).await, ["alice", "bob", "watcher0", "watcher1"]);
    }

    // Act
    doomed.sigkill();
    let killed = Instant::now();

    // Assert: every watcher hears every leave of its rooms within the bound.
    let mut first_leave = REAP_BOUND;
    for (i, watcher) in watchers.iter_mut().enumerate() {
        let mut expected = vec![(room.as_str(), "alice"), (room.as_str(), "bob")];
        if i == 0 {
            expected.push((other.as_str(), "alice"));
        }
        let (heard, _) = leaves_within(watcher, &expected, killed, REAP_BOUND).await;
        for (what, at) in heard {
            eprintln!("measured: SIGKILL -> presence leave {what} on node {i}: {at:?}");
            first_leave = first_leave.min(at);
        }
    }
    eprintln!(
        "measured: SIGKILL -> first presence leave: {first_leave:?} (TTL {TTL:?}, bound {REAP_BOUND:?})"
    );
    // The reap is one atomic step before the announcement: every view agrees
    // as soon as the leave is heard.
    for node in &cluster.nodes {
        assert_eq!(users(node).await, ["watcher0", "watcher1"]);
        assert_eq!(room_users(node, &room).await, ["watcher0", "watcher1"]);
        assert_eq!(room_users(node, &other).await, ["watcher0"]);
        assert!(
            !live_nodes(&node.url("/api/stats"))
                .await
                .contains(&doomed_id),
            "the dead node is no longer listed"
        );
    }
    let mut fresh = WsClient::connect(&cluster.nodes[1].ws_url("fresh")).await;
    let joined = fresh.join(&room).await;
    assert_eq!(joined["members"], json!(["fresh", "watcher0", "watcher1"]));
    let joined = fresh.join(&other).await;
    assert_eq!(joined["members"], json!(["fresh", "watcher0"]));
    assert!(killed.elapsed() < REAP_BOUND, "{:?}", killed.elapsed());
}

async fn a_user_also_connected_to_a_surviving_node_stays_online_and_in_the_room_when_a_node_dies(
    backing: Backing,
) {
    // Arrange: carol on the doomed node and on node 0; alice only on the
    // doomed node (her leave shows that the reap happened).
    let (cluster, mut doomed, _) = cluster_with_process(backing, 2, TTL_SECS, |_| {}).await;
    let room = unique("room");
    let mut watcher = WsClient::connect(&cluster.nodes[1].ws_url("watcher")).await;
    watcher.join(&room).await;
    let mut carol_doomed = WsClient::connect(&doomed.ws_url("carol")).await;
    carol_doomed.join(&room).await;
    let mut carol = WsClient::connect(&cluster.nodes[0].ws_url("carol")).await;
    carol.join(&room).await;
    let mut alice = WsClient::connect(&doomed.ws_url("alice")).await;
    alice.join(&room).await;
    watcher
        .recv_until(|f| is_presence(f, &room, "alice", "join"))
        .await;

    // Act
    doomed.sigkill();
    let killed = Instant::now();

    // Assert: alice leaves, carol does not, now or by the time her next
    // message arrives.
    let (heard, before) =
        leaves_within(&mut watcher, &[(&room, "alice")], killed, REAP_BOUND).await;
    eprintln!("measured: SIGKILL -> presence leave (user on the dead node only): {heard:?}");
    let marker = carol.say(&room, "still here").await;
    let (after, _) = watcher
        .collect_until(|f| f["type"] == "message" && f["id"] == marker["id"])
        .await;
    for frame in before.iter().chain(&after) {
        assert!(
            !is_presence(frame, &room, "carol", "leave"),
            "no leave for carol: {frame}"
        );
    }
    for node in &cluster.nodes {
        assert_eq!(users(node).await, ["carol", "watcher"]);
        assert_eq!(room_users(node, &room).await, ["carol", "watcher"]);
    }
    let mut fresh = WsClient::connect(&cluster.nodes[1].ws_url("fresh")).await;
    let joined = fresh.join(&room).await;
    assert_eq!(joined["members"], json!(["carol", "fresh", "watcher"]));
}

async fn clients_of_a_killed_node_rejoin_elsewhere_with_since_and_get_exactly_what_they_missed(
    backing: Backing,
) {
    // Arrange: a sender on node 0; alice and bob on the doomed node have seen
    // every message up to `last_seen`.
    let (cluster, mut doomed, _) =
        cluster_with_process(backing, 2, TTL_SECS, |s| s.rate_limit = 0).await;
    const MISSED: usize = 20;
    const LIVE: usize = 20;
    let room = unique("room");
    let mut sender = WsClient::connect(&cluster.nodes[0].ws_url("sender")).await;
    sender.join(&room).await;
    let mut gone = Vec::new();
    for user in ["alice", "bob"] {
        let mut client = WsClient::connect(&doomed.ws_url(user)).await;
        client.join(&room).await;
        gone.push(client);
    }
    let mut last_seen = String::new();
    for n in 0..5 {
        let sent = sender.say(&room, &format!("before {n}")).await;
        for client in &mut gone {
            let got = client.recv_until(|f| f["type"] == "message").await;
            assert_eq!(got, sent);
        }
        last_seen = sent["id"].as_str().unwrap().to_owned();
    }

    // Act: the node dies; the room goes on without them.
    doomed.sigkill();
    drop(gone);
    let mut missed = Vec::new();
    for n in 0..MISSED {
        let sent = sender.say(&room, &format!("missed {n}")).await;
        missed.push(sent["id"].as_str().unwrap().to_owned());
    }
    // alice comes back on node 0 while the room is quiet.
    let mut alice = WsClient::connect(&cluster.nodes[0].ws_url("alice")).await;
    let alice_joined = alice
        .request(json!({"type": "join", "room": room, "since": last_seen}))
        .await;
    // bob comes back on node 1 while the sender keeps talking.
    let talking = tokio::spawn({
        let room = room.clone();
        async move {
            let mut live = Vec::new();
            for n in 0..LIVE {
                let sent = sender.say(&room, &format!("live {n}")).await;
                live.push(sent["id"].as_str().unwrap().to_owned());
            }
            (sender, live)
        }
    });
    let mut bob = WsClient::connect(&cluster.nodes[1].ws_url("bob")).await;
    let bob_joined = bob
        .request(json!({"type": "join", "room": room, "since": last_seen}))
        .await;
    let (mut sender, live) = talking.await.unwrap();

    // Assert: alice got exactly the missed messages; bob got the missed ones
    // and the live ones, each once, in the order of the room's history.
    let history = room_history(&mut sender, &room).await;
    let after_last_seen: Vec<String> = history
        .iter()
        .skip_while(|id| **id != last_seen)
        .skip(1)
        .cloned()
        .collect();
    let expected: Vec<String> = missed.iter().chain(&live).cloned().collect();
    assert_eq!(
        after_last_seen, expected,
        "history holds every message once"
    );

    assert_eq!(alice_joined["type"], "joined", "{alice_joined}");
    assert!(alice_joined.get("truncated").is_none(), "{alice_joined}");
    assert_eq!(
        ids(&alice_joined["history"]),
        missed,
        "exactly what alice missed"
    );

    assert_eq!(bob_joined["type"], "joined", "{bob_joined}");
    assert!(bob_joined.get("truncated").is_none(), "{bob_joined}");
    let mut bob_seen = ids(&bob_joined["history"]);
    let newest = live.last().unwrap().clone();
    if bob_seen.last() != Some(&newest) {
        let (frames, last) = bob
            .collect_until(|f| f["type"] == "message" && f["id"] == newest.as_str())
            .await;
        bob_seen.extend(
            frames
                .iter()
                .chain([&last])
                .filter(|f| f["type"] == "message")
                .map(|f| f["id"].as_str().unwrap().to_owned()),
        );
    }
    assert_eq!(
        bob_seen, expected,
        "bob: every message once, in history order"
    );
    // alice, who stayed, now gets the live ones too, and nothing twice.
    let (frames, last) = alice
        .collect_until(|f| f["type"] == "message" && f["id"] == newest.as_str())
        .await;
    let alice_live: Vec<String> = frames
        .iter()
        .chain([&last])
        .filter(|f| f["type"] == "message")
        .map(|f| f["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(alice_live, live);
}

async fn sigterm_on_a_cluster_node_closes_with_1001_and_removes_its_users_and_itself_at_once(
    backing: Backing,
) {
    // Arrange: a long TTL, so a reap could not pass the short bound below.
    let (cluster, mut draining, _) = cluster_with_process(backing, 1, LONG_TTL_SECS, |_| {}).await;
    let node = &cluster.nodes[0];
    let room = unique("room");
    let mut watcher = WsClient::connect(&node.ws_url("watcher")).await;
    watcher.join(&room).await;
    let mut clients = Vec::new();
    for user in ["dave", "erin", "erin"] {
        let mut client = WsClient::connect(&draining.ws_url(user)).await;
        client.join(&room).await;
        clients.push(client);
    }
    watcher
        .recv_until(|f| is_presence(f, &room, "erin", "join"))
        .await;
    assert_eq!(users(node).await, ["dave", "erin", "watcher"]);

    // Act
    draining.sigterm();
    let signalled = Instant::now();

    // Assert
    for client in &mut clients {
        assert_eq!(client.expect_close().await, 1001);
    }
    for client in clients {
        client.close().await;
    }
    let expected = [(room.as_str(), "dave"), (room.as_str(), "erin")];
    let (heard, others) = leaves_within(&mut watcher, &expected, signalled, DRAIN_BOUND).await;
    eprintln!("measured: SIGTERM -> presence leave: {heard:?}");
    assert!(
        others.iter().all(|f| f["type"] != "presence"),
        "one leave per user: {others:?}"
    );
    let users_url = node.url("/api/users");
    eventually_within("the drained node's users gone", DRAIN_BOUND, || {
        let url = users_url.clone();
        async move { (get_json::<Vec<String>>(&url).await == ["watcher"]).then_some(()) }
    })
    .await;
    eprintln!(
        "measured: SIGTERM -> drained node's users gone from /api/users: {:?}",
        signalled.elapsed()
    );
    assert_eq!(room_users(node, &room).await, ["watcher"]);
    let stats_url = node.url("/api/stats");
    let expected = BTreeSet::from([node.node_id.clone()]);
    eventually_within("the drained node unlisted", DRAIN_BOUND, || {
        let (url, expected) = (stats_url.clone(), expected.clone());
        async move { (live_nodes(&url).await == expected).then_some(()) }
    })
    .await;
    assert!(
        signalled.elapsed() < DRAIN_BOUND,
        "well under the TTL: {:?}",
        signalled.elapsed()
    );
    let left = EXIT_BUDGET.saturating_sub(signalled.elapsed());
    let status = tokio::task::block_in_place(|| draining.wait_exit(left));
    assert_eq!(status.code(), Some(0), "{status}");
}
