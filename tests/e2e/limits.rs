//! Every limit of the contract at its edge: content and frame size, message
//! rate, connections per node, rooms per connection, names at the upgrade,
//! every error code, slow readers and silent peers.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{Mutex, watch};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

use crate::support::node::Endpoint;
use crate::support::raw::{connect_with_small_window, raw_recv, raw_send, read_until_close};
use crate::support::{
    ProcessNode, TIMEOUT, TestNode, WsClient, eventually, sample, scrape, unique,
};

/// `GET /api/users`.
async fn online(node: &impl Endpoint) -> Vec<String> {
    reqwest::get(node.url("/api/users"))
        .await
        .expect("GET /api/users")
        .json()
        .await
        .expect("a JSON list")
}

fn contents(frames: &[Value]) -> Vec<&str> {
    frames
        .iter()
        .filter(|f| f["type"] == "message")
        .map(|f| f["content"].as_str().expect("content"))
        .collect()
}

/// Reads frames until every one of `refs` was answered; returns the answers
/// by ref, whatever order they came in.
async fn answers(client: &mut WsClient, refs: &[&str]) -> HashMap<String, Value> {
    let mut found = HashMap::new();
    while found.len() < refs.len() {
        let frame = client.recv().await;
        if let Some(reference) = frame["ref"].as_str()
            && refs.contains(&reference)
        {
            found.insert(reference.to_owned(), frame);
        }
    }
    found
}

