//! Idempotency keys on `message`, `dm` and REST posts, and the history TTL,
//! on the embedded node and on two nodes sharing one Redis or a Redis
//! Cluster: a repeated key is stored and delivered once and answered with the
//! original message.

use redis::AsyncCommands;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::support::cluster::Deployment;
use crate::support::cluster::on_both_backings;
use crate::support::node::Endpoint;
use crate::support::{Backing, Cluster, TestNode, WsClient, eventually, get_json, unique};

/// Two nodes on `backing`.
async fn two_nodes(backing: Backing) -> Deployment {
    Deployment::start(Some(backing), |_| {}).await
}

/// One embedded node.
async fn memory() -> Deployment {
    Deployment::start(None, |_| {}).await
}

/// Sends `frame` with `reference` and returns the frame carrying it.
async fn request_as(client: &mut WsClient, mut frame: Value, reference: &str) -> Value {
    frame["ref"] = json!(reference);
    client.send(frame).await;
    client.recv_until(|f| f["ref"] == reference).await
}

fn message(room: &str, content: &str, key: &str) -> Value {
    json!({"type": "message", "room": room, "content": content, "idempotency_key": key})
}

fn dm(to: &str, content: &str, key: &str) -> Value {
    json!({"type": "dm", "to": to, "content": content, "idempotency_key": key})
}

/// The repeat's answer is the original (same id, content, ts, sender) with
/// the repeat's own `ref`.
fn assert_replay(original: &Value, replay: &Value, reference: &str) {
    assert_eq!(replay["type"], original["type"], "{replay}");
    for field in ["id", "content", "ts", "user", "room", "from", "to"] {
        assert_eq!(replay[field], original[field], "{field}: {replay}");
    }
    assert_eq!(replay["ref"], reference, "{replay}");
}

/// The messages `client` receives up to the one with content `marker`
/// (which is left out).
async fn until_marker(client: &mut WsClient, kind: &str, marker: &str) -> Vec<Value> {
    let (before, _) = client
        .collect_until(|f| f["type"] == kind && f["content"] == marker)
        .await;
    before.into_iter().filter(|f| f["type"] == kind).collect()
}

async fn room_messages(node: &TestNode, room: &str) -> Vec<Value> {
    let page: Value = get_json(&node.url(&format!("/api/rooms/{room}/messages"))).await;
    page.as_array().expect("an array").clone()
}

on_both_backings!(via two_nodes;
    a_repeated_message_key_is_stored_once_and_replayed,
    a_repeated_dm_key_is_stored_once_and_replayed,
    the_same_key_from_another_user_or_to_another_room_is_a_new_message,
    a_repeated_rest_post_answers_200_replayed_with_the_original,
    a_retry_on_another_node_after_a_dropped_connection_replays,
);
on_both_backings!(
    history_expires_after_the_ttl_through_key_ttls,
    a_key_is_remembered_ten_minutes_even_when_the_history_expires_sooner,
);

async fn a_repeated_message_key_is_stored_once_and_replayed(deployment: Deployment) {
    let room = unique("room");
    let mut alice = WsClient::connect(&deployment.a().ws_url("alice")).await;
    let mut bob = WsClient::connect(&deployment.b().ws_url("bob")).await;
    alice.join(&room).await;
    bob.join(&room).await;

    let original = request_as(&mut alice, message(&room, "once", "k1"), "first").await;
    let replay = request_as(&mut alice, message(&room, "twice?", "k1"), "second").await;
    alice.say(&room, "marker").await;
    let seen_by_bob = until_marker(&mut bob, "message", "marker").await;

    assert_eq!(original["type"], "message", "{original}");
    assert_eq!(original["content"], "once");
    assert_replay(&original, &replay, "second");
    assert_eq!(seen_by_bob, vec![original.clone()], "bob got it once");
    let stored = room_messages(deployment.b(), &room).await;
    let contents: Vec<&str> = stored
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["once", "marker"], "stored once: {stored:?}");
    assert_eq!(stored[0]["id"], original["id"]);
}

