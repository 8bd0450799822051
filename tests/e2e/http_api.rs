//! The HTTP API of the contract, row by row: health, readiness, rooms, users,
//! messages, stats, metrics, the web client and the JSON error shape.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::node::Endpoint;
use crate::support::{ProcessNode, TestNode, WsClient, eventually, ids, sample, unique};

/// `GET url` → status and JSON body (`Null` when the body is not JSON).
async fn get(url: &str) -> (StatusCode, Value) {
    let response = reqwest::get(url).await.expect("GET answers");
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// `POST url` with a JSON body → status and JSON body.
async fn post(url: &str, body: &Value) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .expect("POST answers");
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// Asserts the contract's `{"error":{"code":C,"message":M}}` body.
fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().expect("a message");
    assert!(!message.is_empty(), "{body}");
    assert_eq!(
        body.as_object().map(|o| o.len()),
        Some(1),
        "only `error`: {body}"
    );
}

/// Posts `count` messages to `room` as `user` and returns their ids.
async fn post_messages(node: &impl Endpoint, room: &str, user: &str, count: usize) -> Vec<String> {
    let url = node.url(&format!("/api/rooms/{room}/messages"));
    let mut sent = Vec::new();
    for i in 0..count {
        let (status, message) =
            post(&url, &json!({"user": user, "content": format!("m{i}")})).await;
        assert_eq!(status, StatusCode::CREATED, "{message}");
        sent.push(message["id"].as_str().expect("id").to_owned());
    }
    sent
}

async fn scrape(node: &impl Endpoint) -> String {
    crate::support::scrape(&node.url("/metrics")).await
}

#[tokio::test]
async fn health_answers_ok_with_the_node_id() {
    let node = TestNode::spawn().await;

    let (status, body) = get(&node.url("/health")).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"status": "ok", "node": node.node_id}));
}

#[tokio::test]
async fn ready_answers_200_on_a_running_embedded_node() {
    let node = TestNode::spawn().await;

    let (status, _) = get(&node.url("/ready")).await;

    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn room_list_has_rooms_with_members_and_created_rooms_sorted_with_member_counts() {
    let node = TestNode::spawn().await;
    let mut alice = WsClient::connect(&node.ws_url("alice")).await;
    let mut alice_tab = WsClient::connect(&node.ws_url("alice")).await;
    let mut bob = WsClient::connect(&node.ws_url("bob")).await;
    alice.join("zulu").await;
    alice_tab.join("zulu").await;
    bob.join("zulu").await;
    bob.join("mike").await;
    let (status, _) = post(&node.url("/api/rooms"), &json!({"name": "alpha"})).await;
    assert_eq!(status, StatusCode::CREATED);

    let (status, rooms) = get(&node.url("/api/rooms")).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        rooms,
        json!([
            {"name": "alpha", "members": 0},
            {"name": "mike", "members": 1},
            {"name": "zulu", "members": 2},
        ]),
        "by name; members counts users, not connections"
    );
}

#[tokio::test]
async fn a_room_leaves_the_list_when_its_last_member_leaves_unless_it_was_created() {
    let node = TestNode::spawn().await;
    let mut alice = WsClient::connect(&node.ws_url("alice")).await;
    post(&node.url("/api/rooms"), &json!({"name": "created"})).await;
    alice.join("created").await;
    alice.join("adhoc").await;

    alice
        .request(json!({"type": "leave", "room": "created"}))
        .await;
    alice
        .request(json!({"type": "leave", "room": "adhoc"}))
        .await;
    let (_, rooms) = get(&node.url("/api/rooms")).await;

    assert_eq!(rooms, json!([{"name": "created", "members": 0}]));
}

#[tokio::test]
async fn creating_a_room_answers_201_with_the_room_and_no_members() {
    let node = TestNode::spawn().await;
    let room = unique("new.room_");

    let (status, body) = post(&node.url("/api/rooms"), &json!({"name": room})).await;

    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body, json!({"name": room, "members": 0}));
    let (_, rooms) = get(&node.url("/api/rooms")).await;
    assert_eq!(rooms, json!([{"name": room, "members": 0}]));
}

