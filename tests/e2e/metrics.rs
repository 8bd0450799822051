//! The metrics of a cluster node move by the expected amounts after known
//! traffic. The node runs as its own process, so nothing else counts.

use serde_json::json;

use crate::support::node::Endpoint;
use crate::support::{
    Cluster, ProcessNode, WsClient, eventually, sample, scrape, unique, wait_ready,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_and_histograms_follow_known_traffic() {
    let cluster = Cluster::start(0).await;
    let node = cluster.spawn_process(
        "metered",
        &[("CHORUS_RATE_LIMIT", "1"), ("CHORUS_RATE_BURST", "3")],
    );
    wait_ready(&node.url("/ready")).await;
    let metrics = node.url("/metrics");
    let room = unique("room");
    let before = scrape(&metrics).await;

    let mut alice = WsClient::connect(&node.ws_url("alice")).await;
    let mut bob = WsClient::connect(&node.ws_url("bob")).await;
    alice.join(&room).await;
    bob.join(&room).await;
    alice.say(&room, "one").await;
    alice.say(&room, "two").await;
    alice
        .request(json!({"type": "dm", "to": "bob", "content": "psst"}))
        .await;
    let limited = alice
        .request(json!({"type": "message", "room": room, "content": "too fast"}))
        .await;
    assert_eq!(limited["code"], "rate_limited");
    bob.recv_until(|f| f["type"] == "dm").await;
    bob.close().await;
    alice
        .recv_until(|f| f["type"] == "presence" && f["event"] == "leave")
        .await;
    let after = eventually("the closed connection to be counted", || {
        let metrics = metrics.clone();
        async move {
            let text = scrape(&metrics).await;
            (sample(&text, "chorus_connections_closed_total", r#"code="1000""#) >= 1.0)
                .then_some(text)
        }
    })
    .await;

    let delta =
        |name: &str, label: &str| sample(&after, name, label) - sample(&before, name, label);
    assert_eq!(delta("chorus_connections_opened_total", ""), 2.0);
    assert_eq!(
        delta("chorus_connections_closed_total", r#"code="1000""#),
        1.0
    );
    assert_eq!(sample(&after, "chorus_connections", ""), 1.0);
    assert_eq!(
        delta("chorus_messages_accepted_total", r#"kind="message""#),
        2.0
    );
    assert_eq!(delta("chorus_messages_accepted_total", r#"kind="dm""#), 1.0);
    assert_eq!(delta("chorus_rate_limited_total", r#"kind="message""#), 1.0);
    assert_eq!(delta("chorus_errors_total", r#"code="rate_limited""#), 1.0);
    // alice's and bob's first joins, then bob's leave.
    assert_eq!(
        delta("chorus_presence_events_total", r#"event="join""#),
        2.0
    );
    assert_eq!(
        delta("chorus_presence_events_total", r#"event="leave""#),
        1.0
    );
    assert_eq!(delta("chorus_send_latency_seconds_count", ""), 3.0);
    assert_eq!(
        delta("chorus_redis_command_seconds_count", r#"op="append""#),
        3.0
    );
    assert_eq!(delta("chorus_redis_errors_total", ""), 0.0);
    // Two messages to two members, one DM to two connections, and events.
    assert!(delta("chorus_frames_delivered_total", "") >= 6.0, "{after}");
    assert!(
        delta("chorus_fanout_recipients_count", "") >= 3.0,
        "{after}"
    );
    assert_eq!(sample(&after, "chorus_draining", ""), 0.0);
    assert_eq!(
        sample(&after, "chorus_build_info", r#"node="metered""#),
        1.0,
        "{after}"
    );
    // alice's user channel and the room's channel.
    assert_eq!(
        sample(&after, "chorus_subscribed_channels", ""),
        2.0,
        "{after}"
    );
}

/// Resident memory of a process, from `/proc`.
fn rss_bytes(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib * 1024
}

/// Sends `n` messages in windows of 500, each window waited for by its
/// last echo.
async fn flood(client: &mut WsClient, room: &str, n: usize) {
    for window in 0..n / 500 {
        let last = format!("w{window}");
        for i in 0..500 {
            let mut frame = json!({"type": "message", "room": room, "content": "x"});
            if i == 499 {
                frame["ref"] = json!(last);
            }
            client.send(frame).await;
        }
        client.recv_until(|f| f["ref"] == last.as_str()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_nobody_scrapes_does_not_keep_every_histogram_sample() {
    // Latency histograms keep their samples until something folds them
    // in: a scrape, or the node's own upkeep. Three histogram samples per
    // message (send latency, fan-out latency and recipients).
    let node = ProcessNode::spawn(&[("CHORUS_RATE_LIMIT", "0"), ("CHORUS_HISTORY_LIMIT", "10")]);
    wait_ready(&node.url("/ready")).await;
    let room = unique("room");
    let mut alice = WsClient::connect(&node.ws_url("alice")).await;
    alice.join(&room).await;
    // Warm up: buffers and the allocator settle; then upkeep ticks pass.
    flood(&mut alice, &room, 20_000).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let settled = rss_bytes(node.pid());
    for _ in 0..2 {
        flood(&mut alice, &room, 30_000).await;
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
    let grown = rss_bytes(node.pid()).saturating_sub(settled);
    // Kept, 60 000 messages' samples are 1.4 MB and more (3 MB measured).
    assert!(
        grown < 700_000,
        "resident memory grew by {grown} bytes over 60 000 messages"
    );
}
