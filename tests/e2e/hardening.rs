//! Defects found by trying chorus as an operator and an attacker would: a
//! node restarted under its old id, DMs across a Redis restart, presence
//! restores under churn. Each test failed before its fix. The restart under
//! the same id runs on one Redis and on a Redis Cluster; the others act on
//! the one Redis itself (restart, FLUSHDB, pause).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::cluster::on_both_backings;
use crate::support::node::Endpoint;
use crate::support::{
    Backing, Cluster, WsClient, eventually, eventually_within, get_json, unique, wait_ready,
};

/// The presence TTL of the restart test.
const TTL_SECS: u64 = 3;

fn is_presence(frame: &Value, room: &str, user: &str, event: &str) -> bool {
    frame["type"] == "presence"
        && frame["room"] == room
        && frame["user"] == user
        && frame["event"] == event
}

on_both_backings!(
    a_node_restarted_under_its_id_takes_it_over_and_its_former_users_leave_within_the_ttl
);

async fn a_node_restarted_under_its_id_takes_it_over_and_its_former_users_leave_within_the_ttl(
    backing: Backing,
) {
    // Arrange: bob watches the room from a surviving node; alice is on the
    // node that will crash and come back under the same id at once, as
    // compose, StatefulSets and systemd restart nodes.
    let cluster = Cluster::start_with_on(backing, 1, |s| s.presence_ttl_secs = TTL_SECS).await;
    let id = cluster.node_id("fixed");
    let ttl = TTL_SECS.to_string();
    let env = [("CHORUS_PRESENCE_TTL_SECS", ttl.as_str())];
    let mut first = cluster.spawn_process(&id, &env);
    // A node listens before its subscriber is up, and closes a connection
    // it cannot register with 1013: wait until each is ready.
    wait_ready(&first.url("/ready")).await;
    let room = unique("room");
    let mut bob = WsClient::connect(&cluster.nodes[0].ws_url("bob")).await;
    bob.join(&room).await;
    let mut alice = WsClient::connect(&first.ws_url("alice")).await;
    alice.join(&room).await;
    bob.recv_until(|f| is_presence(f, &room, "alice", "join"))
        .await;

    // Act
    first.sigkill();
    let killed = Instant::now();
    let second = cluster.spawn_process(&id, &env);
    wait_ready(&second.url("/ready")).await;
    let mut carol = WsClient::connect(&second.ws_url("carol")).await;
    carol.join(&room).await;

    // Assert: alice's leave is announced within the TTL, and every view
    // loses her; carol, of the new incarnation, stays.
    let bound = Duration::from_secs(TTL_SECS);
    let left = tokio::time::timeout(
        bound.saturating_sub(killed.elapsed()),
        bob.recv_until(|f| is_presence(f, &room, "alice", "leave")),
    )
    .await;
    assert!(left.is_ok(), "no leave for alice within {bound:?}");
    eprintln!(
        "measured: SIGKILL + restart under the same id -> leave of a former user: {:?}",
        killed.elapsed()
    );
    let node = &cluster.nodes[0];
    let users: Vec<String> = get_json(&node.url("/api/users")).await;
    assert_eq!(users, ["bob", "carol"]);
    let members: Vec<String> = get_json(&node.url(&format!("/api/rooms/{room}/users"))).await;
    assert_eq!(members, ["bob", "carol"]);
    drop(alice);
    carol.close().await;
    eventually("carol leaves for good", || async {
        let users: Vec<String> = get_json(&node.url("/api/users")).await;
        (users == ["bob"]).then_some(())
    })
    .await;
}

