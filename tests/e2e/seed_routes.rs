//! The seed-compatible routes (contract v2): each answers what the route it
//! mirrors answers, with the same auth and limits. Every test asks both
//! routes and compares.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::auth::{SECRET, token};
use crate::support::http::{Answer, call};
use crate::support::node::Endpoint;
use crate::support::{TestNode, WsClient, unique};

async fn get(node: &TestNode, path: &str) -> Answer {
    call(Method::GET, &node.url(path), None, &[]).await
}

async fn send(node: &TestNode, body: &Value) -> Answer {
    call(Method::POST, &node.url("/api/messages"), Some(body), &[]).await
}

fn assert_same(seed: &Answer, original: &Answer) {
    assert_eq!(
        (seed.status, &seed.body),
        (original.status, &original.body),
        "the seed route answers what its original answers"
    );
}

fn assert_error(answer: &Answer, status: StatusCode, code: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.body["error"]["code"], code, "{}", answer.body);
    assert!(
        answer.body["error"]["message"].is_string(),
        "{}",
        answer.body
    );
}

fn replayed(answer: &Answer) -> Option<&str> {
    answer.header("idempotent-replayed")
}

fn ws_at(node: &TestNode, path_and_query: &str) -> String {
    format!("ws://{}{path_and_query}", node.addr)
}

#[tokio::test]
async fn healthz_answers_what_health_answers() {
    let node = TestNode::spawn().await;

    let healthz = get(&node, "/healthz").await;
    let health = get(&node, "/health").await;

    assert_eq!(healthz.status, StatusCode::OK);
    assert_same(&healthz, &health);
}

