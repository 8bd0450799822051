//! The limits that hold REST and history reads as they hold WebSocket sends:
//! every `POST` takes a token from a bucket per user (token mode) or per
//! client address (anonymous mode), the directory of created rooms is
//! bounded, and a session's `history` requests have a bucket of their own.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::cluster::on_both_backings;
use crate::support::http::{Answer, call};
use crate::support::node::Endpoint;
use crate::support::{Backing, Cluster, TIMEOUT, TestNode, WsClient, sample, scrape, unique};

/// At least 32 bytes, as the contract asks of a JWT secret.
const SECRET: &str = "rest-limits-e2e-secret-of-32-bytes-or-more";

/// A valid token for `user`, good for an hour.
fn token(user: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": user, "exp": now + 3600}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("token")
}

/// `chorus_rate_limited_total{kind}` now. The recorder is shared by every
/// node of this test process, so callers compare before and after.
async fn refusals(node: &impl Endpoint, kind: &str) -> f64 {
    let text = scrape(&node.url("/metrics")).await;
    sample(
        &text,
        "chorus_rate_limited_total",
        &format!("kind=\"{kind}\""),
    )
}

/// POSTs `body` to `path` with extra `headers`.
async fn post(node: &impl Endpoint, path: &str, body: &Value, headers: &[(&str, &str)]) -> Answer {
    call(Method::POST, &node.url(path), Some(body), headers).await
}

/// Posts a message to `room` as `user` (ignored in token mode) with `headers`.
async fn say(node: &impl Endpoint, room: &str, user: &str, headers: &[(&str, &str)]) -> Answer {
    post(
        node,
        &format!("/api/rooms/{room}/messages"),
        &json!({"user": user, "content": "hi"}),
        headers,
    )
    .await
}

/// Asserts the contract's refusal: 429, `rate_limited` in the error shape,
/// and a `Retry-After` of whole seconds, at least one.
fn assert_rate_limited(answer: &Answer) {
    assert_eq!(
        answer.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        answer.body
    );
    assert_eq!(
        answer.body["error"]["code"], "rate_limited",
        "{}",
        answer.body
    );
    assert!(
        answer.body["error"]["message"].is_string(),
        "{}",
        answer.body
    );
    let seconds: u64 = answer
        .retry_after()
        .expect("a Retry-After header")
        .parse()
        .expect("Retry-After in whole seconds");
    assert!(seconds >= 1, "Retry-After {seconds}");
}

/// Repeats `attempt` until it is no longer refused with 429, as a client
/// honouring `Retry-After` would (polling faster, to keep the test short),
/// failing after [`TIMEOUT`]; returns the accepted answer.
async fn retry_until_accepted<F, Fut>(mut attempt: F) -> Answer
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let answer = attempt().await;
        if answer.status != StatusCode::TOO_MANY_REQUESTS {
            return answer;
        }
        assert!(Instant::now() < deadline, "still refused after {TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn rest_posts_over_the_burst_get_429_with_retry_after_per_user_until_the_bucket_refills() {
    let node = TestNode::spawn_with(|s| {
        s.jwt_secret = Some(SECRET.to_owned());
        s.rate_limit = 1;
        s.rate_burst = 2;
    })
    .await;
    let room = unique("room");
    let alice = format!("Bearer {}", token(&unique("alice")));
    let bob = format!("Bearer {}", token(&unique("bob")));
    let as_alice = [("Authorization", alice.as_str())];
    let as_bob = [("Authorization", bob.as_str())];
    let refused_before = refusals(&node, "rest").await;

    for _ in 0..2 {
        assert_eq!(
            say(&node, &room, "x", &as_alice).await.status,
            StatusCode::CREATED
        );
    }
    assert_rate_limited(&say(&node, &room, "x", &as_alice).await);
    // Every POST shares the user's bucket, room creation included.
    let create = post(
        &node,
        "/api/rooms",
        &json!({"name": unique("r")}),
        &as_alice,
    )
    .await;
    assert_rate_limited(&create);

    // Another user (from the same address) has a bucket of its own.
    assert_eq!(
        say(&node, &room, "x", &as_bob).await.status,
        StatusCode::CREATED
    );
    let refused_after = refusals(&node, "rest").await;
    assert!(
        refused_after >= refused_before + 2.0,
        "refusals counted: {refused_before} -> {refused_after}"
    );

    let later = retry_until_accepted(|| say(&node, &room, "x", &as_alice)).await;
    assert_eq!(later.status, StatusCode::CREATED, "{}", later.body);
}

#[tokio::test]
async fn anonymous_rest_posts_are_limited_per_client_address_whatever_user_the_body_names() {
    let node = TestNode::spawn_with(|s| {
        s.rate_limit = 1;
        s.rate_burst = 2;
    })
    .await;
    let room = unique("room");
    assert_eq!(
        say(&node, &room, &unique("a"), &[]).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        say(&node, &room, &unique("b"), &[]).await.status,
        StatusCode::CREATED
    );
    // A fresh name in the body is no fresh bucket: the address is the key.
    assert_rate_limited(&say(&node, &room, &unique("c"), &[]).await);
    let later = retry_until_accepted(|| say(&node, &room, "d", &[])).await;
    assert_eq!(later.status, StatusCode::CREATED, "{}", later.body);
}

