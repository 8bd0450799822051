//! Uploads end to end: announce, PUT, send with `attachments`, fetch; on
//! the local folder and on a real S3-compatible server (`moto_server`), on
//! memory and Redis records; and every refusal (size, type, a wrong PUT,
//! another user's upload, a stranger's GET with auth on).

use std::path::PathBuf;

use redis::AsyncCommands;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::auth::{SECRET, token};
use crate::support::http::{Answer, call};
use crate::support::node::Endpoint;
use crate::support::{MotoServer, RedisServer, TIMEOUT, TestNode, WsClient, unique};

/// A 4×4 red PNG, whole and valid.
pub(crate) const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x04, 0x08, 0x02, 0x00, 0x00, 0x00, 0x26, 0x93, 0x09,
    0x29, 0x00, 0x00, 0x00, 0x10, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0x00,
    0x47, 0x0c, 0xc4, 0x71, 0x00, 0xae, 0x93, 0x0f, 0xf1, 0xd0, 0x5f, 0x23, 0x9e, 0x00, 0x00, 0x00,
    0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

/// A fresh folder under the system's temp dir.
fn scratch_dir() -> PathBuf {
    std::env::temp_dir().join(unique("chorus-uploads"))
}

/// An embedded node storing uploads in a folder of its own.
async fn local_node(adjust: impl FnOnce(&mut chorus::config::Settings)) -> TestNode {
    let dir = scratch_dir();
    TestNode::spawn_with(|s| {
        s.upload_dir = Some(dir);
        adjust(s);
    })
    .await
}

/// A moto server (the run's) with a fresh bucket, and settings that reach it.
async fn s3() -> (MotoServer, String) {
    let moto = MotoServer::shared_or_start();
    let bucket = unique("bucket");
    moto.create_bucket(&bucket).await;
    (moto, bucket)
}

fn use_s3(s: &mut chorus::config::Settings, moto: &MotoServer, bucket: &str) {
    s.s3_bucket = Some(bucket.to_owned());
    s.s3 = moto.overrides();
}

/// `POST /api/uploads` as `user` (anonymous mode) or with `bearer`.
async fn announce(node: &TestNode, body: Value, bearer: Option<&str>) -> Answer {
    let auth = bearer.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    call(
        Method::POST,
        &node.url("/api/uploads"),
        Some(&body),
        &headers,
    )
    .await
}

/// PUTs `bytes` where a 201 from `POST /api/uploads` says, with its headers.
async fn put_bytes(node: &TestNode, created: &Value, bytes: &[u8]) -> StatusCode {
    let url = created["upload_url"].as_str().unwrap();
    // The local folder's URL is a path on the node.
    let url = if url.starts_with('/') {
        node.url(url)
    } else {
        url.to_owned()
    };
    assert_eq!(created["method"], "PUT");
    let mut request = reqwest::Client::new().put(url).body(bytes.to_vec());
    for (name, value) in created["headers"].as_object().unwrap() {
        request = request.header(name, value.as_str().unwrap());
    }
    tokio::time::timeout(TIMEOUT, request.send())
        .await
        .expect("PUT answered in time")
        .expect("PUT answered")
        .status()
}

