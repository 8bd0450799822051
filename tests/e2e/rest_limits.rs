//! The limits that hold REST and history reads as they hold WebSocket sends:
//! every `POST` takes a token from a bucket per user (token mode) or per
//! client address (anonymous mode), the directory of created rooms is
//! bounded, and a session's `history` requests have a bucket of their own.

use reqwest::StatusCode;
use reqwest::header::RETRY_AFTER;
use serde_json::{Value, json};

use crate::support::node::Endpoint;
use crate::support::{Cluster, TIMEOUT, TestNode, WsClient, sample, scrape, unique};

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

/// What a POST answered: status, `Retry-After` (if any) and the JSON body.
struct Answer {
    status: StatusCode,
    retry_after: Option<String>,
    body: Value,
}

/// POSTs `body` to `path` with extra `headers`.
async fn post(node: &impl Endpoint, path: &str, body: &Value, headers: &[(&str, &str)]) -> Answer {
    let mut request = reqwest::Client::new().post(node.url(path)).json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = tokio::time::timeout(TIMEOUT, request.send())
        .await
        .expect("answer in time")
        .expect("request");
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .map(|v| v.to_str().expect("ASCII").to_owned());
    let body = response.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        retry_after,
        body,
    }
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
    assert_eq!(refused.retry_after, None, "waiting does not help");
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

#[tokio::test]
async fn creating_rooms_beyond_the_bound_is_refused_on_redis() {
    let cluster = Cluster::start_with(1, |s| s.max_created_rooms = 2).await;
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
