//! Rooms, messages, DMs, typing, presence and history over WebSocket. The
//! scenarios where the state's home matters run on one embedded node and on
//! two nodes sharing one Redis or a Redis Cluster, their clients spread over
//! both ([`Deployment`]); the rest (the welcome, ping, the connect URL's
//! checks, write batching) on one embedded node.

use serde_json::{Value, json};

use crate::support::cluster::{Deployment, on_both_backings};
use crate::support::node::Endpoint;
use crate::support::{Backing, TestNode, WsClient, ids, unique};

on_both_backings!(and in_memory;
    a_message_reaches_every_member_including_the_sender_as_the_same_frame,
    join_returns_members_and_recent_history_and_announces_presence,
    join_history_is_the_last_fifty,
    presence_counts_connections_not_users,
    disconnecting_leaves_every_room_and_goes_offline,
    joining_twice_is_harmless_and_leave_answers_left,
    switch_leaves_one_room_and_joins_another,
    a_dm_reaches_every_connection_of_both_users_and_is_stored,
    typing_reaches_the_others_but_not_the_typist,
    history_pages_backwards_with_before_and_limit,
    join_with_since_returns_exactly_the_missed_messages,
    since_older_than_the_kept_history_is_marked_truncated,
    a_room_in_the_connect_url_is_joined_at_once_after_the_welcome,
);

#[tokio::test]
async fn welcome_names_the_user_the_node_and_a_session() {
    let node = TestNode::spawn().await;
    let alice = WsClient::connect(&node.ws_url("alice")).await;
    assert_eq!(alice.welcome["user"], "alice");
    assert_eq!(alice.welcome["node"], node.node_id.as_str());
    let session = alice.welcome["session"].as_str().expect("session");
    assert!(uuid::Uuid::parse_str(session).is_ok(), "{session}");
}

async fn a_message_reaches_every_member_including_the_sender_as_the_same_frame(
    on: Option<Backing>,
) {
    let deployment = Deployment::start(on, |_| {}).await;
    let room = unique("room");
    let mut alice = WsClient::connect(&deployment.a().ws_url("alice")).await;
    let mut bob = WsClient::connect(&deployment.b().ws_url("bob")).await;
    let mut outsider = WsClient::connect(&deployment.b().ws_url("carol")).await;
    alice.join(&room).await;
    bob.join(&room).await;

    let echo = alice.say(&room, "hello <b>bob</b>").await;
    let seen = bob.recv_until(|f| f["type"] == "message").await;

    assert_eq!(echo, seen, "everyone gets the same frame, ref included");
    assert_eq!(echo["room"], room.as_str());
    assert_eq!(echo["user"], "alice");
    assert_eq!(echo["content"], "hello <b>bob</b>");
    assert!(echo["ref"].is_string());
    let ts = echo["ts"].as_str().expect("ts");
    assert!(
        chrono::DateTime::parse_from_rfc3339(ts).is_ok() && ts.ends_with('Z'),
        "{ts}"
    );
    // The outsider's next frame is its own pong, not the message.
    let pong = outsider.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
}