#[tokio::test]
async fn a_repeated_message_key_is_stored_once_and_replayed_in_memory() {
    a_repeated_message_key_is_stored_once_and_replayed(memory().await).await;
}

async fn a_repeated_dm_key_is_stored_once_and_replayed(deployment: Deployment) {
    let mut alice = WsClient::connect(&deployment.a().ws_url("alice")).await;
    let mut bob = WsClient::connect(&deployment.b().ws_url("bob")).await;

    let original = request_as(&mut alice, dm("bob", "psst", "k1"), "first").await;
    let replay = request_as(&mut alice, dm("bob", "psst again?", "k1"), "second").await;
    let marker = request_as(
        &mut alice,
        json!({"type": "dm", "to": "bob", "content": "marker"}),
        "m",
    )
    .await;
    let seen_by_bob = until_marker(&mut bob, "dm", "marker").await;
    let history = request_as(
        &mut bob,
        json!({"type": "history", "with": "alice", "limit": 10}),
        "h",
    )
    .await;

    assert_eq!(original["type"], "dm", "{original}");
    assert_eq!(marker["type"], "dm", "{marker}");
    assert_replay(&original, &replay, "second");
    assert_eq!(seen_by_bob, vec![original.clone()], "bob got it once");
    let contents: Vec<&str> = history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["psst", "marker"], "stored once: {history}");
}

#[tokio::test]
async fn a_repeated_dm_key_is_stored_once_and_replayed_in_memory() {
    a_repeated_dm_key_is_stored_once_and_replayed(memory().await).await;
}