#[tokio::test]
async fn creating_an_existing_room_answers_409_room_exists() {
    let node = TestNode::spawn().await;
    let created = unique("created");
    let occupied = unique("occupied");
    post(&node.url("/api/rooms"), &json!({"name": created})).await;
    let mut alice = WsClient::connect(&node.ws_url("alice")).await;
    alice.join(&occupied).await;

    let (again_status, again) = post(&node.url("/api/rooms"), &json!({"name": created})).await;
    let (occupied_status, occupied_body) =
        post(&node.url("/api/rooms"), &json!({"name": occupied})).await;

    assert_eq!(again_status, StatusCode::CONFLICT);
    assert_error(&again, "room_exists");
    assert_eq!(
        occupied_status,
        StatusCode::CONFLICT,
        "a room with members exists"
    );
    assert_error(&occupied_body, "room_exists");
}

#[tokio::test]
async fn creating_a_room_with_a_bad_name_answers_400_invalid_room() {
    let node = TestNode::spawn().await;

    for bad in [
        "",
        "two words",
        "slash/room",
        "ünïcode",
        &"r".repeat(65),
        "emoji😀",
    ] {
        let (status, body) = post(&node.url("/api/rooms"), &json!({"name": bad})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}");
        assert_error(&body, "invalid_room");
    }
    let (status, _) = post(&node.url("/api/rooms"), &json!({"name": "r".repeat(64)})).await;
    assert_eq!(status, StatusCode::CREATED, "64 characters is the limit");
    let (_, rooms) = get(&node.url("/api/rooms")).await;
    assert_eq!(rooms.as_array().map(Vec::len), Some(1), "{rooms}");
}

