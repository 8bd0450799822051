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

async fn admin_get(node: &TestNode, path: &str) -> Value {
    let auth = bearer(TOKEN);
    let answer = call(
        Method::GET,
        &node.url(path),
        None,
        &[("Authorization", auth.as_str())],
    )
    .await;
    assert_eq!(answer.status.as_u16(), 200, "{path}: {}", answer.body);
    answer.body
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
        (Method::GET, "/api/admin/nodes", None),
        (Method::GET, "/api/admin/rooms", None),
        (Method::DELETE, "/api/admin/rooms/lobby/messages/1-0", None),
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
    admin_nodes_lists_every_live_node_with_its_connections_start_and_counters,
    admin_rooms_lists_members_and_message_rates,
    admin_delete_removes_a_message_from_history_and_tells_the_room_on_every_node,
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

async fn admin_nodes_lists_every_live_node_with_its_connections_start_and_counters(
    on: Option<Backing>,
) {
    let nodes = start(on).await;
    let alice = unique("alice");
    let _alice = [
        WsClient::connect(&nodes.a().ws_url(&alice)).await,
        WsClient::connect(&nodes.a().ws_url(&alice)).await,
    ];
    let mut bob = WsClient::connect(&nodes.b().ws_url(&unique("bob"))).await;
    // An error answered by node b, counted in its status.
    let refused = bob
        .request(json!({"type": "message", "room": unique("room"), "content": "x"}))
        .await;
    assert_eq!(refused["code"], "not_member", "{refused}");

    let mut ids = vec![nodes.a().node_id.clone(), nodes.b().node_id.clone()];
    ids.sort();
    ids.dedup();
    // Each node's own entry is read live; the other's is its last beat.
    for (asked, connections) in [(nodes.a(), 2), (nodes.b(), 1)] {
        let listed = admin_get(asked, "/api/admin/nodes").await;
        let listed = listed.as_array().unwrap();
        let names: Vec<&str> = listed.iter().map(|n| n["node"].as_str().unwrap()).collect();
        assert_eq!(names, ids, "{listed:?}");
        for node in listed {
            // The other node's from the status its last beat stored.
            assert!(node["since"].is_string(), "{node}");
        }
        let own = listed
            .iter()
            .find(|n| n["node"] == asked.node_id.as_str())
            .unwrap();
        if nodes.a().node_id != nodes.b().node_id {
            assert_eq!(own["connections"], connections, "{own}");
        }
        let since = own["since"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(since).is_ok(), "{own}");
        assert!(own["refusals"].is_object(), "{own}");
        if asked.node_id == nodes.b().node_id {
            assert!(own["errors"]["not_member"].as_u64() >= Some(1), "{own}");
        }
    }
}

async fn admin_rooms_lists_members_and_message_rates(on: Option<Backing>) {
    let nodes = start(on).await;
    let room = unique("room");
    let quiet = unique("quiet");
    let mut alice = WsClient::connect(&nodes.a().ws_url(&unique("alice"))).await;
    let mut bob = WsClient::connect(&nodes.b().ws_url(&unique("bob"))).await;
    alice.join(&room).await;
    bob.join(&room).await;
    bob.join(&quiet).await;
    for n in 0..3 {
        alice.say(&room, &format!("m{n}")).await;
    }
    let listed = admin_get(nodes.a(), "/api/admin/rooms").await;
    let find = |name: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not in {listed}"))
    };
    let busy = find(&room);
    assert_eq!(busy["members"], 2, "{busy}");
    let rate = busy["messages_per_minute"].as_f64().unwrap();
    // Three messages in the last minute (fewer if a minute began between
    // them: the previous minute's count is weighted by what is left of it).
    assert!(rate > 0.0 && rate <= 3.0, "{busy}");
    let quiet = find(&quiet);
    assert_eq!(quiet["members"], 1, "{quiet}");
    assert_eq!(quiet["messages_per_minute"], 0.0, "{quiet}");
}

async fn admin_delete_removes_a_message_from_history_and_tells_the_room_on_every_node(
    on: Option<Backing>,
) {
    let nodes = start(on).await;
    let room = unique("room");
    let mut alice = WsClient::connect(&nodes.a().ws_url(&unique("alice"))).await;
    let mut bob = WsClient::connect(&nodes.b().ws_url(&unique("bob"))).await;
    alice.join(&room).await;
    bob.join(&room).await;
    let doomed = alice.say(&room, "oops").await;
    let kept = alice.say(&room, "fine").await;
    let id = doomed["id"].as_str().unwrap().to_owned();
    bob.recv_until(|f| f["id"] == kept["id"]).await;

    let auth = bearer(TOKEN);
    let headers = [("Authorization", auth.as_str())];
    let path = format!("/api/admin/rooms/{room}/messages/{id}");
    let answer = call(Method::DELETE, &nodes.b().url(&path), None, &headers).await;
    assert_eq!(answer.status.as_u16(), 204, "{}", answer.body);

    let event = json!({"type": "deleted", "room": room, "id": id});
    for client in [&mut alice, &mut bob] {
        let got = client.recv_until(|f| f["type"] == "deleted").await;
        assert_eq!(got, event);
    }
    let history = call(
        Method::GET,
        &nodes.a().url(&format!("/api/rooms/{room}/messages")),
        None,
        &[],
    )
    .await;
    let ids: Vec<&Value> = history
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["id"])
        .collect();
    assert_eq!(ids, vec![&kept["id"]], "{}", history.body);

    // Gone: a second delete finds nothing; a bad id is a bad request.
    let again = call(Method::DELETE, &nodes.a().url(&path), None, &headers).await;
    assert_eq!(again.status.as_u16(), 404, "{}", again.body);
    let bad = format!("/api/admin/rooms/{room}/messages/not-an-id");
    let bad = call(Method::DELETE, &nodes.a().url(&bad), None, &headers).await;
    assert_eq!(bad.status.as_u16(), 400, "{}", bad.body);
    // A rejoin with `since` before it does not bring it back.
    let mut carol = WsClient::connect(&nodes.a().ws_url(&unique("carol"))).await;
    let joined = carol
        .request(json!({"type": "join", "room": room, "since": "0-1"}))
        .await;
    let replayed: Vec<&Value> = joined["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["id"])
        .collect();
    assert_eq!(replayed, vec![&kept["id"]], "{joined}");
}