#[tokio::test]
async fn behind_a_trusted_proxy_rest_posts_are_limited_per_forwarded_address_and_ipv6_per_64() {
    let node = TestNode::spawn_with(|s| {
        s.rate_limit = 1;
        s.rate_burst = 1;
        s.trusted_proxy_header = Some("X-Real-IP".into());
    })
    .await;
    let room = unique("room");
    let from = |ip: &'static str| [("X-Real-IP", ip)];

    assert_eq!(
        say(&node, &room, "u", &from("203.0.113.1")).await.status,
        StatusCode::CREATED
    );
    assert_rate_limited(&say(&node, &room, "u", &from("203.0.113.1")).await);
    assert_eq!(
        say(&node, &room, "u", &from("203.0.113.2")).await.status,
        StatusCode::CREATED,
        "another address has its own bucket"
    );

    // One IPv6 host usually holds a whole /64: its addresses share a bucket.
    assert_eq!(
        say(&node, &room, "u", &from("2001:db8::1")).await.status,
        StatusCode::CREATED
    );
    assert_rate_limited(&say(&node, &room, "u", &from("2001:db8::2")).await);
    assert_eq!(
        say(&node, &room, "u", &from("2001:db8:0:1::1"))
            .await
            .status,
        StatusCode::CREATED,
        "another /64 has its own bucket"
    );
}

/// Fills the created-room directory of `node` (bound 2) and checks the
/// refusal, that rooms with members are still listed, and that a refused
/// name that exists still answers `room_exists`.
async fn created_rooms_stop_at_the_bound(node: &impl Endpoint) {
    let (first, second, third) = (unique("c1"), unique("c2"), unique("c3"));
    for room in [&first, &second] {
        let answer = post(node, "/api/rooms", &json!({"name": room}), &[]).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    }
    let refused = post(node, "/api/rooms", &json!({"name": third}), &[]).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert_eq!(
        refused.body["error"]["code"], "too_many_rooms",
        "{}",
        refused.body
    );
    assert_eq!(refused.retry_after(), None, "waiting does not help");
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains('2')),
        "the message names the bound: {}",
        refused.body
    );
    let again = post(node, "/api/rooms", &json!({"name": first}), &[]).await;
    assert_eq!(again.body["error"]["code"], "room_exists", "{}", again.body);

    // Joining needs no creation: a room with members is listed as before.
    let occupied = unique("occupied");
    let mut alice = WsClient::connect(&node.ws_url(&unique("alice"))).await;
    alice.join(&occupied).await;
    let rooms: Value = crate::support::get_json(&node.url("/api/rooms")).await;
    let names: Vec<&str> = rooms
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert!(names.contains(&occupied.as_str()), "{rooms}");
    assert!(
        names.contains(&first.as_str()) && names.contains(&second.as_str()),
        "{rooms}"
    );
    assert!(!names.contains(&third.as_str()), "{rooms}");
}

#[tokio::test]
async fn creating_rooms_beyond_the_bound_is_refused_in_memory() {
    let node = TestNode::spawn_with(|s| s.max_created_rooms = 2).await;
    created_rooms_stop_at_the_bound(&node).await;
}

on_both_backings!(creating_rooms_beyond_the_bound_is_refused);

async fn creating_rooms_beyond_the_bound_is_refused(backing: Backing) {
    let cluster = Cluster::start_with_on(backing, 1, |s| s.max_created_rooms = 2).await;
    created_rooms_stop_at_the_bound(&cluster.nodes[0]).await;
}

#[tokio::test]
async fn history_requests_over_their_burst_are_refused_with_the_ref() {
    // A join bucket of two (the larger of one room and two seconds' worth);
    // history has a bucket like it.
    let node = TestNode::spawn_with(|s| {
        s.join_rate = 1;
        s.max_rooms_per_connection = 1;
    })
    .await;
    let room = unique("room");
    let mut alice = WsClient::connect(&node.ws_url(&unique("alice"))).await;
    let refused_before = refusals(&node, "history").await;

    let ask = json!({"type": "history", "room": room});
    for _ in 0..2 {
        let page = alice.request(ask.clone()).await;
        assert_eq!(page["type"], "history", "{page}");
    }
    let refused = alice.request(ask.clone()).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "rate_limited", "{refused}");
    assert!(refused["ref"].is_string(), "{refused}");
    let refused_after = refusals(&node, "history").await;
    assert!(
        refused_after > refused_before,
        "{refused_before} -> {refused_after}"
    );

    // The join bucket is not the history bucket: the join still goes through.
    alice.join(&room).await;
}