fn assert_error(frame: &Value, code: &str, why: &str) {
    assert_eq!(frame["type"], "error", "{why}: {frame}");
    assert_eq!(frame["code"], code, "{why}: {frame}");
    assert!(
        frame["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{why}: an error says what went wrong: {frame}"
    );
}

// ---------------------------------------------------------------------------
// Content and frame size

#[tokio::test]
async fn content_over_4096_bytes_is_refused_as_too_large_and_the_socket_stays_open() {
    let node = TestNode::spawn().await;
    let room = unique("room");
    let mut alice = WsClient::connect(&node.ws_url("alice")).await;
    let mut bob = WsClient::connect(&node.ws_url("bob")).await;
    alice.join(&room).await;
    bob.join(&room).await;

    let over = alice
        .request(json!({"type": "message", "room": room, "content": "x".repeat(4097)}))
        .await;
    // 1366 three-byte characters: few characters, 4098 bytes.
    let wide = alice
        .request(json!({"type": "message", "room": room, "content": "€".repeat(1366)}))
        .await;
    let dm = alice
        .request(json!({"type": "dm", "to": "bob", "content": "x".repeat(4097)}))
        .await;
    let at_limit = alice.say(&room, &"x".repeat(4096)).await;

    assert_error(&over, "too_large", "4097 bytes");
    assert!(over["ref"].is_string(), "the ref is echoed: {over}");
    assert_error(&wide, "too_large", "the limit counts UTF-8 bytes");
    assert_error(&dm, "too_large", "DMs have the same limit");
    assert_eq!(at_limit["content"].as_str().map(str::len), Some(4096));
    let seen = bob.recv_until(|f| f["type"] == "message").await;
    assert_eq!(seen, at_limit, "the refused messages were never sent");
    let page = bob.request(json!({"type": "history", "room": room})).await;
    assert_eq!(page["messages"], json!([at_limit]));
    let dms = bob
        .request(json!({"type": "history", "with": "alice"}))
        .await;
    assert_eq!(dms["messages"], json!([]));
}

#[tokio::test]
async fn a_frame_over_64_kib_closes_the_connection_with_1009() {
    let node = TestNode::spawn().await;
    let room = unique("room");
    let mut alice = WsClient::connect(&node.ws_url("alice")).await;
    let mut bob = WsClient::connect(&node.ws_url("bob")).await;
    alice.join(&room).await;
    bob.join(&room).await;

    // Just under the frame limit: only the content rule applies.
    let under = alice
        .request(json!({"type": "message", "room": room, "content": "x".repeat(60 * 1024)}))
        .await;
    assert_error(&under, "too_large", "a 60 KiB frame is read");
    let over = json!({"type": "message", "room": room, "content": "x".repeat(65 * 1024)});
    alice.send_raw(Message::Text(over.to_string().into())).await;

    assert_eq!(alice.expect_close().await, 1009);
    let left = bob.recv_until(|f| f["type"] == "presence").await;
    assert_eq!(
        (&left["user"], &left["event"]),
        (&json!("alice"), &json!("leave"))
    );
    let pong = bob.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong", "other connections are untouched");
}

// ---------------------------------------------------------------------------
// Message rate

#[tokio::test]
async fn over_the_rate_a_message_is_refused_and_never_delivered_or_stored() {
    let node = TestNode::spawn_with(|s| {
        s.rate_limit = 1;
        s.rate_burst = 3;
    })
    .await;
    let room = unique("room");
    let mut alice = WsClient::connect(&node.ws_url("alice")).await;
    let mut bob = WsClient::connect(&node.ws_url("bob")).await;
    alice.join(&room).await;
    bob.join(&room).await;

    // Six commands in one burst: three fill the bucket, then a message, a DM
    // and typing find it empty.
    for n in 1..=4 {
        let tag = format!("m{n}");
        alice
            .send(json!({"type": "message", "room": room, "content": tag, "ref": tag}))
            .await;
    }
    alice
        .send(json!({"type": "dm", "to": "bob", "content": "d5", "ref": "d5"}))
        .await;
    alice
        .send(json!({"type": "typing", "room": room, "ref": "t6"}))
        .await;
    let answered = answers(&mut alice, &["m1", "m2", "m3", "m4", "d5", "t6"]).await;

    for n in 1..=3 {
        assert_eq!(
            answered[&format!("m{n}")]["type"],
            "message",
            "m{n} fits the burst"
        );
    }
    for refused in ["m4", "d5", "t6"] {
        assert_error(&answered[refused], "rate_limited", refused);
    }
    // Bob (his own bucket) marks the end of the room's stream: before it he
    // saw exactly the three accepted messages, no DM and no typing.
    bob.send(json!({"type": "message", "room": room, "content": "marker", "ref": "marker"}))
        .await;
    let (before, marker) = bob.collect_until(|f| f["ref"] == "marker").await;
    assert_eq!(marker["type"], "message", "{marker}");
    assert_eq!(contents(&before), ["m1", "m2", "m3"]);
    assert!(
        before
            .iter()
            .all(|f| f["type"] != "dm" && f["type"] != "typing"),
        "{before:?}"
    );
    let page = bob.request(json!({"type": "history", "room": room})).await;
    let stored: Vec<Value> = page["messages"].as_array().expect("messages").clone();
    assert_eq!(contents(&stored), ["m1", "m2", "m3", "marker"]);
    let dms = bob
        .request(json!({"type": "history", "with": "alice"}))
        .await;
    assert_eq!(dms["messages"], json!([]));

    // The limit is a rate, not a quota: a token comes back.
    let alice = Mutex::new(alice);
    let room = &room;
    let sent = eventually("a token refills", || async {
        let reply = alice
            .lock()
            .await
            .request(json!({"type": "message", "room": room, "content": "later"}))
            .await;
        (reply["type"] == "message").then_some(reply)
    })
    .await;
    assert_eq!(sent["content"], "later");
}

// ---------------------------------------------------------------------------
// Connections per node

#[tokio::test]
async fn over_max_connections_the_upgrade_answers_503_until_a_slot_frees() {
    let node = TestNode::spawn_with(|s| s.max_connections = 2).await;
    let first = WsClient::connect(&node.ws_url("alice")).await;
    let _second = WsClient::connect(&node.ws_url("bob")).await;

    let Err(refused) = WsClient::try_connect(&node.ws_url("carol")).await else {
        panic!("a third connection was accepted over max_connections = 2");
    };

    assert_eq!(refused.status, 503);
    assert_eq!(refused.body["error"]["code"], "too_many_connections");
    assert!(
        refused.body["error"]["message"].is_string(),
        "{:?}",
        refused.body
    );
    assert_eq!(
        online(&node).await,
        ["alice", "bob"],
        "HTTP still answers; carol never came online"
    );

    first.close().await;
    let url = node.ws_url("carol");
    let url = &url;
    let carol = eventually("a freed slot is reused", || async move {
        WsClient::try_connect(url).await.ok()
    })
    .await;
    assert_eq!(carol.welcome["user"], "carol");
    let Err(full) = WsClient::try_connect(&node.ws_url("dave")).await else {
        panic!("a third connection was accepted over max_connections = 2");
    };
    assert_eq!(full.status, 503, "full again");
}

// ---------------------------------------------------------------------------
// Rooms per connection

#[tokio::test]
async fn a_switch_from_a_room_to_itself_at_the_limit_keeps_the_connection_in_it() {
    let node = TestNode::spawn_with(|s| s.max_rooms_per_connection = 2).await;
    let (a, b) = (unique("a"), unique("b"));
    let mut alice = WsClient::connect(&node.ws_url("alice")).await;
    alice.join(&a).await;
    alice.join(&b).await;
    let mut bob = WsClient::connect(&node.ws_url("bob")).await;
    bob.join(&a).await;

    alice
        .send(json!({"type": "switch", "from": a, "to": a, "ref": "s"}))
        .await;
    let left = alice.recv_until(|f| f["ref"] == "s").await;
    let joined = alice.recv_until(|f| f["ref"] == "s").await;
    let said = bob.say(&a, "still there?").await;
    let got = alice
        .recv_until(|f| f["type"] == "message" && f["id"] == said["id"])
        .await;

    assert_eq!((&left["type"], &left["room"]), (&json!("left"), &json!(a)));
    assert_eq!(
        (&joined["type"], &joined["room"]),
        (&json!("joined"), &json!(a))
    );
    assert_eq!(joined["members"], json!(["alice", "bob"]), "{joined}");
    assert_eq!(got, said, "still delivered");
    let members: Vec<String> =
        crate::support::get_json(&node.url(&format!("/api/rooms/{a}/users"))).await;
    assert_eq!(members, ["alice", "bob"]);
}

#[tokio::test]
async fn over_max_rooms_per_connection_a_join_is_refused_until_a_leave() {
    let node = TestNode::spawn_with(|s| s.max_rooms_per_connection = 2).await;
    let (a, b, c, d) = (unique("a"), unique("b"), unique("c"), unique("d"));
    let mut alice = WsClient::connect(&node.ws_url("alice")).await;
    alice.join(&a).await;
    alice.join(&b).await;

    let refused = alice.request(json!({"type": "join", "room": c})).await;
    let again = alice.join(&a).await;
    let not_in_c = alice
        .request(json!({"type": "message", "room": c, "content": "x"}))
        .await;

    assert_error(&refused, "bad_request", "a third room");
    assert!(refused["ref"].is_string(), "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains('2'),
        "the error names the limit: {refused}"
    );
    assert_eq!(
        again["room"],
        a.as_str(),
        "rejoining a joined room is harmless"
    );
    assert_error(&not_in_c, "not_member", "the refused join left no trace");

    alice.request(json!({"type": "leave", "room": a})).await;
    let joined = alice.join(&c).await;
    assert_eq!(joined["members"], json!(["alice"]));
    alice
        .send(json!({"type": "switch", "from": b, "to": d, "ref": "s"}))
        .await;
    let (_, switched) = alice
        .collect_until(|f| f["type"] == "joined" && f["ref"] == "s")
        .await;
    assert_eq!(switched["room"], d.as_str(), "switch at the limit works");
    // The limit is per connection, not per user.
    let mut tab = WsClient::connect(&node.ws_url("alice")).await;
    tab.join(&a).await;
    tab.join(&b).await;
    let page = scrape(&node.url("/metrics")).await;
    assert!(
        sample(&page, "chorus_room_limit_refusals_total", "") >= 1.0,
        "counted"
    );
}

// ---------------------------------------------------------------------------
// Names at the upgrade

#[tokio::test]
async fn a_bad_user_name_is_refused_with_400_before_the_upgrade() {
    let node = TestNode::spawn().await;
    let long = "x".repeat(33);
    let cases = [
        ("a space", "username=al%20ice"),
        ("unicode", "username=%C3%A9lise"),
        ("33 characters", &*format!("username={long}")),
        ("a slash", "username=a%2Fb"),
        ("empty", "username="),
        ("missing", "other=alice"),
    ];

    for (why, query) in cases {
        let Err(refused) = WsClient::try_connect(&node.ws_url_query(query)).await else {
            panic!("{why}: {query} was accepted");
        };
        assert_eq!(refused.status, 400, "{why}");
        assert_eq!(refused.body["error"]["code"], "invalid_user", "{why}");
        assert!(refused.body["error"]["message"].is_string(), "{why}");
    }
    assert_eq!(online(&node).await, Vec::<String>::new());
    let edge = WsClient::connect(&node.ws_url(&"A_b-c.9".repeat(5)[..32])).await;
    assert_eq!(edge.welcome["user"].as_str().map(str::len), Some(32));
}

// ---------------------------------------------------------------------------
// Every error code over the socket

#[tokio::test]
async fn every_bad_command_gets_its_error_code_with_the_ref_and_nothing_breaks() {
    let node = TestNode::spawn().await;
    let room = unique("room");
    let mut alice = WsClient::connect(&node.ws_url("alice")).await;
    let mut bob = WsClient::connect(&node.ws_url("bob")).await;
    bob.join(&room).await;

    // Frames that cannot carry a ref the server could read.
    alice
        .send_raw(Message::Text("this is not JSON".into()))
        .await;
    assert_error(&alice.recv().await, "bad_request", "not JSON");
    alice
        .send_raw(Message::Binary(
            json!({"type": "ping"}).to_string().into_bytes().into(),
        ))
        .await;
    assert_error(&alice.recv().await, "bad_request", "a binary frame");
    alice
        .send(json!({"type": "ping", "ref": "r".repeat(65)}))
        .await;
    let long_ref = alice.recv().await;
    assert_error(&long_ref, "bad_request", "a ref over 64 characters");
    assert!(long_ref.get("ref").is_none(), "{long_ref}");

    let cases = [
        ("unknown type", json!({"type": "shout"}), "bad_request"),
        ("no type", json!({"room": room}), "bad_request"),
        ("missing field", json!({"type": "join"}), "bad_request"),
        (
            "missing content",
            json!({"type": "message", "room": room}),
            "bad_request",
        ),
        (
            "wrong field type",
            json!({"type": "join", "room": 5}),
            "bad_request",
        ),
        (
            "a number for content",
            json!({"type": "dm", "to": "bob", "content": 1}),
            "bad_request",
        ),
        (
            "malformed since",
            json!({"type": "join", "room": room, "since": "yesterday"}),
            "bad_request",
        ),
        (
            "limit 0",
            json!({"type": "history", "room": room, "limit": 0}),
            "bad_request",
        ),
        (
            "negative limit",
            json!({"type": "history", "room": room, "limit": -1}),
            "bad_request",
        ),
        (
            "room and with",
            json!({"type": "history", "room": room, "with": "bob"}),
            "bad_request",
        ),
        (
            "empty content",
            json!({"type": "dm", "to": "bob", "content": ""}),
            "bad_request",
        ),
        (
            "a room with a space",
            json!({"type": "join", "room": "a room"}),
            "invalid_room",
        ),
        (
            "a 65-character room",
            json!({"type": "join", "room": "r".repeat(65)}),
            "invalid_room",
        ),
        (
            "message to a bad room",
            json!({"type": "message", "room": "ro/om", "content": "x"}),
            "invalid_room",
        ),
        (
            "switch to a bad room",
            json!({"type": "switch", "from": room, "to": ""}),
            "invalid_room",
        ),
        (
            "dm to a bad name",
            json!({"type": "dm", "to": "bad name", "content": "x"}),
            "invalid_user",
        ),
        (
            "dm to a 33-character name",
            json!({"type": "dm", "to": "u".repeat(33), "content": "x"}),
            "invalid_user",
        ),
        (
            "history with a bad name",
            json!({"type": "history", "with": "élise"}),
            "invalid_user",
        ),
        (
            "message to a room not joined",
            json!({"type": "message", "room": room, "content": "x"}),
            "not_member",
        ),
        (
            "typing in a room not joined",
            json!({"type": "typing", "room": room}),
            "not_member",
        ),
        (
            "content over 4096 bytes",
            json!({"type": "dm", "to": "bob", "content": "x".repeat(4097)}),
            "too_large",
        ),
    ];
    for (why, frame, code) in cases {
        let reply = alice.request(frame).await;
        assert_error(&reply, code, why);
    }

    // The same connection, and everyone else, still work.
    let pong = alice.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
    alice.join(&room).await;
    let said = alice.say(&room, "still here").await;
    assert_eq!(bob.recv_until(|f| f["type"] == "message").await, said);
    let dm = bob
        .request(json!({"type": "dm", "to": "alice", "content": "hi"}))
        .await;
    assert_eq!(alice.recv_until(|f| f["type"] == "dm").await, dm);
    let page = bob.request(json!({"type": "history", "room": room})).await;
    assert_eq!(
        contents(page["messages"].as_array().unwrap()),
        ["still here"]
    );
}

// ---------------------------------------------------------------------------
// Slow readers

/// The most messages the flood sends; far more than the kernel buffers of
/// one loopback connection hold, so the reader that never reads must fill
/// its queue long before the end.
const FLOOD: usize = 10_000;
/// Messages sent after the slow reader was flagged, to show the room goes on.
const TAIL: usize = 200;
/// Commands the sender keeps in flight.
const WINDOW: usize = 4;
/// How far the sender may run ahead of the fast reader. With [`WINDOW`] it
/// keeps the fast reader's queue under 16 however the threads are
/// scheduled, so only the reader that never reads can be the slow one.
const LAG: usize = 8;

/// `chorus_slow_consumer_disconnects_total` on a node of its own.
async fn slow_disconnects(node: &impl Endpoint) -> f64 {
    let page = reqwest::get(node.url("/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    page.lines()
        .filter(|line| line.starts_with("chorus_slow_consumer_disconnects_total"))
        .filter_map(|line| line.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_falls_behind_is_closed_with_1013_and_nobody_else_waits_or_loses() {
    // A process of its own, so that its metrics count only this test.
    // No write delay: the sender below waits for its echo every few
    // messages, and a delayed echo would stretch the flood past the close
    // handshake's deadline for the slow reader.
    let node = ProcessNode::spawn(&[
        ("CHORUS_OUTBOUND_QUEUE", "16"),
        ("CHORUS_RATE_LIMIT", "0"),
        ("CHORUS_WRITE_DELAY_MS", "0"),
    ]);
    let room = unique("room");
    let mut slow = connect_with_small_window(&node, "slow").await;
    raw_send(&mut slow, json!({"type": "join", "room": room})).await;
    assert_eq!(raw_recv(&mut slow).await["type"], "joined");
    let mut fast = WsClient::connect(&node.ws_url("fast")).await;
    fast.join(&room).await;
    let mut sender = WsClient::connect(&node.ws_url("sender")).await;
    sender.join(&room).await;
    let (progress, mut fast_seen) = watch::channel(0_usize);
    let reader = tokio::spawn(async move {
        let mut seen: Vec<String> = Vec::new();
        loop {
            let frame = fast.recv_until(|f| f["type"] == "message").await;
            let content = frame["content"].as_str().expect("content").to_owned();
            if content == "end" {
                return seen;
            }
            seen.push(content);
            progress.send_replace(seen.len());
        }
    });
    let filler = "x".repeat(1000);

    // The flood, while the slow member never reads: windows of messages,
    // each answered by the sender's own echo.
    let mut sent: Vec<String> = Vec::new();
    let mut flagged_at = None;
    while sent.len() < flagged_at.map_or(FLOOD, |at| at + TAIL) {
        tokio::time::timeout(
            TIMEOUT,
            fast_seen.wait_for(|&seen| sent.len() - seen <= LAG),
        )
        .await
        .expect("the fast reader keeps up")
        .expect("the fast reader is alive");
        let mut last_ref = String::new();
        for _ in 0..WINDOW {
            let n = sent.len();
            last_ref = format!("m{n}");
            let content = format!("{n}:{filler}");
            sender
                .send(json!({"type": "message", "room": room, "content": content, "ref": last_ref}))
                .await;
            sent.push(content);
        }
        let echo = sender.recv_until(|f| f["ref"] == last_ref.as_str()).await;
        assert_eq!(echo["type"], "message", "the sender is served: {echo}");
        if flagged_at.is_none()
            && sent.len().is_multiple_of(64)
            && slow_disconnects(&node).await > 0.0
        {
            flagged_at = Some(sent.len());
        }
    }
    sender.say(&room, "end").await;
    let flagged_at = flagged_at.expect("the reader that never reads was flagged slow");

    let seen = tokio::time::timeout(TIMEOUT, reader)
        .await
        .expect("the fast reader finishes in time")
        .expect("the fast reader");
    assert_eq!(seen.len(), sent.len(), "the fast reader got every message");
    assert!(seen == sent, "in the order they were sent");
    let (got, code) = read_until_close(&mut slow).await;
    assert_eq!(code, 1013, "the slow reader is told to reconnect");
    assert!(
        got.len() < flagged_at,
        "it was closed when it fell behind ({} of {flagged_at})",
        got.len()
    );
    assert!(
        contents(&got) == sent[..got.len()],
        "what it got before the close is a gap-free prefix"
    );
    let page = sender
        .request(json!({"type": "history", "room": room, "limit": 2}))
        .await;
    let stored = page["messages"].as_array().expect("messages");
    assert_eq!(contents(stored), [sent.last().unwrap().as_str(), "end"]);
}

#[tokio::test]
async fn a_client_that_sends_a_burst_larger_than_its_queue_and_then_reads_is_not_closed_as_slow() {
    let node = TestNode::spawn_with(|s| {
        s.outbound_queue = 16;
        s.rate_limit = 0;
    })
    .await;
    let room = unique("room");
    let mut alice = WsClient::connect(&node.ws_url("alice")).await;
    alice.join(&room).await;

    // 40 commands written back to back, then read at once: the client reads
    // as fast as it can, so the server has no reason to call it slow.
    for n in 0..40 {
        let tag = format!("m{n}");
        alice
            .send(json!({"type": "message", "room": room, "content": tag, "ref": tag}))
            .await;
    }

    for n in 0..40 {
        let echo = alice.recv().await;
        assert_eq!(echo["ref"], format!("m{n}"), "{echo}");
    }
}

// ---------------------------------------------------------------------------
// Keepalive

#[tokio::test]
async fn a_peer_that_never_answers_pings_is_dropped_after_the_idle_timeout() {
    let node = TestNode::spawn_with(|s| {
        s.ping_interval_secs = 1;
        s.idle_timeout_secs = 3;
    })
    .await;
    // Completes the handshake, then is never polled again: it cannot answer
    // the server's pings.
    let (silent, _) = connect_async(node.ws_url("silent"))
        .await
        .expect("handshake");
    // A peer that keeps reading answers pings on its own.
    let (mut alive, _) = connect_async(node.ws_url("alive"))
        .await
        .expect("handshake");
    let listener = tokio::spawn(async move { while let Some(Ok(_)) = alive.next().await {} });
    eventually("both are online", || async {
        (online(&node).await == ["alive", "silent"]).then_some(())
    })
    .await;

    eventually("the silent peer is dropped", || async {
        (online(&node).await == ["alive"]).then_some(())
    })
    .await;

    assert!(
        !listener.is_finished(),
        "the peer that reads stays connected"
    );
    let page = scrape(&node.url("/metrics")).await;
    assert!(
        sample(&page, "chorus_idle_disconnects_total", "") >= 1.0,
        "counted"
    );
    listener.abort();
    drop(silent);
}

#[tokio::test]
async fn the_write_delay_holds_busy_output_together_but_never_the_first_frame() {
    let delay = Duration::from_millis(1000);
    let node = TestNode::spawn_with(|s| {
        s.write_delay_ms = u64::try_from(delay.as_millis()).expect("small");
        s.rate_limit = 0;
    })
    .await;
    let room = unique("room");
    let mut alice = WsClient::connect(&node.ws_url("alice")).await;
    alice.join(&room).await;
    let mut bob = WsClient::connect(&node.ws_url("bob")).await;
    bob.join(&room).await;
    alice.recv_until(|f| f["type"] == "presence").await;

    // Bob has had no fan-out frame yet: the first goes out at once (Alice's
    // own echo may wait: her presence event was just written to her)...
    let started = tokio::time::Instant::now();
    alice
        .send(json!({"type": "message", "room": room, "content": "first"}))
        .await;
    let first = bob.recv_until(|f| f["type"] == "message").await;
    assert_eq!(first["content"], "first");
    assert!(
        started.elapsed() < delay,
        "not held: {:?}",
        started.elapsed()
    );

    // ...and the frames right behind it wait for one write, in order.
    for n in 0..5 {
        alice
            .send(json!({"type": "message", "room": room, "content": format!("m{n}")}))
            .await;
    }
    let mut got = Vec::new();
    while got.len() < 5 {
        let frame = bob.recv_until(|f| f["type"] == "message").await;
        got.push(frame["content"].as_str().expect("content").to_owned());
    }
    assert_eq!(got, ["m0", "m1", "m2", "m3", "m4"]);
    assert!(
        started.elapsed() >= delay,
        "held for the delay: {:?}",
        started.elapsed()
    );
}