async fn join_returns_members_and_recent_history_and_announces_presence(on: Option<Backing>) {
    let deployment = Deployment::start(on, |_| {}).await;
    let room = unique("room");
    let mut alice = WsClient::connect(&deployment.a().ws_url("alice")).await;
    alice.join(&room).await;
    for i in 0..3 {
        alice.say(&room, &format!("m{i}")).await;
    }

    let mut bob = WsClient::connect(&deployment.b().ws_url("bob")).await;
    let joined = bob.join(&room).await;
    let announced = alice.recv_until(|f| f["type"] == "presence").await;

    assert_eq!(joined["members"], json!(["alice", "bob"]));
    let contents: Vec<&str> = joined["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|m| m["content"].as_str().expect("content"))
        .collect();
    assert_eq!(contents, ["m0", "m1", "m2"]);
    assert!(joined.get("truncated").is_none());
    assert_eq!(
        announced,
        json!({"type": "presence", "room": room, "user": "bob", "event": "join"})
    );
}

async fn join_history_is_the_last_fifty(on: Option<Backing>) {
    let deployment = Deployment::start(on, |s| s.rate_limit = 0).await;
    let room = unique("room");
    let mut alice = WsClient::connect(&deployment.a().ws_url("alice")).await;
    alice.join(&room).await;
    let sent = alice.say_many(&room, 60).await;
    let mut bob = WsClient::connect(&deployment.b().ws_url("bob")).await;
    let joined = bob.join(&room).await;
    assert_eq!(ids(&joined["history"]), sent[10..]);
}

async fn presence_counts_connections_not_users(on: Option<Backing>) {
    let deployment = Deployment::start(on, |_| {}).await;
    let room = unique("room");
    let mut watcher = WsClient::connect(&deployment.b().ws_url("watcher")).await;
    watcher.join(&room).await;
    let mut tab1 = WsClient::connect(&deployment.a().ws_url("alice")).await;
    let mut tab2 = WsClient::connect(&deployment.b().ws_url("alice")).await;

    tab1.join(&room).await;
    tab2.join(&room).await;
    tab2.request(json!({"type": "leave", "room": room})).await;
    // Only the first join and the last leave are announced: the watcher sees
    // exactly one join before this marker message, and no leave.
    let marker = tab1.say(&room, "marker").await;
    let (before, _) = watcher
        .collect_until(|f| f["type"] == "message" && f["id"] == marker["id"])
        .await;
    let events: Vec<&Value> = before.iter().filter(|f| f["type"] == "presence").collect();
    assert_eq!(events.len(), 1, "{before:?}");
    assert_eq!(events[0]["event"], "join");

    tab1.request(json!({"type": "leave", "room": room})).await;
    let left = watcher.recv_until(|f| f["type"] == "presence").await;
    assert_eq!(left["event"], "leave");
    assert_eq!(left["user"], "alice");
}

async fn disconnecting_leaves_every_room_and_goes_offline(on: Option<Backing>) {
    let deployment = Deployment::start(on, |_| {}).await;
    let room = unique("room");
    let mut watcher = WsClient::connect(&deployment.b().ws_url("watcher")).await;
    watcher.join(&room).await;
    let mut alice = WsClient::connect(&deployment.a().ws_url("alice")).await;
    alice.join(&room).await;
    watcher
        .recv_until(|f| f["type"] == "presence" && f["event"] == "join")
        .await;

    alice.close().await;
    let left = watcher.recv_until(|f| f["type"] == "presence").await;
    assert_eq!(left["event"], "leave");
    let users: Vec<String> = reqwest::get(deployment.b().url("/api/users"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(users, ["watcher"]);
}

async fn joining_twice_is_harmless_and_leave_answers_left(on: Option<Backing>) {
    let deployment = Deployment::start(on, |_| {}).await;
    let room = unique("room");
    let mut alice = WsClient::connect(&deployment.a().ws_url("alice")).await;
    alice.join(&room).await;
    let again = alice.join(&room).await;
    assert_eq!(again["members"], json!(["alice"]));

    let left = alice.request(json!({"type": "leave", "room": room})).await;
    assert_eq!(left["type"], "left");
    assert_eq!(left["room"], room.as_str());
    let members: Vec<String> =
        reqwest::get(deployment.b().url(&format!("/api/rooms/{room}/users")))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert!(
        members.is_empty(),
        "one leave undoes both joins of one connection: {members:?}"
    );
    let not_member = alice
        .request(json!({"type": "message", "room": room, "content": "x"}))
        .await;
    assert_eq!(not_member["code"], "not_member");
}

async fn switch_leaves_one_room_and_joins_another(on: Option<Backing>) {
    let deployment = Deployment::start(on, |_| {}).await;
    let (a, b) = (unique("a"), unique("b"));
    let mut alice = WsClient::connect(&deployment.a().ws_url("alice")).await;
    alice.join(&a).await;
    alice
        .send(json!({"type": "switch", "from": a, "to": b, "ref": "s"}))
        .await;
    let left = alice.recv().await;
    let joined = alice.recv().await;
    assert_eq!(
        (left["type"].as_str(), left["room"].as_str()),
        (Some("left"), Some(a.as_str()))
    );
    assert_eq!(
        (joined["type"].as_str(), joined["room"].as_str()),
        (Some("joined"), Some(b.as_str()))
    );
    assert_eq!(joined["ref"], "s");
    let in_a = alice
        .request(json!({"type": "message", "room": a, "content": "x"}))
        .await;
    assert_eq!(in_a["code"], "not_member");
    alice.say(&b, "in b").await;
}

async fn a_dm_reaches_every_connection_of_both_users_and_is_stored(on: Option<Backing>) {
    let deployment = Deployment::start(on, |_| {}).await;
    let mut alice1 = WsClient::connect(&deployment.a().ws_url("alice")).await;
    let mut alice2 = WsClient::connect(&deployment.b().ws_url("alice")).await;
    let mut bob1 = WsClient::connect(&deployment.b().ws_url("bob")).await;
    let mut bob2 = WsClient::connect(&deployment.a().ws_url("bob")).await;

    let sent = alice1
        .request(json!({"type": "dm", "to": "bob", "content": "psst"}))
        .await;
    assert_eq!(sent["type"], "dm");
    assert_eq!(
        (sent["from"].as_str(), sent["to"].as_str()),
        (Some("alice"), Some("bob"))
    );
    for other in [&mut alice2, &mut bob1, &mut bob2] {
        assert_eq!(other.recv_until(|f| f["type"] == "dm").await, sent);
    }

    // Stored for an offline user too, and readable from both sides.
    alice1
        .request(json!({"type": "dm", "to": "dave", "content": "later"}))
        .await;
    let mut dave = WsClient::connect(&deployment.b().ws_url("dave")).await;
    let page = dave
        .request(json!({"type": "history", "with": "alice"}))
        .await;
    assert_eq!(page["with"], "alice");
    assert_eq!(page["messages"][0]["content"], "later");
    let page = bob1
        .request(json!({"type": "history", "with": "alice"}))
        .await;
    assert_eq!(ids(&page["messages"]), [sent["id"].as_str().unwrap()]);
}

async fn typing_reaches_the_others_but_not_the_typist(on: Option<Backing>) {
    let deployment = Deployment::start(on, |_| {}).await;
    let room = unique("room");
    let mut alice = WsClient::connect(&deployment.a().ws_url("alice")).await;
    let mut bob = WsClient::connect(&deployment.b().ws_url("bob")).await;
    alice.join(&room).await;
    bob.join(&room).await;

    alice.send(json!({"type": "typing", "room": room})).await;
    let typing = bob.recv_until(|f| f["type"] == "typing").await;
    assert_eq!(
        typing,
        json!({"type": "typing", "room": room, "user": "alice"})
    );
    // Alice's own fan-out queue would carry the typing event before her echo.
    alice
        .send(json!({"type": "message", "room": room, "content": "done", "ref": "m"}))
        .await;
    let (before, _) = alice.collect_until(|f| f["ref"] == "m").await;
    assert!(before.iter().all(|f| f["type"] != "typing"), "{before:?}");
}

async fn history_pages_backwards_with_before_and_limit(on: Option<Backing>) {
    let deployment = Deployment::start(on, |s| s.rate_limit = 0).await;
    let room = unique("room");
    let mut alice = WsClient::connect(&deployment.a().ws_url("alice")).await;
    alice.join(&room).await;
    let sent = alice.say_many(&room, 130).await;

    let page = alice
        .request(json!({"type": "history", "room": room}))
        .await;
    assert_eq!(ids(&page["messages"]), sent[80..]);
    let page = alice
        .request(json!({"type": "history", "room": room, "before": sent[80], "limit": 500}))
        .await;
    assert_eq!(
        ids(&page["messages"]),
        sent[..80],
        "limit is clamped to 100; only 80 are older"
    );
    let page = alice
        .request(json!({"type": "history", "room": room, "before": sent[3], "limit": 2}))
        .await;
    assert_eq!(ids(&page["messages"]), sent[1..3]);
    let page = alice
        .request(json!({"type": "history", "room": room, "before": sent[0]}))
        .await;
    assert_eq!(page["messages"], json!([]));
}

async fn join_with_since_returns_exactly_the_missed_messages(on: Option<Backing>) {
    let deployment = Deployment::start(on, |s| s.rate_limit = 0).await;
    let room = unique("room");
    let mut alice = WsClient::connect(&deployment.a().ws_url("alice")).await;
    alice.join(&room).await;
    let sent = alice.say_many(&room, 70).await;

    let mut bob = WsClient::connect(&deployment.b().ws_url("bob")).await;
    let joined = bob
        .request(json!({"type": "join", "room": room, "since": sent[5]}))
        .await;
    assert_eq!(
        ids(&joined["history"]),
        sent[6..],
        "every message after since, not only 50"
    );
    assert!(joined.get("truncated").is_none());

    let latest = bob
        .request(json!({"type": "join", "room": unique("empty"), "since": sent[69]}))
        .await;
    assert_eq!(latest["history"], json!([]));
}

async fn since_older_than_the_kept_history_is_marked_truncated(on: Option<Backing>) {
    let deployment = Deployment::start(on, |s| {
        s.history_limit = 5;
        s.rate_limit = 0;
    })
    .await;
    let room = unique("room");
    let mut alice = WsClient::connect(&deployment.a().ws_url("alice")).await;
    alice.join(&room).await;
    let sent = alice.say_many(&room, 8).await;
    let mut bob = WsClient::connect(&deployment.b().ws_url("bob")).await;
    let joined = bob
        .request(json!({"type": "join", "room": room, "since": sent[0]}))
        .await;
    assert_eq!(joined["truncated"], true);
    assert_eq!(ids(&joined["history"]), sent[3..]);
    let joined = bob
        .request(json!({"type": "join", "room": room, "since": sent[2]}))
        .await;
    assert!(
        joined.get("truncated").is_none(),
        "nothing after since was trimmed: {joined}"
    );
}

#[tokio::test]
async fn messages_from_concurrent_senders_arrive_in_one_order_equal_to_history() {
    let node = TestNode::spawn_with(|s| s.rate_limit = 0).await;
    let room = unique("room");
    let mut readers = Vec::new();
    for i in 0..3 {
        let mut reader = WsClient::connect(&node.ws_url(&format!("reader{i}"))).await;
        reader.join(&room).await;
        readers.push(reader);
    }
    let mut senders = Vec::new();
    for i in 0..4 {
        let url = node.ws_url(&format!("sender{i}"));
        let room = room.clone();
        senders.push(tokio::spawn(async move {
            let mut sender = WsClient::connect(&url).await;
            sender.join(&room).await;
            for n in 0..25 {
                sender
                    .send(json!({"type": "message", "room": room, "content": format!("{i}:{n}")}))
                    .await;
            }
            sender
        }));
    }
    let mut sequences = Vec::new();
    for reader in &mut readers {
        let mut seen = Vec::new();
        while seen.len() < 100 {
            let frame = reader.recv_until(|f| f["type"] == "message").await;
            seen.push(frame["id"].as_str().unwrap().to_owned());
        }
        sequences.push(seen);
    }
    for sender in senders {
        sender.await.unwrap();
    }
    let page = readers[0]
        .request(json!({"type": "history", "room": room, "limit": 100}))
        .await;
    let history = ids(&page["messages"]);
    for seen in &sequences {
        assert_eq!(seen, &history);
    }
}

#[tokio::test]
async fn ping_answers_pong_with_the_ref() {
    let node = TestNode::spawn().await;
    let mut alice = WsClient::connect(&node.ws_url("alice")).await;
    alice.send(json!({"type": "ping", "ref": "p1"})).await;
    assert_eq!(alice.recv().await, json!({"type": "pong", "ref": "p1"}));
}

#[tokio::test]
async fn a_message_right_after_another_in_a_quiet_room_is_not_held_for_the_write_delay() {
    // The longest write delay there is: a second frame held for it would
    // arrive a second after the first.
    let node = TestNode::spawn_with(|s| s.write_delay_ms = 1000).await;
    let room = unique("room");
    let mut alice = WsClient::connect(&node.ws_url("alice")).await;
    let mut bob = WsClient::connect(&node.ws_url("bob")).await;
    alice.join(&room).await;
    bob.join(&room).await;
    // Sent without waiting for the echo: alice's own frames may be held
    // (she was just sent bob's `join`), bob's must not be.
    alice
        .send(json!({"type": "message", "room": room, "content": "first"}))
        .await;
    bob.recv_until(|f| f["type"] == "message").await;
    alice
        .send(json!({"type": "message", "room": room, "content": "second"}))
        .await;
    let second = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        bob.recv_until(|f| f["type"] == "message"),
    )
    .await
    .expect("a reader that keeps up gets the next frame at once, not after the write delay");
    assert_eq!(second["content"], "second");
}

async fn a_room_in_the_connect_url_is_joined_at_once_after_the_welcome(on: Option<Backing>) {
    let deployment = Deployment::start(on, |_| {}).await;
    let (a, b) = (unique("room"), unique("room"));
    let mut alice = WsClient::connect(&deployment.a().ws_url("alice")).await;
    alice.join(&a).await;
    alice.say(&a, "before bob").await;

    let mut bob = WsClient::connect(
        &deployment
            .b()
            .ws_url_query(&format!("username=bob&room={a},{b},{a}")),
    )
    .await;
    let first = bob.recv().await;
    let second = bob.recv().await;
    assert_eq!(first["type"], "joined", "{first}");
    assert_eq!(first["room"], a.as_str());
    assert_eq!(first["history"][0]["content"], "before bob");
    assert_eq!(second["type"], "joined", "{second}");
    assert_eq!(second["room"], b.as_str());
    // Joined like any join: members see it, and the room is bob's to send to.
    let presence = alice.recv_until(|f| f["type"] == "presence").await;
    assert_eq!(presence["user"], "bob");
    bob.say(&b, "hi").await;
    assert!(
        bob.recv_within(std::time::Duration::from_millis(200))
            .await
            .is_none(),
        "a repeated room is joined once"
    );
}

#[tokio::test]
async fn a_bad_room_in_the_connect_url_refuses_the_upgrade() {
    let node = TestNode::spawn().await;
    let refused = WsClient::try_connect(&node.ws_url_query("username=bob&room=ok,bad%20name"))
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.status, 400);
    assert_eq!(refused.body["error"]["code"], "invalid_room", "{refused:?}");
    let rooms: Vec<String> = (0..101).map(|i| format!("r{i}")).collect();
    let refused = WsClient::try_connect(
        &node.ws_url_query(&format!("username=bob&room={}", rooms.join(","))),
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(refused.status, 400);
    assert_eq!(refused.body["error"]["code"], "bad_request", "{refused:?}");
}
