//! The admin API (`CHORUS_ADMIN_TOKEN`, `/api/admin/*`): absent without a
//! token, refused without the right one, and its actions reach the user's
//! connections on every node.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::cluster::{Deployment, on_both_backings};
use crate::support::http::call;
use crate::support::node::Endpoint;
use crate::support::{Backing, TestNode, WsClient, unique};

const TOKEN: &str = "an-admin-token-of-at-least-32-bytes!";

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn admin_post(node: &TestNode, path: &str, body: Option<&Value>) -> u16 {
    let auth = bearer(TOKEN);
    call(
        Method::POST,
        &node.url(path),
        body,
        &[("Authorization", auth.as_str())],
    )
    .await
    .status
    .as_u16()
}

#[tokio::test]
async fn without_an_admin_token_every_admin_route_answers_404_like_an_unknown_route() {
    let node = TestNode::spawn().await;
    let auth = bearer(TOKEN);
    let headers = [("Authorization", auth.as_str())];
    let unknown = call(Method::GET, &node.url("/api/nothing-here"), None, &headers).await;
    for (method, path, body) in [
        (Method::POST, "/api/admin/users/alice/disconnect", None),
        (
            Method::POST,
            "/api/admin/rooms/lobby/kick",
            Some(json!({"user": "alice"})),
        ),
        (Method::GET, "/api/admin/users", None),
    ] {
        let answer = call(method, &node.url(path), body.as_ref(), &headers).await;
        assert_eq!(answer.status.as_u16(), 404, "{path}: {}", answer.body);
        assert_eq!(answer.body, unknown.body, "{path}");
    }
}

#[tokio::test]
async fn admin_calls_without_the_right_token_are_refused_with_401() {
    let node = TestNode::spawn_with(|s| s.admin_token = Some(TOKEN.to_owned())).await;
    let url = node.url("/api/admin/users/alice/disconnect");
    let wrong = bearer(&TOKEN.replace('!', "?"));
    let short = bearer(&TOKEN[..TOKEN.len() - 1]);
    for headers in [
        vec![],
        vec![("Authorization", wrong.as_str())],
        vec![("Authorization", short.as_str())],
        vec![("Authorization", TOKEN)],
    ] {
        let answer = call(Method::POST, &url, None, &headers).await;
        assert_eq!(answer.status.as_u16(), 401, "{headers:?}: {}", answer.body);
        assert_eq!(
            answer.body["error"]["code"], "unauthorized",
            "{}",
            answer.body
        );
    }
    assert_eq!(
        admin_post(&node, "/api/admin/users/alice/disconnect", None).await,
        202
    );
}

/// The console's paths, and the places its files could leak from.
const CONSOLE_PATHS: [&str; 6] = [
    "/admin",
    "/admin/",
    "/admin/index.html",
    "/admin/console.js",
    "/admin.html",
    "/console.js",
];

#[tokio::test]
async fn without_an_admin_token_the_console_page_answers_404_like_an_unknown_route() {
    let node = TestNode::spawn().await;
    let unknown = call(Method::GET, &node.url("/nothing-here"), None, &[]).await;
    for path in CONSOLE_PATHS {
        let answer = call(Method::GET, &node.url(path), None, &[]).await;
        assert_eq!(answer.status.as_u16(), 404, "{path}: {}", answer.body);
        assert_eq!(answer.body, unknown.body, "{path}");
    }
}

#[tokio::test]
async fn with_an_admin_token_the_console_page_loads_without_it() {
    let node = TestNode::spawn_with(|s| s.admin_token = Some(TOKEN.to_owned())).await;
    let page = tokio::time::timeout(crate::support::TIMEOUT, reqwest::get(node.url("/admin")))
        .await
        .expect("an answer in time")
        .expect("an answer");
    assert_eq!(page.status().as_u16(), 200);
    let csp = &page.headers()["content-security-policy"];
    assert!(
        csp.to_str()
            .is_ok_and(|csp| csp.contains("frame-ancestors 'none'")),
        "{csp:?}"
    );
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let html = page.text().await.expect("the page");
    assert!(html.contains("/admin/console.js"), "{html}");
    let script = call(Method::GET, &node.url("/admin/console.js"), None, &[]).await;
    assert_eq!(script.status.as_u16(), 200);
    assert_eq!(script.header("content-type"), Some("text/javascript"));
    let slash = call(Method::GET, &node.url("/admin/"), None, &[]).await;
    assert_eq!(slash.status.as_u16(), 200, "followed to /admin");
    // Only under /admin: the web client's own files do not include it.
    for path in &CONSOLE_PATHS[4..] {
        let answer = call(Method::GET, &node.url(path), None, &[]).await;
        assert_eq!(answer.status.as_u16(), 404, "{path}");
    }
}