/// Announces and PUTs `bytes` as `user`; returns the upload's id.
async fn upload(node: &TestNode, user: &str, name: &str, kind: &str, bytes: &[u8]) -> String {
    let created = announce(
        node,
        json!({"user": user, "name": name, "type": kind, "size": bytes.len()}),
        None,
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let status = put_bytes(node, &created.body, bytes).await;
    assert!(status.is_success(), "PUT: {status}");
    created.body["id"].as_str().unwrap().to_owned()
}

/// A GET that does not follow redirects.
async fn get(url: &str, bearer: Option<&str>) -> reqwest::Response {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut request = client.get(url);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    tokio::time::timeout(TIMEOUT, request.send())
        .await
        .expect("GET answered in time")
        .expect("GET answered")
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_default()
}

/// Two users in a fresh room: the sender and a reader.
async fn room_pair(node: &TestNode, from: &str, to: &str) -> (String, WsClient, WsClient) {
    let room = unique("r");
    let mut sender = WsClient::connect(&node.ws_url(from)).await;
    let mut reader = WsClient::connect(&node.ws_url(to)).await;
    sender.join(&room).await;
    reader.join(&room).await;
    (room, sender, reader)
}

/// The room's history over REST, as the node stored it.
async fn history(node: &TestNode, room: &str) -> Vec<Value> {
    let answer = call(
        Method::GET,
        &node.url(&format!("/api/rooms/{room}/messages")),
        None,
        &[],
    )
    .await;
    answer.body.as_array().cloned().unwrap_or_default()
}

/// The frame names the upload as the contract says, and history holds the
/// same message as delivery.
async fn assert_carried(node: &TestNode, room: &str, frame: &Value, id: &str, size: usize) {
    let attachments = frame["attachments"].as_array().expect("attachments");
    assert_eq!(attachments.len(), 1, "{frame}");
    let a = &attachments[0];
    assert_eq!(a["id"], id);
    assert_eq!(a["name"], "cat.png");
    assert_eq!(a["type"], "image/png");
    assert_eq!(a["size"], size);
    assert_eq!(a["url"], format!("/api/uploads/{id}"));
    let stored = history(node, room).await;
    assert_eq!(stored.last(), Some(frame), "history equals delivery");
}

#[tokio::test]
async fn uploads_local_flow_sends_fetches_and_keeps_history() {
    let node = local_node(|_| {}).await;
    let (room, mut alice, mut bob) = room_pair(&node, "alice", "bob").await;

    let id = upload(&node, "alice", "cat.png", "image/png", PNG).await;
    // Attachments alone: the content may be empty.
    let echo = alice
        .request(json!({"type": "message", "room": room, "content": "", "attachments": [id]}))
        .await;
    assert_eq!(echo["type"], "message", "{echo}");
    let delivered = bob
        .recv_until(|f| f["type"] == "message" && f["id"] == echo["id"])
        .await;
    assert_carried(&node, &room, &delivered, &id, PNG.len()).await;

    let response = get(&node.url(&format!("/api/uploads/{id}")), None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert_eq!(header(&headers, "content-type"), "image/png");
    assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
    assert_eq!(
        header(&headers, "content-security-policy"),
        "default-src 'none'; sandbox"
    );
    assert!(
        header(&headers, "content-disposition").starts_with("inline; filename=\"cat.png\""),
        "a PNG that is one shows inline"
    );
    assert_eq!(response.bytes().await.unwrap().as_ref(), PNG);
}

#[tokio::test]
async fn uploads_local_disposition_is_attachment_when_bytes_are_not_the_type() {
    let node = local_node(|_| {}).await;
    let name = "\"évil\"; <b>.png";
    let id = upload(&node, "alice", name, "image/png", b"<html><script>").await;
    // Unattached, the uploader (anyone, without auth) can already fetch it.
    let response = get(&node.url(&format!("/api/uploads/{id}")), None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(response.headers(), "content-disposition"),
        "attachment; filename=\"__vil_; <b>.png\"; filename*=UTF-8''%22%C3%A9vil%22%3B%20%3Cb%3E.png",
        "an image that is not one is downloaded, its name escaped"
    );
}

#[tokio::test]
async fn uploads_s3_flow_redirects_to_a_working_presigned_url() {
    let (moto, bucket) = s3().await;
    let node = TestNode::spawn_with(|s| use_s3(s, &moto, &bucket)).await;
    let room = unique("r");
    let mut bob = WsClient::connect(&node.ws_url("bob")).await;
    bob.join(&room).await;

    let id = upload(&node, "alice", "cat.png", "image/png", PNG).await;
    // Over REST this time, with the sender in the body (anonymous mode).
    let sent = call(
        Method::POST,
        &node.url(&format!("/api/rooms/{room}/messages")),
        Some(&json!({"user": "alice", "content": "look", "attachments": [id]})),
        &[],
    )
    .await;
    assert_eq!(sent.status, StatusCode::CREATED, "{}", sent.body);
    let delivered = bob
        .recv_until(|f| f["type"] == "message" && f["id"] == sent.body["id"])
        .await;
    assert_carried(&node, &room, &delivered, &id, PNG.len()).await;

    let redirect = get(&node.url(&format!("/api/uploads/{id}")), None).await;
    assert_eq!(redirect.status(), StatusCode::FOUND);
    assert_eq!(
        header(redirect.headers(), "cache-control"),
        "private, no-store"
    );
    let location = header(redirect.headers(), "location").to_owned();
    assert!(location.starts_with(moto.url()), "{location}");
    let file = get(&location, None).await;
    assert_eq!(file.status(), StatusCode::OK);
    // S3 serves the headers the URL names (moto ignores the disposition,
    // so the URL is what is checked).
    assert!(
        location.contains("response-content-disposition=inline%3B%20filename%3D%22cat.png%22"),
        "{location}"
    );
    assert_eq!(header(file.headers(), "content-type"), "image/png");
    assert_eq!(file.bytes().await.unwrap().as_ref(), PNG);
}

#[tokio::test]
async fn uploads_refuse_too_large_svg_and_unknown_types_at_post() {
    let node = local_node(|s| s.upload_max_bytes = 1000).await;
    let post = |name: &str, kind: &str, size: u64| json!({"user": "alice", "name": name, "type": kind, "size": size});
    let big = announce(&node, post("big.png", "image/png", 1001), None).await;
    assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", big.body);
    assert_eq!(big.body["error"]["code"], "too_large");
    for kind in [
        "image/svg+xml",
        "text/html",
        "application/x-msdownload",
        "nonsense",
    ] {
        let refused = announce(&node, post("f", kind, 10), None).await;
        assert_eq!(
            refused.status,
            StatusCode::BAD_REQUEST,
            "{kind}: {}",
            refused.body
        );
        assert_eq!(refused.body["error"]["code"], "bad_request");
    }
    let svg = announce(&node, post("f.svg", "image/svg+xml", 10), None).await;
    assert!(
        svg.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("image/svg+xml"),
        "the refusal names the type: {}",
        svg.body
    );
    for bad_name in ["", "../etc/passwd", "a\nb"] {
        let refused = announce(&node, post(bad_name, "image/png", 10), None).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{bad_name:?}");
    }
    let empty = announce(&node, post("f.png", "image/png", 0), None).await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
}

/// Sends a message with `attachments` as `client` and returns the error.
async fn refused_send(client: &mut WsClient, room: &str, attachments: Value) -> Value {
    let answer = client
        .request(
            json!({"type": "message", "room": room, "content": "x", "attachments": attachments}),
        )
        .await;
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(answer["code"], "bad_request", "{answer}");
    answer
}

#[tokio::test]
async fn uploads_local_wrong_put_is_never_attachable() {
    let node = local_node(|_| {}).await;
    let room = unique("r");
    let mut alice = WsClient::connect(&node.ws_url("alice")).await;
    alice.join(&room).await;
    let announce_png = || {
        announce(
            &node,
            json!({"user": "alice", "name": "cat.png", "type": "image/png", "size": PNG.len()}),
            None,
        )
    };

    // Short: 400, and the upload stays unattachable.
    let created = announce_png().await.body;
    let id = created["id"].as_str().unwrap();
    assert_eq!(
        put_bytes(&node, &created, &PNG[..10]).await,
        StatusCode::BAD_REQUEST
    );
    let error = refused_send(&mut alice, &room, json!([id])).await;
    assert!(error["message"].as_str().unwrap().contains(id), "{error}");

    // Long: 413.
    let created = announce_png().await.body;
    let mut long = PNG.to_vec();
    long.push(0);
    assert_eq!(
        put_bytes(&node, &created, &long).await,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    refused_send(&mut alice, &room, json!([created["id"]])).await;

    // Another type than announced: 400.
    let created = announce_png().await.body;
    let mut wrong = created.clone();
    wrong["headers"] = json!({"content-type": "application/pdf"});
    assert_eq!(put_bytes(&node, &wrong, PNG).await, StatusCode::BAD_REQUEST);

    // Right, then again: 409. A wrong secret: 404.
    assert_eq!(
        put_bytes(&node, &created, PNG).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(put_bytes(&node, &created, PNG).await, StatusCode::CONFLICT);
    let mut forged = created.clone();
    let url = created["upload_url"].as_str().unwrap();
    forged["upload_url"] = json!(format!("{}x", &url[..url.len() - 1]));
    assert_eq!(put_bytes(&node, &forged, PNG).await, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn uploads_s3_wrong_size_is_never_attachable() {
    let (moto, bucket) = s3().await;
    let node = TestNode::spawn_with(|s| use_s3(s, &moto, &bucket)).await;
    let room = unique("r");
    let mut alice = WsClient::connect(&node.ws_url("alice")).await;
    alice.join(&room).await;
    let created = announce(
        &node,
        json!({"user": "alice", "name": "cat.png", "type": "image/png", "size": PNG.len()}),
        None,
    )
    .await
    .body;
    let id = created["id"].as_str().unwrap();
    // Before any PUT: not uploaded yet.
    let error = refused_send(&mut alice, &room, json!([id])).await;
    assert!(
        error["message"].as_str().unwrap().contains("not uploaded"),
        "{error}"
    );
    // S3 may refuse the signed length or store the object; either way the
    // check at attach refuses it, for good.
    let _ = put_bytes(&node, &created, &PNG[..10]).await;
    refused_send(&mut alice, &room, json!([id])).await;
    let _ = put_bytes(&node, &created, PNG).await;
    refused_send(&mut alice, &room, json!([id])).await;
}

#[tokio::test]
async fn uploads_someone_elses_id_and_bad_lists_are_refused() {
    let node = local_node(|_| {}).await;
    let (room, mut alice, mut bob) = room_pair(&node, "alice", "bob").await;
    let id = upload(&node, "alice", "cat.png", "image/png", PNG).await;
    let error = refused_send(&mut bob, &room, json!([id])).await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("not an upload of yours"),
        "{error}"
    );
    refused_send(&mut alice, &room, json!([id, id])).await;
    refused_send(&mut alice, &room, json!(["nope"])).await;
    let eleven: Vec<String> = (0..11).map(|i| format!("{i:032x}")).collect();
    refused_send(&mut alice, &room, json!(eleven)).await;
    // A DM to bob with it works; a REST DM from bob with it does not.
    let dm = alice
        .request(json!({"type": "dm", "to": "bob", "attachments": [id]}))
        .await;
    assert_eq!(dm["type"], "dm", "{dm}");
    assert_eq!(dm["attachments"][0]["id"], id);
    let stolen = call(
        Method::POST,
        &node.url("/api/messages"),
        Some(&json!({"user": "bob", "to": "alice", "attachments": [id]})),
        &[],
    )
    .await;
    assert_eq!(stolen.status, StatusCode::BAD_REQUEST, "{}", stolen.body);
}

#[tokio::test]
async fn uploads_with_auth_members_fetch_and_strangers_get_404() {
    let node = local_node(|s| s.jwt_secret = Some(SECRET.to_owned())).await;
    let room = unique("r");
    let connect = |user: &str| {
        let url = node.ws_url_query(&format!("token={}", token(user)));
        async move { WsClient::connect(&url).await }
    };
    let mut alice = connect("alice").await;
    let mut bob = connect("bob").await;
    alice.join(&room).await;
    bob.join(&room).await;

    let created = announce(
        &node,
        json!({"name": "cat.png", "type": "image/png", "size": PNG.len()}),
        Some(&token("alice")),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(
        put_bytes(&node, &created.body, PNG).await,
        StatusCode::NO_CONTENT
    );
    let id = created.body["id"].as_str().unwrap();
    let url = node.url(&format!("/api/uploads/{id}"));

    // Before it is sent anywhere only its uploader may fetch it.
    assert_eq!(
        get(&url, Some(&token("bob"))).await.status(),
        StatusCode::NOT_FOUND
    );
    let sent = alice
        .request(json!({"type": "message", "room": room, "content": "", "attachments": [id]}))
        .await;
    assert_eq!(sent["type"], "message", "{sent}");

    assert_eq!(
        get(&url, Some(&token("alice"))).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        get(&url, Some(&token("bob"))).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        get(&url, Some(&token("carol"))).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(get(&url, None).await.status(), StatusCode::UNAUTHORIZED);

    // Sent in a DM: the other one of the pair may fetch it too.
    let dm = alice
        .request(json!({"type": "dm", "to": "dave", "attachments": [id]}))
        .await;
    assert_eq!(dm["type"], "dm", "{dm}");
    assert_eq!(
        get(&url, Some(&token("dave"))).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        get(&url, Some(&token("carol"))).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn uploads_on_redis_records_live_with_a_ttl_and_need_a_bucket() {
    let redis = RedisServer::start();
    let prefix = format!("{}:", unique("t"));

    // Cluster mode without a bucket: uploads are off.
    let off = TestNode::spawn_with(|s| {
        s.redis_url = Some(redis.url());
        s.redis_prefix = prefix.clone();
    })
    .await;
    let refused = announce(
        &off,
        json!({"user": "alice", "name": "a.png", "type": "image/png", "size": 10}),
        None,
    )
    .await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND);
    off.stop().await;

    let (moto, bucket) = s3().await;
    let node = TestNode::spawn_with(|s| {
        s.redis_url = Some(redis.url());
        s.redis_prefix = prefix.clone();
        use_s3(s, &moto, &bucket);
    })
    .await;
    // On Redis a node serves WebSockets once its subscriber is up.
    crate::support::wait_ready(&node.url("/ready")).await;
    let (room, mut alice, mut bob) = room_pair(&node, "alice", "bob").await;
    let id = upload(&node, "alice", "cat.png", "image/png", PNG).await;
    let echo = alice
        .request(json!({"type": "message", "room": room, "content": "hi", "attachments": [id]}))
        .await;
    assert_eq!(echo["type"], "message", "{echo}");
    let delivered = bob
        .recv_until(|f| f["type"] == "message" && f["id"] == echo["id"])
        .await;
    assert_carried(&node, &room, &delivered, &id, PNG.len()).await;

    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for key in [
        format!("{prefix}{{up:{id}}}"),
        format!("{prefix}{{up:{id}}}:logs"),
    ] {
        let ttl: i64 = conn.ttl(&key).await.unwrap();
        assert!(
            ttl > 30 * 24 * 3600,
            "{key}: an attached upload lives months, got {ttl}"
        );
    }
    let logs: Vec<String> = conn
        .smembers(format!("{prefix}{{up:{id}}}:logs"))
        .await
        .unwrap();
    assert_eq!(logs, vec![format!("r:{room}")]);
    // Another node of the cluster serves it from the shared records.
    let other = TestNode::spawn_with(|s| {
        s.redis_url = Some(redis.url());
        s.redis_prefix = prefix.clone();
        use_s3(s, &moto, &bucket);
    })
    .await;
    let redirect = get(&other.url(&format!("/api/uploads/{id}")), None).await;
    assert_eq!(redirect.status(), StatusCode::FOUND);
    let location = header(redirect.headers(), "location").to_owned();
    assert_eq!(
        get(&location, None).await.bytes().await.unwrap().as_ref(),
        PNG
    );

    let keys: Vec<String> = conn.keys(format!("{prefix}*up*")).await.unwrap();
    for key in keys {
        let ttl: i64 = conn.ttl(&key).await.unwrap();
        assert!(ttl > 0, "{key} has no lifetime");
    }
}

#[tokio::test]
async fn uploads_post_is_rate_limited_and_pending_uploads_are_capped() {
    let node = local_node(|_| {}).await;
    let body = json!({"user": "alice", "name": "a.png", "type": "image/png", "size": 10});
    for _ in 0..chorus::chat::MAX_PENDING_UPLOADS {
        assert_eq!(
            announce(&node, body.clone(), None).await.status,
            StatusCode::CREATED
        );
    }
    let capped = announce(&node, body.clone(), None).await;
    assert_eq!(
        capped.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        capped.body
    );
    assert_eq!(capped.body["error"]["code"], "rate_limited");
    assert!(capped.retry_after().is_some());
    // Per user: someone else may still upload.
    let other = json!({"user": "bob", "name": "a.png", "type": "image/png", "size": 10});
    assert_eq!(
        announce(&node, other, None).await.status,
        StatusCode::CREATED
    );

    // The POST rate limit covers the upload route like every POST.
    let slow = local_node(|s| {
        s.rate_limit = 1;
        s.rate_burst = 2;
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(announce(&slow, body.clone(), None).await.status);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::CREATED,
            StatusCode::CREATED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
}

#[tokio::test]
async fn uploads_local_put_that_stalls_is_answered_408_and_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let node = local_node(|s| s.handshake_timeout_secs = 1).await;
    let created = announce(
        &node,
        json!({"user": "alice", "name": "cat.png", "type": "image/png", "size": PNG.len()}),
        None,
    )
    .await
    .body;
    let path = created["upload_url"].as_str().unwrap();
    let mut socket = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: image/png\r\nContent-Length: {}\r\n\r\n",
        node.addr,
        PNG.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&PNG[..10]).await.unwrap();
    // Then nothing: the node must answer and close on its own.
    let mut answer = Vec::new();
    tokio::time::timeout(TIMEOUT, socket.read_to_end(&mut answer))
        .await
        .expect("the node closes a stalled upload")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // Nothing half-written is attachable.
    let mut alice = WsClient::connect(&node.ws_url("alice")).await;
    let room = unique("r");
    alice.join(&room).await;
    refused_send(&mut alice, &room, json!([created["id"]])).await;
}

#[tokio::test]
async fn uploads_local_put_streams_bodies_far_over_the_64_kib_request_limit() {
    let node = local_node(|_| {}).await;
    // 3 MiB: the read-whole-body layer of every other route would refuse it.
    let bytes: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let id = upload(&node, "alice", "big.pdf", "application/pdf", &bytes).await;
    let response = get(&node.url(&format!("/api/uploads/{id}")), None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(header(response.headers(), "content-disposition").starts_with("attachment;"));
    assert_eq!(response.bytes().await.unwrap().len(), bytes.len());
}

#[tokio::test]
async fn uploads_local_records_outlive_a_restart_of_the_embedded_node() {
    let dir = scratch_dir();
    let settings = |s: &mut chorus::config::Settings| {
        s.upload_dir = Some(dir.clone());
        s.jwt_secret = Some(SECRET.to_owned());
    };
    let node = TestNode::spawn_with(settings).await;
    let created = announce(
        &node,
        json!({"name": "cat.png", "type": "image/png", "size": PNG.len()}),
        Some(&token("alice")),
    )
    .await;
    assert_eq!(
        put_bytes(&node, &created.body, PNG).await,
        StatusCode::NO_CONTENT
    );
    let id = created.body["id"].as_str().unwrap().to_owned();
    let mut alice =
        WsClient::connect(&node.ws_url_query(&format!("token={}", token("alice")))).await;
    let dm = alice
        .request(json!({"type": "dm", "to": "bob", "attachments": [id]}))
        .await;
    assert_eq!(dm["type"], "dm", "{dm}");
    alice.close().await;
    node.stop().await;

    // A new process on the same folder: memory records are gone, the file's
    // record beside it is not.
    let node = TestNode::spawn_with(settings).await;
    let url = node.url(&format!("/api/uploads/{id}"));
    let response = get(&url, Some(&token("bob"))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(header(response.headers(), "content-disposition").starts_with("inline;"));
    assert_eq!(response.bytes().await.unwrap().as_ref(), PNG);
    assert_eq!(
        get(&url, Some(&token("carol"))).await.status(),
        StatusCode::NOT_FOUND
    );
    // And it can be sent again by its uploader.
    let mut alice =
        WsClient::connect(&node.ws_url_query(&format!("token={}", token("alice")))).await;
    let again = alice
        .request(json!({"type": "dm", "to": "carol", "attachments": [id]}))
        .await;
    assert_eq!(again["type"], "dm", "{again}");
    assert_eq!(
        get(&url, Some(&token("carol"))).await.status(),
        StatusCode::OK
    );
}