#[tokio::test]
async fn active_rooms_lists_only_rooms_with_online_members_sorted() {
    let node = TestNode::spawn().await;
    let created = call(
        Method::POST,
        &node.url("/api/rooms"),
        Some(&json!({"name": "empty"})),
        &[],
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let mut alice = WsClient::connect(&node.ws_url("alice")).await;
    alice.join("lobby").await;
    let mut bob = WsClient::connect(&node.ws_url("bob")).await;
    bob.join("dev").await;

    let active = get(&node, "/active-rooms").await;
    let listed = get(&node, "/api/rooms").await;

    assert_eq!(active.status, StatusCode::OK);
    assert_eq!(active.body, json!(["dev", "lobby"]));
    let with_members: Vec<&Value> = listed
        .body
        .as_array()
        .expect("a list")
        .iter()
        .filter(|r| r["members"].as_u64() > Some(0))
        .map(|r| &r["name"])
        .collect();
    assert_eq!(
        json!(with_members),
        active.body,
        "the same rooms as /api/rooms"
    );

    bob.close().await;
    crate::support::eventually("dev is no longer active", || async {
        (get(&node, "/active-rooms").await.body == json!(["lobby"])).then_some(())
    })
    .await;
}

#[tokio::test]
async fn room_users_answers_what_the_rooms_users_route_answers() {
    let node = TestNode::spawn().await;
    let room = unique("room");
    let mut bob = WsClient::connect(&node.ws_url("bob")).await;
    bob.join(&room).await;
    let mut alice = WsClient::connect(&node.ws_url("alice")).await;
    alice.join(&room).await;

    let seed = get(&node, &format!("/room-users?room={room}")).await;
    let original = get(&node, &format!("/api/rooms/{room}/users")).await;
    let bad_seed = get(&node, "/room-users?room=bad%20name").await;
    let bad_original = get(&node, "/api/rooms/bad%20name/users").await;
    let missing = get(&node, "/room-users").await;

    assert_eq!(seed.body, json!(["alice", "bob"]));
    assert_same(&seed, &original);
    assert_error(&bad_seed, StatusCode::BAD_REQUEST, "invalid_room");
    assert_eq!(
        bad_seed.body["error"]["code"],
        bad_original.body["error"]["code"]
    );
    assert_error(&missing, StatusCode::BAD_REQUEST, "bad_request");
}

#[tokio::test]
async fn api_ws_and_room_connect_and_chat_like_ws() {
    let node = TestNode::spawn().await;
    let room = unique("room");
    let mut alice = WsClient::connect(&ws_at(&node, "/api/ws?username=alice&user_id=x1")).await;
    // `/room` takes `/ws`'s parameters, `room` (join at once) included.
    let mut bob = WsClient::connect(&ws_at(
        &node,
        &format!("/room?username=bob&user_id=x2&room={room}"),
    ))
    .await;
    let mut carol = WsClient::connect(&node.ws_url("carol")).await;

    assert_eq!(alice.welcome["user"], "alice");
    assert_eq!(bob.welcome["user"], "bob");
    let joined = bob.recv_until(|f| f["type"] == "joined").await;
    assert_eq!(joined["room"], room.as_str());
    alice.join(&room).await;
    carol.join(&room).await;
    let said = alice.say(&room, "hello").await;
    let at_bob = bob
        .recv_until(|f| f["type"] == "message" && f["content"] == "hello")
        .await;
    let at_carol = carol
        .recv_until(|f| f["type"] == "message" && f["content"] == "hello")
        .await;
    assert_eq!(at_bob["id"], said["id"]);
    assert_eq!(at_carol["id"], said["id"]);
    let dm = json!({"type": "dm", "to": "alice", "content": "psst"});
    bob.send(dm).await;
    let got = alice.recv_until(|f| f["type"] == "dm").await;
    assert_eq!(
        (&got["from"], &got["content"]),
        (&json!("bob"), &json!("psst"))
    );

    // A bad name is refused before the upgrade, as on `/ws`.
    for path in [
        "/api/ws?username=bad%20name&user_id=1",
        "/room?username=bad%20name",
        "/ws?username=bad%20name",
    ] {
        let refused = WsClient::try_connect(&ws_at(&node, path))
            .await
            .err()
            .expect("refused");
        assert_eq!(refused.status, 400, "{path}");
        assert_eq!(refused.body["error"]["code"], "invalid_user", "{path}");
    }
}

#[tokio::test]
async fn post_api_messages_sends_a_room_message_like_the_room_route() {
    let node = TestNode::spawn().await;
    let room = unique("room");
    let mut bob = WsClient::connect(&node.ws_url("bob")).await;
    bob.join(&room).await;

    let seed = send(
        &node,
        &json!({"room": room, "user": "alice", "content": "hi"}),
    )
    .await;
    let original = call(
        Method::POST,
        &node.url(&format!("/api/rooms/{room}/messages")),
        Some(&json!({"user": "alice", "content": "hi"})),
        &[],
    )
    .await;
    let by_username = send(
        &node,
        &json!({"room": room, "username": "carol", "content": "c"}),
    )
    .await;
    let by_sender = send(
        &node,
        &json!({"room": room, "sender": "dave", "content": "d"}),
    )
    .await;

    assert_eq!(seed.status, StatusCode::CREATED, "{}", seed.body);
    assert_eq!(original.status, StatusCode::CREATED);
    let shape = |b: &Value| {
        let mut keys: Vec<String> = b.as_object().expect("an object").keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(
        shape(&seed.body),
        shape(&original.body),
        "the same message object"
    );
    assert_eq!(seed.body["type"], "message");
    assert_eq!(
        (&seed.body["room"], &seed.body["user"]),
        (&json!(room), &json!("alice"))
    );
    assert_eq!(by_username.body["user"], "carol", "{}", by_username.body);
    assert_eq!(by_sender.body["user"], "dave", "{}", by_sender.body);
    let delivered = bob.recv_until(|f| f["type"] == "message").await;
    assert_eq!(delivered, seed.body, "delivered to the member's socket");
    let stored = get(&node, &format!("/api/rooms/{room}/messages")).await;
    assert_eq!(
        stored.body,
        json!([seed.body, original.body, by_username.body, by_sender.body])
    );
}

#[tokio::test]
async fn post_api_messages_sends_a_dm_like_the_dm_command() {
    let node = TestNode::spawn().await;
    let mut bob = WsClient::connect(&node.ws_url("bob")).await;

    let sent = send(
        &node,
        &json!({"to": "bob", "user": "alice", "content": "hi"}),
    )
    .await;
    let to_offline = send(
        &node,
        &json!({"to": "carol", "user": "alice", "content": "later"}),
    )
    .await;

    assert_eq!(sent.status, StatusCode::CREATED, "{}", sent.body);
    assert_eq!(
        (
            &sent.body["type"],
            &sent.body["from"],
            &sent.body["to"],
            &sent.body["content"]
        ),
        (&json!("dm"), &json!("alice"), &json!("bob"), &json!("hi"))
    );
    let delivered = bob.recv_until(|f| f["type"] == "dm").await;
    assert_eq!(delivered, sent.body, "delivered to the recipient's socket");
    // Stored for an offline recipient, as a WebSocket DM is.
    assert_eq!(
        to_offline.status,
        StatusCode::CREATED,
        "{}",
        to_offline.body
    );
    let mut carol = WsClient::connect(&node.ws_url("carol")).await;
    let history = carol
        .request(json!({"type": "history", "with": "alice"}))
        .await;
    assert_eq!(history["messages"], json!([to_offline.body]));
}

#[tokio::test]
async fn with_auth_the_seed_routes_need_the_token_and_the_sender_is_its_sub() {
    let node = TestNode::spawn_with(|s| s.jwt_secret = Some(SECRET.to_owned())).await;
    let room = unique("room");
    let bearer = format!("Bearer {}", token("alice"));
    let as_alice = [("authorization", bearer.as_str())];
    let mut bob = WsClient::connect(&ws_at(
        &node,
        &format!("/api/ws?token={}&user_id=7", token("bob")),
    ))
    .await;
    assert_eq!(bob.welcome["user"], "bob");
    bob.join(&room).await;
    let url = node.url("/api/messages");

    let impersonating = json!({"room": room, "user": "mallory", "content": "hi"});
    let sent = call(Method::POST, &url, Some(&impersonating), &as_alice).await;
    let dm = json!({"to": "bob", "sender": "mallory", "content": "psst"});
    let dm_sent = call(Method::POST, &url, Some(&dm), &as_alice).await;
    let no_token = call(Method::POST, &url, Some(&impersonating), &[]).await;

    assert_eq!(sent.status, StatusCode::CREATED, "{}", sent.body);
    assert_eq!(
        sent.body["user"], "alice",
        "the token's sub, not the body's user"
    );
    assert_eq!(dm_sent.body["from"], "alice", "{}", dm_sent.body);
    assert_error(&no_token, StatusCode::UNAUTHORIZED, "unauthorized");
    // The reads need the token like the routes they mirror.
    for (seed, original) in [
        ("/active-rooms".to_owned(), "/api/rooms".to_owned()),
        (
            format!("/room-users?room={room}"),
            format!("/api/rooms/{room}/users"),
        ),
    ] {
        let without = get(&node, &seed).await;
        assert_error(&without, StatusCode::UNAUTHORIZED, "unauthorized");
        let with = call(Method::GET, &node.url(&seed), None, &as_alice).await;
        assert_eq!(with.status, StatusCode::OK, "{seed}: {}", with.body);
        let original = call(Method::GET, &node.url(&original), None, &as_alice).await;
        assert_eq!(with.status, original.status);
    }
    // Health stays open, as `/health` does.
    assert_eq!(get(&node, "/healthz").await.status, StatusCode::OK);
    let refused = WsClient::try_connect(&ws_at(&node, "/room?username=alice"))
        .await
        .err()
        .expect("refused without a token");
    assert_eq!(refused.status, 401);
}

#[tokio::test]
async fn post_api_messages_refuses_bad_bodies_with_the_right_code() {
    let node = TestNode::spawn().await;
    let url = node.url("/api/messages");

    let not_json = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);
    let body: Value = not_json.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request");
    let too_long = "x".repeat(4097);
    for (body, status, code) in [
        (
            json!({"room": "r", "user": "alice"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            json!({"user": "alice", "content": "hi"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            json!({"room": "r", "to": "bob", "user": "alice", "content": "hi"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            json!({"room": "bad name", "user": "alice", "content": "hi"}),
            StatusCode::BAD_REQUEST,
            "invalid_room",
        ),
        (
            json!({"to": "bad name", "user": "alice", "content": "hi"}),
            StatusCode::BAD_REQUEST,
            "invalid_user",
        ),
        (
            json!({"room": "r", "content": "hi"}),
            StatusCode::BAD_REQUEST,
            "invalid_user",
        ),
        (
            json!({"room": "r", "user": "alice", "content": ""}),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            json!({"to": "bob", "user": "alice", "content": too_long}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
        (
            json!({"room": "r", "user": "alice", "content": "hi", "idempotency_key": ""}),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ] {
        let answer = send(&node, &body).await;
        assert_error(&answer, status, code);
    }
    let stored = get(&node, "/api/rooms/r/messages").await;
    assert_eq!(stored.body, json!([]), "nothing refused was stored");
}

#[tokio::test]
async fn post_api_messages_is_rate_limited_like_every_post() {
    let node = TestNode::spawn_with(|s| {
        s.rate_limit = 1;
        s.rate_burst = 2;
    })
    .await;
    let room = unique("room");

    let first = send(&node, &json!({"room": room, "user": "a", "content": "1"})).await;
    // Another name in the body is the same client: the bucket is its address's.
    let second = send(&node, &json!({"to": "bob", "user": "b", "content": "2"})).await;
    let third = send(&node, &json!({"room": room, "user": "c", "content": "3"})).await;
    let other_route = call(
        Method::POST,
        &node.url(&format!("/api/rooms/{room}/messages")),
        Some(&json!({"user": "d", "content": "4"})),
        &[],
    )
    .await;

    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(second.status, StatusCode::CREATED);
    for refused in [&third, &other_route] {
        assert_error(refused, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
        assert!(refused.retry_after().is_some());
    }
}

#[tokio::test]
async fn dms_over_rest_keep_the_dm_rate() {
    let node = TestNode::spawn_with(|s| {
        s.rate_limit = 0;
        s.dm_rate = 1;
    })
    .await;
    let room = unique("room");
    let dm = json!({"to": "bob", "user": "alice", "content": "hi"});

    let allowed = [send(&node, &dm).await, send(&node, &dm).await];
    let over = send(&node, &dm).await;
    let room_message = send(
        &node,
        &json!({"room": room, "user": "alice", "content": "hi"}),
    )
    .await;

    assert!(allowed.iter().all(|a| a.status == StatusCode::CREATED));
    assert_error(&over, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(over.retry_after().is_some());
    assert_eq!(
        room_message.status,
        StatusCode::CREATED,
        "the DM rate is for DMs only"
    );
}

#[tokio::test]
async fn post_api_messages_replays_a_repeated_idempotency_key_from_body_or_header() {
    let node = TestNode::spawn().await;
    let room = unique("room");
    let url = node.url("/api/messages");
    let in_body =
        json!({"room": room, "user": "alice", "content": "once", "idempotency_key": "k1"});
    let dm = json!({"to": "bob", "user": "alice", "content": "once"});
    let header = [("idempotency-key", "k2")];

    let first = send(&node, &in_body).await;
    let again = send(&node, &in_body).await;
    let dm_first = call(Method::POST, &url, Some(&dm), &header).await;
    let dm_again = call(Method::POST, &url, Some(&dm), &header).await;
    // The room route shares the key: the same send, over the other route.
    let via_room_route = call(
        Method::POST,
        &node.url(&format!("/api/rooms/{room}/messages")),
        Some(&json!({"user": "alice", "content": "once", "idempotency_key": "k1"})),
        &[],
    )
    .await;

    assert_eq!(
        (first.status, replayed(&first)),
        (StatusCode::CREATED, None)
    );
    assert_eq!(
        (again.status, replayed(&again)),
        (StatusCode::OK, Some("true"))
    );
    assert_eq!(again.body, first.body, "the original message");
    assert_eq!(
        (dm_first.status, replayed(&dm_first)),
        (StatusCode::CREATED, None)
    );
    assert_eq!(
        (dm_again.status, replayed(&dm_again)),
        (StatusCode::OK, Some("true"))
    );
    assert_eq!(dm_again.body, dm_first.body, "the original DM");
    assert_eq!(
        (via_room_route.status, replayed(&via_room_route)),
        (StatusCode::OK, Some("true"))
    );
    assert_eq!(via_room_route.body, first.body);
    let stored = get(&node, &format!("/api/rooms/{room}/messages")).await;
    assert_eq!(stored.body, json!([first.body]), "stored once");
    let mut bob = WsClient::connect(&node.ws_url("bob")).await;
    let history = bob
        .request(json!({"type": "history", "with": "alice"}))
        .await;
    assert_eq!(
        history["messages"],
        json!([dm_first.body]),
        "the DM stored once"
    );
}

#[tokio::test]
async fn a_foreign_origin_and_an_oversized_body_are_refused_as_on_the_originals() {
    let node = TestNode::spawn().await;
    let foreign = [("origin", "https://evil.example")];
    let body = json!({"room": "r", "user": "alice", "content": "hi"});

    for (seed, original) in [
        ("/active-rooms", "/api/rooms"),
        ("/room-users?room=r", "/api/rooms/r/users"),
    ] {
        let seed = call(Method::GET, &node.url(seed), None, &foreign).await;
        let original = call(Method::GET, &node.url(original), None, &foreign).await;
        assert_error(&seed, StatusCode::FORBIDDEN, "forbidden_origin");
        assert_same(&seed, &original);
    }
    let posted = call(
        Method::POST,
        &node.url("/api/messages"),
        Some(&body),
        &foreign,
    )
    .await;
    assert_error(&posted, StatusCode::FORBIDDEN, "forbidden_origin");
    for path in ["/api/ws?username=alice&user_id=1", "/room?username=alice"] {
        let refused = WsClient::try_connect_with_headers(
            &ws_at(&node, path),
            &[("Origin", "https://evil.example")],
        )
        .await
        .err()
        .expect("refused");
        assert_eq!(refused.status, 403, "{path}");
        assert_eq!(refused.body["error"]["code"], "forbidden_origin", "{path}");
    }
    let huge = json!({"room": "r", "user": "alice", "content": "x".repeat(70 * 1024)});
    let too_large = send(&node, &huge).await;
    assert_error(&too_large, StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    assert_eq!(get(&node, "/api/rooms/r/messages").await.body, json!([]));
}