async fn the_same_key_from_another_user_or_to_another_room_is_a_new_message(
    deployment: Deployment,
) {
    let (room, other) = (unique("room"), unique("other"));
    let mut alice = WsClient::connect(&deployment.a().ws_url("alice")).await;
    let mut bob = WsClient::connect(&deployment.b().ws_url("bob")).await;
    for client in [&mut alice, &mut bob] {
        client.join(&room).await;
        client.join(&other).await;
    }

    let first = request_as(&mut alice, message(&room, "a", "shared"), "1").await;
    let by_bob = request_as(&mut bob, message(&room, "b", "shared"), "2").await;
    let elsewhere = request_as(&mut alice, message(&other, "c", "shared"), "3").await;
    let as_dm = request_as(&mut alice, dm("bob", "d", "shared"), "4").await;
    let back = request_as(&mut bob, dm("alice", "e", "shared"), "5").await;

    let answers = [&first, &by_bob, &elsewhere, &as_dm, &back];
    let contents: Vec<&str> = answers
        .iter()
        .map(|f| f["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["a", "b", "c", "d", "e"], "each a new message");
    assert_ne!(first["id"], by_bob["id"]);
    assert_ne!(as_dm["id"], back["id"]);
    assert_eq!(room_messages(deployment.a(), &room).await.len(), 2);
    assert_eq!(room_messages(deployment.a(), &other).await.len(), 1);
}

#[tokio::test]
async fn the_same_key_from_another_user_or_to_another_room_is_a_new_message_in_memory() {
    the_same_key_from_another_user_or_to_another_room_is_a_new_message(memory().await).await;
}

#[tokio::test]
async fn an_empty_or_65_character_key_is_a_bad_request_with_the_ref() {
    let node = TestNode::spawn().await;
    let room = unique("room");
    let mut alice = WsClient::connect(&node.ws_url("alice")).await;
    alice.join(&room).await;
    let long = "k".repeat(65);

    let refused = [
        request_as(&mut alice, message(&room, "x", ""), "empty").await,
        request_as(&mut alice, message(&room, "x", &long), "long").await,
        request_as(&mut alice, dm("bob", "x", ""), "dm-empty").await,
        request_as(&mut alice, dm("bob", "x", &long), "dm-long").await,
    ];
    let longest = request_as(&mut alice, message(&room, "ok", &"k".repeat(64)), "64").await;

    for (frame, reference) in refused.iter().zip(["empty", "long", "dm-empty", "dm-long"]) {
        assert_eq!(frame["type"], "error", "{frame}");
        assert_eq!(frame["code"], "bad_request", "{frame}");
        assert_eq!(frame["ref"], reference, "{frame}");
    }
    assert_eq!(
        longest["type"], "message",
        "64 characters are fine: {longest}"
    );
    let stored = room_messages(&node, &room).await;
    assert_eq!(stored.len(), 1, "nothing refused was stored: {stored:?}");
}

/// POSTs a message to `room` on `node`; returns status, headers and body.
async fn post(
    node: &TestNode,
    room: &str,
    body: Value,
    header: Option<&str>,
) -> (StatusCode, HeaderMap, Value) {
    let mut request = reqwest::Client::new()
        .post(node.url(&format!("/api/rooms/{room}/messages")))
        .json(&body);
    if let Some(key) = header {
        request = request.header("Idempotency-Key", key);
    }
    let response = tokio::time::timeout(crate::support::TIMEOUT, request.send())
        .await
        .expect("answer in time")
        .expect("POST answers");
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.json().await.expect("JSON body"))
}

fn replayed(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("idempotent-replayed")
        .map(|v| v.to_str().unwrap())
}

async fn a_repeated_rest_post_answers_200_replayed_with_the_original(deployment: Deployment) {
    let room = unique("room");
    let with_body = json!({"user": "alice", "content": "body key", "idempotency_key": "b1"});
    let with_header = json!({"user": "alice", "content": "header key"});

    let (s1, h1, first) = post(deployment.a(), &room, with_body.clone(), None).await;
    let (s2, h2, again) = post(deployment.b(), &room, with_body, None).await;
    let (s3, h3, third) = post(deployment.a(), &room, with_header.clone(), Some("h1")).await;
    let (s4, h4, fourth) = post(deployment.b(), &room, with_header, Some("h1")).await;

    assert_eq!((s1, replayed(&h1)), (StatusCode::CREATED, None), "{first}");
    assert_eq!(
        (s2, replayed(&h2)),
        (StatusCode::OK, Some("true")),
        "{again}"
    );
    assert_eq!(again, first, "the same message");
    assert_eq!((s3, replayed(&h3)), (StatusCode::CREATED, None), "{third}");
    assert_eq!(
        (s4, replayed(&h4)),
        (StatusCode::OK, Some("true")),
        "{fourth}"
    );
    assert_eq!(fourth, third, "the same message");
    let stored = room_messages(deployment.a(), &room).await;
    assert_eq!(stored, vec![first, third], "stored once each");
}

#[tokio::test]
async fn a_repeated_rest_post_answers_200_replayed_with_the_original_in_memory() {
    a_repeated_rest_post_answers_200_replayed_with_the_original(memory().await).await;
}

async fn a_retry_on_another_node_after_a_dropped_connection_replays(deployment: Deployment) {
    let room = unique("room");
    let mut bob = WsClient::connect(&deployment.b().ws_url("bob")).await;
    bob.join(&room).await;
    let mut alice = WsClient::connect(&deployment.a().ws_url("alice")).await;
    alice.join(&room).await;
    let original = request_as(&mut alice, message(&room, "once", "retry"), "1").await;
    alice.close().await;

    // The client reconnects through the load balancer, to the other node.
    let mut again = WsClient::connect(&deployment.b().ws_url("alice")).await;
    again.join(&room).await;
    let replay = request_as(&mut again, message(&room, "once", "retry"), "2").await;
    let (status, headers, over_rest) = post(
        deployment.a(),
        &room,
        json!({"user": "alice", "content": "once", "idempotency_key": "retry"}),
        None,
    )
    .await;
    again.say(&room, "marker").await;
    let seen_by_bob = until_marker(&mut bob, "message", "marker").await;

    assert_replay(&original, &replay, "2");
    assert_eq!((status, replayed(&headers)), (StatusCode::OK, Some("true")));
    assert_eq!(over_rest["id"], original["id"], "{over_rest}");
    assert_eq!(seen_by_bob, vec![original], "bob got it once");
}

#[tokio::test]
async fn history_expires_after_the_ttl_in_memory() {
    let node = TestNode::spawn_with(|s| s.history_ttl_secs = 1).await;
    let room = unique("room");
    let mut alice = WsClient::connect(&node.ws_url("alice")).await;
    alice.join(&room).await;
    alice.say(&room, "fleeting").await;
    assert_eq!(room_messages(&node, &room).await.len(), 1);

    eventually("the history to expire", || async {
        room_messages(&node, &room).await.is_empty().then_some(())
    })
    .await;
    let rejoined = WsClient::connect(&node.ws_url("bob"))
        .await
        .join(&room)
        .await;
    assert_eq!(rejoined["history"], json!([]), "{rejoined}");
}

/// The keys' own TTLs, read where they live (on a Redis Cluster, each at
/// its primary).
async fn history_expires_after_the_ttl_through_key_ttls(backing: Backing) {
    let cluster = Cluster::start_with_on(backing, 1, |s| s.history_ttl_secs = 2).await;
    let node = &cluster.nodes[0];
    let room = unique("room");
    let mut alice = WsClient::connect(&node.ws_url("alice")).await;
    alice.join(&room).await;
    alice.request(message(&room, "fleeting", "k")).await;
    alice
        .request(json!({"type": "dm", "to": "bob", "content": "fleeting"}))
        .await;
    let mut redis = cluster.redis_connection().await;
    let stream = format!("{}{{r:{room}}}:h", cluster.prefix);
    let ttl: i64 = redis.pttl(&stream).await.unwrap();
    let idem: i64 = redis
        .pttl(format!("{}{{r:{room}}}:i:alice:k", cluster.prefix))
        .await
        .unwrap();
    let pair: i64 = redis
        .pttl(format!("{}{{d:alice:bob}}:h", cluster.prefix))
        .await
        .unwrap();
    let inbox: i64 = redis
        .pttl(format!("{}{{u:alice}}:x", cluster.prefix))
        .await
        .unwrap();

    assert!(
        0 < ttl && ttl <= 2000,
        "the room's stream expires: PTTL {ttl}"
    );
    assert!(
        0 < pair && pair <= 2000,
        "the DM pair's stream expires: PTTL {pair}"
    );
    assert!(
        0 < inbox && inbox <= 2000,
        "the DM inbox expires: PTTL {inbox}"
    );
    assert!(
        0 < idem && idem <= 600_000,
        "the key is kept 10 minutes: PTTL {idem}"
    );
    eventually("the history to expire", || async {
        room_messages(node, &room).await.is_empty().then_some(())
    })
    .await;
}

async fn a_key_outlives_a_shorter_history_ttl(deployment: Deployment) {
    let room = unique("room");
    let mut alice = WsClient::connect(&deployment.a().ws_url("alice")).await;
    alice.join(&room).await;
    let original = request_as(&mut alice, message(&room, "once", "k"), "1").await;
    eventually("the history to expire", || async {
        room_messages(deployment.a(), &room)
            .await
            .is_empty()
            .then_some(())
    })
    .await;

    let replay = request_as(&mut alice, message(&room, "once", "k"), "2").await;

    assert_replay(&original, &replay, "2");
    assert!(
        room_messages(deployment.a(), &room).await.is_empty(),
        "not stored again"
    );
}

#[tokio::test]
async fn a_key_is_remembered_ten_minutes_even_when_the_history_expires_sooner_in_memory() {
    let node = TestNode::spawn_with(|s| s.history_ttl_secs = 1).await;
    a_key_outlives_a_shorter_history_ttl(Deployment::Memory(node)).await;
}

async fn a_key_is_remembered_ten_minutes_even_when_the_history_expires_sooner(backing: Backing) {
    let cluster = Cluster::start_with_on(backing, 2, |s| s.history_ttl_secs = 1).await;
    a_key_outlives_a_shorter_history_ttl(Deployment::Nodes(cluster)).await;
}
