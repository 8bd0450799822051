//! Token authentication: with `CHORUS_JWT_SECRET` set, `/ws` and `/api/*`
//! need an HS256 JWT whose `sub` is the user; health, readiness, metrics and
//! the web client stay open.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::node::Endpoint;
use crate::support::{TestNode, WsClient, unique};

/// At least 32 bytes, as the node requires.
pub(crate) const SECRET: &str = "e2e-test-secret-of-at-least-32-bytes";

fn now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    i64::try_from(secs).expect("fits")
}

/// A token with `claims`, signed with `secret` using `algorithm`.
fn sign(claims: &Value, secret: &str, algorithm: Algorithm) -> String {
    jsonwebtoken::encode(
        &Header::new(algorithm),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("token")
}

/// A valid token for `user`, good for an hour.
pub(crate) fn token(user: &str) -> String {
    sign(
        &json!({"sub": user, "exp": now() + 3600}),
        SECRET,
        Algorithm::HS256,
    )
}

async fn auth_node() -> TestNode {
    TestNode::spawn_with(|s| s.jwt_secret = Some(SECRET.to_owned())).await
}

fn ws_with_token(node: &TestNode, token: &str) -> String {
    node.ws_url_query(&format!("token={token}"))
}

/// Asserts that connecting to `url` is refused with 401 and the JSON error.
async fn assert_ws_unauthorized(url: &str) {
    match WsClient::try_connect(url).await {
        Ok(client) => panic!("connected as {}", client.welcome),
        Err(refused) => {
            assert_eq!(refused.status, 401, "{refused:?}");
            assert_eq!(refused.body["error"]["code"], "unauthorized", "{refused:?}");
            assert!(
                refused.body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "{refused:?}"
            );
        }
    }
}

/// `GET path` with an optional `Authorization` header value.
async fn get(node: &TestNode, path: &str, authorization: Option<&str>) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().get(node.url(path));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = request.send().await.expect("answers");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn ws_without_a_token_is_refused_with_401_before_the_upgrade() {
    let node = auth_node().await;

    assert_ws_unauthorized(&node.ws_url("alice")).await;
    assert_ws_unauthorized(&node.ws_url_query("token=")).await;
}

#[tokio::test]
async fn ws_with_a_token_signed_by_another_secret_is_refused_with_401() {
    let node = auth_node().await;
    let forged = sign(
        &json!({"sub": "alice", "exp": now() + 3600}),
        "not-the-secret",
        Algorithm::HS256,
    );

    assert_ws_unauthorized(&ws_with_token(&node, &forged)).await;
}

#[tokio::test]
async fn ws_with_a_token_of_another_algorithm_or_garbage_is_refused_with_401() {
    let node = auth_node().await;
    let hs512 = sign(
        &json!({"sub": "alice", "exp": now() + 3600}),
        SECRET,
        Algorithm::HS512,
    );

    assert_ws_unauthorized(&ws_with_token(&node, &hs512)).await;
    assert_ws_unauthorized(&ws_with_token(&node, "not.a.jwt")).await;
}

#[tokio::test]
async fn ws_with_a_token_expired_beyond_the_leeway_is_refused_with_401() {
    let node = auth_node().await;
    let expired = sign(
        &json!({"sub": "alice", "exp": now() - 60}),
        SECRET,
        Algorithm::HS256,
    );

    assert_ws_unauthorized(&ws_with_token(&node, &expired)).await;
}

#[tokio::test]
async fn ws_with_a_token_not_valid_yet_is_refused_with_401() {
    let node = auth_node().await;
    let early = sign(
        &json!({"sub": "alice", "nbf": now() + 600, "exp": now() + 3600}),
        SECRET,
        Algorithm::HS256,
    );

    assert_ws_unauthorized(&ws_with_token(&node, &early)).await;
}

#[tokio::test]
async fn ws_with_a_sub_that_is_not_a_user_name_is_refused_with_401() {
    let node = auth_node().await;

    for sub in ["two words", "", &"u".repeat(33), "émile"] {
        let bad = sign(
            &json!({"sub": sub, "exp": now() + 3600}),
            SECRET,
            Algorithm::HS256,
        );
        assert_ws_unauthorized(&ws_with_token(&node, &bad)).await;
    }
    let no_sub = sign(&json!({"exp": now() + 3600}), SECRET, Algorithm::HS256);
    assert_ws_unauthorized(&ws_with_token(&node, &no_sub)).await;
}

#[tokio::test]
async fn ws_with_a_valid_token_welcomes_the_sub_and_ignores_the_username_parameter() {
    let node = auth_node().await;
    let token = token("alice");

    let alice =
        WsClient::connect(&node.ws_url_query(&format!("username=mallory&token={token}"))).await;

    assert_eq!(alice.welcome["user"], "alice");
    assert_eq!(alice.welcome["node"], node.node_id.as_str());
}

#[tokio::test]
async fn api_without_a_bearer_token_is_refused_with_401() {
    let node = auth_node().await;
    let forged = sign(
        &json!({"sub": "alice", "exp": now() + 3600}),
        "not-the-secret",
        Algorithm::HS256,
    );
    let valid = token("alice");
    let wrong_scheme = format!("Basic {valid}");
    let wrong_key = format!("Bearer {forged}");
    let room_users = format!("/api/rooms/{}/users", unique("room"));

    for path in [
        "/api/rooms",
        "/api/users",
        "/api/stats",
        room_users.as_str(),
    ] {
        for authorization in [
            None,
            Some(""),
            Some("Bearer "),
            Some(valid.as_str()),
            Some(wrong_scheme.as_str()),
            Some(wrong_key.as_str()),
        ] {
            let (status, body) = get(&node, path, authorization).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{path} with {authorization:?}"
            );
            assert_eq!(body["error"]["code"], "unauthorized", "{body}");
        }
    }
    let created = reqwest::Client::new()
        .post(node.url("/api/rooms"))
        .json(&json!({"name": unique("room")}))
        .send()
        .await
        .expect("answers");
    assert_eq!(created.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn api_with_a_bearer_token_answers() {
    let node = auth_node().await;
    let bearer = format!("Bearer {}", token("alice"));
    let room = unique("room");
    let _alice = {
        let mut alice = WsClient::connect(&ws_with_token(&node, &token("alice"))).await;
        alice.join(&room).await;
        alice
    };

    let (rooms_status, rooms) = get(&node, "/api/rooms", Some(&bearer)).await;
    let (users_status, users) = get(&node, "/api/users", Some(&bearer)).await;
    let (stats_status, stats) = get(&node, "/api/stats", Some(&bearer)).await;
    let (members_status, members) =
        get(&node, &format!("/api/rooms/{room}/users"), Some(&bearer)).await;
    let created = reqwest::Client::new()
        .post(node.url("/api/rooms"))
        .header("authorization", &bearer)
        .json(&json!({"name": unique("created")}))
        .send()
        .await
        .expect("answers");

    assert_eq!(rooms_status, StatusCode::OK);
    assert_eq!(rooms, json!([{"name": room, "members": 1}]));
    assert_eq!(users_status, StatusCode::OK);
    assert_eq!(users, json!(["alice"]));
    assert_eq!(stats_status, StatusCode::OK);
    assert_eq!(stats["connections"], 1);
    assert_eq!(members_status, StatusCode::OK);
    assert_eq!(members, json!(["alice"]));
    assert_eq!(created.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_posted_message_is_from_the_token_sub_never_the_body() {
    let node = auth_node().await;
    let room = unique("room");
    let mut bob = WsClient::connect(&ws_with_token(&node, &token("bob"))).await;
    bob.join(&room).await;
    let client = reqwest::Client::new();
    let url = node.url(&format!("/api/rooms/{room}/messages"));

    let spoofed = client
        .post(&url)
        .header("authorization", format!("Bearer {}", token("alice")))
        .json(&json!({"user": "mallory", "content": "it was me"}))
        .send()
        .await
        .expect("answers");
    let spoofed_status = spoofed.status();
    let spoofed: Value = spoofed.json().await.expect("JSON");
    let without_user = client
        .post(&url)
        .header("authorization", format!("Bearer {}", token("alice")))
        .json(&json!({"content": "no user field"}))
        .send()
        .await
        .expect("answers");
    let without_user_status = without_user.status();
    let unauthenticated = client
        .post(&url)
        .json(&json!({"user": "alice", "content": "anonymous"}))
        .send()
        .await
        .expect("answers");

    assert_eq!(spoofed_status, StatusCode::CREATED, "{spoofed}");
    assert_eq!(spoofed["user"], "alice");
    let received = bob.recv_until(|f| f["type"] == "message").await;
    assert_eq!(received, spoofed);
    assert_eq!(without_user_status, StatusCode::CREATED);
    let second = bob.recv_until(|f| f["type"] == "message").await;
    assert_eq!(second["user"], "alice");
    assert_eq!(second["content"], "no user field");
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
    let (_, history) = get(
        &node,
        &format!("/api/rooms/{room}/messages"),
        Some(&format!("Bearer {}", token("bob"))),
    )
    .await;
    let contents: Vec<&str> = history
        .as_array()
        .expect("array")
        .iter()
        .map(|m| m["content"].as_str().expect("content"))
        .collect();
    assert_eq!(contents, ["it was me", "no user field"]);
}

#[tokio::test]
async fn health_ready_metrics_and_the_web_client_stay_open_without_a_token() {
    let node = auth_node().await;

    for path in ["/health", "/ready", "/metrics", "/"] {
        let response = reqwest::get(node.url(path)).await.expect("answers");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn a_connection_closes_with_1008_when_its_token_expires() {
    let node = auth_node().await;
    // Expired 25 s ago: inside the 30 s leeway, so accepted, and over ~5 s later.
    let expiring = sign(
        &json!({"sub": "alice", "exp": now() - 25}),
        SECRET,
        Algorithm::HS256,
    );
    let mut alice = WsClient::connect(&ws_with_token(&node, &expiring)).await;
    alice.send(json!({"type": "ping", "ref": "alive"})).await;
    assert_eq!(alice.recv().await, json!({"type": "pong", "ref": "alive"}));

    let code = alice.expect_close().await;

    assert_eq!(code, 1008);
}

#[tokio::test]
async fn a_token_expiring_at_the_end_of_time_connects_and_chats() {
    let node = auth_node().await;
    // Neither an `Instant` nor a `SystemTime` reaches that far: the session
    // must simply have no expiry timer, not panic.
    for exp in [json!(i64::MAX), json!(u64::MAX)] {
        let user = unique("forever");
        let token = sign(&json!({"sub": user, "exp": exp}), SECRET, Algorithm::HS256);
        let mut client = WsClient::connect(&ws_with_token(&node, &token)).await;
        assert_eq!(client.welcome["user"], user.as_str(), "exp {exp}");
        let room = unique("room");
        client.join(&room).await;
        let message = client.say(&room, "still here").await;
        assert_eq!(message["user"], user.as_str(), "exp {exp}");
        assert_eq!(message["content"], "still here", "exp {exp}");
    }
}