/// What one receiver saw of the DMs a sender numbered.
fn numbers(frames: &[Value], kind: &str) -> Vec<u64> {
    frames
        .iter()
        .filter(|f| f["type"] == kind)
        .filter_map(|f| f["content"].as_str()?.strip_prefix("n")?.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dm_and_room_message_accepted_across_a_redis_restart_reaches_open_connections() {
    // Arrange: alice on node 0 and bob on node 1 share a room; both send
    // every 20 ms throughout, alice DMs to bob and messages to the room.
    let mut cluster = Cluster::start_with(2, |s| {
        s.rate_limit = 0;
        s.dm_rate = 0;
    })
    .await;
    let room = unique("room");
    let mut alice = WsClient::connect(&cluster.nodes[0].ws_url("alice")).await;
    let mut bob = WsClient::connect(&cluster.nodes[1].ws_url("bob")).await;
    alice.join(&room).await;
    bob.join(&room).await;
    const PERIOD: Duration = Duration::from_millis(20);
    const DOWN: Duration = Duration::from_secs(3);
    const AFTER: Duration = Duration::from_secs(4);

    // Act: alice sends; Redis dies mid-way and comes back empty.
    let mut n = 0u64;
    let mut replies = Vec::new();
    let mut send_for = async |client: &mut WsClient, span: Duration| {
        let until = Instant::now() + span;
        while Instant::now() < until {
            for (kind, frame) in [
                (
                    "dm",
                    json!({"type": "dm", "to": "bob", "content": format!("n{n}")}),
                ),
                (
                    "message",
                    json!({"type": "message", "room": room, "content": format!("n{n}")}),
                ),
            ] {
                let reply = try_request(client, frame, Duration::from_secs(3)).await;
                replies.push((kind, n, reply));
            }
            n += 1;
            tokio::time::sleep(PERIOD).await;
        }
    };
    send_for(&mut alice, Duration::from_secs(1)).await;
    // Blocking: off the runtime's worker, so the in-process nodes' tasks
    // queued on it do not starve meanwhile.
    tokio::task::block_in_place(|| cluster.redis_mut().kill());
    send_for(&mut alice, DOWN).await;
    tokio::task::block_in_place(|| cluster.redis_mut().restart());
    send_for(&mut alice, AFTER).await;
    let end = alice
        .request(json!({"type": "dm", "to": "bob", "content": "end"}))
        .await;
    assert_eq!(end["type"], "dm", "the last DM goes through: {end}");

    // Assert: every send was answered, and bob's open connection got every
    // stored DM and message, once.
    let mut frames = Vec::new();
    while let Some(frame) = bob.recv_within(Duration::from_secs(3)).await {
        if frame["type"] == "dm" && frame["content"] == "end" {
            break;
        }
        frames.push(frame);
    }
    let mut stored = BTreeSet::new();
    for (kind, target) in [
        ("dm", json!({"with": "bob"})),
        ("message", json!({"room": room})),
    ] {
        for message in full_history(&mut alice, target).await {
            if let Some(n) = message["content"]
                .as_str()
                .and_then(|c| c.strip_prefix('n'))
            {
                stored.insert((kind.to_owned(), n.parse::<u64>().unwrap()));
            }
        }
    }
    // Accepted: echoed, or found stored (Redis came back empty, so what
    // was stored before the outage is known by its echo alone).
    let mut accepted = stored.clone();
    let sent = replies.len();
    let (mut echoed, mut unavailable, mut unanswered) = (0, 0, 0);
    for (kind, n, reply) in &replies {
        match reply {
            Some(reply) if reply["type"] == *kind => {
                echoed += 1;
                accepted.insert((kind.to_string(), *n));
            }
            Some(reply) => {
                assert_eq!(reply["code"], "unavailable", "{reply}");
                assert!(
                    !stored.contains(&(kind.to_string(), *n)),
                    "refused but stored: {kind} {n}"
                );
                unavailable += 1;
            }
            None => unanswered += 1,
        }
    }
    let mut lost = 0;
    let mut duplicated = 0;
    let mut delivered = 0;
    for kind in ["dm", "message"] {
        let got = numbers(&frames, kind);
        delivered += got.len();
        let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
        for n in &got {
            *seen.entry(*n).or_default() += 1;
        }
        duplicated += seen.values().filter(|&&c| c > 1).count();
        lost += accepted
            .iter()
            .filter(|(k, n)| k == kind && !seen.contains_key(n))
            .count();
    }
    eprintln!(
        "measured: redis restart under DMs and messages: sent {sent}, accepted {}, echoed {echoed}, unavailable {unavailable}, unanswered {unanswered}, delivered to the other node {delivered}, lost {lost}, duplicated {duplicated}",
        accepted.len()
    );
    assert!(unavailable > 0, "the outage was felt");
    assert_eq!(unanswered, 0, "every send is answered");
    assert_eq!(sent, accepted.len() + unavailable);
    assert_eq!((lost, duplicated), (0, 0));
}

/// Sends `frame` with a fresh `ref`; the reply to it, or `None` if none
/// came before a silence of `wait`.
async fn try_request(client: &mut WsClient, mut frame: Value, wait: Duration) -> Option<Value> {
    let reference = unique("ref");
    frame["ref"] = json!(reference);
    client.send(frame).await;
    loop {
        let reply = client.recv_within(wait).await?;
        if reply["ref"] == reference.as_str() {
            return Some(reply);
        }
    }
}

/// Every stored message of a room or DM pair, oldest first, paging back.
async fn full_history(client: &mut WsClient, target: Value) -> Vec<Value> {
    let mut all: Vec<Value> = Vec::new();
    loop {
        let mut frame = json!({"type": "history", "limit": 100});
        for (k, v) in target.as_object().unwrap() {
            frame[k] = v.clone();
        }
        if let Some(oldest) = all.first() {
            frame["before"] = oldest["id"].clone();
        }
        let page = client.request(frame).await;
        let messages = page["messages"].as_array().unwrap().clone();
        if messages.is_empty() {
            return all;
        }
        all.splice(0..0, messages);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_restores_under_churn_count_every_connection_exactly_once() {
    // Arrange: one node, short upkeep; a stable set of users and a churning
    // set joining and leaving while Redis keeps losing the node's entries.
    let cluster = Cluster::start_with(1, |s| s.presence_ttl_secs = 1).await;
    let node = &cluster.nodes[0];
    let room = unique("room");
    let mut admin = cluster.redis_connection().await;
    let mut stable = Vec::new();
    for i in 0..4 {
        let mut client = WsClient::connect(&node.ws_url(&format!("stable{i}"))).await;
        client.join(&room).await;
        stable.push(client);
    }

    // Act: for a few seconds, churners connect, join, leave and disconnect
    // while every node entry and tally is deleted over and over (as a
    // Redis restart does), forcing restores that race the churn.
    let churn_until = Instant::now() + Duration::from_secs(4);
    let url = node.ws_url("");
    let churners: Vec<_> = (0..4)
        .map(|i| {
            let (url, room) = (url.clone(), room.clone());
            tokio::spawn(async move {
                let mut rounds = 0;
                while Instant::now() < churn_until {
                    let mut c = WsClient::connect(&format!("{url}churn{i}")).await;
                    c.join(&room).await;
                    c.request(json!({"type": "leave", "room": room})).await;
                    c.join(&room).await;
                    c.close().await;
                    rounds += 1;
                }
                rounds
            })
        })
        .collect();
    while Instant::now() < churn_until {
        let _: () = redis::cmd("FLUSHDB").query_async(&mut admin).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let mut rounds = 0;
    for churner in churners {
        rounds += churner.await.unwrap();
    }

    // Assert: once the churn is over and the last restore ran, exactly the
    // stable users are online and in the room, each counted once.
    let expected: Vec<String> = (0..4).map(|i| format!("stable{i}")).collect();
    eventually_within(
        "the tallies settle on the stable users",
        Duration::from_secs(10),
        || {
            let (mut admin, prefix) = (admin.clone(), cluster.prefix.clone());
            let (expected, room) = (expected.clone(), room.clone());
            async move {
                // The online tally is split over partitions.
                let partitions: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{prefix}*:online"))
                    .query_async(&mut admin)
                    .await
                    .ok()?;
                let mut online = BTreeMap::new();
                for key in partitions {
                    let part: BTreeMap<String, i64> = redis::cmd("HGETALL")
                        .arg(key)
                        .query_async(&mut admin)
                        .await
                        .ok()?;
                    online.extend(part);
                }
                let mut members: BTreeMap<String, i64> = redis::cmd("HGETALL")
                    .arg(format!("{prefix}{{r:{room}}}:m"))
                    .query_async(&mut admin)
                    .await
                    .ok()?;
                // The version of the room's member count, not a user.
                members.remove(":v");
                let want: BTreeMap<String, i64> = expected.iter().map(|u| (u.clone(), 1)).collect();
                (online == want && members == want).then_some(())
            }
        },
    )
    .await;
    eprintln!("measured: {rounds} churn rounds raced presence restores");
    for client in stable {
        client.close().await;
    }
    eventually("everyone left", || async {
        let users: Vec<String> = get_json(&node.url("/api/users")).await;
        let members: Vec<String> = get_json(&node.url(&format!("/api/rooms/{room}/users"))).await;
        (users.is_empty() && members.is_empty()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_that_stop_reading_are_dropped_after_the_write_timeout_and_one_address_cannot_overload_the_node()
 {
    // Arrange: one node behind a trusted proxy header; three readers from
    // one address join a room and never read again.
    const WRITE_TIMEOUT_SECS: u64 = 2;
    let cluster = Cluster::start_with(1, |s| {
        s.rate_limit = 0;
        s.idle_timeout_secs = 25;
        s.write_timeout_secs = WRITE_TIMEOUT_SECS;
        s.max_buffered_bytes = 8 * 1024 * 1024;
        s.trusted_proxy_header = Some("X-Real-IP".to_owned());
    })
    .await;
    let node = &cluster.nodes[0];
    let room = unique("room");
    let mut stuck = Vec::new();
    for i in 0..3 {
        let mut ws = crate::support::raw::connect_with_small_window_from(
            node,
            &format!("stuck{i}"),
            "203.0.113.7",
        )
        .await;
        crate::support::raw::raw_send(&mut ws, json!({"type": "join", "room": room})).await;
        stuck.push(ws);
    }
    eventually("the stuck readers are in the room", || async {
        let members: Vec<String> = get_json(&node.url(&format!("/api/rooms/{room}/users"))).await;
        (members.len() == 3).then_some(())
    })
    .await;
    let metrics_url = node.url("/metrics");
    let gauges = async |url: &str| {
        let page = crate::support::scrape(url).await;
        (
            crate::support::sample(&page, "chorus_outbound_buffered_bytes", ""),
            crate::support::sample(&page, "chorus_connections", ""),
        )
    };

    // Act: 900 posts of 4 000 bytes of content (escaped to about 8 000 in
    // the frame) to the room, eight at a time.
    let started = Instant::now();
    let content = "\"".repeat(4000);
    let client = reqwest::Client::new();
    let url = node.url(&format!("/api/rooms/{room}/messages"));
    let mut posted = 0;
    for _ in 0..(900 / 8) {
        let batch: Vec<_> = (0..8)
            .map(|_| {
                client
                    .post(&url)
                    .json(&json!({"user": "flood", "content": content}))
                    .send()
            })
            .collect();
        for response in futures_util::future::join_all(batch).await {
            assert_eq!(response.unwrap().status(), 201);
            posted += 1;
        }
        if posted % 200 == 0 {
            let (buffered, connections) = gauges(&metrics_url).await;
            eprintln!(
                "measured: slow-reader attack at {:?}: buffered {:.0} KiB, connections {connections}",
                started.elapsed(),
                buffered / 1024.0
            );
        }
    }
    let flood_done = started.elapsed();
    // Meanwhile another address still gets in: one address cannot push the
    // node into `overloaded` by itself.
    let victim = WsClient::try_connect_with_headers(
        &node.ws_url("victim"),
        &[("X-Real-IP", "198.51.100.1")],
    )
    .await;
    assert!(
        victim.is_ok(),
        "another address is refused: {:?}",
        victim.err()
    );

    // Assert: within the write timeout (plus slack) of the flood's end the
    // stuck readers are gone and their bytes released.
    let bound = Duration::from_secs(WRITE_TIMEOUT_SECS + 3);
    eventually_within("the stuck readers are dropped", bound, || async {
        let (buffered, connections) = gauges(&metrics_url).await;
        (buffered < 64.0 * 1024.0 && connections <= 1.0).then_some(())
    })
    .await;
    eprintln!(
        "measured: flood of {posted} posts took {flood_done:?}; settled at {:?}",
        started.elapsed()
    );
    drop(stuck);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_below_every_byte_limit_is_dropped_after_the_write_timeout() {
    // Arrange: one stuck reader; less output than any queue or share limit,
    // but more than the kernel's socket buffers take.
    const WRITE_TIMEOUT_SECS: u64 = 2;
    let cluster = Cluster::start_with(1, |s| {
        s.rate_limit = 0;
        s.outbound_queue = 4096;
        s.idle_timeout_secs = 25;
        s.write_timeout_secs = WRITE_TIMEOUT_SECS;
        s.trusted_proxy_header = Some("X-Real-IP".to_owned());
    })
    .await;
    let node = &cluster.nodes[0];
    let room = unique("room");
    let mut ws =
        crate::support::raw::connect_with_small_window_from(node, "stuck", "203.0.113.8").await;
    crate::support::raw::raw_send(&mut ws, json!({"type": "join", "room": room})).await;
    eventually("the stuck reader is in the room", || async {
        let members: Vec<String> = get_json(&node.url(&format!("/api/rooms/{room}/users"))).await;
        (members.len() == 1).then_some(())
    })
    .await;

    // Act: 1 200 messages of 4 000 quotes (8 000 bytes escaped): about
    // 10 MB, more than loopback's socket buffers hold.
    let client = reqwest::Client::new();
    let url = node.url(&format!("/api/rooms/{room}/messages"));
    let content = "\"".repeat(4000);
    for _ in 0..(1200 / 8) {
        let batch: Vec<_> = (0..8)
            .map(|_| {
                client
                    .post(&url)
                    .json(&json!({"user": "talker", "content": content}))
                    .send()
            })
            .collect();
        for response in futures_util::future::join_all(batch).await {
            assert_eq!(response.unwrap().status(), 201);
        }
    }
    let posted = Instant::now();

    // Assert: dropped within the write timeout, its bytes released, and
    // counted as a slow consumer.
    let metrics_url = node.url("/metrics");
    eventually_within(
        "the stuck reader is dropped",
        Duration::from_secs(WRITE_TIMEOUT_SECS + 4),
        || async {
            let page = crate::support::scrape(&metrics_url).await;
            let connections = crate::support::sample(&page, "chorus_connections", "");
            let buffered = crate::support::sample(&page, "chorus_outbound_buffered_bytes", "");
            (connections == 0.0 && buffered == 0.0).then_some(())
        },
    )
    .await;
    eprintln!(
        "measured: a reader that stopped reading was dropped {:?} after the last post (write timeout {WRITE_TIMEOUT_SECS}s)",
        posted.elapsed()
    );
    let page = crate::support::scrape(&metrics_url).await;
    assert!(crate::support::sample(&page, "chorus_slow_consumer_disconnects_total", "") >= 1.0);
    assert!(
        crate::support::sample(&page, "chorus_connections_closed_total", "code=\"1013\"") >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_redis_stall_first_joins_do_not_queue_behind_each_other_nor_does_readiness() {
    // Arrange: a node on a Redis that will stall (SIGSTOP: sockets open,
    // nothing answered), and six clients ready to join six new rooms.
    let cluster = Cluster::start(1).await;
    let node = &cluster.nodes[0];
    let mut clients = Vec::new();
    for i in 0..6 {
        clients.push(WsClient::connect(&node.ws_url(&format!("joiner{i}"))).await);
    }

    // Act: stall Redis, then all join at once, and ask for readiness.
    cluster.redis().pause();
    let stalled = Instant::now();
    let joins: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                let reply = client
                    .request(json!({"type": "join", "room": unique("room")}))
                    .await;
                (reply, stalled.elapsed())
            })
        })
        .collect();
    let ready = crate::support::get_status(&node.url("/ready")).await;
    let ready_after = stalled.elapsed();
    let mut slowest = Duration::ZERO;
    for join in joins {
        let (reply, after) = join.await.unwrap();
        assert_eq!(reply["code"], "unavailable", "{reply}");
        slowest = slowest.max(after);
    }
    cluster.redis().resume();

    // Assert: each join fails on its own deadline (a subscribe waits at most
    // 4 s), not one after another; readiness answers within its own.
    eprintln!(
        "measured: redis stalled: 6 concurrent first joins all answered unavailable by {slowest:?}; /ready {ready:?} after {ready_after:?}"
    );
    assert!(
        slowest < Duration::from_secs(6),
        "joins queued: {slowest:?}"
    );
    assert_eq!(ready, Some(503));
    assert!(ready_after < Duration::from_secs(3), "{ready_after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_refused_during_a_stall_leaves_the_users_other_connection_online_and_reachable()
 {
    // Arrange: alice and bob online; Redis stalls.
    let cluster = Cluster::start_with(1, |s| s.presence_ttl_secs = 2).await;
    let node = &cluster.nodes[0];
    let mut alice = WsClient::connect(&node.ws_url("alice")).await;
    let mut bob = WsClient::connect(&node.ws_url("bob")).await;
    cluster.redis().pause();

    // Act: a second connection of alice cannot be registered and is closed.
    let (mut second, _) = tokio::time::timeout(
        crate::support::TIMEOUT,
        tokio_tungstenite::connect_async(node.ws_url("alice")),
    )
    .await
    .unwrap()
    .unwrap();
    let mut closed = None;
    while let Ok(Some(Ok(message))) = tokio::time::timeout(
        crate::support::TIMEOUT,
        futures_util::StreamExt::next(&mut second),
    )
    .await
    {
        if let tokio_tungstenite::tungstenite::Message::Close(frame) = message {
            closed = frame.map(|f| u16::from(f.code));
            break;
        }
    }
    assert_eq!(
        closed,
        Some(1013),
        "the refused connection closes with 1013"
    );
    drop(second);
    cluster.redis().resume();
    // The refused session has ended (its cleanup ran) and a heartbeat has
    // rewritten presence since.
    let metrics_url = node.url("/metrics");
    eventually("the refused session ends", || async {
        let page = crate::support::scrape(&metrics_url).await;
        (crate::support::sample(&page, "chorus_connections", "") == 2.0).then_some(())
    })
    .await;
    let beats = |page: &str| {
        crate::support::sample(
            page,
            "chorus_redis_command_seconds_count",
            "op=\"heartbeat\"",
        )
    };
    let before = beats(&crate::support::scrape(&metrics_url).await);
    eventually("two more heartbeats", || async {
        let now = beats(&crate::support::scrape(&metrics_url).await);
        (now >= before + 2.0).then_some(())
    })
    .await;

    // Assert: alice's first connection still counts and still gets DMs.
    eventually("alice is online", || async {
        let users: Vec<String> = get_json(&node.url("/api/users")).await;
        (users == ["alice", "bob"]).then_some(())
    })
    .await;
    let sent = bob
        .request(json!({"type": "dm", "to": "alice", "content": "still there?"}))
        .await;
    assert_eq!(sent["type"], "dm", "{sent}");
    let got = alice
        .recv_until(|f| f["type"] == "dm" && f["content"] == "still there?")
        .await;
    assert_eq!(got["id"], sent["id"]);
}
