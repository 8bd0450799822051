//! Access and abuse limits as a hostile or careless client meets them:
//! foreign origins on WebSocket and `/api/*`, CORS for allowed ones, the
//! metrics listener of its own, connections per client address (direct and
//! behind a trusted proxy), join and DM rates, the node-wide limit on
//! buffered output, and the handshake timeout. Each refusal is precise and
//! counted, and everyone else keeps chatting.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::{ACCESS_CONTROL_ALLOW_ORIGIN, ORIGIN};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::support::node::Endpoint;
use crate::support::raw::{connect_with_small_window_from, raw_recv, raw_send};
use crate::support::tools::free_port;
use crate::support::{
    TIMEOUT, TestNode, WsClient, eventually, get_status, metric, read_until_closed, sample, scrape,
    unique,
};

const FOREIGN: &str = "https://evil.example";
const APP: &str = "https://app.example";

/// A GET on `path` with an `Origin` header: status, JSON body and the CORS
/// allow-origin header.
async fn get_from(
    node: &TestNode,
    path: &str,
    origin: Option<&str>,
) -> (u16, Value, Option<String>) {
    let mut request = reqwest::Client::new().get(node.url(path));
    if let Some(origin) = origin {
        request = request.header(ORIGIN, origin);
    }
    let response = tokio::time::timeout(TIMEOUT, request.send())
        .await
        .expect("answer in time")
        .expect("request");
    let status = response.status().as_u16();
    let allow = response
        .headers()
        .get(ACCESS_CONTROL_ALLOW_ORIGIN)
        .map(|v| v.to_str().expect("ASCII").to_owned());
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, allow)
}

fn assert_refused_as(
    refused: Result<WsClient, crate::support::ws_client::Refused>,
    status: u16,
    code: &str,
) {
    let Err(refused) = refused else {
        panic!("expected {status} {code}, the upgrade was accepted");
    };
    assert_eq!(refused.status, status, "{refused:?}");
    assert_eq!(refused.body["error"]["code"], code, "{refused:?}");
}

#[tokio::test]
async fn by_default_only_pages_of_the_same_host_and_non_browsers_may_connect_or_call_the_api() {
    let node = TestNode::spawn().await;
    let own = format!("http://{}", node.addr);

    WsClient::try_connect_with_headers(&node.ws_url(&unique("own")), &[("Origin", &own)])
        .await
        .expect("a page of the node's own host connects");
    WsClient::connect(&node.ws_url(&unique("cli"))).await;
    let foreign =
        WsClient::try_connect_with_headers(&node.ws_url("victim"), &[("Origin", FOREIGN)]).await;
    assert_refused_as(foreign, 403, "forbidden_origin");

    assert_eq!(get_from(&node, "/api/rooms", Some(&own)).await.0, 200);
    assert_eq!(get_from(&node, "/api/rooms", None).await.0, 200);
    let (status, body, allow) = get_from(&node, "/api/rooms", Some(FOREIGN)).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (403, &json!("forbidden_origin")),
        "{body}"
    );
    assert_eq!(allow, None, "no CORS answer for a foreign page");
    assert_eq!(
        get_from(&node, "/health", Some(FOREIGN)).await.0,
        200,
        "probes stay open"
    );
}

#[tokio::test]
async fn listed_origins_may_connect_and_get_cors_answers_and_others_may_not() {
    let node =
        TestNode::spawn_with(|s| s.allowed_origins = format!("{APP}, http://localhost:3000")).await;

    WsClient::try_connect_with_headers(&node.ws_url(&unique("a")), &[("Origin", APP)])
        .await
        .expect("a listed origin connects");
    let foreign =
        WsClient::try_connect_with_headers(&node.ws_url("victim"), &[("Origin", FOREIGN)]).await;
    assert_refused_as(foreign, 403, "forbidden_origin");

    let preflight = reqwest::Client::new()
        .request(Method::OPTIONS, node.url("/api/rooms"))
        .header(ORIGIN, APP)
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization, content-type",
        )
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let headers = preflight.headers();
    assert_eq!(headers[ACCESS_CONTROL_ALLOW_ORIGIN], APP);
    let methods = headers["access-control-allow-methods"].to_str().unwrap();
    assert!(methods.contains("POST"), "{methods}");
    let allowed = headers["access-control-allow-headers"].to_str().unwrap();
    assert!(
        allowed.contains("authorization") && allowed.contains("content-type"),
        "{allowed}"
    );

    let (status, _, allow) = get_from(&node, "/api/rooms", Some(APP)).await;
    assert_eq!((status, allow.as_deref()), (200, Some(APP)));
    let (status, body, allow) = get_from(&node, "/api/users", Some(FOREIGN)).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (403, &json!("forbidden_origin")),
        "{body}"
    );
    assert_eq!(allow, None);
}