#[tokio::test]
async fn admin_calls_from_one_address_are_limited_wrong_tokens_included() {
    let node = TestNode::spawn_with(|s| s.admin_token = Some(TOKEN.to_owned())).await;
    let url = node.url("/api/admin/users");
    let wrong = bearer("a-wrong-token-of-at-least-32-bytes-long");
    let mut statuses = Vec::new();
    for _ in 0..25 {
        let answer = call(
            Method::GET,
            &url,
            None,
            &[("Authorization", wrong.as_str())],
        )
        .await;
        statuses.push(answer.status.as_u16());
        if answer.status.as_u16() == 429 {
            assert_eq!(
                answer.body["error"]["code"], "rate_limited",
                "{}",
                answer.body
            );
            assert!(answer.retry_after().is_some());
        }
    }
    assert_eq!(statuses[0], 401);
    assert!(statuses.contains(&429), "{statuses:?}");
    let auth = bearer(TOKEN);
    let answer = call(Method::GET, &url, None, &[("Authorization", auth.as_str())]).await;
    assert_eq!(answer.status.as_u16(), 429, "the right token waits too");
}

on_both_backings!(
    and in_memory;
    admin_disconnect_closes_every_connection_of_the_user_on_every_node_with_4001,
    admin_kick_makes_the_user_leave_the_room_on_every_node,
    admin_users_lists_connections_and_nodes_of_every_online_user,
);

async fn start(on: Option<Backing>) -> Deployment {
    Deployment::start(on, |s| s.admin_token = Some(TOKEN.to_owned())).await
}

async fn admin_disconnect_closes_every_connection_of_the_user_on_every_node_with_4001(
    on: Option<Backing>,
) {
    let nodes = start(on).await;
    let alice = unique("alice");
    let bob = unique("bob");
    let mut alice_a = WsClient::connect(&nodes.a().ws_url(&alice)).await;
    let mut alice_b = WsClient::connect(&nodes.b().ws_url(&alice)).await;
    let mut bob_a = WsClient::connect(&nodes.a().ws_url(&bob)).await;

    let path = format!("/api/admin/users/{alice}/disconnect");
    assert_eq!(admin_post(nodes.b(), &path, None).await, 202);

    assert_eq!(alice_a.expect_close().await, 4001, "on the other node");
    assert_eq!(alice_b.expect_close().await, 4001, "on the node called");
    // Bob's connection is untouched.
    let room = unique("room");
    bob_a.join(&room).await;
}

async fn admin_kick_makes_the_user_leave_the_room_on_every_node(on: Option<Backing>) {
    let nodes = start(on).await;
    let room = unique("room");
    let other = unique("other");
    let alice = unique("alice");
    let mut watcher = WsClient::connect(&nodes.a().ws_url(&unique("carol"))).await;
    watcher.join(&room).await;
    let mut alice_a = WsClient::connect(&nodes.a().ws_url(&alice)).await;
    let mut alice_b = WsClient::connect(&nodes.b().ws_url(&alice)).await;
    for client in [&mut alice_a, &mut alice_b] {
        client.join(&room).await;
        client.join(&other).await;
    }
    let joined = watcher
        .recv_until(|f| f["type"] == "presence" && f["user"] == alice.as_str())
        .await;
    assert_eq!(joined["event"], "join", "{joined}");

    let path = format!("/api/admin/rooms/{room}/kick");
    let body = json!({ "user": alice });
    assert_eq!(admin_post(nodes.a(), &path, Some(&body)).await, 202);

    for client in [&mut alice_a, &mut alice_b] {
        let left = client.recv_until(|f| f["type"] == "left").await;
        assert_eq!(left["room"], room.as_str(), "{left}");
    }
    let left = watcher
        .recv_until(|f| f["type"] == "presence" && f["user"] == alice.as_str())
        .await;
    assert_eq!(
        left,
        json!({"type": "presence", "room": room, "user": alice, "event": "leave"})
    );
    // No longer in the room, still connected and in the other one.
    let refused = alice_a
        .request(json!({"type": "message", "room": room, "content": "x"}))
        .await;
    assert_eq!(refused["code"], "not_member", "{refused}");
    let echo = alice_b.say(&other, "still here").await;
    assert_eq!(echo["room"], other.as_str(), "{echo}");
}

async fn admin_users_lists_connections_and_nodes_of_every_online_user(on: Option<Backing>) {
    let nodes = start(on).await;
    let alice = unique("alice");
    let bob = unique("bob");
    let _alice = [
        WsClient::connect(&nodes.a().ws_url(&alice)).await,
        WsClient::connect(&nodes.a().ws_url(&alice)).await,
        WsClient::connect(&nodes.b().ws_url(&alice)).await,
    ];
    let _bob = WsClient::connect(&nodes.b().ws_url(&bob)).await;
    let auth = bearer(TOKEN);
    let answer = call(
        Method::GET,
        &nodes.a().url("/api/admin/users"),
        None,
        &[("Authorization", auth.as_str())],
    )
    .await;
    assert_eq!(answer.status.as_u16(), 200, "{}", answer.body);
    let mut both = vec![nodes.a().node_id.clone(), nodes.b().node_id.clone()];
    both.sort();
    both.dedup();
    let expected = json!([
        {"user": alice, "connections": 3, "nodes": both},
        {"user": bob, "connections": 1, "nodes": [nodes.b().node_id]},
    ]);
    let listed: Vec<Value> = answer
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["user"] == alice.as_str() || u["user"] == bob.as_str())
        .cloned()
        .collect();
    assert_eq!(Value::from(listed), expected);
}