#[tokio::test]
async fn creating_a_room_without_a_json_body_answers_400_bad_request_in_the_error_shape() {
    let node = TestNode::spawn().await;
    let client = reqwest::Client::new();
    let url = node.url("/api/rooms");
    let attempts = [
        client.post(&url),
        client
            .post(&url)
            .header("content-type", "application/json")
            .body("not json"),
        client.post(&url).body(r#"{"name":"no-content-type"}"#),
        client
            .post(&url)
            .header("content-type", "application/json")
            .body(r#"{"title":"x"}"#),
        client
            .post(&url)
            .header("content-type", "application/json")
            .body(r#"{"name":42}"#),
    ];

    for attempt in attempts {
        let response = attempt.send().await.expect("answers");
        let status = response.status();
        let body: Value = response.json().await.expect("a JSON error body");
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_error(&body, "bad_request");
    }
    let (_, rooms) = get(&node.url("/api/rooms")).await;
    assert_eq!(rooms, json!([]), "nothing was created");
}

#[tokio::test]
async fn room_users_are_the_online_members_sorted() {
    let node = TestNode::spawn().await;
    let room = unique("room");
    let mut clients = Vec::new();
    for user in ["zed", "alice", "mike", "alice"] {
        let mut client = WsClient::connect(&node.ws_url(user)).await;
        client.join(&room).await;
        clients.push(client);
    }
    let _outsider = WsClient::connect(&node.ws_url("bob")).await;

    let (status, users) = get(&node.url(&format!("/api/rooms/{room}/users"))).await;
    let (_, empty) = get(&node.url(&format!("/api/rooms/{}/users", unique("empty")))).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(users, json!(["alice", "mike", "zed"]));
    assert_eq!(empty, json!([]));
}

#[tokio::test]
async fn room_users_with_a_bad_room_name_answers_400_invalid_room() {
    let node = TestNode::spawn().await;

    let (status, body) = get(&node.url("/api/rooms/bad!room/users")).await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "invalid_room");
}

#[tokio::test]
async fn room_messages_page_backwards_with_before_and_limit_oldest_first() {
    // 130 posts from one address are over the default burst; the limit is
    // not what this test is about (rest_limits.rs is).
    let node = TestNode::spawn_with(|s| s.rate_limit = 0).await;
    let room = unique("room");
    let sent = post_messages(&node, &room, "alice", 130).await;
    let page = |query: String| {
        let url = node.url(&format!("/api/rooms/{room}/messages{query}"));
        async move {
            let (status, body) = get(&url).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            ids(&body)
        }
    };

    assert_eq!(page(String::new()).await, sent[80..], "the last 50");
    assert_eq!(page("?limit=3".into()).await, sent[127..]);
    assert_eq!(
        page("?limit=500".into()).await,
        sent[30..],
        "limit is clamped to 100"
    );
    assert_eq!(
        page(format!("?before={}&limit=500", sent[80])).await,
        sent[..80]
    );
    assert_eq!(
        page(format!("?before={}&limit=2", sent[3])).await,
        sent[1..3]
    );
    assert_eq!(
        page(format!("?before={}", sent[0])).await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn room_messages_are_the_message_objects_and_empty_for_an_unused_room() {
    let node = TestNode::spawn().await;
    let room = unique("room");
    let url = node.url(&format!("/api/rooms/{room}/messages"));
    let (_, posted) = post(&url, &json!({"user": "alice", "content": "hi"})).await;

    let (_, messages) = get(&url).await;
    let (status, unused) =
        get(&node.url(&format!("/api/rooms/{}/messages", unique("unused")))).await;

    assert_eq!(messages, json!([posted]));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(unused, json!([]));
}

#[tokio::test]
async fn room_messages_with_a_garbage_before_or_limit_answer_400_bad_request() {
    let node = TestNode::spawn().await;
    let room = unique("room");
    post_messages(&node, &room, "alice", 1).await;

    for query in [
        "before=yesterday",
        "before=1-2-3",
        "before=",
        "limit=ten",
        "limit=-1",
        "limit=0",
    ] {
        let (status, body) = get(&node.url(&format!("/api/rooms/{room}/messages?{query}"))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_error(&body, "bad_request");
    }
}

#[tokio::test]
async fn room_messages_with_a_bad_room_name_answer_400_invalid_room() {
    let node = TestNode::spawn().await;

    let (get_status, get_body) = get(&node.url("/api/rooms/bad!room/messages")).await;
    let (post_status, post_body) = post(
        &node.url("/api/rooms/bad!room/messages"),
        &json!({"user": "alice", "content": "hi"}),
    )
    .await;

    assert_eq!(get_status, StatusCode::BAD_REQUEST);
    assert_error(&get_body, "invalid_room");
    assert_eq!(post_status, StatusCode::BAD_REQUEST);
    assert_error(&post_body, "invalid_room");
}

#[tokio::test]
async fn posting_a_message_answers_201_with_the_frame_every_member_receives() {
    let node = TestNode::spawn().await;
    let room = unique("room");
    let mut bob = WsClient::connect(&node.ws_url("bob")).await;
    bob.join(&room).await;
    let mut carol = WsClient::connect(&node.ws_url("carol")).await;
    carol.join(&unique("elsewhere")).await;

    let (status, posted) = post(
        &node.url(&format!("/api/rooms/{room}/messages")),
        &json!({"user": "alice", "content": "hello from <http>"}),
    )
    .await;
    let received = bob.recv_until(|f| f["type"] == "message").await;

    assert_eq!(status, StatusCode::CREATED, "{posted}");
    assert_eq!(posted["type"], "message");
    assert_eq!(posted["room"], room.as_str());
    assert_eq!(posted["user"], "alice");
    assert_eq!(posted["content"], "hello from <http>");
    assert!(posted["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(posted.get("ref").is_none(), "{posted}");
    let ts = posted["ts"].as_str().expect("ts");
    let parsed = chrono::DateTime::parse_from_rfc3339(ts).expect("RFC 3339");
    assert_eq!(parsed.offset().local_minus_utc(), 0, "UTC: {ts}");
    assert_eq!(received, posted, "the member gets exactly that message");
    // A non-member's next frame is the answer to its own ping: nothing leaked.
    carol.send(json!({"type": "ping"})).await;
    assert_eq!(carol.recv().await, json!({"type": "pong"}));
}

#[tokio::test]
async fn posting_a_message_with_a_bad_or_missing_user_answers_400_invalid_user() {
    let node = TestNode::spawn().await;
    let url = node.url(&format!("/api/rooms/{}/messages", unique("room")));

    for body in [
        json!({"user": "two words", "content": "hi"}),
        json!({"user": "", "content": "hi"}),
        json!({"user": "u".repeat(33), "content": "hi"}),
        json!({"content": "hi"}),
    ] {
        let (status, answer) = post(&url, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_error(&answer, "invalid_user");
    }
    let (_, stored) = get(&url).await;
    assert_eq!(stored, json!([]), "nothing was stored");
}

#[tokio::test]
async fn posting_content_over_4096_bytes_answers_413_too_large() {
    let node = TestNode::spawn().await;
    let url = node.url(&format!("/api/rooms/{}/messages", unique("room")));

    let (over_status, over) =
        post(&url, &json!({"user": "alice", "content": "x".repeat(4097)})).await;
    let (wide_status, wide) =
        post(&url, &json!({"user": "alice", "content": "€".repeat(1366)})).await;
    let (limit_status, _) =
        post(&url, &json!({"user": "alice", "content": "x".repeat(4096)})).await;

    assert_eq!(over_status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_error(&over, "too_large");
    assert_eq!(
        wide_status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "bytes, not characters"
    );
    assert_error(&wide, "too_large");
    assert_eq!(limit_status, StatusCode::CREATED, "4096 bytes is allowed");
}

#[tokio::test]
async fn posting_a_malformed_message_answers_400_bad_request() {
    let node = TestNode::spawn().await;
    let url = node.url(&format!("/api/rooms/{}/messages", unique("room")));
    let client = reqwest::Client::new();

    let (empty_status, empty) = post(&url, &json!({"user": "alice", "content": ""})).await;
    let (missing_status, missing) = post(&url, &json!({"user": "alice"})).await;
    let garbage = client
        .post(&url)
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .expect("answers");
    let garbage_status = garbage.status();
    let garbage: Value = garbage.json().await.expect("JSON error");

    for (status, body) in [
        (empty_status, empty),
        (missing_status, missing),
        (garbage_status, garbage),
    ] {
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_error(&body, "bad_request");
    }
}

#[tokio::test]
async fn online_users_are_listed_once_each_sorted() {
    let node = TestNode::spawn().await;
    let mut clients = Vec::new();
    for user in ["zed", "alice", "mike", "alice"] {
        clients.push(WsClient::connect(&node.ws_url(user)).await);
    }

    let (status, users) = get(&node.url("/api/users")).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(users, json!(["alice", "mike", "zed"]));
}

#[tokio::test]
async fn stats_count_local_connections_online_users_active_rooms_and_live_nodes() {
    let node = TestNode::spawn().await;
    let mut alice = WsClient::connect(&node.ws_url("alice")).await;
    let mut alice_tab = WsClient::connect(&node.ws_url("alice")).await;
    let bob = WsClient::connect(&node.ws_url("bob")).await;
    alice.join("one").await;
    alice_tab.join("two").await;
    post(&node.url("/api/rooms"), &json!({"name": "empty"})).await;

    let (status, stats) = get(&node.url("/api/stats")).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(stats["node"], node.node_id.as_str());
    assert_eq!(stats["connections"], 3);
    assert_eq!(stats["users_online"], 2);
    assert_eq!(stats["rooms_active"], 2, "rooms with members: {stats}");
    let nodes = stats["nodes"].as_array().expect("nodes");
    assert!(nodes.contains(&json!(node.node_id)), "{stats}");

    bob.close().await;
    let stats = eventually("the closed connection to leave the stats", || async {
        let (_, stats) = get(&node.url("/api/stats")).await;
        (stats["connections"] == 2).then_some(stats)
    })
    .await;
    assert_eq!(stats["users_online"], 1);
}

#[tokio::test]
async fn metrics_are_prometheus_text_counting_connections_messages_frames_and_errors() {
    let node = ProcessNode::spawn(&[]);
    let room = unique("room");
    let before = scrape(&node).await;

    let mut alice = WsClient::connect(&node.ws_url("alice")).await;
    let mut bob = WsClient::connect(&node.ws_url("bob")).await;
    alice.join(&room).await;
    bob.join(&room).await;
    alice.say(&room, "over the socket").await;
    bob.recv_until(|f| f["content"] == "over the socket").await;
    let (status, _) = post(
        &node.url(&format!("/api/rooms/{room}/messages")),
        &json!({"user": "carol", "content": "over http"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    alice.recv_until(|f| f["content"] == "over http").await;
    bob.recv_until(|f| f["content"] == "over http").await;
    let not_member = alice
        .request(json!({"type": "message", "room": unique("other"), "content": "x"}))
        .await;
    assert_eq!(not_member["code"], "not_member");
    let (status, _) = get(&node.url("/no/such/page")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let response = reqwest::get(node.url("/metrics")).await.expect("scrape");
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let after = response.text().await.expect("text");

    assert!(content_type.starts_with("text/plain"), "{content_type}");
    for name in [
        "chorus_connections",
        "chorus_messages_accepted_total",
        "chorus_frames_delivered_total",
        "chorus_errors_total",
    ] {
        assert!(
            after.contains(&format!("# TYPE {name} ")),
            "{name} is exposed:\n{after}"
        );
    }
    let delta =
        |name: &str, label: &str| sample(&after, name, label) - sample(&before, name, label);
    assert_eq!(sample(&after, "chorus_connections", ""), 2.0, "{after}");
    assert_eq!(delta("chorus_messages_accepted_total", ""), 2.0, "{after}");
    assert!(
        delta("chorus_frames_delivered_total", "") >= 4.0,
        "two messages reached two members each:\n{after}"
    );
    assert_eq!(
        delta("chorus_errors_total", r#"code="not_member""#),
        1.0,
        "{after}"
    );
    assert_eq!(
        delta("chorus_errors_total", r#"code="not_found""#),
        1.0,
        "{after}"
    );

    bob.close().await;
    eventually("the gauge to drop when a socket closes", || async {
        (sample(&scrape(&node).await, "chorus_connections", "") == 1.0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_root_serves_the_web_client_html() {
    let node = TestNode::spawn().await;
    let expected =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/static/index.html"))
            .expect("static/index.html");

    let response = reqwest::get(node.url("/")).await.expect("GET /");
    let status = response.status();
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let body = response.text().await.expect("text");

    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert_eq!(body, expected);
}

#[tokio::test]
async fn an_unknown_path_answers_404_in_the_json_error_shape() {
    let node = TestNode::spawn().await;

    for path in [
        "/no/such/page",
        "/api/nothing",
        "/index.htm",
        "/api/rooms/r/nothing",
    ] {
        let response = reqwest::get(node.url(path)).await.expect("answers");
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body: Value = response.json().await.expect("a JSON body");
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(
            content_type.starts_with("application/json"),
            "{path}: {content_type}"
        );
        assert_error(&body, "not_found");
    }
}

/// A fresh empty directory under the system's temporary one, removed on drop.
struct EmptyDir(std::path::PathBuf);

impl EmptyDir {
    fn create() -> Self {
        let path = std::env::temp_dir().join(crate::support::unique("chorus-cwd"));
        std::fs::create_dir(&path).expect("create a temporary directory");
        Self(path)
    }
}

impl Drop for EmptyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn the_binary_serves_the_whole_web_client_from_any_working_directory() {
    let elsewhere = EmptyDir::create();
    let node = crate::support::ProcessNode::spawn_from(&elsewhere.0, &[]);
    let client = reqwest::Client::new();
    // Each route with the source file it serves, relative to the repository.
    let files = [
        ("/", "static/index.html", "text/html"),
        ("/app.js", "static/app.js", "text/javascript"),
        ("/style.css", "static/style.css", "text/css"),
        ("/js/api.js", "static/js/api.js", "text/javascript"),
        // The client package the page runs on, staged by build.rs.
        (
            "/js/chorus-client.js",
            "clients/js/src/index.js",
            "text/javascript",
        ),
        ("/js/dom.js", "static/js/dom.js", "text/javascript"),
        ("/js/links.js", "static/js/links.js", "text/javascript"),
        ("/js/store.js", "static/js/store.js", "text/javascript"),
        ("/js/uploads.js", "static/js/uploads.js", "text/javascript"),
    ];
    // Every module the page loads is among them, so the list stays whole.
    let modules = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/static/js"))
        .expect("static/js")
        .count();
    assert_eq!(modules, 5, "static/js/ changed: list its files here");

    for (path, file, expected_type) in files {
        let expected = std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR")))
            .expect("the file in the repository");
        let response = client.get(node.url(path)).send().await.expect("answers");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with(expected_type),
            "{path}: {content_type}"
        );
        let etag = header("etag").unwrap_or_else(|| panic!("{path} has an ETag"));
        assert_eq!(response.text().await.expect("text"), expected, "{path}");

        // A browser revalidating its copy gets 304 and no body.
        let again = client
            .get(node.url(path))
            .header("if-none-match", &etag)
            .send()
            .await
            .expect("answers");
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
    }

    // What the folder lacks is still the JSON 404, and other methods 405.
    let (status, body) = get(&node.url("/no/such/file.js")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&body, "not_found");
    let response = client
        .post(node.url("/app.js"))
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}