#[tokio::test]
async fn with_a_metrics_address_metrics_are_served_there_and_not_on_the_public_port() {
    let metrics_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let node = TestNode::spawn_with(|s| s.metrics_addr = Some(metrics_addr)).await;

    let page = scrape(&format!("http://{metrics_addr}/metrics")).await;
    assert!(page.contains("chorus_build_info"), "{page}");
    assert_eq!(get_status(&node.url("/metrics")).await, Some(404));
    assert_eq!(get_status(&node.url("/health")).await, Some(200));
    assert_eq!(
        get_status(&format!("http://{metrics_addr}/health")).await,
        Some(404)
    );
}

// ---------------------------------------------------------------------------
// Connections per client address

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_over_the_per_address_limit_is_refused_while_existing_users_keep_chatting()
 {
    const LIMIT: usize = 10;
    const FLOOD: usize = 200;
    // Metrics on a listener of their own: every connection to the public
    // port from this address counts, and a scrape must not take a slot.
    let metrics_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let metrics_url = format!("http://{metrics_addr}/metrics");
    let node = TestNode::spawn_with(|s| {
        s.max_connections_per_ip = LIMIT as u32;
        s.rate_limit = 0;
        s.metrics_addr = Some(metrics_addr);
    })
    .await;
    let refused_before = sample(
        &scrape(&metrics_url).await,
        "chorus_connections_refused_total",
        r#"reason="per_ip""#,
    );
    let room = unique("room");
    let mut alice = WsClient::connect(&node.ws_url(&unique("alice"))).await;
    alice.join(&room).await;
    let mut bob = WsClient::connect(&node.ws_url(&unique("bob"))).await;
    bob.join(&room).await;

    // alice talks at a steady pace for as long as the flood lasts.
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let talker = tokio::spawn({
        let room = room.clone();
        async move {
            let mut sent = Vec::new();
            let mut pace = tokio::time::interval(Duration::from_millis(10));
            loop {
                tokio::select! {
                    _ = pace.tick() => {}
                    _ = &mut stopped => break,
                }
                let content = format!("m{}", sent.len());
                alice.say(&room, &content).await;
                sent.push(content);
            }
            alice.say(&room, "end").await;
            sent
        }
    });
    let listener = tokio::spawn(async move {
        let mut seen = Vec::new();
        loop {
            let frame = bob.recv_until(|f| f["type"] == "message").await;
            let content = frame["content"].as_str().expect("content").to_owned();
            if content == "end" {
                return (seen, bob);
            }
            seen.push(content);
        }
    });

    let started = Instant::now();
    let mut attempts = JoinSet::new();
    for n in 0..FLOOD {
        let url = node.ws_url(&format!("flood{n}"));
        attempts.spawn(async move { WsClient::try_connect(&url).await });
    }
    let mut accepted = Vec::new();
    let mut refused = 0;
    while let Some(attempt) = attempts.join_next().await {
        match attempt.expect("attempt") {
            Ok(client) => accepted.push(client),
            Err(refusal) => {
                assert_eq!(refusal.status, 429, "{refusal:?}");
                assert_eq!(
                    refusal.body["error"]["code"], "too_many_connections",
                    "{refusal:?}"
                );
                refused += 1;
            }
        }
    }
    let flood_time = started.elapsed();
    let _ = stop.send(());
    let sent = tokio::time::timeout(TIMEOUT, talker)
        .await
        .expect("talker ends")
        .expect("talker");
    let (seen, mut bob) = tokio::time::timeout(TIMEOUT, listener)
        .await
        .expect("listener ends")
        .expect("listener");

    assert_eq!(
        accepted.len(),
        LIMIT - 2,
        "alice and bob hold two of the {LIMIT}"
    );
    assert_eq!(refused, FLOOD - accepted.len());
    assert_eq!(
        seen, sent,
        "bob got every message alice sent during the flood, in order"
    );
    let refused_after = sample(
        &scrape(&metrics_url).await,
        "chorus_connections_refused_total",
        r#"reason="per_ip""#,
    );
    assert!(
        refused_after - refused_before >= refused as f64,
        "refusals are counted"
    );
    eprintln!(
        "per-address flood: {FLOOD} attempts in {flood_time:?}, {} accepted, {refused} refused with 429; \
         meanwhile alice sent {} messages, bob received {}, lost 0",
        accepted.len(),
        sent.len(),
        seen.len()
    );

    // A slot freed is a slot usable again.
    drop(accepted.pop());
    eventually("a freed slot is accepted again", || async {
        WsClient::try_connect(&node.ws_url(&unique("late")))
            .await
            .ok()
    })
    .await;
    bob.say(&room, "still here").await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_its_header_names_the_client_and_otherwise_it_is_ignored() {
    let behind = TestNode::spawn_with(|s| {
        s.max_connections_per_ip = 1;
        s.trusted_proxy_header = Some("X-Forwarded-For".into());
    })
    .await;
    let connect = |node: &TestNode, forwarded: &str| {
        let url = node.ws_url(&unique("u"));
        let forwarded = forwarded.to_owned();
        async move { WsClient::try_connect_with_headers(&url, &[("X-Forwarded-For", &forwarded)]).await }
    };
    let _first = connect(&behind, "198.51.100.7, 203.0.113.1")
        .await
        .expect("one client");
    let _second = connect(&behind, "203.0.113.2")
        .await
        .expect("another client");
    // The entries a client wrote itself do not make it someone else.
    assert_refused_as(
        connect(&behind, "10.1.1.1, 203.0.113.1").await,
        429,
        "too_many_connections",
    );

    let direct = TestNode::spawn_with(|s| s.max_connections_per_ip = 1).await;
    let _only = connect(&direct, "203.0.113.1").await.expect("one client");
    assert_refused_as(
        connect(&direct, "203.0.113.2").await,
        429,
        "too_many_connections",
    );
}

// ---------------------------------------------------------------------------
// Join and DM rates

/// Sends `frame` until it is answered with `accepted` rather than
/// `rate_limited`, as a client honouring the retry hint would.
async fn retry_until(client: &mut WsClient, frame: Value, accepted: &str) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let answer = client.request(frame.clone()).await;
        if answer["type"] == accepted {
            return;
        }
        assert_eq!(answer["code"], "rate_limited", "{answer}");
        assert!(Instant::now() < deadline, "still refused after {TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn joins_over_the_join_rate_are_refused_and_the_bucket_refills() {
    let node = TestNode::spawn_with(|s| {
        s.join_rate = 1;
        s.max_rooms_per_connection = 3;
    })
    .await;
    let mut alice = WsClient::connect(&node.ws_url(&unique("alice"))).await;
    let rooms: Vec<String> = (0..3).map(|_| unique("room")).collect();
    for room in &rooms {
        alice.join(room).await;
    }
    let refused = alice
        .request(json!({"type": "join", "room": rooms[0]}))
        .await;
    assert_eq!(refused["code"], "rate_limited", "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("join"),
        "{refused}"
    );
    let refused = alice
        .request(json!({"type": "switch", "from": rooms[0], "to": unique("room")}))
        .await;
    assert_eq!(
        refused["code"], "rate_limited",
        "a switch is a join: {refused}"
    );
    let still = alice.say(&rooms[0], "still a member").await;
    assert_eq!(
        still["type"], "message",
        "a refused switch left nothing: {still}"
    );

    retry_until(
        &mut alice,
        json!({"type": "join", "room": rooms[1]}),
        "joined",
    )
    .await;
}

#[tokio::test]
async fn dms_over_the_dm_rate_are_refused_and_never_delivered() {
    let node = TestNode::spawn_with(|s| s.dm_rate = 1).await;
    let (alice_name, bob_name) = (unique("alice"), unique("bob"));
    let mut alice = WsClient::connect(&node.ws_url(&alice_name)).await;
    let mut bob = WsClient::connect(&node.ws_url(&bob_name)).await;

    let mut answers = Vec::new();
    for n in 0..3 {
        let answer = alice
            .request(json!({"type": "dm", "to": bob_name, "content": format!("dm{n}")}))
            .await;
        answers.push(answer);
    }
    assert_eq!(
        answers[0]["type"], "dm",
        "the bucket holds two: {}",
        answers[0]
    );
    assert_eq!(answers[1]["type"], "dm", "{}", answers[1]);
    assert_eq!(answers[2]["code"], "rate_limited", "{}", answers[2]);

    retry_until(
        &mut alice,
        json!({"type": "dm", "to": bob_name, "content": "later"}),
        "dm",
    )
    .await;
    let (got, _) = bob.collect_until(|f| f["content"] == "later").await;
    let dms: Vec<&str> = got
        .iter()
        .filter(|f| f["type"] == "dm")
        .map(|f| f["content"].as_str().unwrap())
        .collect();
    assert_eq!(dms, ["dm0", "dm1"], "the refused DM never reached bob");
}

// ---------------------------------------------------------------------------
// Node-wide buffered output

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_buffered_bytes_limit_new_connections_get_503_until_the_backlog_clears() {
    // Members from 20 addresses: one address may hold only a quarter of
    // the limit (and is closed past it), so only many together overload it.
    let node = TestNode::spawn_with(|s| {
        s.max_buffered_bytes = 256 * 1024;
        s.outbound_queue = 100_000;
        s.rate_limit = 0;
        s.write_delay_ms = 0;
        s.trusted_proxy_header = Some("X-Real-IP".into());
    })
    .await;
    let room = unique("room");
    // Members that never read: their queues hold what is sent to the room.
    let mut stuck = Vec::new();
    for i in 0..20 {
        let address = format!("203.0.113.{}", i + 1);
        let mut ws = connect_with_small_window_from(&node, &unique("stuck"), &address).await;
        raw_send(&mut ws, json!({"type": "join", "room": room})).await;
        assert_eq!(raw_recv(&mut ws).await["type"], "joined");
        stuck.push(ws);
    }
    let mut sender = WsClient::connect(&node.ws_url(&unique("sender"))).await;
    sender.join(&room).await;

    let filler = "x".repeat(4000);
    let mut sent = 0;
    let refusal = loop {
        assert!(sent < 5_000, "20 MB sent and no new connection was refused");
        sender.say(&room, &format!("{sent}:{filler}")).await;
        sent += 1;
        if let Err(refusal) = WsClient::try_connect(&node.ws_url(&unique("late"))).await {
            break refusal;
        }
    };
    assert_eq!(refusal.status, 503, "{refusal:?}");
    assert_eq!(refusal.body["error"]["code"], "overloaded", "{refusal:?}");
    let page = scrape(&node.url("/metrics")).await;
    assert!(
        sample(&page, "chorus_outbound_buffered_bytes", "") > 0.0,
        "the gauge shows the backlog"
    );
    sender.say(&room, "the sender is still served").await;

    drop(stuck);
    eventually(
        "once the stuck member is gone its backlog no longer counts",
        || async {
            WsClient::try_connect(&node.ws_url(&unique("later")))
                .await
                .ok()
        },
    )
    .await;
    eprintln!(
        "buffered-bytes limit: refused new connections after {sent} messages of 4 KB queued for 20 stuck members"
    );
}

// ---------------------------------------------------------------------------
// Handshake timeout

/// Reads until the server closes the connection; fails if it stays open.
async fn closed_by_server(stream: &mut TcpStream) {
    let mut buf = [0_u8; 1024];
    loop {
        match tokio::time::timeout(TIMEOUT, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return,
            Ok(Ok(_)) => {}
            Err(_) => panic!("the server kept a connection without a request open"),
        }
    }
}

#[tokio::test]
async fn connections_that_send_no_complete_request_in_time_are_closed() {
    let node = TestNode::spawn_with(|s| s.handshake_timeout_secs = 1).await;
    let mut silent = TcpStream::connect(node.addr).await.expect("connect");
    let mut partial = TcpStream::connect(node.addr).await.expect("connect");
    partial
        .write_all(b"GET /ws?username=slowloris HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
        .await
        .expect("write");

    // Meanwhile a prompt client is served.
    assert_eq!(get_status(&node.url("/health")).await, Some(200));
    closed_by_server(&mut silent).await;
    closed_by_server(&mut partial).await;
    let page = scrape(&node.url("/metrics")).await;
    assert!(
        sample(&page, "chorus_handshake_timeouts_total", "") >= 2.0,
        "counted"
    );
}

// ---------------------------------------------------------------------------
// Request bodies: one deadline for the whole body

/// A request head announcing a `length`-byte JSON body.
fn post_head(length: usize) -> String {
    format!(
        "POST /api/rooms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
}

#[tokio::test]
async fn a_request_body_that_does_not_arrive_within_the_handshake_timeout_closes_the_connection() {
    let node = TestNode::spawn_with(|s| s.handshake_timeout_secs = 1).await;
    let before = metric(&node.url("/metrics"), "chorus_handshake_timeouts_total").await;

    // One announces 64 KiB and sends nothing; one drips a byte every 100 ms,
    // which a per-read idle timer would never stop.
    let mut silent = TcpStream::connect(node.addr).await.expect("connect");
    silent
        .write_all(post_head(65_536).as_bytes())
        .await
        .expect("write head");
    let dripping = TcpStream::connect(node.addr).await.expect("connect");
    let (mut drip_read, mut drip_write) = dripping.into_split();
    drip_write
        .write_all(post_head(65_536).as_bytes())
        .await
        .expect("write head");
    let started = Instant::now();
    let dripper = tokio::spawn(async move {
        let mut pace = tokio::time::interval(Duration::from_millis(100));
        // Stops at the first write the closed connection refuses.
        while drip_write.write_all(b" ").await.is_ok() {
            pace.tick().await;
        }
    });

    // Meanwhile a prompt client is served.
    assert_eq!(get_status(&node.url("/health")).await, Some(200));
    let answer = read_until_closed(&mut silent).await;
    let mut dripped = String::new();
    let _ = tokio::time::timeout(TIMEOUT, drip_read.read_to_string(&mut dripped))
        .await
        .expect("the dripping connection is closed in time");
    let elapsed = started.elapsed();
    let _ = tokio::time::timeout(TIMEOUT, dripper).await;

    for answer in [&answer, &dripped] {
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer:?}"
        );
        assert!(answer.contains(r#""code":"request_timeout""#), "{answer:?}");
    }
    assert!(
        elapsed < Duration::from_secs(5),
        "closed about 1 s after the head, took {elapsed:?}"
    );
    let after = metric(&node.url("/metrics"), "chorus_handshake_timeouts_total").await;
    assert!(after - before >= 2.0, "counted: {before} -> {after}");
    eprintln!("body deadline 1 s: silent and dripping bodies closed after {elapsed:?}");
}

#[tokio::test]
async fn a_request_body_that_arrives_in_time_in_pieces_is_served() {
    let node = TestNode::spawn_with(|s| s.handshake_timeout_secs = 2).await;
    let body = json!({"name": unique("room")}).to_string();
    let (first, rest) = body.split_at(body.len() / 2);
    let mut stream = TcpStream::connect(node.addr).await.expect("connect");
    stream
        .write_all(format!("{}{first}", post_head(body.len())).as_bytes())
        .await
        .expect("write");
    stream.flush().await.expect("flush");
    stream.write_all(rest.as_bytes()).await.expect("write");
    let mut buf = [0_u8; 1024];
    let n = tokio::time::timeout(TIMEOUT, stream.read(&mut buf))
        .await
        .expect("answer in time")
        .expect("read");
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer:?}");
}

// ---------------------------------------------------------------------------
// TCP connections per client address

#[tokio::test]
async fn plain_tcp_connections_over_the_per_address_limit_get_429_until_one_closes() {
    const LIMIT: usize = 3;
    let node = TestNode::spawn_with(|s| s.max_connections_per_ip = LIMIT as u32).await;
    let mut idle = Vec::new();
    for _ in 0..LIMIT {
        idle.push(TcpStream::connect(node.addr).await.expect("connect"));
    }

    let mut over = TcpStream::connect(node.addr).await.expect("connect");
    let answer = read_until_closed(&mut over).await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer:?}");
    assert!(
        answer.contains(r#""code":"too_many_connections""#),
        "{answer:?}"
    );
    // A WebSocket rides a TCP connection: it is refused the same way.
    assert_refused_as(
        WsClient::try_connect(&node.ws_url(&unique("ws"))).await,
        429,
        "too_many_connections",
    );

    drop(idle.pop());
    eventually("a freed slot serves again", || async {
        (get_status(&node.url("/health")).await == Some(200)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_tcp_connections_from_the_proxy_are_not_capped() {
    const LIMIT: usize = 2;
    let node = TestNode::spawn_with(|s| {
        s.max_connections_per_ip = LIMIT as u32;
        s.trusted_proxy_header = Some("X-Real-IP".into());
    })
    .await;
    // Every connection comes from the proxy's address: the proxy caps them.
    let mut idle = Vec::new();
    for _ in 0..LIMIT * 2 {
        idle.push(TcpStream::connect(node.addr).await.expect("connect"));
    }
    assert_eq!(get_status(&node.url("/health")).await, Some(200));
}
