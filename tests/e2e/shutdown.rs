//! The drain: SIGTERM (or the shutdown future of an embedded node) closes
//! every socket with 1001, refuses new connections, and the process exits 0
//! within 10 s.

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite;

use crate::support::node::Endpoint;
use crate::support::{ProcessNode, TIMEOUT, TestNode, WsClient, unique};

/// The contract's budget from SIGTERM to exit.
const EXIT_BUDGET: Duration = Duration::from_secs(10);

/// Tries to open a WebSocket on a draining or stopped node and asserts that
/// it is refused: HTTP 503 `draining` before the upgrade, or no listener.
async fn assert_refused(url: &str) {
    let attempt = tokio::time::timeout(TIMEOUT, connect_async(url))
        .await
        .expect("the attempt settles in time");
    match attempt {
        Ok(_) => panic!("{url}: a connection was accepted while draining"),
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 503, "{url}");
            let body: Value = response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            assert_eq!(body["error"]["code"], "draining", "{body}");
        }
        // The port is closed, or the connection was dropped mid-handshake.
        Err(_) => {}
    }
}

/// Reads the node's log until its last drain line; returns every line.
fn drain_log(node: &ProcessNode) -> Vec<Value> {
    let deadline = Instant::now() + TIMEOUT;
    let mut lines = Vec::new();
    while !lines.iter().any(|l: &Value| l["message"] == "drained") {
        let left = deadline.saturating_duration_since(Instant::now());
        match node.logs.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(e) => panic!("no \"drained\" log line ({e}): {lines:?}"),
        }
    }
    lines
}

/// Waits for the process to exit within what is left of the budget that
/// started at `signalled`.
fn assert_exits_cleanly(node: &mut ProcessNode, signalled: Instant) {
    let left = EXIT_BUDGET.saturating_sub(signalled.elapsed());
    let status = node.wait_exit(left);
    assert_eq!(status.code(), Some(0), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_every_socket_with_1001_and_exits_0_within_10_seconds() {
    let mut node = ProcessNode::spawn(&[]);
    let (lobby, other) = (unique("lobby"), unique("other"));
    let mut clients = Vec::new();
    for (user, rooms) in [
        ("alice", vec![lobby.as_str(), other.as_str()]),
        ("alice", vec![lobby.as_str()]),
        ("bob", vec![lobby.as_str()]),
        ("carol", vec![]),
    ] {
        let mut client = WsClient::connect(&node.ws_url(user)).await;
        for room in rooms {
            client.join(room).await;
        }
        clients.push(client);
    }
    clients[2].say(&lobby, "before the drain").await;

    node.sigterm();
    let signalled = Instant::now();

    for client in &mut clients {
        assert_eq!(client.expect_close().await, 1001);
    }
    assert_refused(&node.ws_url("dave")).await;
    for client in clients {
        client.close().await;
    }
    assert_exits_cleanly(&mut node, signalled);
    let log = drain_log(&node);
    assert!(
        log.iter()
            .all(|l| l["level"] != "WARN" && l["level"] != "ERROR"),
        "every session closed and presence was removed without trouble: {log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_does_not_hold_the_exit_past_10_seconds() {
    let mut node = ProcessNode::spawn(&[]);
    let room = unique("room");
    // Completes the handshake, joins, and is never polled again: it will
    // neither read the close frame nor answer it.
    let (mut silent, _) = connect_async(node.ws_url("silent"))
        .await
        .expect("handshake");
    let join = json!({"type": "join", "room": room}).to_string();
    silent
        .send(tungstenite::Message::Text(join.into()))
        .await
        .expect("join sent");
    let mut watcher = WsClient::connect(&node.ws_url("watcher")).await;
    watcher.join(&room).await;

    node.sigterm();
    let signalled = Instant::now();

    assert_eq!(watcher.expect_close().await, 1001);
    watcher.close().await;
    assert_exits_cleanly(&mut node, signalled);
    drop(silent);
}

#[tokio::test]
async fn stopping_an_embedded_node_closes_its_sessions_with_1001_then_stops_listening() {
    let node = TestNode::spawn().await;
    let room = unique("room");
    let mut alice = WsClient::connect(&node.ws_url("alice")).await;
    let mut bob = WsClient::connect(&node.ws_url("bob")).await;
    alice.join(&room).await;
    bob.join(&room).await;
    let url = node.ws_url("carol");

    let ((), codes) = tokio::join!(node.stop(), async {
        (alice.expect_close().await, bob.expect_close().await)
    });

    assert_eq!(codes, (1001, 1001));
    assert_refused(&url).await;
}
